//! Running without root (docs/privileges.md): a copy of the real binary, run as
//! `nobody`, pings 127.0.0.1
//!
//! * with only `cap_net_raw` as a file capability (raw ICMP socket);
//! * with no capability, in a network namespace whose `net.ipv4.ping_group_range` admits the
//!   group (datagram ICMP socket);
//! * and refuses to start, saying what to do, with neither;
//! * with what examples/netmon.service grants: an ambient `CAP_NET_RAW`, no-new-privileges.
//!
//! The namespaces are created by the test (`unshare -n`), so the host's sysctl is never
//! touched. These tests need root (to set file capabilities, switch user and create network
//! namespaces) and `setcap`, `setpriv`, `unshare`, `ip`; without them they skip with a message,
//! unless `NETMON_REQUIRE_PRIVILEGE_TESTS=1` (CI), where they fail.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::Netmon;

/// `nobody` and `nogroup` on Debian; numeric, so no name lookup is needed.
const NOBODY: &str = "65534";

const CONFIG: &str = "targets:\n  127.0.0.1:\n    interval: 1s\n    timeout: 900ms\n    services: [{ type: icmp, count: 2, packet_interval: 100ms }]\n";

/// Why these tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    match testkit::process::euid() {
        Some(0) => {}
        euid => return Some(format!("not running as root (euid {euid:?})")),
    }
    testkit::process::missing_tool(
        &["setcap", "setpriv", "unshare", "ip"],
        "apt-get install libcap2-bin util-linux iproute2",
    )
}

/// True when the test may run; otherwise prints why and returns false, or panics when
/// `NETMON_REQUIRE_PRIVILEGE_TESTS=1`.
fn can_run(test: &str) -> bool {
    let Some(why) = missing() else {
        return true;
    };
    testkit::process::not_run("NETMON_REQUIRE_PRIVILEGE_TESTS", test, &why);
    false
}

/// A directory `nobody` can enter, holding a copy of the binary (so capabilities set on it do
/// not touch the build's) and, later, the config.
fn copy_binary() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("netmon");
    std::fs::copy(crate::support::BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// `setpriv` arguments that become `nobody` with no supplementary groups.
fn as_nobody(cmd: &mut Command) {
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
    ]);
}

/// A command that runs `bin` as `nobody` in a new network namespace whose loopback is up and
/// whose `ping_group_range` is `range`. `unshare` and `sh` exec, so the child is netmon itself.
fn in_netns(bin: &Path, range: &str) -> Command {
    let setpriv = format!("--reuid={NOBODY} --regid={NOBODY} --clear-groups");
    in_netns_as(bin, range, &setpriv)
}

/// As [`in_netns`], becoming who `setpriv_args` say.
fn in_netns_as(bin: &Path, range: &str, setpriv_args: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-n",
        "sh",
        "-c",
        &format!(
            "ip link set lo up && echo '{range}' > /proc/sys/net/ipv4/ping_group_range && \
             exec setpriv {setpriv_args} -- \"$0\" \"$@\""
        ),
    ]);
    cmd.arg(bin);
    cmd
}

/// A field of /proc/PID/status (its first word).
fn status_field(pid: u32, name: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

/// `CapEff` and `Uid` of a process, from /proc.
fn caps_and_uid(pid: u32) -> (String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .unwrap_or_default()
    };
    (field("CapEff:"), field("Uid:"))
}

/// `CAP_NET_RAW` is capability 13.
const CAP_NET_RAW_ONLY: &str = "0000000000002000";

#[test]
fn nobody_with_only_cap_net_raw_pings_over_a_raw_socket() {
    if !can_run("nobody_with_only_cap_net_raw_pings_over_a_raw_socket") {
        return;
    }
    let (dir, bin) = copy_binary();
    let out = Command::new("setcap")
        .args(["cap_net_raw+ep"])
        .arg(&bin)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setcap failed (a file system without extended attributes?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The host's sysctl is left alone; whatever it allows, the capability is what is tested
    // here, so the log must show the raw socket unless the host already allows datagrams.
    let mut cmd = Command::new("setpriv");
    as_nobody(&mut cmd);
    cmd.arg(&bin);
    let mut n = Netmon::start_command(cmd, dir, CONFIG);
    let (caps, uid) = caps_and_uid(n.pid());
    assert_eq!(uid, NOBODY, "runs as nobody");
    assert_eq!(caps, CAP_NET_RAW_ONLY, "its only effective capability");
    let opened = n.wait_log("icmp socket opened", Duration::from_secs(5));
    let host_range =
        std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap_or_default();
    if host_range.split_whitespace().collect::<Vec<_>>() == ["1", "0"] {
        assert!(opened.contains("socket=\"raw\""), "{opened}");
    }
    let labels = [("host", "127.0.0.1"), ("protocol", "icmp")];
    n.wait_metric("netmon_up", &labels, Duration::from_secs(10), |v| v == 1.0);
    n.wait_log("first result: UP", Duration::from_secs(2));
}

#[test]
fn nobody_without_privileges_refuses_to_start_and_says_what_to_do() {
    if !can_run("nobody_without_privileges_refuses_to_start_and_says_what_to_do") {
        return;
    }
    let (dir, bin) = copy_binary();
    let config = dir.path().join("netmon.yml");
    std::fs::write(&config, CONFIG).unwrap();
    // "1 0" admits no group: the kernel's default.
    let mut child = in_netns(&bin, "1 0")
        .arg("--config.file")
        .arg(&config)
        .args(["--web.listen-address", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "netmon started without any ICMP privilege:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(1), "{stderr}");
    for advice in [
        "icmp service on `127.0.0.1`: cannot open an ipv4 ICMP socket: Permission denied",
        "sudo setcap cap_net_raw+ep $(which netmon)",
        "sudo sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"",
    ] {
        assert!(stderr.contains(advice), "no {advice:?} in:\n{stderr}");
    }
}

#[test]
fn nobody_pings_over_a_datagram_socket_where_ping_group_range_allows() {
    if !can_run("nobody_pings_over_a_datagram_socket_where_ping_group_range_allows") {
        return;
    }
    let (dir, bin) = copy_binary();
    // Admits exactly nobody's group.
    let mut n = Netmon::start_command(in_netns(&bin, "65534 65534"), dir, CONFIG);
    let (caps, uid) = caps_and_uid(n.pid());
    assert_eq!(uid, NOBODY, "runs as nobody");
    assert_eq!(caps, "0000000000000000", "no capability at all");
    let opened = n.wait_log("icmp socket opened", Duration::from_secs(5));
    assert!(opened.contains("socket=\"dgram\""), "{opened}");
    assert!(
        opened.contains("allowed_by=\"net.ipv4.ping_group_range\""),
        "{opened}"
    );
    // /metrics lives in the namespace, out of the test's reach: the log says it is up.
    let up = n.wait_log("first result:", Duration::from_secs(10));
    assert!(up.contains("first result: UP"), "{up}");
    assert!(up.contains("protocol=icmp"), "{up}");
}

/// What examples/netmon.service grants, reproduced with setpriv (no systemd here): an
/// arbitrary unprivileged uid as `DynamicUser=` allocates (61184-65519), `CAP_NET_RAW` as an
/// ambient capability with nothing else in the bounding set, and no-new-privileges. No file
/// capability on the binary, and a namespace where datagram ICMP is refused, so the ambient
/// capability alone must open the raw socket.
#[test]
fn the_systemd_units_ambient_capability_alone_is_enough() {
    if !can_run("the_systemd_units_ambient_capability_alone_is_enough") {
        return;
    }
    let (dir, bin) = copy_binary();
    let unit = include_str!("../../examples/netmon.service");
    for line in [
        "DynamicUser=yes",
        "AmbientCapabilities=CAP_NET_RAW",
        "CapabilityBoundingSet=CAP_NET_RAW",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit has {line}");
    }
    let cmd = in_netns_as(
        &bin,
        "1 0",
        "--reuid=61234 --regid=61234 --clear-groups --inh-caps=-all,+net_raw \
         --ambient-caps=-all,+net_raw --bounding-set=-all,+net_raw --no-new-privs",
    );
    let mut n = Netmon::start_command(cmd, dir, CONFIG);
    let pid = n.pid();
    assert_eq!(status_field(pid, "Uid"), "61234");
    assert_eq!(status_field(pid, "CapEff"), CAP_NET_RAW_ONLY);
    assert_eq!(status_field(pid, "CapBnd"), CAP_NET_RAW_ONLY);
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    let opened = n.wait_log("icmp socket opened", Duration::from_secs(5));
    assert!(opened.contains("socket=\"raw\""), "{opened}");
    let up = n.wait_log("first result:", Duration::from_secs(10));
    assert!(up.contains("first result: UP"), "{up}");
}
