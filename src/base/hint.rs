//! "Did you mean" hints for names a user mistyped.

/// The valid name nearest to `given`, if one is near enough to be a likely typo.
pub fn nearest<'a>(given: &str, valid: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given = given.to_ascii_lowercase();
    valid
        .into_iter()
        .map(|v| {
            (
                strsim::damerau_levenshtein(&given, &v.to_ascii_lowercase()),
                v,
            )
        })
        .filter(|(d, v)| *d <= 2.max(v.len() / 3) && *d < v.len().max(given.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

/// ", did you mean `X`?" for a near miss, or an empty string.
pub fn did_you_mean<'a>(given: &str, valid: impl IntoIterator<Item = &'a str>) -> String {
    match nearest(given, valid) {
        Some(v) => format!(" (did you mean `{v}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_finds_transpositions_and_ignores_far_names() {
        let valid = ["http", "https", "icmp", "dns", "ntp", "tcp", "udp", "echo"];
        assert_eq!(nearest("HTPP", valid), Some("http"));
        assert_eq!(nearest("icpm", valid), Some("icmp"));
        assert_eq!(nearest("dsn", valid), Some("dns"));
        assert_eq!(nearest("gopher", valid), None);
    }
}
