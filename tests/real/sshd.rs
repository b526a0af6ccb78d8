//! OpenSSH's sshd as the banner server: its one-line banner, then it waits for ours, which is
//! exactly the peer that used to turn a mismatch into a timeout.

use std::io::Read;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::support::{self, Daemon, ok, run};

/// The banner sshd sends, read with a plain socket: what netmon must report.
fn banner(port: u16) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to sshd");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a read timeout");
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while got.len() < 255 && !got.ends_with(b"\n") {
        match s.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => break,
        }
    }
    got
}

#[test]
fn sshd_banner_matches_or_fails_at_once_with_what_arrived() {
    let Some([sshd, keygen]) = support::programs(
        "sshd_banner_matches_or_fails_at_once_with_what_arrived",
        ["sshd", "ssh-keygen"],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir");
    let d = dir.path();
    let key = d.join("host_ed25519");
    ok(
        &keygen,
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            key.to_str().expect("a UTF-8 temp path"),
        ],
    );
    let port = support::free_port();
    let config = d.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
            key.display(),
            d.display()
        ),
    )
    .expect("write sshd_config");
    // sshd started by root insists on its privilege separation directory, which systemd
    // creates at boot on a real host (RuntimeDirectory=sshd) but a container may lack.
    let privsep = std::path::Path::new("/run/sshd");
    // /proc/self belongs to the process's effective user.
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if root && !privsep.exists() {
        std::fs::create_dir_all(privsep).expect("create /run/sshd");
    }
    // sshd re-executes itself, so it must be started by its absolute path.
    let mut command = Command::new(&sshd);
    command.arg("-D").arg("-e").arg("-f").arg(&config);
    let mut server = Daemon::start("sshd", command, &d.join("sshd.log"), &[port]);
    let real = banner(port);
    assert!(real.starts_with(b"SSH-2.0-OpenSSH"), "{real:?}");
    let escaped = String::from_utf8_lossy(&real)
        .replace('\r', "\\r")
        .replace('\n', "\\n");

    let check = |regex: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_netmon"));
        c.args([
            "check",
            "tcp",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "4s",
        ])
        .arg("-o")
        .arg(format!("expect_regex={regex}"));
        run(c, Duration::from_secs(20))
    };
    let up = check(r"^SSH-2\.0-OpenSSH");
    let down = check(r"^SSH-1\.99");
    server.assert_running();
    println!(
        "sshd banner {escaped:?}\n^SSH-2\\.0-OpenSSH: exit {} in {:?}: {}\n^SSH-1\\.99: exit {} in {:?}: {}",
        up.code,
        up.took,
        up.stdout.trim(),
        down.code,
        down.took,
        down.stdout.trim()
    );
    assert_eq!(up.code, 0, "{up:?}");
    assert_eq!(down.code, 2, "{down:?}");
    assert!(
        down.stdout.contains(&format!(
            "mismatch: received \"{escaped}\", which does not match /^SSH-1\\.99/"
        )),
        "{down:?}\nsshd sent {escaped:?}"
    );
    // The whole command, process start included, against a 4 s timeout.
    assert!(down.took < Duration::from_millis(800), "{down:?}");
}
