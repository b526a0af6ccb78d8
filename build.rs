//! Build script: records the git commit the binary is built from, for
//! `netmon_build_info{revision}`.
//!
//! The revision is `git rev-parse --short=12 HEAD`, with `-dirty` appended when tracked files
//! differ from that commit; it is `unknown` when git is missing or the crate is not built from
//! its own checkout (a crates.io tarball, or a directory that merely sits inside another
//! repository). Cargo reruns this script when HEAD moves: on `HEAD` itself, on the branch ref
//! it points to (a loose ref file or `packed-refs`) and on the index. In a worktree `.git` is
//! a file, so every path is asked of git (`--git-path`) rather than built by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=NETMON_GIT_REVISION");
    let dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    // A revision given from outside (a packager building from a tarball) wins.
    if let Some(given) = std::env::var("NETMON_GIT_REVISION")
        .ok()
        .filter(|v| !v.is_empty())
    {
        println!("cargo:rustc-env=NETMON_GIT_REVISION={given}");
        return;
    }
    let revision = revision(&dir).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=NETMON_GIT_REVISION={revision}");
}

/// Runs git in `dir` and returns its trimmed output, or `None` if it failed.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string())
}

/// The revision of the checkout at `dir`, or `None` when `dir` is not the top of one.
fn revision(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same(Path::new(&top), dir) {
        return None;
    }
    watch(dir, "HEAD");
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch(dir, &branch);
    }
    watch(dir, "packed-refs");
    // Every commit, checkout and reset appends to HEAD's reflog, even when the branch ref is
    // only in `packed-refs` and the commit writes a new loose file.
    watch(dir, "logs/HEAD");
    watch(dir, "index");
    let commit = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    // Edits to tracked files do not touch the index, so the sources are watched too: a build
    // that compiles changed code also refreshes the `-dirty` mark.
    for path in ["src", "Cargo.toml", "Cargo.lock"] {
        if dir.join(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let dirty = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["diff-index", "--quiet", "HEAD", "--"])
        .status()
        .is_ok_and(|s| s.code() == Some(1));
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

/// Asks cargo to rerun this script when git's file `name` (`HEAD`, a ref, `packed-refs`)
/// changes. A file that does not exist is not named: cargo would rerun on every build.
fn watch(dir: &Path, name: &str) {
    if let Some(path) = git(dir, &["rev-parse", "--git-path", name]) {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
