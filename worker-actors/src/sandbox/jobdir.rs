//! The job directory's total size and entry count, measured by the agent.
//!
//! RLIMIT_FSIZE bounds one file; nothing in an unprivileged process bounds a directory (disk
//! quotas and a size-limited file system need root, and a `tmpfs` in the trainer's mount
//! namespace would hold data sets and checkpoints in RAM). So the agent measures the trainer's
//! job directory, on a tick ([`super::limits::JOB_DIR_CHECK_PERIOD`]), at every checkpoint and
//! at the end of the run, and kills the trainer past [`JobLimits::dir_bytes`] or
//! [`JobLimits::dir_entries`].
//!
//! Guarantees of [`exceeded`]:
//! - it visits at most `dir_entries + 1` entries and stops there, whatever the trainer made;
//! - it follows no link (a link counts as an entry of its own size), so a planted link to
//!   the owner's files neither counts them nor lets the walk leave the directory;
//! - an entry counts the larger of its size and the bytes allocated to it, so neither a
//!   sparse file's holes nor blocks preallocated past its end go uncounted;
//! - entries that vanish during the walk (a checkpoint renamed or deleted) are skipped.
//!
//! Between two measurements a trainer can write at most what the disk takes in one tick.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::limits::{DirExceeded, JobLimits};

/// The first bound of `limits` that `dir` passes, if any (see the module's guarantees).
pub fn exceeded(dir: &Path, limits: &JobLimits) -> Option<DirExceeded> {
    let mut entries = 0u64;
    let mut bytes = 0u64;
    let mut pending: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(listing) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in listing.flatten() {
            entries += 1;
            if entries > limits.dir_entries {
                return Some(DirExceeded::Entries {
                    limit: limits.dir_entries,
                });
            }
            // `DirEntry::metadata` does not follow links.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            bytes = bytes.saturating_add(meta.len().max(meta.blocks().saturating_mul(512)));
            if bytes > limits.dir_bytes {
                return Some(DirExceeded::Bytes {
                    used: bytes,
                    limit: limits.dir_bytes,
                });
            }
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::limits::WallBound;

    fn limits(dir_bytes: u64, dir_entries: u64) -> JobLimits {
        JobLimits {
            wall: std::time::Duration::from_secs(1),
            wall_bound: WallBound::DeclaredWork,
            cpu_secs: 1,
            file_bytes: 1 << 20,
            dir_bytes,
            dir_entries,
        }
    }

    #[test]
    fn many_small_files_pass_the_entry_bound() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("checkpoints")).unwrap();
        for i in 0..9 {
            std::fs::write(dir.path().join("checkpoints").join(i.to_string()), b"x").unwrap();
        }
        assert_eq!(exceeded(dir.path(), &limits(1 << 20, 10)), None, "10 entries are allowed");
        std::fs::write(dir.path().join("one-more"), b"x").unwrap();
        assert_eq!(
            exceeded(dir.path(), &limits(1 << 20, 10)),
            Some(DirExceeded::Entries { limit: 10 })
        );
    }

    #[test]
    fn sparse_files_count_their_size_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![0u8; 1 << 20]).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        assert_eq!(exceeded(dir.path(), &limits(1 << 10, 100)), None, "the link's target is not counted");
        let sparse = std::fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        assert!(matches!(
            exceeded(dir.path(), &limits(1 << 29, 100)),
            Some(DirExceeded::Bytes { limit, .. }) if limit == 1 << 29
        ));
    }
}
