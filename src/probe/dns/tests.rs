//! The DNS probe's tests, against a DNS server started in the test.

use hickory_proto::rr::{Name, RecordType};
use testkit::dns::Server;

use super::*;
use crate::base::values::{IpPreference, Regex};
use crate::probe::ProbeMetrics;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, TXT};
use hickory_proto::rr::{RData, Record};

/// How the fake server behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Answers from the little zone in [`respond`].
    Normal,
    /// Sends bytes that are not a DNS message.
    Garbage,
    /// Answers with another id, and nothing else.
    WrongIdOnly,
    /// Answers with another id, then with the right one.
    WrongIdThenRight,
    /// Answers with our id but another question.
    WrongQuestion,
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// The zone: `a.test` A (two records), `t.test` TXT, `rd.test` TXT echoing the RD flag,
/// `fail.test` SERVFAIL, `big.test` truncated over UDP (three A records over TCP), anything
/// else NXDOMAIN.
fn respond(req: &Message, tcp: bool) -> Message {
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    let Some(q) = req.queries.first().cloned() else {
        resp.metadata.response_code = ResponseCode::FormErr;
        return resp;
    };
    resp.add_query(q.clone());
    let qname = q.name().to_lowercase().to_ascii();
    let a = |ip: [u8; 4]| {
        Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A(std::net::Ipv4Addr::from(ip))),
        )
    };
    let txt = |s: &str| {
        Record::from_rdata(q.name().clone(), 60, RData::TXT(TXT::new(vec![s.into()])))
    };
    match (qname.as_str(), q.query_type()) {
        ("a.test.", RecordType::A) => {
            resp.add_answer(a([192, 0, 2, 1]));
            resp.add_answer(a([192, 0, 2, 2]));
        }
        ("t.test.", RecordType::TXT) => {
            resp.add_answer(txt("v=spf1 -all"));
        }
        ("rd.test.", RecordType::TXT) => {
            let rd = if req.metadata.recursion_desired {
                "rd=1"
            } else {
                "rd=0"
            };
            resp.add_answer(txt(rd));
        }
        ("fail.test.", _) => resp.metadata.response_code = ResponseCode::ServFail,
        ("big.test.", _) if !tcp => resp.metadata.truncation = true,
        ("big.test.", RecordType::A) => {
            for i in 1..=3 {
                resp.add_answer(a([192, 0, 2, i]));
            }
        }
        ("a.test." | "t.test." | "rd.test." | "big.test.", _) => {}
        _ => resp.metadata.response_code = ResponseCode::NXDomain,
    }
    resp
}

/// What the server sends for `bytes` in `mode`: zero or more messages.
fn replies(bytes: &[u8], mode: Mode, tcp: bool) -> Vec<Vec<u8>> {
    let Ok(req) = Message::from_vec(bytes) else {
        return vec![];
    };
    let right = respond(&req, tcp);
    let mut wrong = right.clone();
    wrong.metadata.id = req.metadata.id.wrapping_add(1);
    match mode {
        Mode::Normal => vec![right.to_vec().unwrap()],
        Mode::Garbage => vec![b"\x13\x37 this is not dns".to_vec()],
        Mode::WrongIdOnly => vec![wrong.to_vec().unwrap()],
        Mode::WrongIdThenRight => vec![wrong.to_vec().unwrap(), right.to_vec().unwrap()],
        Mode::WrongQuestion => {
            let mut other = right.clone();
            other.queries = vec![Query::query(name("other.test."), RecordType::A)];
            vec![other.to_vec().unwrap()]
        }
    }
}

/// A DNS server on 127.0.0.1, UDP and TCP on one port, until dropped.
fn server(mode: Mode) -> Server {
    server_on("127.0.0.1", mode).unwrap()
}

/// A DNS server on `ip`, UDP and TCP on one port; `None` when `ip` cannot be bound (no IPv6
/// loopback on this machine).
fn server_on(ip: &str, mode: Mode) -> Option<Server> {
    let ip: std::net::IpAddr = ip.parse().ok()?;
    Server::on(ip, 0, move |bytes, transport| {
        let tcp = transport == testkit::dns::Transport::Tcp;
        replies(bytes, mode, tcp).into_iter().map(|r| (Duration::ZERO, r)).collect()
    })
    .ok()
}

fn probe(options: Options) -> DnsProbe {
    let labels: Labels = vec![("service".into(), "dns".into())];
    let metrics = ProbeMetrics::register(&mut Registry::default());
    DnsProbe::new(
        options,
        &Context {
            labels: &labels,
            timeout: std::time::Duration::from_secs(5),
            rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
        },
        &metrics.dns,
    )
    .unwrap()
}

fn options(
    port: u16,
    query_name: &str,
    query_type: QueryType,
    transport: Transport,
) -> Options {
    Options {
        query_name: query_name.into(),
        query_type,
        transport,
        port: Some(port),
        ..Options::default()
    }
}

fn target() -> Target {
    Target {
        host: "127.0.0.1".into(),
    }
}

/// Runs the probe with a test-side bound so a hang fails rather than blocks.
async fn run(p: &DnsProbe) -> Outcome {
    run_on(p, &target()).await
}

async fn run_on(p: &DnsProbe, target: &Target) -> Outcome {
    tokio::time::timeout(Duration::from_secs(5), p.run(target))
        .await
        .expect("probe finished within 5s")
}

fn gauges(p: &DnsProbe) -> (f64, f64) {
    (p.handles.rcode.get(), p.handles.answers.get())
}

const BOTH: [Transport; 2] = [Transport::Udp, Transport::Tcp];

#[tokio::test]
async fn a_query_is_up_with_rcode_and_answer_count_over_udp_and_tcp() {
    let peer = server(Mode::Normal);
    let port = peer.port();
    for t in BOTH {
        let p = probe(options(port, "a.test", QueryType::A, t));
        assert_eq!(gauges(&p), (-1.0, 0.0), "no answer before the first probe");
        let ok = run(&p).await.unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert!(ok.latency > Duration::ZERO && ok.latency < Duration::from_secs(1));
        assert_eq!(gauges(&p), (0.0, 2.0), "{t:?}");
    }
}

#[tokio::test]
async fn txt_answers_are_matched_by_regex() {
    let peer = server(Mode::Normal);
    let port = peer.port();
    for t in BOTH {
        let mut o = options(port, "t.test", QueryType::Txt, t);
        // TXT data in zone-file form, quoted as dig shows it.
        o.expect_answer_regex = Some(Regex::new(r#"TXT "v=spf1 -all"$"#).unwrap());
        run(&probe(o.clone()))
            .await
            .unwrap_or_else(|e| panic!("{t:?}: {e}"));
        // The record's text form includes its name, so patterns can anchor on it.
        o.expect_answer_regex = Some(Regex::new(r"^t\.test\. 60 IN TXT").unwrap());
        run(&probe(o.clone()))
            .await
            .unwrap_or_else(|e| panic!("{t:?}: {e}"));
        o.expect_answer_regex = Some(Regex::new("v=DMARC1").unwrap());
        let p = probe(o);
        let e = run(&p).await.unwrap_err();
        assert_eq!(e.reason, Reason::Mismatch, "{e}");
        assert!(e.message.contains("v=spf1"), "{}", e.message);
        assert_eq!(gauges(&p), (0.0, 1.0), "the answer is still counted");
    }
}

#[test]
fn txt_data_reads_as_in_a_zone_file() {
    let txt = |strings: Vec<&[u8]>| {
        Record::from_rdata(name("m.test."), 300, RData::TXT(TXT::from_bytes(strings)))
    };
    // Several strings stay apart, quotes and backslashes are escaped, other bytes are \DDD:
    // the text dig prints for the same record (dig separates the fields with tabs).
    assert_eq!(
        record_text(&txt(vec![b"v=spf1 a", b"-all"])),
        r#"m.test. 300 IN TXT "v=spf1 a" "-all""#
    );
    assert_eq!(
        record_text(&txt(vec![b"q\"uote\\", "caf\u{e9}".as_bytes(), b"\x00\n"])),
        r#"m.test. 300 IN TXT "q\"uote\\" "caf\195\169" "\000\010""#
    );
    assert_eq!(record_text(&txt(vec![b""])), r#"m.test. 300 IN TXT """#);
    let a = Record::from_rdata(
        name("a.test."),
        60,
        RData::A(A(std::net::Ipv4Addr::new(192, 0, 2, 1))),
    );
    assert_eq!(record_text(&a), "a.test. 60 IN A 192.0.2.1");
}

#[tokio::test]
async fn regex_with_no_answer_records_is_a_mismatch() {
    let peer = server(Mode::Normal);
    let port = peer.port();
    // NOERROR with an empty answer section (NODATA).
    let mut o = options(port, "t.test", QueryType::A, Transport::Udp);
    run(&probe(o.clone())).await.unwrap();
    o.expect_answer_regex = Some(Regex::new(".").unwrap());
    let e = run(&probe(o)).await.unwrap_err();
    assert_eq!(e.reason, Reason::Mismatch, "{e}");
    assert!(e.message.contains("0 records"), "{}", e.message);
}

#[tokio::test]
async fn nxdomain_is_an_answer_with_its_rcode() {
    let peer = server(Mode::Normal);
    let port = peer.port();
    for t in BOTH {
        let mut o = options(port, "missing.test", QueryType::A, t);
        let p = probe(o.clone());
        let e = run(&p).await.unwrap_err();
        assert_eq!(e.reason, Reason::Status, "{e}");
        assert!(e.message.contains("NXDOMAIN (3)"), "{}", e.message);
        assert_eq!(gauges(&p), (3.0, 0.0), "{t:?}");
        // Monitoring that a name does NOT exist is a valid use.
        o.valid_rcodes = vec![Rcode::parse("nxdomain").unwrap()];
        let p = probe(o);
        run(&p).await.unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert_eq!(gauges(&p), (3.0, 0.0));
    }
}

#[tokio::test]
async fn servfail_is_an_answer_with_its_rcode() {
    let peer = server(Mode::Normal);
    let port = peer.port();
    for t in BOTH {
        let p = probe(options(port, "fail.test", QueryType::A, t));
        let e = run(&p).await.unwrap_err();
        assert_eq!(e.reason, Reason::Status, "{e}");
        assert!(e.message.contains("SERVFAIL (2)"), "{}", e.message);
        assert_eq!(gauges(&p), (2.0, 0.0), "{t:?}");
    }
}

#[tokio::test]
async fn garbage_is_a_protocol_failure() {
    let peer = server(Mode::Garbage);
    let port = peer.port();
    for t in BOTH {
        let p = probe(options(port, "a.test", QueryType::A, t));
        let e = run(&p).await.unwrap_err();
        assert_eq!(e.reason, Reason::Protocol, "{t:?}: {e}");
        assert!(
            e.message.contains("malformed dns response"),
            "{}",
            e.message
        );
        assert_eq!(gauges(&p), (-1.0, 0.0), "{t:?}");
    }
}

#[tokio::test]
async fn another_question_is_a_protocol_failure() {
    let peer = server(Mode::WrongQuestion);
    let port = peer.port();
    for t in BOTH {
        let e = run(&probe(options(port, "a.test", QueryType::A, t)))
            .await
            .unwrap_err();
        assert_eq!(e.reason, Reason::Protocol, "{t:?}: {e}");
        assert!(e.message.contains("other.test."), "{}", e.message);
    }
}

#[tokio::test]
async fn responses_with_another_id_are_ignored() {
    let peer = server(Mode::WrongIdThenRight);
    let port = peer.port();
    for t in BOTH {
        let p = probe(options(port, "a.test", QueryType::A, t));
        run(&p).await.unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert_eq!(gauges(&p), (0.0, 2.0));
    }
    let peer = server(Mode::WrongIdOnly);
    let port = peer.port();
    for t in BOTH {
        let p = probe(options(port, "a.test", QueryType::A, t));
        // Only the runner's timeout ends the wait; dropping the probe clears the gauges.
        let waited = tokio::time::timeout(Duration::from_millis(300), p.run(&target())).await;
        assert!(
            waited.is_err(),
            "{t:?}: a reply with another id was taken: {waited:?}"
        );
        assert_eq!(gauges(&p), (-1.0, 0.0), "{t:?}");
    }
}

#[tokio::test]
async fn truncated_udp_answer_is_reported_and_tcp_gets_it_whole() {
    let peer = server(Mode::Normal);
    let port = peer.port();
    let e = run(&probe(options(
        port,
        "big.test",
        QueryType::A,
        Transport::Udp,
    )))
    .await
    .unwrap_err();
    assert_eq!(e.reason, Reason::Protocol, "{e}");
    assert!(
        e.message.contains("truncated") && e.message.contains("transport: tcp"),
        "{}",
        e.message
    );
    let p = probe(options(port, "big.test", QueryType::A, Transport::Tcp));
    run(&p).await.unwrap();
    assert_eq!(gauges(&p), (0.0, 3.0));
}

#[tokio::test]
async fn recursion_desired_sets_the_rd_flag() {
    let peer = server(Mode::Normal);
    let port = peer.port();
    let mut o = options(port, "rd.test", QueryType::Txt, Transport::Udp);
    o.expect_answer_regex = Some(Regex::new("rd=1").unwrap());
    run(&probe(o.clone())).await.unwrap();
    o.recursion_desired = false;
    o.expect_answer_regex = Some(Regex::new("rd=0").unwrap());
    run(&probe(o)).await.unwrap();
}

#[tokio::test]
async fn ipv6_servers_and_the_ip_option() {
    let Some(peer) = server_on("::1", Mode::Normal) else {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    };
    let port = peer.port();
    for t in BOTH {
        let p = probe(options(port, "a.test", QueryType::A, t));
        let target = Target { host: "::1".into() };
        run_on(&p, &target)
            .await
            .unwrap_or_else(|e| panic!("{t:?}: {e}"));
        assert_eq!(gauges(&p), (0.0, 2.0));
        let mut o = options(port, "a.test", QueryType::A, t);
        o.ip = IpPreference::Ipv4;
        let e = run_on(&probe(o), &target).await.unwrap_err();
        assert_eq!(e.reason, Reason::Dns, "{e}");
        assert!(e.message.contains("no IPv4 address"), "{}", e.message);
    }
}

#[tokio::test]
async fn closed_ports_are_refused() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    drop(udp);
    let p = probe(options(port, "a.test", QueryType::A, Transport::Udp));
    let e = run(&p).await.unwrap_err();
    assert_eq!(e.reason, Reason::Refused, "{e}");
    assert_eq!(gauges(&p), (-1.0, 0.0));
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    drop(tcp);
    let e = run(&probe(options(
        port,
        "a.test",
        QueryType::A,
        Transport::Tcp,
    )))
    .await
    .unwrap_err();
    assert_eq!(e.reason, Reason::Refused, "{e}");
}

#[tokio::test]
async fn forget_removes_the_series() {
    let mut registry = Registry::default();
    let metrics = ProbeMetrics::register(&mut registry);
    let labels: Labels = vec![("service".into(), "dns".into())];
    let p = DnsProbe::new(
        Options::default(),
        &Context {
            labels: &labels,
            timeout: std::time::Duration::from_secs(5),
            rtt_buckets: Some(&crate::probe::packets::DEFAULT_RTT_BUCKETS),
        },
        &metrics.dns,
    )
    .unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("dns_rcode{service=\"dns\"} -1"), "{text}");
    assert!(
        text.contains("dns_answer_records{service=\"dns\"} 0"),
        "{text}"
    );
    p.forget();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(!text.contains("service=\"dns\""), "{text}");
}

fn service(yaml_service: &str) -> Result<crate::config::model::Service, String> {
    let text = format!("targets:\n  127.0.0.1:\n    services: [{yaml_service}]\n");
    crate::config::loader::load(&text, "t.yml")
        .map(|c| c.services().next().unwrap().clone())
        .map_err(|e| e.to_string())
}

fn dns_options(s: &crate::config::model::Service) -> &Options {
    match &s.options {
        crate::probe::Options::Dns(o) => o,
        other => panic!("not dns options: {other:?}"),
    }
}

#[test]
fn config_defaults_and_shorthand() {
    let s = service("DNS").unwrap();
    assert_eq!(s.name, "dns");
    assert_eq!(dns_options(&s), &Options::default());
    assert_eq!(dns_options(&s).port(), 53);
    let s = service("\"DNS:5353\"").unwrap();
    assert_eq!(s.name, "dns:5353");
    assert_eq!(dns_options(&s).port(), 5353);
}

#[test]
fn config_reads_every_option() {
    let s = service(
        "{ type: dns, query_name: example.org, query_type: txt, transport: tcp, port: 5300, \
         valid_rcodes: [NoError, nxdomain, 2], expect_answer_regex: 'v=spf1', \
         recursion_desired: false, ip: ipv4 }",
    )
    .unwrap();
    let o = dns_options(&s);
    assert_eq!(o.query_name, "example.org");
    assert_eq!(o.query_type, QueryType::Txt);
    assert_eq!(o.transport, Transport::Tcp);
    assert_eq!(o.port(), 5300);
    assert_eq!(o.valid_rcodes, vec![Rcode(0), Rcode(3), Rcode(2)]);
    assert_eq!(o.expect_answer_regex.as_ref().unwrap().as_str(), "v=spf1");
    assert!(!o.recursion_desired);
    assert_eq!(o.ip, IpPreference::Ipv4);
    // Service names (SRV) and reverse names (PTR) are ordinary query names.
    service("{ type: dns, query_name: _sip._tcp.example.com, query_type: SRV }").unwrap();
    service("{ type: dns, query_name: 1.2.0.192.in-addr.arpa., query_type: PTR }").unwrap();
    for t in ["aaaa", "CNAME", "mx", "NS", "ptr", "SOA", "srv"] {
        service(&format!("{{ type: dns, query_type: {t} }}")).unwrap();
    }
}

#[test]
fn config_errors_say_what_is_valid() {
    let e = service("{ type: dns, query_type: AAA }").unwrap_err();
    assert!(e.contains("unknown query_type `AAA`"), "{e}");
    assert!(e.contains("did you mean `AAAA`"), "{e}");
    let e = service("{ type: dns, valid_rcodes: [NXDOMIAN] }").unwrap_err();
    assert!(e.contains("unknown rcode `NXDOMIAN`"), "{e}");
    assert!(e.contains("did you mean `NXDOMAIN`"), "{e}");
    let e = service("{ type: dns, valid_rcodes: [] }").unwrap_err();
    assert!(e.contains("valid_rcodes is empty"), "{e}");
    let e = service("{ type: dns, transport: quic }").unwrap_err();
    assert!(e.contains("quic"), "{e}");
    let e = service("{ type: dns, query_nam: x }").unwrap_err();
    assert!(e.contains("did you mean `query_name`"), "{e}");
    let e = service("{ type: dns, query_name: 'a..b' }").unwrap_err();
    assert!(e.contains("invalid query_name"), "{e}");
    let e = service("{ type: dns, expect_answer_regex: '(' }").unwrap_err();
    assert!(e.contains("invalid regular expression"), "{e}");
}

#[test]
fn rcodes_print_by_name_or_number() {
    assert_eq!(Rcode(3).to_string(), "NXDOMAIN");
    assert_eq!(Rcode(4000).to_string(), "4000");
    assert_eq!(Rcode::parse("servfail"), Ok(Rcode(2)));
    assert!(Rcode::parse("4096").is_err());
}
