//! Inputs that must be refused cheaply and with a clear error: deep nesting, too many errors,
//! too large a file.

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
