//! The size limits on what one configuration may name: host names as DNS allows them, and the
//! number and length of a target's `labels`. Each limit is far above what a real configuration
//! needs and bounds what one entry costs in every series it labels (docs/faults.md).

/// The longest host name, in bytes, without a trailing dot (RFC 1035 §2.3.4 and RFC 1123
/// §2.1: 255 bytes on the wire are 253 written out).
pub const MAX_HOST_NAME: usize = 253;

/// The longest label of a host name (the part between two dots), in bytes (RFC 1035 §2.3.4).
pub const MAX_HOST_LABEL: usize = 63;

/// The most `labels:` one target may have. Every series of each of its services carries them
/// all, so the cap bounds the size of a series, not only of the file.
pub const MAX_LABELS: usize = 32;

/// The longest label name, in bytes.
pub const MAX_LABEL_NAME: usize = 128;

/// The longest label value, in bytes.
pub const MAX_LABEL_VALUE: usize = 1024;

/// The largest `max_targets:` a discovery source may set: each target costs a task and some
/// series per service, so a million is already far past what one instance probes well.
pub const MAX_TARGETS_CEILING: usize = 1_000_000;

/// How much of an over-long value an error message quotes.
const QUOTED: usize = 40;

/// The first [`QUOTED`] characters of `text`, with `…` when there is more, for messages about
/// values too long to repeat whole.
pub(super) fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Why `name` cannot be a host name by its length, or `None` if its length is fine. IP
/// literals are never too long; one trailing dot (an absolute name) is allowed.
pub(super) fn host_name_too_long(name: &str) -> Option<String> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.len() > MAX_HOST_NAME {
        return Some(format!(
            "host name `{}` is {} bytes long: a DNS name has at most {MAX_HOST_NAME} bytes; shorten it or write the IP address",
            quoted(name),
            bare.len()
        ));
    }
    let label = bare.split('.').find(|l| l.len() > MAX_HOST_LABEL)?;
    Some(format!(
        "host name `{}` has a label of {} bytes (`{}`): each part between dots has at most {MAX_HOST_LABEL} bytes; shorten it or write the IP address",
        quoted(name),
        label.len(),
        quoted(label)
    ))
}
