//! Small value types the configuration is made of: durations written as `500ms`, `30s`, `2m`
//! or bare seconds, and regular expressions compiled while the file is read. Both keep what the
//! user wrote so a running config can be compared on reload and written back by `save`.

use std::fmt;
use std::time::Duration as StdDuration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration from the config: `500ms`, `30s`, `2m`, `1h30m`, or a bare number of seconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub StdDuration);

impl Duration {
    /// Parses what a user may write. Errors say what is accepted.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err(
                "empty duration: write e.g. `30s`, `500ms`, `2m` or a number of seconds".into(),
            );
        }
        if let Ok(secs) = t.parse::<f64>() {
            if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
                return Err(format!(
                    "invalid duration `{t}`: seconds must be between 0 and 1e9"
                ));
            }
            return Ok(Self(StdDuration::from_secs_f64(secs)));
        }
        humantime::parse_duration(t).map(Self).map_err(|_| {
            format!("invalid duration `{t}`: write e.g. `30s`, `500ms`, `2m`, `1h30m` or a number of seconds")
        })
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as `30s`, `500ms`, `2m` or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Duration::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Duration::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Duration::parse(&v.to_string()).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string().replace(' ', ""))
    }
}

/// A regular expression compiled when the config is read, so a bad pattern is a config error
/// with a location rather than a probe failure at run time.
#[derive(Clone)]
pub struct Regex(pub regex::Regex);

thread_local! {
    /// The regexes compiled so far by the [`Regex::sharing`] call running on this thread, by
    /// pattern; `None` outside one.
    static SHARED: std::cell::RefCell<Option<std::collections::HashMap<String, regex::Regex>>> =
        const { std::cell::RefCell::new(None) };
}

/// Ends a [`Regex::sharing`] scope, also when it unwinds.
struct EndSharing;

impl Drop for EndSharing {
    fn drop(&mut self) {
        SHARED.with(|s| s.borrow_mut().take());
    }
}

impl Regex {
    /// Runs `f` with every pattern compiled once and shared by the regexes that repeat it.
    /// A compiled regex takes some 8 KiB however short its pattern, and a generated file often
    /// repeats one pattern on every service: sharing took `netmon config check` on 60,000
    /// services with `expect_regex: "^SSH-"` from 903 to 555 MiB (BENCHMARKS.md). Clones of a `regex::Regex` share its program (and each gets its own match
    /// cache when first used), so sharing changes nothing but memory. The table lives only as
    /// long as `f`, so nothing is kept across loads.
    pub fn sharing<T>(f: impl FnOnce() -> T) -> T {
        SHARED.with(|s| s.borrow_mut().get_or_insert_with(Default::default).clear());
        let _end = EndSharing;
        f()
    }

    /// Compiles `pattern`, with a bounded program size so a hostile config cannot eat memory.
    pub fn new(pattern: &str) -> Result<Self, String> {
        let shared = SHARED.with(|s| s.borrow().as_ref().and_then(|m| m.get(pattern).cloned()));
        if let Some(re) = shared {
            return Ok(Self(re));
        }
        let compiled = Self::compile(pattern)?;
        SHARED.with(|s| {
            if let Some(m) = s.borrow_mut().as_mut() {
                m.insert(pattern.to_string(), compiled.0.clone());
            }
        });
        Ok(compiled)
    }

    fn compile(pattern: &str) -> Result<Self, String> {
        regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map(Self)
            .map_err(|e| {
                // regex's message spans lines (pattern, caret, cause); the cause is the last one.
                let text = e.to_string();
                let cause = text
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
                    .to_string();
                format!("invalid regular expression `{pattern}`: {cause}")
            })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Regex {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Regex {}

impl fmt::Debug for Regex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.as_str())
    }
}

impl<'de> Deserialize<'de> for Regex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Regex::new(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Regex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Which address family a probe uses when a name resolves to both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpPreference {
    /// IPv4 first, then IPv6 (the order the resolver gives, IPv4 preferred).
    #[default]
    Auto,
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

impl IpPreference {
    /// True when `self` is the default, so `save` can leave it out.
    pub fn is_auto(&self) -> bool {
        *self == IpPreference::Auto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_shared_by_pattern_only_inside_a_sharing_scope() {
        let (a, b, bad) =
            Regex::sharing(|| (Regex::new("^SSH-"), Regex::new("^SSH-"), Regex::new("(")));
        assert_eq!(a, b);
        assert!(a.unwrap().0.is_match("SSH-2.0") && b.unwrap().0.is_match("SSH-2.0"));
        assert!(bad.unwrap_err().contains("invalid regular expression `(`"));
        // The table ends with the scope, also when the scope panics.
        assert!(SHARED.with(|s| s.borrow().is_none()));
        let _ = std::panic::catch_unwind(|| Regex::sharing(|| panic!("inside")));
        assert!(SHARED.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(
            Duration::parse("500ms").unwrap().0,
            StdDuration::from_millis(500)
        );
        assert_eq!(
            Duration::parse("30s").unwrap().0,
            StdDuration::from_secs(30)
        );
        assert_eq!(
            Duration::parse("2m").unwrap().0,
            StdDuration::from_secs(120)
        );
        assert_eq!(Duration::parse("60").unwrap().0, StdDuration::from_secs(60));
        assert_eq!(
            Duration::parse("1.5").unwrap().0,
            StdDuration::from_millis(1500)
        );
        assert!(Duration::parse("-1").is_err());
        assert!(
            Duration::parse("5 parsecs")
                .unwrap_err()
                .contains("invalid duration")
        );
    }

    #[test]
    fn durations_round_trip_through_display() {
        for s in ["500ms", "30s", "2m", "1h 30m"] {
            let d = Duration::parse(s).unwrap();
            assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        }
    }
}
