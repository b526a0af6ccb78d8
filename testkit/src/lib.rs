//! Test peers and helpers shared by netmon's unit tests, integration tests and real-server
//! tests. Every server here listens on loopback only, stops when its handle is dropped, and
//! bounds every wait.
//!
//! - [`pki`]: a test CA, leaves it signs, self-signed and `openssl req -x509`-style certificates,
//!   and rustls server configurations presenting them.
//! - [`dns`], [`ntp`], [`udp`], [`http`]: protocol peers on 127.0.0.1 (or another loopback
//!   address), driven by closures the test writes.
//! - [`icmp`]: ICMP messages with their checksum right.
//! - [`net`]: free and closed ports.
//! - [`process`]: programs found on the machine or reported as not run, daemons that die with
//!   the test, commands with a deadline, a child's output collected line by line.
//! - [`netmon`]: a running `netmon serve`, its log and its scrapes.
//! - [`exposition`]: a minimal HTTP/1.1 client and series lookup in the Prometheus text format.

pub mod dns;
pub mod exposition;
pub mod http;
pub mod icmp;
pub mod net;
pub mod netmon;
pub mod ntp;
pub mod pki;
pub mod process;
pub mod udp;
