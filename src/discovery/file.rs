//! file_sd sources: the files matching a source's patterns, read again when one of them
//! changes, appears or goes.
//!
//! Changes are found by polling: every `interval` the patterns are expanded again and each
//! file's size, modification time and inode compared with the last read. Polling costs a
//! `stat` per file and works where inotify does not (NFS, a Kubernetes ConfigMap's symlink
//! swap, a file replaced by `rename`); the `interval` (5 s unless set) bounds the delay.

use std::io::Read as _;
use std::path::PathBuf;
use std::time::SystemTime;

use crate::config::sd::{self, Format, MAX_DOCUMENT_BYTES, TargetGroup};

/// The most files one source's patterns may match: each is read and parsed on a change.
pub const MAX_FILES: usize = 1000;

/// Why the files of a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A pattern could not be expanded.
    #[error("pattern `{pattern}`: {message}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What went wrong.
        message: String,
    },
    /// The patterns match too many files.
    #[error(
        "the patterns match more than {MAX_FILES} files: narrow them, or split the files among several sources"
    )]
    TooMany,
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A file is over [`MAX_DOCUMENT_BYTES`].
    #[error(
        "{path} is larger than {MAX_DOCUMENT_BYTES} bytes, the most a file_sd file may hold: split it into several files"
    )]
    TooLarge {
        /// The file.
        path: String,
    },
    /// A file is not a valid list of groups, or over the source's `max_targets`.
    #[error("{path}: {error}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong with it.
        error: sd::SdError,
    },
    /// The reading thread stopped.
    #[error("the file reader stopped: {0}")]
    Stopped(String),
}

/// What identifies a version of a file without reading it.
type Stamp = (PathBuf, u64, Option<SystemTime>, u64);

/// The files of one source and what they said at the last read.
#[derive(Debug)]
pub struct Files {
    patterns: Vec<String>,
    max_targets: usize,
    last: Option<(Vec<Stamp>, Vec<TargetGroup>)>,
}

impl Files {
    /// The files matching `patterns`, giving at most `max_targets` targets in all.
    pub fn new(patterns: Vec<String>, max_targets: usize) -> Self {
        Files {
            patterns,
            max_targets,
            last: None,
        }
    }

    /// The groups of every file, read again only when a file changed since the last read
    /// that succeeded.
    pub async fn read(&mut self) -> Result<Vec<TargetGroup>, FileError> {
        let patterns = self.patterns.clone();
        let stamps = tokio::task::spawn_blocking(move || stamps(&patterns))
            .await
            .map_err(|e| FileError::Stopped(e.to_string()))??;
        if let Some((last, groups)) = &self.last {
            if *last == stamps {
                return Ok(groups.clone());
            }
        }
        let max = self.max_targets;
        let paths: Vec<PathBuf> = stamps.iter().map(|s| s.0.clone()).collect();
        let groups = tokio::task::spawn_blocking(move || read_all(&paths, max))
            .await
            .map_err(|e| FileError::Stopped(e.to_string()))??;
        self.last = Some((stamps, groups.clone()));
        Ok(groups)
    }
}

/// The files the patterns match now, sorted, each with its size, time and inode.
fn stamps(patterns: &[String]) -> Result<Vec<Stamp>, FileError> {
    use std::os::unix::fs::MetadataExt as _;
    let mut paths = Vec::new();
    for pattern in patterns {
        let found = glob::glob(pattern).map_err(|e| FileError::Pattern {
            pattern: pattern.clone(),
            message: e.to_string(),
        })?;
        for entry in found {
            let path = entry.map_err(|e| FileError::Pattern {
                pattern: pattern.clone(),
                message: e.to_string(),
            })?;
            // Files only, with an extension the format is known by: an editor's `x.yml~`
            // or a directory does not match `*.yml` anyway, but `*` alone would.
            if Format::of_path(&path).is_some() && path.is_file() {
                paths.push(path);
            }
            if paths.len() > MAX_FILES {
                return Err(FileError::TooMany);
            }
        }
    }
    paths.sort();
    paths.dedup();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        match std::fs::metadata(&path) {
            Ok(m) => out.push((path, m.len(), m.modified().ok(), m.ino())),
            // Gone between the listing and now: as if it had not been listed.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(FileError::Read {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// Every group of `paths`, at most `max_targets` targets in all.
fn read_all(paths: &[PathBuf], max_targets: usize) -> Result<Vec<TargetGroup>, FileError> {
    let mut groups = Vec::new();
    let mut left = max_targets;
    for path in paths {
        let shown = path.display().to_string();
        let Some(format) = Format::of_path(path) else {
            continue;
        };
        // A file known to be too large is not read at all; one that grows while read is
        // stopped at the limit.
        if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_DOCUMENT_BYTES) {
            return Err(FileError::TooLarge { path: shown });
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_DOCUMENT_BYTES + 1).read_to_string(&mut text))
            .map_err(|source| FileError::Read {
                path: shown.clone(),
                source,
            })?;
        if text.len() as u64 > MAX_DOCUMENT_BYTES {
            return Err(FileError::TooLarge { path: shown });
        }
        let found = sd::parse_within(&text, format, left, max_targets).map_err(|error| {
            FileError::Invalid {
                path: shown.clone(),
                error,
            }
        })?;
        left -= found.iter().map(|g| g.targets.len()).sum::<usize>();
        groups.extend(found);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn files_are_found_by_pattern_and_read_again_when_changed() {
        let dir = tempfile::tempdir().unwrap();
        let pattern = format!("{}/*.yml", dir.path().display());
        let mut files = Files::new(vec![pattern], 3);
        assert_eq!(files.read().await.unwrap(), vec![]);
        std::fs::write(dir.path().join("a.yml"), "- targets: [a, b]\n").unwrap();
        std::fs::write(dir.path().join("ignored.json"), "not even JSON").unwrap();
        let groups = files.read().await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].targets, ["a", "b"]);
        // Replaced by rename, as tools write them: a new inode.
        std::fs::write(dir.path().join("b.tmp"), "- targets: [c]\n").unwrap();
        std::fs::rename(dir.path().join("b.tmp"), dir.path().join("b.yml")).unwrap();
        assert_eq!(files.read().await.unwrap().len(), 2);
        // The cap counts the targets of every file.
        std::fs::write(dir.path().join("c.yml"), "- targets: [d]\n").unwrap();
        let e = files.read().await.unwrap_err().to_string();
        assert!(e.contains("c.yml: more than 3 targets"), "{e}");
        std::fs::remove_file(dir.path().join("c.yml")).unwrap();
        std::fs::write(dir.path().join("a.yml"), "- targets: a\n").unwrap();
        let e = files.read().await.unwrap_err().to_string();
        assert!(
            e.contains("a.yml: ") && e.contains("expected a list"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_file_over_the_size_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let f = std::fs::File::create(&path).unwrap();
        // Sparse: no disk is spent on it.
        f.set_len(MAX_DOCUMENT_BYTES + 1).unwrap();
        let mut files = Files::new(vec![path.display().to_string()], 10);
        let e = files.read().await.unwrap_err().to_string();
        assert!(e.contains("is larger than 16777216 bytes"), "{e}");
    }
}
