//! A minimal HTTP/1.1 client (enough for tests, no client crate) and series lookup in the
//! Prometheus text exposition format.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request with `Connection: close` and a 10 s read timeout; returns (status, body),
/// status 0 when no status line arrived. Chunked bodies are decoded.
pub fn http(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap_or_else(|e| panic!("send {method} {path} to {addr}: {e}"));
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the answer to {method} {path} from {addr}: {e}"));
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A series' labels, in order, unescaped.
pub type LabelSet = Vec<(String, String)>;

/// The name, labels and value of a series line; `None` for a comment or a malformed line.
pub fn parse_line(line: &str) -> Option<(&str, LabelSet, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let Some((name, rest)) = series.split_once('{') else {
        return Some((series, Vec::new(), value));
    };
    let mut labels = Vec::new();
    let mut rest = rest.strip_suffix('}')?;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut val = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                (_, c) => val.push(c),
            }
        };
        labels.push((key.to_string(), val));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some((name, labels, value))
}

/// Every series `name` whose labels include every pair of `labels`, as (line, value).
pub fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let (n, have, value) = parse_line(l)?;
            let all = labels
                .iter()
                .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v));
            (n == name && all).then(|| (l.to_string(), value))
        })
        .collect()
}

/// The value of the first series `name` whose labels include every pair in `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(text, name, labels).first().map(|(_, v)| *v)
}

/// The sum over every series `name` whose labels include every pair in `labels`.
pub fn total(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(text, name, labels).iter().map(|(_, v)| v).sum()
}

/// `s` percent-encoded for a URL query (RFC 3986: everything but unreserved characters).
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_whole_values_and_unescape() {
        let text = "# HELP x y\nnetmon_up{host=\"a\\\"b\",service=\"xtcp:1\"} 1\nnetmon_up{host=\"a\",service=\"tcp:1\"} 0\nplain 3.5\n";
        assert_eq!(
            metric(text, "netmon_up", &[("service", "tcp:1")]),
            Some(0.0)
        );
        assert_eq!(metric(text, "netmon_up", &[("host", "a\"b")]), Some(1.0));
        assert_eq!(metric(text, "plain", &[]), Some(3.5));
        assert_eq!(total(text, "netmon_up", &[]), 1.0);
        assert_eq!(metric(text, "netmon_up", &[("service", "tcp")]), None);
    }
}
