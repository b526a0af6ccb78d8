//! Inputs that must be refused cheaply and with a clear error: deep nesting, too many errors,
//! too large a file.

use super::yaml::closes;
use super::*;

fn errors(text: &str) -> Vec<String> {
    load(text, "t.yml")
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn block_nesting_beyond_the_limit_is_an_error_at_its_line_not_a_stack_overflow() {
    // One line of `- - - ...`, 5,000 levels: the parse used to overflow the stack.
    let deep = format!(
        "targets:\n  127.0.0.1:\n    services:\n      {}TCP:1\n",
        "- ".repeat(5_000)
    );
    let e = errors(&deep);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("t.yml:4:") && e[0].contains("nested more than 64 levels deep here"),
        "{e:?}"
    );
    // One level per line, indented: the other way to write it.
    let mut lines = String::from("targets:\n  h:\n    services:\n");
    for i in 0..200 {
        lines.push_str(&format!("{}-\n", " ".repeat(6 + 2 * i)));
    }
    lines.push_str(&format!("{}TCP:1\n", " ".repeat(6 + 400)));
    let e = errors(&lines);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("nested more than 64"), "{e:?}");
}

#[test]
fn flow_nesting_beyond_the_limit_is_refused_too() {
    let deep = format!(
        "targets: {{h: {{services: {}TCP:1{}}}}}\n",
        "[".repeat(100),
        "]".repeat(100)
    );
    let e = errors(&deep);
    assert!(e[0].contains("nested more than 64"), "{e:?}");
}

#[test]
fn nesting_a_real_configuration_needs_is_accepted() {
    let text = "targets:\n  h:\n    labels: {site: a}\n    services:\n      - {type: http, port: 80, headers: {X-A: b}, tls: {insecure_skip_verify: true}}\n";
    load(text, "t.yml").unwrap();
}

#[test]
fn errors_beyond_a_hundred_are_counted_not_listed() {
    let text: String = std::iter::once("targets:\n".to_string())
        .chain((0..250).map(|i| format!("  h{i}:\n    services: [HTPP]\n")))
        .collect();
    let e = errors(&text);
    assert_eq!(e.len(), MAX_SHOWN + 1);
    assert_eq!(e.last().unwrap(), "t.yml: ... and 150 more errors");
}

#[test]
fn a_file_above_the_size_limit_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yml");
    let f = std::fs::File::create(&path).unwrap();
    // Sparse: the size is there without writing 16 MiB.
    f.set_len(MAX_FILE_SIZE + 1).unwrap();
    let e = load_file(&path).unwrap_err();
    assert!(matches!(e, LoadError::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("larger than 16 MiB"), "{e}");
}

#[test]
fn an_unclosed_bracket_is_reported_where_it_was_opened() {
    let e = errors("targets:\n  localhost:\n    services: [HTTP, ICMP\n    interval: 60\n");
    assert_eq!(
        e,
        [
            "t.yml:3:15: invalid YAML: unclosed `[` opened at 3:15: close the list with `]` (the parser stopped at 4:13: illegal placement of ':' indicator)"
        ]
    );
    // Closed further down, after other brackets, or open at the end of the file.
    let e = errors("targets:\n  a: {services: [TCP:22]\n  b: {services: [ICMP]}\n");
    assert!(
        e[0].starts_with(
            "t.yml:2:6: invalid YAML: unclosed `{` opened at 2:6: close the mapping with `}`"
        ),
        "{e:?}"
    );
    let e = errors("targets:\n  a:\n    services: [TCP:22\n");
    assert!(
        e[0].starts_with("t.yml:3:15: invalid YAML: unclosed `[`"),
        "{e:?}"
    );
}

#[test]
fn a_closed_bracket_is_not_blamed_for_another_error() {
    // A flow list over several lines is valid; the error here is the stray `:` inside it,
    // and the quoted `]` and the comment do not count as brackets.
    let text = "targets:\n  a:\n    services: [\"]\", # ]\n      TCP:22: x: y,\n      ICMP]\n";
    let e = errors(text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(!e[0].contains("unclosed"), "{e:?}");
    assert!(closes("[a, [b], 'it''s ]', \"\\\"]\"]".chars()));
    assert!(!closes("[a, [b]".chars()));
}

#[test]
fn a_url_as_a_target_key_says_where_the_url_goes() {
    let e = errors("targets:\n  http://127.0.0.1:9855/metrics: {services: [HTTP]}\n");
    assert_eq!(
        e,
        [
            "t.yml:2:3: `http://127.0.0.1:9855/metrics` is a URL, not a host name: write the host as the key and the URL in the service: `127.0.0.1: {services: [{type: http, url: \"http://127.0.0.1:9855/metrics\"}]}`"
        ]
    );
    let e = load_as(
        "targets:\n  tcp://[::1]:22: {services: [ICMP]}\n",
        "<console>",
        Dialect::Console,
    )
    .unwrap_err();
    assert_eq!(
        e.0[0].message,
        "`tcp://[::1]:22` is a URL, not a host name: write `add ::1 PROTOCOL:22`"
    );
}

#[test]
fn global_labels_reach_every_service_and_a_target_label_wins() {
    let c = load(
        "global: { labels: { site: fra1, team: net } }\ntargets:\n  a.example: { services: [ICMP] }\n  b.example: { labels: { site: ams1 }, services: [\"TCP:22\"] }\n",
        "netmon.yml",
    )
    .unwrap();
    let labels: Vec<_> = c.services().map(|s| s.labels.clone()).collect();
    assert_eq!(labels[0].get("site").map(String::as_str), Some("fra1"));
    assert_eq!(labels[0].get("team").map(String::as_str), Some("net"));
    assert_eq!(labels[1].get("site").map(String::as_str), Some("ams1"));
    assert_eq!(labels[1].get("team").map(String::as_str), Some("net"));
    // The target keeps only what it wrote, so saving does not copy the global labels into it.
    assert_eq!(c.targets[0].labels.len(), 0);
    let saved = crate::config::save::to_yaml(&c).unwrap();
    assert_eq!(load(&saved, "saved.yml").unwrap(), c, "{saved}");
}

#[test]
fn global_takes_only_labels_and_checks_them_as_a_target_does() {
    let e = load(
        "global: { label: { site: x } }\ntargets: { a: { services: [ICMP] } }\n",
        "netmon.yml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("1:11: unknown key `label` in `global`"), "{e}");
    assert!(e.contains("did you mean `labels`"), "{e}");
    let e = load(
        "global: { labels: { host: x } }\ntargets: { a: { services: [ICMP] } }\n",
        "netmon.yml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("label `host` is set by netmon itself"), "{e}");
}

#[test]
fn a_resolver_block_names_servers_and_the_cache() {
    let c = load(
        "defaults:\n  resolver: { nameservers: [\"127.0.0.1:5353\", 9.9.9.9, \"[::1]:53\"], cache: false, min_ttl: 5s, max_ttl: 1m }\ntargets: { a: { services: [ICMP] } }\n",
        "netmon.yml",
    )
    .unwrap();
    let r = c.defaults.resolver.clone().unwrap();
    assert_eq!(
        r.servers().unwrap(),
        vec![
            "127.0.0.1:5353".parse().unwrap(),
            "9.9.9.9:53".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert!(!r.cache);
    let saved = crate::config::save::to_yaml(&c).unwrap();
    assert_eq!(load(&saved, "saved.yml").unwrap(), c, "{saved}");
}

#[test]
fn a_wrong_resolver_block_says_what_to_write() {
    let err = |yaml: &str| {
        load(
            &format!("defaults:\n  resolver: {yaml}\ntargets: {{ a: {{ services: [ICMP] }} }}\n"),
            "netmon.yml",
        )
        .unwrap_err()
        .to_string()
    };
    let e = err("{ nameservers: [dns.google] }");
    assert!(
        e.contains("name server `dns.google` is not an IP address or IP:PORT"),
        "{e}"
    );
    let e = err("{ nameserver: [9.9.9.9] }");
    assert!(
        e.contains("2:15: unknown key `nameserver` in `resolver`"),
        "{e}"
    );
    assert!(e.contains("did you mean `nameservers`"), "{e}");
    let e = err("{ min_ttl: 10m, max_ttl: 1m }");
    assert!(e.contains("min_ttl (10m) is above max_ttl (1m)"), "{e}");
    let e = err("9.9.9.9");
    assert!(e.contains("`resolver` must be a mapping"), "{e}");
}

#[test]
fn a_host_name_longer_than_dns_allows_is_an_error_at_its_key() {
    let long = format!("{}.example", "a.".repeat(125));
    assert_eq!(long.len(), 258);
    let e = errors(&format!(
        "targets:\n  ok.test: {{services: [ICMP]}}\n  {long}: {{services: [ICMP]}}\n"
    ));
    assert_eq!(
        e,
        [format!(
            "t.yml:3:3: host name `{}…` is 258 bytes long: a DNS name has at most 253 bytes; shorten it or write the IP address",
            &long[..40]
        )]
    );
    // 253 bytes, and 253 with the trailing dot of an absolute name, are fine.
    let limit = format!("{}.{}", "a".repeat(63), "b.".repeat(93) + "ccc");
    assert_eq!(limit.len(), MAX_HOST_NAME);
    load(
        &format!("targets:\n  {limit}: {{services: [ICMP]}}\n  {limit}.: {{services: [ICMP]}}\n"),
        "t.yml",
    )
    .unwrap();
}

#[test]
fn a_host_label_longer_than_63_bytes_is_an_error_at_its_key() {
    let label = "x".repeat(64);
    let e = errors(&format!(
        "targets:\n  www.{label}.test:\n    services: [ICMP]\n"
    ));
    assert_eq!(
        e,
        [format!(
            "t.yml:2:3: host name `www.{}…` has a label of 64 bytes (`{}…`): each part between dots has at most 63 bytes; shorten it or write the IP address",
            &label[..36],
            &label[..40]
        )]
    );
    // IPv6 literals are not names, whatever their length.
    load(
        "targets:\n  \"0000:0000:0000:0000:0000:0000:0000:0001\": {services: [ICMP]}\n",
        "t.yml",
    )
    .unwrap();
}

#[test]
fn the_console_and_the_command_line_check_host_names_as_a_file_does() {
    use crate::config::single::OneService;
    let host = format!("{}.test", "y".repeat(70));
    for dialect in [Dialect::Console, Dialect::CommandLine] {
        let one = OneService {
            host: host.clone(),
            service: "tcp:22".into(),
            dialect,
            ..OneService::default()
        };
        let e = one.load("<console>").unwrap_err();
        assert_eq!(e.0.len(), 1, "{e}");
        assert!(
            e.0[0].message.contains("has a label of 70 bytes") && e.0[0].line > 0,
            "{e}"
        );
    }
}

#[test]
fn more_labels_than_the_cap_is_an_error_at_the_first_one_too_many() {
    let labels: Vec<String> = (0..40).map(|i| format!("l{i}: v")).collect();
    let text = format!(
        "targets:\n  h:\n    labels: {{{}}}\n    services: [ICMP]\n",
        labels.join(", ")
    );
    let e = errors(&text);
    let column = text.lines().nth(2).unwrap().find("l32:").unwrap() + 1;
    assert_eq!(
        e,
        [format!(
            "t.yml:3:{column}: target `h` has 40 labels, more than the 32 allowed (each is on every series of the target): remove 8 of them"
        )]
    );
    let at_cap: Vec<String> = (0..MAX_LABELS).map(|i| format!("l{i}: v")).collect();
    let c = load(
        &format!(
            "targets:\n  h:\n    labels: {{{}}}\n    services: [ICMP]\n",
            at_cap.join(", ")
        ),
        "t.yml",
    )
    .unwrap();
    assert_eq!(c.targets[0].labels.len(), MAX_LABELS);
    // `global:` labels are on every series of every service: the same cap.
    let text = format!(
        "global: {{labels: {{{}}}}}\ntargets: {{h: {{services: [ICMP]}}}}\n",
        labels.join(", ")
    );
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].ends_with("`global` has 40 labels, more than the 32 allowed (each is on every series of every service): remove 8 of them"),
        "{e:?}"
    );
}

#[test]
fn label_names_and_values_beyond_their_lengths_are_errors_at_them() {
    let name = "n".repeat(MAX_LABEL_NAME + 1);
    let value = "v".repeat(MAX_LABEL_VALUE + 1);
    let text = format!(
        "targets:\n  h:\n    labels:\n      {name}: a\n      site: {value}\n    services: [ICMP]\n"
    );
    assert_eq!(
        errors(&text),
        [
            format!(
                "t.yml:4:7: label name `{}…` is 129 bytes long: at most 128 are allowed; shorten it",
                &name[..40]
            ),
            "t.yml:5:13: the value of label `site` is 1025 bytes long: at most 1024 are allowed; shorten it".to_string(),
        ]
    );
    let text = format!(
        "targets:\n  h:\n    labels:\n      {}: a\n      site: {}\n    services: [ICMP]\n",
        &name[1..],
        &value[1..]
    );
    load(&text, "t.yml").unwrap();
}

/// splitmix64: a fixed, dependency-free sequence, so every run tries the same documents and a
/// failure names one that can be rebuilt.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn two_thousand_deep_long_and_malformed_documents_load_or_fail_quickly_without_panic() {
    const PRNG_START: u64 = 0x6e65_746d_6f6e;
    // Generous for a debug build on a loaded machine; a release build takes milliseconds.
    const PER_DOCUMENT: std::time::Duration = std::time::Duration::from_secs(2);
    let mut state = PRNG_START;
    let (mut valid, mut deep, mut slowest) = (0, 0, std::time::Duration::ZERO);
    for i in 0..2_000 {
        let len = 16 + (splitmix(&mut state) % 240) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| splitmix(&mut state) as u8).collect();
        let text = crate::fuzzing::deep_yaml::document(&bytes);
        let started = std::time::Instant::now();
        // The fuzz target's own checks: no panic, every error located, a valid config saves
        // and loads back equal.
        let outcome = std::panic::catch_unwind(|| crate::fuzzing::config_load(text.as_bytes()));
        let took = started.elapsed();
        let shown = limits::quoted(&text.replace('\n', "\\n"));
        assert!(
            outcome.is_ok(),
            "document {i} ({len} bytes of choices) panics: {shown}"
        );
        assert!(took < PER_DOCUMENT, "document {i} took {took:?}: {shown}");
        slowest = slowest.max(took);
        match load(&text, "t.yml") {
            Ok(_) => valid += 1,
            Err(e) if e.0.iter().any(|e| e.message.contains("nested more than")) => deep += 1,
            Err(_) => {}
        }
    }
    eprintln!("2000 documents: {valid} valid, {deep} refused as too deep, slowest {slowest:?}");
    // The generator reaches both ends: documents that load and nests beyond the limit.
    assert!(valid > 0 && deep > 0, "{valid} valid, {deep} too deep");
}

#[test]
fn ip_all_and_max_addresses_are_read_and_checked() {
    use crate::base::resolve::{DEFAULT_MAX_ADDRESSES, EveryAddress};
    use crate::base::values::IpPreference;

    let c = load(
        "targets:\n  h:\n    services:\n      - { type: tcp, port: 1, ip: all }\n      \
         - { type: icmp, ip: all-ipv4, max_addresses: 2 }\n      - { type: dns, ip: ipv6 }\n",
        "t.yml",
    )
    .unwrap();
    let every: Vec<Option<EveryAddress>> = c.services().map(|s| s.addresses).collect();
    assert_eq!(
        every,
        [
            Some(EveryAddress {
                family: IpPreference::Auto,
                max: DEFAULT_MAX_ADDRESSES
            }),
            Some(EveryAddress {
                family: IpPreference::Ipv4,
                max: 2
            }),
            None,
        ]
    );

    let e = errors("targets: { h: { services: [{ type: tcp, port: 1, max_addresses: 2 }] } }");
    assert!(
        e[0].contains("`max_addresses` only applies with `ip: all`"),
        "{e:?}"
    );
    for bad in ["0", "65", "many"] {
        let e = errors(&format!(
            "targets: {{ h: {{ services: [{{ type: tcp, port: 1, ip: all, max_addresses: {bad} }}] }} }}"
        ));
        assert!(
            e[0].contains(&format!(
                "`max_addresses: {bad}`: give a number from 1 to 64"
            )),
            "{e:?}"
        );
    }
    let e = errors(
        "targets: { h: { labels: { ip: x }, services: [{ type: tcp, port: 1, ip: all }] } }",
    );
    assert!(e[0].contains("already has a label `ip`"), "{e:?}");
    // A misspelt family still gets the protocol's own list of values.
    let e = errors("targets: { h: { services: [{ type: tcp, port: 1, ip: al }] } }");
    assert!(e[0].contains("`ip`"), "{e:?}");
}

mod discovery {
    use super::*;
    use crate::config::sd::{Format, parse};

    const CONFIG: &str = r#"
defaults: { interval: 10s }
global: { labels: { site: fra1, env: default } }
targets: { static.example: { services: [ICMP] } }
discovery:
  - file: /srv/sd/*.json
    services: [ICMP, HTTP, "TCP:22", { type: dns, name: resolver }, UDP]
"#;

    fn built(groups: &str) -> Result<Vec<Target>, ConfigErrors> {
        let config = load(CONFIG, "netmon.yml").unwrap();
        let groups = parse(groups, Format::Json, 100).unwrap();
        discovered(&config, &config.discovery[0], &groups)
    }

    fn service<'t>(targets: &'t [Target], host: &str, name: &str) -> &'t crate::config::Service {
        targets
            .iter()
            .flat_map(|t| &t.services)
            .find(|s| s.host == host && s.name == name)
            .unwrap_or_else(|| panic!("no {host} {name} in {targets:#?}"))
    }

    #[test]
    fn a_target_gets_the_template_its_port_and_its_labels() {
        let t = built(
            r#"[{"targets": ["a.example:9100", "b.example", "[::1]:8053"],
                 "labels": {"env": "prod", "__meta_dc": "x", "team": "db"}}]"#,
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        let names: Vec<_> = t[0].services.iter().map(|s| s.name.as_str()).collect();
        // The port goes to the services that take one and name none; `TCP:22` keeps its own.
        assert_eq!(
            names,
            ["icmp", "http:9100", "tcp:22", "resolver", "echo:9100"]
        );
        let b: Vec<_> = t[1].services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(b, ["icmp", "http", "tcp:22", "resolver", "echo"]);
        assert_eq!(service(&t, "::1", "resolver").options.port(), Some(8053));
        let s = service(&t, "a.example", "icmp");
        // `__` labels dropped, the group's label wins over the global one, defaults apply.
        let labels: Vec<_> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(labels, ["env=prod", "site=fra1", "team=db"]);
        assert_eq!(s.interval, std::time::Duration::from_secs(10));
    }

    #[test]
    fn bad_targets_and_labels_name_the_group_and_the_target() {
        let e = built(
            r#"[{"targets": ["ok.example"]},
                {"targets": ["bad host", "a:0", "x/y"], "labels": {"host": "x"}},
                {"targets": ["c"], "labels": {"1x": "y"}}]"#,
        )
        .unwrap_err();
        let e: Vec<_> = e.0.iter().map(ToString::to_string).collect();
        let all = e.join("\n");
        for want in [
            "discovery source `/srv/sd/*.json`: group 2 target `bad host`: `bad host` is not a host name or IP address",
            "group 2 target `a:0`: `a:0`: the port after `:` must be a number from 1 to 65535",
            "group 2 target `x/y`: `x/y` is not a host name or IP address",
            "group 3 target `c`: `1x` is not a valid label name",
        ] {
            assert!(all.contains(want), "{want}\n{all}");
        }
    }

    #[test]
    fn the_template_is_checked_when_the_config_is_read() {
        let e = errors(
            "discovery: [{file: /srv/a.json, services: [{type: tcp}]}, {file: /srv/b.json, services: []}]\n",
        );
        // `tcp` without a port is fine on a target that gives one; an empty list is not.
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("has an empty `services:` list"), "{e:?}");
        // A target without a port then says what is missing.
        let config = load(
            "discovery: [{file: /srv/a.json, services: [{type: tcp}]}]\n",
            "t.yml",
        )
        .unwrap();
        let groups = parse(r#"[{"targets": ["h"]}]"#, Format::Json, 10).unwrap();
        let e = discovered(&config, &config.discovery[0], &groups)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("group 1 target `h`: tcp service on `h`: a tcp service needs a port"),
            "{e}"
        );
    }

    #[test]
    fn service_options_apply_to_discovered_targets_as_to_static_ones() {
        let config = load(
            "discovery: [{file: /srv/a.json, services: [{type: tcp, ip: all, max_addresses: 2}]}]\n",
            "t.yml",
        )
        .unwrap();
        let groups = parse(r#"[{"targets": ["localhost:22"]}]"#, Format::Json, 10).unwrap();
        let t = discovered(&config, &config.discovery[0], &groups).unwrap();
        let s = &t[0].services[0];
        assert_eq!((s.name.as_str(), s.options.port()), ("tcp:22", Some(22)));
        assert_eq!(s.addresses.map(|a| a.max), Some(2));
    }

    #[test]
    fn static_services_win_over_discovered_ones() {
        let config = load(CONFIG, "netmon.yml").unwrap();
        let groups = parse(
            r#"[{"targets": ["static.example", "new.example"]}]"#,
            Format::Json,
            10,
        )
        .unwrap();
        let found = discovered(&config, &config.discovery[0], &groups).unwrap();
        let again = found.clone();
        let (merged, shadowed) = config.with_discovered([("first", found), ("second", again)]);
        // static.example's icmp is the file's; every other service of the two targets once.
        assert_eq!(merged.services().count(), 1 + 5 + 4);
        assert_eq!(shadowed.len(), 1 + 10);
        assert_eq!(shadowed[0].host, "static.example");
        assert_eq!(shadowed[0].service, "icmp");
        assert_eq!(shadowed[0].by, "static");
        assert!(shadowed[1..].iter().all(|s| s.source == "second"));
        let by_static = shadowed.iter().filter(|s| s.by == "static").count();
        assert_eq!(by_static, 2, "{shadowed:#?}");
        let icmp = merged
            .services()
            .find(|s| s.host == "static.example" && s.name == "icmp")
            .unwrap();
        assert_eq!(icmp.interval, std::time::Duration::from_secs(10));
    }
}
