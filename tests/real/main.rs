//! netmon against real servers and reference clients: Debian's nginx (HTTPS with
//! openssl-made certificates, HTTP/2 over TLS and in cleartext) next to curl, OpenSSH's sshd
//! (banners) next to a plain socket, ICMP next to fping on loopback and in test-made
//! network namespaces, chronyd and ntpsec's ntpd next to ntpdig, unbound next to dig, and
//! stamp-suite's STAMP sender and reflectors next to netmon's.
//!
//! The servers run as the test's children from a temporary directory with their own config,
//! on ports the kernel picked, and die with the test. A missing program skips its test with a
//! line saying so, unless `NETMON_REQUIRE_REAL_SERVERS=1` (CI) makes that a failure.

mod dns;
mod icmp;
mod nginx;
mod ntp;
mod sshd;
mod stamp;
mod support;

/// The rule for missing programs itself: skipped with a line saying so, or a failure when
/// [`support::REQUIRE`] is 1.
#[test]
fn a_missing_program_is_reported_and_fails_only_when_required() {
    let required = std::env::var(support::REQUIRE).as_deref() == Ok("1");
    let found = std::panic::catch_unwind(|| {
        support::programs("missing-program check", ["netmon-no-such-program"])
    });
    match found {
        Ok(None) => assert!(!required, "skipped although {} is 1", support::REQUIRE),
        Err(_) => assert!(required, "failed although {} is not 1", support::REQUIRE),
        Ok(Some(p)) => panic!("found a program that cannot exist: {p:?}"),
    }
}
