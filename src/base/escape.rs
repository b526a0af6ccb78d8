//! Bytes from the network shown in a message: escaped so a log line stays one line of plain
//! text, and bounded so a chatty peer cannot fill the log. Text put into HTML (host names,
//! labels and messages on the status page) is escaped by [`html`].

use std::fmt::Write;

/// How many received bytes a failure message shows.
pub const SHOWN_BYTES: usize = 64;

/// `bytes` as a double-quoted string of at most [`SHOWN_BYTES`] of them: printable ASCII as
/// is, `\r`, `\n`, `\t`, `\"` and `\\` escaped, anything else as `\xNN`. A longer input ends
/// with `...` and says how many bytes there were in all.
pub fn shown(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(SHOWN_BYTES)];
    let mut out = String::with_capacity(head.len() + 2);
    out.push('"');
    for &b in head {
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out.push('"');
    if bytes.len() > head.len() {
        let _ = write!(out, "... ({} bytes in all)", bytes.len());
    }
    out
}

/// `text` safe inside HTML element content and quoted attribute values: `<`, `>`, `&`, `"`
/// and `'` become character references.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_both_quotes() {
        assert_eq!(
            html(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(html("héllo"), "héllo");
    }

    #[test]
    fn control_bytes_are_escaped_and_long_input_is_cut() {
        assert_eq!(
            shown(b"SSH-2.0-OpenSSH_9.2\r\n"),
            r#""SSH-2.0-OpenSSH_9.2\r\n""#
        );
        assert_eq!(shown(b"a\"b\\c\td\x00\xff"), r#""a\"b\\c\td\x00\xff""#);
        assert_eq!(shown(b""), r#""""#);
        let long = [b'x'; 100];
        let s = shown(&long);
        assert!(s.starts_with(&format!("\"{}\"", "x".repeat(64))), "{s}");
        assert!(s.ends_with("... (100 bytes in all)"), "{s}");
        // Exactly the limit is shown whole.
        assert!(!shown(&long[..64]).contains("..."));
    }
}
