//! Fuzzing entry points: one function per target in `fuzz/fuzz_targets/`, each feeding
//! arbitrary bytes to the code that parses them and asserting what must hold. Not part of the
//! API (hidden from the docs); `tests/integration/fuzz_regressions.rs` replays every stored crashing input
//! through the same functions, so plain `cargo test` guards the fixes without cargo-fuzz.
//!
//! A function returns quietly for any input the code handles correctly, and panics when an
//! invariant breaks: that panic is what libFuzzer reports as a finding.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use hickory_proto::op::Query;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::base::values::Regex;
use crate::cmd::check::{Range, Threshold};
use crate::config;
use crate::echo::wire;
use crate::probe::{dns, http, icmp, tcp, udp};

pub mod deep_yaml;

/// One fuzz target's entry point: arbitrary bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets, by the names `fuzz/run.sh` and `fuzz/regressions/` use.
pub const TARGETS: [(&str, Target); 13] = [
    ("config_load", config_load),
    ("config_deep", config_deep),
    ("web_config", web_config),
    ("echo_wire", echo_wire),
    ("echo_roundtrip", echo_roundtrip),
    ("stamp_wire", stamp_wire),
    ("icmp_reply", icmp_reply),
    ("udp_expect", udp_expect),
    ("tcp_banner", tcp_banner),
    ("dns_response", dns_response),
    ("http_response", http_response),
    ("http_redirect", http_redirect),
    ("nagios_range", nagios_range),
];

/// A current-thread runtime per fuzzing thread, for the async entry points.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    thread_local! {
        static RT: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
    }
    RT.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds")
        });
        rt.block_on(f)
    })
}

/// Splits `data` into a regex pattern (length in the first byte) and the rest.
fn pattern_and_rest(data: &[u8]) -> Option<(Regex, &[u8])> {
    let (&n, rest) = data.split_first()?;
    let n = usize::from(n).min(rest.len());
    let (pattern, rest) = rest.split_at(n);
    let re = Regex::new(std::str::from_utf8(pattern).ok()?).ok()?;
    Some((re, rest))
}

/// `config::load` on YAML text: never panics; every error has a line and column, except the
/// one whole-file error (an empty configuration); a valid configuration saves to YAML that
/// loads back to the same configuration.
pub fn config_load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::load(text, "fuzz.yml") {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error result without errors");
            for e in &errors.0 {
                let whole_file = e.message.starts_with("the configuration is empty");
                assert!(
                    whole_file || (e.line > 0 && e.column > 0),
                    "unlocated config error: {e:?}"
                );
            }
            let _ = errors.to_string();
        }
        Ok(cfg) => {
            let Ok(yaml) = config::to_yaml(&cfg) else {
                return;
            };
            match config::load(&yaml, "saved.yml") {
                Ok(again) => assert_eq!(again, cfg, "saved config loads differently:\n{yaml}"),
                Err(e) => panic!("saved config does not load: {e}\n{yaml}"),
            }
        }
    }
}

/// [`config_load`] on the document [`deep_yaml::document`] builds from `data`: deep block and
/// flow nesting, long keys and values, huge numbers, netmon's own keys. Asserts the same.
pub fn config_deep(data: &[u8]) {
    config_load(deep_yaml::document(data).as_bytes());
}

/// `config::parse_web_config` (the exporter-toolkit web config): never panics.
pub fn web_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = config::parse_web_config(text, Path::new("/nonexistent/web.yml")) {
        let _ = e.to_string();
    }
}

/// `echo::wire::decode` and `ids` on arbitrary bytes: never panic, and whatever decodes
/// re-encodes to exactly the same bytes.
pub fn echo_wire(data: &[u8]) {
    let _ = wire::ids(data);
    if let Ok(m) = wire::decode(data) {
        assert_eq!(m.size, data.len());
        assert_eq!(m.encode().as_deref(), Ok(data), "decode/encode differ");
        assert_eq!(wire::ids(data), Some((m.nonce, m.seq)));
    }
}

/// Encode then decode: every encodable message decodes to itself.
pub fn echo_roundtrip(data: &[u8]) {
    let mut f = [0u8; 26];
    let n = data.len().min(f.len());
    f[..n].copy_from_slice(&data[..n]);
    let u64_at = |i: usize| u64::from_be_bytes(f[i..i + 8].try_into().expect("8 bytes"));
    let m = wire::Message {
        nonce: u64_at(0),
        seq: u64_at(8),
        sent_ns: u64_at(16),
        // Any size, in and out of range: out of range must be refused, not panic.
        size: usize::from(u16::from_be_bytes([f[24], f[25]])),
    };
    match m.encode() {
        Ok(b) => {
            assert_eq!(b.len(), m.size);
            assert_eq!(wire::decode(&b), Ok(m));
        }
        Err(_) => assert!(
            m.sent_ns == 0 || !(wire::HEADER_LEN..=wire::MAX_LEN).contains(&m.size),
            "a valid message was refused: {m:?}"
        ),
    }
}

/// STAMP test packets on arbitrary bytes: the sender and reflector decoders never panic; a
/// decoded sender packet re-encodes to the same fields; reflecting keeps the length and the
/// octets after the base, and the reply reads back as the answer to that packet.
pub fn stamp_wire(data: &[u8]) {
    use crate::stamp::wire::{
        BASE_LEN, ErrorEstimate, ReflectorPacket, SenderPacket, Timestamp, reflect_in_place,
    };
    let _ = ReflectorPacket::decode(data);
    let Ok(s) = SenderPacket::decode(data) else {
        let mut b = data.to_vec();
        assert!(
            reflect_in_place(
                &mut b,
                Timestamp(1),
                1,
                ErrorEstimate::NETMON,
                || Timestamp(2)
            )
            .is_err(),
            "reflected what is no sender packet"
        );
        return;
    };
    let mut again = Vec::new();
    s.encode_into(data.len(), &mut again)
        .expect("a decoded packet's length encodes");
    assert_eq!(SenderPacket::decode(&again), Ok(s), "decode/encode differ");
    let mut b = data.to_vec();
    reflect_in_place(&mut b, Timestamp(7), 64, ErrorEstimate::NETMON, || {
        Timestamp(9)
    })
    .expect("a sender packet reflects");
    assert_eq!(b.len(), data.len());
    assert_eq!(
        b[BASE_LEN..],
        data[BASE_LEN..],
        "octets past the base changed"
    );
    let r = ReflectorPacket::decode(&b).expect("a reply decodes");
    assert_eq!((r.seq, r.sender_seq), (s.seq, s.seq));
    assert_eq!(r.sender_timestamp, s.timestamp);
    assert_eq!(r.sender_error, s.error);
    assert_eq!(r.ssid, s.ssid);
    assert_eq!(
        (r.receive, r.timestamp, r.sender_ttl),
        (Timestamp(7), Timestamp(9), 64)
    );
}

/// ICMP decoding and matching: see [`icmp::fuzz::reply`].
pub fn icmp_reply(data: &[u8]) {
    icmp::fuzz::reply(data);
}

/// The UDP probe's reply check: up exactly when the pattern matches the lossy UTF-8 text.
pub fn udp_expect(data: &[u8]) {
    let Some((re, reply)) = pattern_and_rest(data) else {
        return;
    };
    let ok = udp::check_reply(Some(&re), reply).is_ok();
    assert_eq!(ok, re.0.is_match(&String::from_utf8_lossy(reply)));
    assert!(udp::check_reply(None, reply).is_ok());
}

/// A reader that hands out its bytes in chunks of a fixed size, as a slow peer would.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.data.len()).min(buf.remaining());
        let (head, tail) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = tail;
        Poll::Ready(Ok(()))
    }
}

/// The TCP banner check, fed in chunks: never panics, never reads past `max_read`, and is up
/// only when the pattern matches what was read.
pub fn tcp_banner(data: &[u8]) {
    let Some((&[max, chunk], rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Some((re, banner)) = pattern_and_rest(rest) else {
        return;
    };
    // max_read is 1..=1048576 in a valid config; keep it small enough to hit the bound.
    let max = usize::from(max) * 4 + 1;
    let mut reader = Chunked {
        data: banner,
        chunk: usize::from(chunk).max(1),
    };
    let result = block_on(tcp::expect(&mut reader, &re, max));
    let read = banner.len() - reader.data.len();
    assert!(read <= max, "read {read} bytes, max_read is {max}");
    if result.is_ok() {
        assert!(re.0.is_match(&String::from_utf8_lossy(&banner[..read])));
    }
}

/// Options and question the DNS target checks responses against.
fn dns_setup() -> &'static (dns::Options, Query) {
    static SETUP: OnceLock<(dns::Options, Query)> = OnceLock::new();
    SETUP.get_or_init(|| {
        let options = dns::Options {
            // Forces every answer record through hickory's Display.
            expect_answer_regex: Some(Regex::new("a").expect("a valid pattern")),
            ..dns::Options::default()
        };
        let name = dns::query_name(&options.query_name).expect("the default name is valid");
        let query = Query::query(name, options.query_type.record_type());
        (options, query)
    })
}

/// A DNS response (our id taken from its first two bytes, so most inputs are "ours"):
/// hickory's parse, our acceptance checks and the judgement of rcode, TC and answers.
pub fn dns_response(data: &[u8]) {
    let Some(&[a, b]) = data.first_chunk::<2>() else {
        return;
    };
    let (options, query) = dns_setup();
    let from = SocketAddr::from((Ipv4Addr::LOCALHOST, 53));
    let id = u16::from_be_bytes([a, b]);
    if let Ok(Some(msg)) = dns::accept(data, id, query, from) {
        assert_eq!(msg.metadata.id, id);
        let _ = dns::judge(options, &msg);
        let tcp = dns::Options {
            transport: dns::Transport::Tcp,
            ..options.clone()
        };
        let _ = dns::judge(&tcp, &msg);
    }
    // Another id is someone else's message: ignored or malformed, never accepted.
    assert!(!matches!(
        dns::accept(data, id.wrapping_add(1), query, from),
        Ok(Some(_))
    ));
}

/// HTTP options with both body regexes, as the probe would hold them.
fn http_options() -> &'static http::Options {
    static OPTIONS: OnceLock<http::Options> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        serde_json::from_str(r#"{"body_regex": "ok", "body_not_regex": "error"}"#)
            .expect("valid http options")
    })
}

/// A whole HTTP response as a server would send it, through the probe's request path (hyper
/// on an in-memory stream), the `Location` and redirect handling and the body checks.
pub fn http_response(data: &[u8]) {
    let data = data.to_vec();
    block_on(async move {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            // The request is never read: the duplex buffer holds it.
            let _ = server.write_all(&data).await;
            let _ = server.shutdown().await;
            // Keep the stream open until the client is done, as a slow server would.
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        let url = url::Url::parse("http://127.0.0.1:8080/a/b?c").expect("a valid url");
        let headers = hyper::HeaderMap::new();
        let req = http::fetch::Request {
            url: &url,
            method: &hyper::Method::GET,
            headers: &headers,
            body: bytes::Bytes::new(),
            server_name: None,
            ip: crate::base::values::IpPreference::Auto,
        };
        let mut clock = http::fetch::Clock::start();
        let run = async {
            let mut exchange = http::fetch::exchange_on(client, &req, &mut clock).await?;
            if http::is_redirect(exchange.status) {
                if let Some(location) = exchange.location.take() {
                    if let Ok(next) =
                        http::redirect_target(&url, &location, std::slice::from_ref(&url))
                    {
                        assert!(matches!(next.scheme(), "http" | "https"));
                        assert_ne!(next, url, "a redirect to itself was followed");
                    }
                }
            }
            let options = http_options();
            let body = exchange.read_body(4096, true).await?;
            assert!(body.len() <= 4096, "body read past max_body");
            http::check_body(&body, options)
        };
        // A peer that stops mid-response is the runner's timeout in the probe; here, give up.
        let _ = tokio::time::timeout(Duration::from_secs(2), run).await;
        peer.abort();
    });
}

/// The redirect rules on an arbitrary base URL and `Location` (split at the first newline).
pub fn http_redirect(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (base, location) = text.split_once('\n').unwrap_or((text, ""));
    // The probe only ever joins against http(s) URLs: its start URL is built or validated as
    // one, and `redirect_target` refuses any other scheme. (A `file:` base trips a
    // `debug_assert!` inside url 2.5.8's `join`: fuzz/regressions/http_redirect/file-base-join.)
    let Ok(url) = url::Url::parse(base) else {
        return;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return;
    }
    let mut visited = vec![url.clone()];
    let mut current = url;
    // Follow the same Location from each new URL, as a server redirecting relatively would.
    for _ in 0..=http::MAX_REDIRECTS + 1 {
        match http::redirect_target(&current, location, &visited) {
            Ok(next) => {
                assert!(matches!(next.scheme(), "http" | "https"));
                assert!(!visited.contains(&next), "a loop was followed");
                visited.push(next.clone());
                current = next;
            }
            Err(_) => return,
        }
    }
    panic!("more than {} redirects followed", http::MAX_REDIRECTS);
}

/// The Nagios threshold and range parsers: never panic, and a parsed range re-parses from
/// its own text to the same range.
pub fn nagios_range(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Threshold::parse(text);
    if let Ok(r) = Range::parse(text) {
        assert_eq!(Range::parse(&r.text).as_ref(), Ok(&r));
        for v in [
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            0.5,
            10.0,
            1e300,
            f64::INFINITY,
        ] {
            let _ = r.alerts(v);
        }
    }
}
