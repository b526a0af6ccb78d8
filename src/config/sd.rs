//! Prometheus' service discovery formats: the target groups of a file_sd file (JSON or YAML)
//! and of an http_sd answer (JSON), read within bounds.
//!
//! A document is a list of groups, `[{targets: ["host", "host:port"], labels: {k: v}}]`. The
//! reader counts targets as it goes and stops at the source's `max_targets`, so a list of a
//! million entries costs no more than the cap; the caller bounds the text itself
//! ([`MAX_DOCUMENT_BYTES`]). Turning groups into targets is the loader's
//! (`crate::config::loader::discovered`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// The largest file_sd file or http_sd answer read, in bytes: as large as a configuration
/// file may be, and some thousand times what a list of 10 000 targets takes.
pub const MAX_DOCUMENT_BYTES: u64 = 16 << 20;

/// One group: targets sharing labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroup {
    /// `targets:`, as written: `host` or `host:port` (`[v6]:port`).
    pub targets: Vec<String>,
    /// `labels:`, `__`-prefixed ones included (the loader drops them).
    pub labels: BTreeMap<String, String>,
}

/// How a document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON: http_sd answers and `.json` files.
    Json,
    /// YAML: `.yml` and `.yaml` files.
    Yaml,
}

impl Format {
    /// The format of a file_sd file by its extension, as Prometheus chooses it; `None` for
    /// any other extension.
    pub fn of_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "json" => Some(Format::Json),
            "yml" | "yaml" => Some(Format::Yaml),
            _ => None,
        }
    }
}

/// Why a document was refused.
#[derive(Debug, thiserror::Error)]
pub enum SdError {
    /// Not valid JSON/YAML, or not a list of groups.
    #[error(
        "{0}: a discovery document is a list of groups, e.g. `[{{\"targets\": [\"host:9100\"], \"labels\": {{\"env\": \"prod\"}}}}]`"
    )]
    Invalid(String),
    /// More targets than the source may give.
    #[error(
        "more than {0} targets: raise the source's `max_targets` or split it into several sources"
    )]
    TooManyTargets(usize),
}

/// Reads the groups of `text`, refusing more than `max_targets` targets in all.
pub fn parse(text: &str, format: Format, max_targets: usize) -> Result<Vec<TargetGroup>, SdError> {
    parse_within(text, format, max_targets, max_targets)
}

/// As [`parse`] for one of several documents of a source that may give `max_targets` in
/// all, `left` of them still.
pub fn parse_within(
    text: &str,
    format: Format,
    left: usize,
    max_targets: usize,
) -> Result<Vec<TargetGroup>, SdError> {
    let mut budget = Budget {
        left,
        exceeded: false,
    };
    let parsed = match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            Groups(&mut budget)
                .deserialize(&mut de)
                .and_then(|g| de.end().map(|()| g))
                .map_err(|e| e.to_string())
        }
        // An empty file is an empty list, as Prometheus reads it.
        Format::Yaml if text.trim().is_empty() => Ok(Vec::new()),
        Format::Yaml => Groups(&mut budget)
            .deserialize(serde_yaml::Deserializer::from_str(text))
            .map_err(|e| e.to_string()),
    };
    match parsed {
        Ok(groups) => Ok(groups),
        Err(_) if budget.exceeded => Err(SdError::TooManyTargets(max_targets)),
        Err(e) => Err(SdError::Invalid(e)),
    }
}

/// The targets still allowed.
struct Budget {
    left: usize,
    /// Whether the document had more: the error the reader stopped with is this one.
    exceeded: bool,
}

struct Groups<'b>(&'b mut Budget);

impl<'de> DeserializeSeed<'de> for Groups<'_> {
    type Value = Vec<TargetGroup>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Groups<'_> {
    type Value = Vec<TargetGroup>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of target groups")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut groups = Vec::new();
        while let Some(g) = seq.next_element_seed(Group(&mut *self.0))? {
            groups.push(g);
        }
        Ok(groups)
    }
}

struct Group<'b>(&'b mut Budget);

impl<'de> DeserializeSeed<'de> for Group<'_> {
    type Value = TargetGroup;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Group<'_> {
    type Value = TargetGroup;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a group: a mapping with `targets` (a list of strings) and `labels`")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut targets = None;
        let mut labels = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "targets" if targets.is_none() => {
                    targets = Some(map.next_value_seed(Targets(&mut *self.0))?);
                }
                "labels" if labels.is_none() => {
                    labels = Some(
                        map.next_value::<Option<BTreeMap<String, String>>>()?
                            .unwrap_or_default(),
                    );
                }
                "targets" | "labels" => {
                    return Err(de::Error::custom(format!(
                        "`{key}` is given twice in one group"
                    )));
                }
                other => return Err(de::Error::unknown_field(other, &["targets", "labels"])),
            }
        }
        Ok(TargetGroup {
            targets: targets.ok_or_else(|| de::Error::missing_field("targets"))?,
            labels: labels.unwrap_or_default(),
        })
    }
}

struct Targets<'b>(&'b mut Budget);

impl<'de> DeserializeSeed<'de> for Targets<'_> {
    type Value = Vec<String>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Targets<'_> {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of `host` or `host:port` strings")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut targets = Vec::new();
        while let Some(t) = seq.next_element::<String>()? {
            if self.0.left == 0 {
                self.0.exceeded = true;
                return Err(de::Error::custom("too many targets"));
            }
            self.0.left -= 1;
            targets.push(t);
        }
        Ok(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(targets: &[&str], labels: &[(&str, &str)]) -> TargetGroup {
        TargetGroup {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn json_and_yaml_give_the_same_groups() {
        let json = r#"[{"targets": ["a:9100", "b"], "labels": {"env": "prod", "__meta_x": "y"}},
                       {"targets": ["[::1]:80"]}]"#;
        let yaml =
            "- targets: [a:9100, b]\n  labels: {env: prod, __meta_x: y}\n- targets: ['[::1]:80']\n";
        let want = vec![
            group(&["a:9100", "b"], &[("env", "prod"), ("__meta_x", "y")]),
            group(&["[::1]:80"], &[]),
        ];
        assert_eq!(parse(json, Format::Json, 10).unwrap(), want);
        assert_eq!(parse(yaml, Format::Yaml, 10).unwrap(), want);
    }

    #[test]
    fn empty_documents_are_empty_lists() {
        assert_eq!(parse("[]", Format::Json, 10).unwrap(), vec![]);
        assert_eq!(parse("", Format::Yaml, 10).unwrap(), vec![]);
        assert_eq!(parse("# nothing yet\n", Format::Yaml, 10).unwrap(), vec![]);
    }

    #[test]
    fn wrong_types_say_what_was_expected() {
        let cases = [
            (r#"{"targets": ["a"]}"#, "expected a list of target groups"),
            (
                r#"[{"targets": "a"}]"#,
                "expected a list of `host` or `host:port` strings",
            ),
            (
                r#"[{"targets": [1]}]"#,
                "invalid type: integer `1`, expected a string",
            ),
            (
                r#"[{"targets": ["a"], "labels": {"env": 1}}]"#,
                "expected a string",
            ),
            (r#"[{"labels": {}}]"#, "missing field `targets`"),
            (
                r#"[{"targets": [], "lables": {}}]"#,
                "unknown field `lables`, expected `targets` or `labels`",
            ),
            (r#"[{"targets": ["a"]}"#, "EOF while parsing a list"),
            (r#"[] trailing"#, "trailing characters"),
        ];
        for (text, want) in cases {
            let e = parse(text, Format::Json, 10).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
            assert!(
                e.contains("a discovery document is a list of groups"),
                "{e}"
            );
        }
        let e = parse("targets: [a]\n", Format::Yaml, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a list of target groups"), "{e}");
    }

    #[test]
    fn a_million_targets_stop_at_the_cap() {
        let mut text = String::from(r#"[{"targets": ["#);
        for i in 0..1_000_000 {
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!("\"h{i}\""));
        }
        text.push_str("]}]");
        let e = parse(&text, Format::Json, 10_000).unwrap_err().to_string();
        assert_eq!(
            e,
            "more than 10000 targets: raise the source's `max_targets` or split it into several sources"
        );
        // The cap counts across groups.
        let two = r#"[{"targets": ["a", "b"]}, {"targets": ["c"]}]"#;
        assert!(parse(two, Format::Json, 2).is_err());
        assert_eq!(parse(two, Format::Json, 3).unwrap().len(), 2);
    }

    #[test]
    fn formats_follow_the_extension() {
        use std::path::Path;
        assert_eq!(Format::of_path(Path::new("/a/b.json")), Some(Format::Json));
        assert_eq!(Format::of_path(Path::new("b.yml")), Some(Format::Yaml));
        assert_eq!(Format::of_path(Path::new("b.yaml")), Some(Format::Yaml));
        assert_eq!(Format::of_path(Path::new("b.txt")), None);
        assert_eq!(Format::of_path(Path::new("b")), None);
    }
}
