//! netmon against real servers on loopback: Debian's nginx (HTTPS with openssl-made
//! certificates, HTTP/2 over TLS and in cleartext) and OpenSSH's sshd (banners), each verdict
//! compared with what curl, or a plain socket, sees on the same server.
//!
//! The servers run as the test's children from a temporary directory with their own config,
//! on ports the kernel picked, and die with the test. A missing program skips its test with a
//! line saying so, unless `NETMON_REQUIRE_REAL_SERVERS=1` (CI) makes that a failure.

mod nginx;
mod sshd;
mod support;
