//! Content negotiation for `/metrics`: whether the client takes a gzipped body.

use hyper::HeaderMap;
use hyper::header::ACCEPT_ENCODING;

/// Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3): `gzip` (or its old alias
/// `x-gzip`) or `*` with a weight above zero, and no `gzip;q=0` refusing it. Several header
/// lines count as one list; an unreadable one counts as absent, so such a client gets the
/// plain text, which every client takes.
pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    let mut gzip = None;
    let mut any = None;
    for value in headers.get_all(ACCEPT_ENCODING) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let weight = parts
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("q").then(|| v.trim())
                })
                // A weight that is not a number is read as the default, 1.
                .map_or(1.0, |q| q.parse::<f32>().unwrap_or(1.0));
            let accepted = weight > 0.0;
            if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
                // An explicit refusal wins over any acceptance of the same coding.
                gzip = Some(gzip.unwrap_or(true) && accepted);
            } else if coding == "*" {
                any = Some(any.unwrap_or(true) && accepted);
            }
        }
    }
    gzip.or(any).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn accepts(values: &[&str]) -> bool {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        accepts_gzip(&h)
    }

    #[test]
    fn accept_encoding_is_read_as_rfc_9110_says() {
        let table: &[(&[&str], bool)] = &[
            (&[], false),
            (&[""], false),
            (&["identity"], false),
            (&["gzip"], true),
            (&["GZip"], true),
            (&["x-gzip"], true),
            // What Prometheus sends.
            (&["gzip"], true),
            (&["deflate, gzip;q=1.0, *;q=0.5"], true),
            (&["br, gzip"], true),
            (&["br"], false),
            (&["gzip;q=0"], false),
            (&["gzip; q=0.000"], false),
            (&["gzip;Q=0"], false),
            (&["gzip;q=0.001"], true),
            (&["*"], true),
            (&["*;q=0"], false),
            (&["*, gzip;q=0"], false),
            (&["gzip;q=0, *"], false),
            (&["gzip;q=0", "*"], false),
            (&["identity", "gzip"], true),
            (&["*;q=0, gzip"], true),
            (&["gzip;q=nonsense"], true),
            (&[" , ,; ;=,"], false),
        ];
        for (values, want) in table {
            assert_eq!(accepts(values), *want, "{values:?}");
        }
    }

    #[test]
    fn a_header_that_is_not_text_counts_as_absent() {
        let mut h = HeaderMap::new();
        h.append(
            ACCEPT_ENCODING,
            HeaderValue::from_bytes(b"gzip\xff").unwrap(),
        );
        assert!(!accepts_gzip(&h));
        h.append(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(accepts_gzip(&h));
    }
}
