//! Choosing the data directory for a new upload, the way glance_store's `file` driver does
//! (`Store._find_best_datadir`): the highest priority level that has a directory with room for the
//! declared size, and within that level the directory with the most free space.
//!
//! The choice itself ([`choose_datadir`]) is a pure function of priorities and free-space numbers so
//! it can be tested without real filesystems; [`free_space`] asks the kernel for the numbers.

use std::path::Path;

use nix::sys::statvfs::statvfs;

/// One candidate directory as the choice sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Higher is preferred (glance_store sorts priorities in descending order).
    pub priority: i64,
    /// Bytes available to an unprivileged writer.
    pub free: u64,
}

/// Returns the index of the directory to write an image of `declared_size` bytes to, or None
/// when no directory has room.
///
/// Unknown size counts as 0 bytes, as in glance_store: any directory fits, so the choice is the
/// one with most free space at the highest priority. Ties go to the directory listed first.
pub fn choose_datadir(candidates: &[Candidate], declared_size: Option<u64>) -> Option<usize> {
    let needed = declared_size.unwrap_or(0);
    let mut priorities: Vec<i64> = candidates.iter().map(|c| c.priority).collect();
    priorities.sort_unstable_by(|a, b| b.cmp(a));
    priorities.dedup();
    priorities.into_iter().find_map(|priority| {
        let mut best: Option<usize> = None;
        for (index, candidate) in candidates.iter().enumerate() {
            if candidate.priority != priority || candidate.free < needed {
                continue;
            }
            if best.is_none_or(|best| candidate.free > candidates[best].free) {
                best = Some(index);
            }
        }
        best
    })
}

/// Free bytes in the filesystem holding `path`, as an unprivileged process sees them:
/// `f_bavail * f_frsize` (the blocks reserved for root do not count, matching glance_store).
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let stats = statvfs(path).map_err(std::io::Error::from)?;
    #[allow(clippy::useless_conversion)] // The field types differ between platforms.
    let free = u64::from(stats.blocks_available()).saturating_mul(u64::from(stats.fragment_size()));
    Ok(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn candidates(list: &[(i64, u64)]) -> Vec<Candidate> {
        list.iter()
            .map(|&(priority, free)| Candidate { priority, free })
            .collect()
    }

    /// Candidates as (priority, free), the declared size, and the expected index.
    type Case = (&'static [(i64, u64)], Option<u64>, Option<usize>);

    const CASES: &[Case] = &[
        // Highest priority first, even with less free space than a lower level.
        (&[(0, 100 * GIB), (10, 5 * GIB)], Some(GIB), Some(1)),
        // Within the level, the most free space.
        (
            &[(10, 5 * GIB), (10, 7 * GIB), (0, 100 * GIB)],
            Some(GIB),
            Some(1),
        ),
        // The high level has no room: fall back to the next level down.
        (
            &[(10, 5 * GIB), (0, 100 * GIB), (5, 2 * GIB)],
            Some(6 * GIB),
            Some(1),
        ),
        // Fall back one level only as far as needed.
        (
            &[(10, GIB), (5, 8 * GIB), (0, 100 * GIB)],
            Some(6 * GIB),
            Some(1),
        ),
        // Exactly the free space fits; one byte more does not.
        (&[(0, GIB)], Some(GIB), Some(0)),
        (&[(0, GIB)], Some(GIB + 1), None),
        // A directory without room does not win its level even with the most free space nearby.
        (&[(10, 3 * GIB), (10, 4 * GIB)], Some(4 * GIB), Some(1)),
        // Unknown size: the most free space at the highest priority.
        (&[(0, 100 * GIB), (10, GIB), (10, 2 * GIB)], None, Some(2)),
        // Unknown size fits even a full directory: the write will report Full if it is.
        (&[(0, 0)], None, Some(0)),
        // Negative priorities are below 0.
        (&[(-1, 100 * GIB), (0, GIB)], Some(GIB), Some(1)),
        // Ties go to the first listed.
        (&[(0, GIB), (0, GIB)], Some(1), Some(0)),
        // Nothing fits anywhere.
        (&[(10, GIB), (0, 2 * GIB)], Some(3 * GIB), None),
        (&[], None, None),
    ];

    #[test]
    fn choice_is_by_priority_then_free_space() {
        for (index, &(list, declared_size, expected)) in CASES.iter().enumerate() {
            assert_eq!(
                choose_datadir(&candidates(list), declared_size),
                expected,
                "case {index}: {list:?} declared {declared_size:?}"
            );
        }
    }

    #[test]
    fn free_space_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        free_space(dir.path()).unwrap();
        let missing = dir.path().join("missing");
        assert_eq!(
            free_space(&missing).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
