//! Hints: "did you mean" for names a user mistyped, and [`Dialect`], the syntax a hint is
//! written in so that it can be typed back where the mistake was made.

/// Where the text a hint answers was written. The same rule (a tcp service needs a port) is
/// fixed differently in a file (`TCP:22`), on `netmon check`'s command line (`--port 22`) and at
/// the console's prompt (`add HOST tcp:22`); a hint in another place's syntax sends the user
/// looking for a `port:` key that the command line does not have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dialect {
    /// A configuration file: `TCP:22`, `{type: tcp, port: 22}`.
    #[default]
    File,
    /// `netmon check PROTOCOL HOST` and its flags: `--port 22`, `-o KEY=VALUE`.
    CommandLine,
    /// The console's `add HOST PROTOCOL[:PORT]`.
    Console,
}

impl Dialect {
    /// How to give a `protocol` service on `host` the port it lacks; `port` is an example.
    pub fn give_port(self, protocol: &str, host: &str, port: u16) -> String {
        match self {
            Dialect::File => format!(
                "write `{}:{port}` or `{{type: {protocol}, port: {port}}}`",
                protocol.to_uppercase()
            ),
            Dialect::CommandLine => {
                format!("add `--port {port}`, e.g. `netmon check {protocol} {host} --port {port}`")
            }
            Dialect::Console => {
                format!("write `{protocol}:{port}`, e.g. `add {host} {protocol}:{port}`")
            }
        }
    }

    /// How to check netmon's own echo server, which a bare `UDP` means in a file.
    pub fn echo_instead(self, host: &str) -> String {
        match self {
            Dialect::File => "a bare `UDP` is the echo check".into(),
            Dialect::CommandLine => {
                format!("`netmon check echo {host}` checks netmon's echo server")
            }
            Dialect::Console => format!("`add {host} echo` checks netmon's echo server"),
        }
    }
}

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

    #[test]
    fn port_hints_speak_the_syntax_of_their_place() {
        let give = |d: Dialect| d.give_port("tcp", "h", 22);
        assert_eq!(
            give(Dialect::File),
            "write `TCP:22` or `{type: tcp, port: 22}`"
        );
        assert_eq!(
            give(Dialect::CommandLine),
            "add `--port 22`, e.g. `netmon check tcp h --port 22`"
        );
        assert_eq!(
            give(Dialect::Console),
            "write `tcp:22`, e.g. `add h tcp:22`"
        );
        for d in [Dialect::CommandLine, Dialect::Console] {
            assert!(!give(d).contains("port:"), "{d:?}: {}", give(d));
            assert!(!d.echo_instead("h").contains("UDP"), "{d:?}");
        }
    }
}
