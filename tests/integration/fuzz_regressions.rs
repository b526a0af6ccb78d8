//! Replays every stored fuzzing input through the fuzz targets' own entry points
//! (`netmon::fuzzing`), so plain `cargo test` guards each fix without cargo-fuzz or nightly.
//!
//! - `fuzz/regressions/<target>/<name>`: inputs that once crashed a target (see
//!   docs/fuzzing.md for what each one found).
//! - `fuzz/seeds/<target>/<name>`: the hand-written starting corpus `fuzz/run.sh` starts from;
//!   valid inputs among them exercise the round-trip assertions.

use std::path::{Path, PathBuf};

use netmon::fuzzing::TARGETS;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs each input of `kind` through its target; returns how many ran. A panic names the file.
fn replay(kind: &str) -> usize {
    let mut ran = 0;
    for (target, run) in TARGETS {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).expect("a readable input");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target} panics on {}", file.display());
            ran += 1;
        }
    }
    ran
}

#[test]
fn every_stored_crash_input_is_handled() {
    // Zero is fine before the first finding; the directories are read either way.
    let n = replay("regressions");
    eprintln!("replayed {n} regression inputs");
}

#[test]
fn every_seed_input_is_handled() {
    let n = replay("seeds");
    assert!(
        n >= TARGETS.len(),
        "each target has at least one corpus input: {n}"
    );
}

#[test]
fn every_target_has_a_fuzz_binary() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml"))
            .expect("fuzz/Cargo.toml");
    for (target, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} is missing from fuzz/Cargo.toml"
        );
    }
}
