//! A structure-aware generator of configuration-like YAML for the `config_deep` fuzz target
//! and the loader's property test: arbitrary bytes, read as a sequence of choices, become a
//! document built from netmon's own keys and protocols with the shapes that cost a YAML
//! loader most — block and flow nesting hundreds of levels deep (closed or not), keys and
//! values kilobytes long, numbers beyond every integer and float type, and the YAML
//! indicators that start anchors, tags, block scalars and directives. Plain byte mutation
//! rarely reaches these: a deep nest needs hundreds of matching brackets or indents in a row.
//!
//! The generator itself never recurses more than [`MAX_RECURSION`] levels: deep nests are
//! written by loops, so only the loader under test meets the depth.

use std::fmt::Write as _;

/// How deep the generator's own recursion goes; nests deeper than this are written by loops.
const MAX_RECURSION: usize = 6;

/// The keys a configuration uses, at every level, so that most documents get past the
/// unknown-key checks into the protocols' options.
const KEYS: &[&str] = &[
    "targets",
    "defaults",
    "echo_server",
    "services",
    "interval",
    "timeout",
    "labels",
    "type",
    "name",
    "port",
    "path",
    "url",
    "headers",
    "tls",
    "expect_status",
    "body_regex",
    "count",
    "payload_size",
    "query_name",
    "query_type",
    "transport",
    "max_offset",
    "send_hex",
    "expect_regex",
    "listen",
    "ip",
    "max_addresses",
    "site",
];

/// Scalars that are valid somewhere, or nearly: protocols, durations, numbers at and past the
/// limits of their types, and YAML's special forms.
const SCALARS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "ICMP",
    "NTP",
    "UDP",
    "TCP:22",
    "tcp",
    "dns",
    "echo",
    "udp:53",
    "30s",
    "500ms",
    "1h30m",
    "0",
    "-1",
    "65535",
    "65536",
    "1e400",
    "-1e400",
    "1.5e-324",
    "18446744073709551616",
    "-9223372036854775809",
    "0x7fffffffffffffff",
    "0o777",
    "2562047788015215h",
    "584942417355y",
    ".inf",
    ".nan",
    "~",
    "null",
    "true",
    "\"\"",
    "''",
    "\"\\u0000\\uD800\"",
    "'it''s'",
    "[]",
    "{}",
    "::1",
    "[::1]:80",
    "127.0.0.1",
    "example.com",
    "é",
    "\t",
    "&anchor x",
    "*anchor",
    "!tag x",
    "!!binary aGk=",
    "|",
    ">-",
    "? k",
    ":",
    "- ",
    "# c",
    "%YAML 1.2",
    "---",
    "...",
    "\"unterminated",
    "'unterminated",
    "{a: [b, {c: d}]}",
];

/// Services that load on any host.
const VALID_SERVICES: &[&str] = &[
    "ICMP",
    "HTTP",
    "\"TCP:22\"",
    "{type: tcp, port: 25, name: smtp}",
    "{type: dns, query_name: example.com}",
    "{type: http, path: /healthz, interval: 10s}",
];

/// Characters long runs are made of: plain, a host name's dots, digits, multi-byte, quotes.
const RUNS: &[&str] = &["a", "x.", "9", "é", "\"", "[", "{", "- ", ":"];

/// The input, read one byte per choice; zero once it is used up, so every input gives a
/// finite document.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }

    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[self.below(from.len())]
    }

    fn more(&self) -> bool {
        !self.0.is_empty()
    }
}

/// The document `data` describes: usually `targets:` with up to 16 hosts, each with keys and
/// services drawn from netmon's own, their values any of the shapes above.
pub fn document(data: &[u8]) -> String {
    let mut c = Choices(data);
    let mut out = String::new();
    if c.below(4) == 0 {
        out.push_str("defaults: ");
        value(&mut c, 0, 2, &mut out);
        out.push('\n');
    }
    if c.below(8) != 0 {
        out.push_str("targets:\n");
    }
    // One document in four is tame: every value valid, some at the length limits, so that
    // the save-and-reload check runs too.
    let tame = c.below(4) == 0;
    let mut hosts = 0;
    while c.more() && hosts < if tame { 4 } else { 16 } {
        hosts += 1;
        out.push_str("  ");
        match (tame, c.below(4)) {
            (true, _) => {
                let _ = write!(out, "{}.h{hosts}.test", "a".repeat(1 + c.below(63)));
            }
            (false, 0) => value(&mut c, MAX_RECURSION, 4, &mut out),
            (false, _) => {
                let _ = write!(out, "h{hosts}.{}", c.pick(&["test", "example", "1"]));
            }
        }
        out.push_str(":\n");
        if tame {
            let _ = writeln!(
                out,
                "    interval: {}",
                c.pick(&["30s", "1m", "1h30m", "86400"])
            );
            let _ = writeln!(
                out,
                "    labels: {{site: \"{}\", rack: r{}}}",
                "v".repeat(usize::from(c.byte()) * 4),
                c.byte()
            );
        }
        for _ in 0..if tame { 0 } else { c.below(4) } {
            let key = match c.below(4) {
                0 => c.pick(KEYS),
                _ => c.pick(&["interval", "timeout", "labels"]),
            };
            let _ = write!(out, "    {key}: ");
            value(&mut c, 0, 6, &mut out);
            out.push('\n');
        }
        out.push_str("    services:\n");
        let mut used = Vec::new();
        for _ in 0..=c.below(4) {
            // Half the services (all, when tame) are valid as they stand.
            let valid = c.pick(VALID_SERVICES);
            if tame && used.contains(&valid) {
                continue;
            }
            used.push(valid);
            out.push_str("      - ");
            match (tame, c.below(2)) {
                (true, _) | (false, 0) => out.push_str(valid),
                (false, _) => value(&mut c, 0, 8, &mut out),
            }
            out.push('\n');
        }
    }
    out
}

/// Appends one value at `depth` of the generator's recursion, on a line indented by `indent`.
fn value(c: &mut Choices, depth: usize, indent: usize, out: &mut String) {
    let kind = if depth >= MAX_RECURSION {
        c.below(4)
    } else {
        c.below(12)
    };
    match kind {
        0 => out.push_str(c.pick(SCALARS)),
        // A run up to 16 KiB: a long key, value, host label, or a long line of brackets.
        1 => {
            let n = usize::from(c.byte()) * 64 + usize::from(c.byte());
            out.push_str(&c.pick(RUNS).repeat(n));
        }
        // A number with hundreds of digits, maybe signed, fractional or with an exponent.
        2 => {
            out.push_str(c.pick(&["", "-", "+", "0."]));
            out.push('1');
            out.push_str(&"9".repeat(usize::from(c.byte()) * 4));
            out.push_str(c.pick(&["", "e999999999", ".5", "s", "ms", "h"]));
        }
        // Printable ASCII straight from the input.
        3 => {
            for _ in 0..c.below(32) {
                out.push(char::from(b' ' + c.byte() % 95));
            }
        }
        // Flow nesting up to 1,020 levels, closed or not.
        4 => {
            let n = usize::from(c.byte()) * 4;
            let opens: Vec<bool> = (0..n).map(|_| c.byte() % 2 == 0).collect();
            for &list in &opens {
                out.push_str(if list { "[" } else { "{k: " });
            }
            out.push_str(c.pick(SCALARS));
            if c.below(4) != 0 {
                for &list in opens.iter().rev() {
                    out.push(if list { ']' } else { '}' });
                }
            }
        }
        // Block nesting up to 255 levels: `- - - x` on one line, or one level per line.
        5 => {
            let n = usize::from(c.byte());
            if c.byte() % 2 == 0 {
                out.push_str(&"- ".repeat(n));
                out.push_str(c.pick(SCALARS));
            } else {
                for i in 0..n {
                    out.push('\n');
                    out.push_str(&" ".repeat(indent + 2 + 2 * i));
                    out.push_str(if i % 2 == 0 { "-" } else { "k:" });
                }
                out.push(' ');
                out.push_str(c.pick(SCALARS));
            }
        }
        // A flow list or mapping of a few values.
        6 | 7 => {
            let map = kind == 7;
            out.push(if map { '{' } else { '[' });
            for i in 0..c.below(5) {
                if i > 0 {
                    out.push_str(", ");
                }
                if map {
                    let _ = write!(out, "{}: ", c.pick(KEYS));
                }
                value(c, depth + 1, indent, out);
            }
            out.push(if map { '}' } else { ']' });
        }
        // A block mapping of a few keys, one indent deeper.
        8 => {
            for _ in 0..=c.below(4) {
                out.push('\n');
                let _ = write!(out, "{}{}: ", " ".repeat(indent + 2), c.pick(KEYS));
                value(c, depth + 1, indent + 2, out);
            }
        }
        // A service as netmon reads it, its values any shape.
        9 => {
            let _ = write!(out, "{{type: {}", c.pick(SCALARS));
            for _ in 0..c.below(4) {
                let _ = write!(out, ", {}: ", c.pick(KEYS));
                value(c, depth + 1, indent, out);
            }
            out.push('}');
        }
        // Labels, up to 64 of them (the cap is 32).
        10 => {
            out.push('{');
            for i in 0..c.below(64) {
                let _ = write!(out, "{}l{i}: v", if i > 0 { ", " } else { "" });
            }
            out.push('}');
        }
        // The same key twice.
        _ => {
            let key = c.pick(KEYS);
            let _ = write!(out, "{{{key}: 1, {key}: 2}}");
        }
    }
}
