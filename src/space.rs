//! Free space checks: refuse work that cannot fit before the disk fills.
//!
//! A base that does not fit on the cache or build filesystem would
//! otherwise fail with ENOSPC deep inside a download or an unpack, after
//! minutes of work, and often leave the filesystem full for everyone else.
//! Checking up front names the download or archive entry that is too big.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::sys::statvfs::statvfs;

use crate::progress::human_bytes;

/// Bytes an unprivileged writer may still use on the filesystem of `dir`
/// (`f_bavail`: root's reserved blocks are not counted, as a build running
/// as root should not eat them either).
// fsblkcnt_t and c_ulong are u64 here but u32 on some 32-bit targets.
#[allow(clippy::useless_conversion)]
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let st = statvfs(dir).with_context(|| format!("reading free space of {}", dir.display()))?;
    Ok(u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size())))
}

/// Fail unless `needed` bytes fit on the filesystem of `dir`. `what` names
/// the work ("downloading URL") in the error.
pub fn ensure_room(dir: &Path, needed: u64, what: &str) -> Result<()> {
    let free = free_bytes(dir)?;
    if needed > free {
        bail!(
            "{what}: needs {} but only {} is free on {}",
            human_bytes(needed),
            human_bytes(free),
            dir.display()
        );
    }
    Ok(())
}

/// A running estimate of the room left on one filesystem while many files
/// are written (an unpack writes tens of thousands). statvfs is asked only
/// when the estimate says an entry would not fit, so the common case costs
/// nothing and a real shortage is still confirmed against the filesystem.
#[derive(Debug)]
pub struct Room {
    dir: PathBuf,
    free: u64,
}

impl Room {
    pub fn new(dir: &Path) -> Result<Self> {
        Ok(Room {
            dir: dir.to_path_buf(),
            free: free_bytes(dir)?,
        })
    }

    /// Account for `bytes` about to be written; an error naming `what`
    /// (an archive entry) if they do not fit.
    pub fn take(&mut self, bytes: u64, what: impl FnOnce() -> String) -> Result<()> {
        if bytes > self.free {
            // Others may have freed space since; block rounding makes our
            // estimate drift too. Ask the filesystem before refusing.
            self.free = free_bytes(&self.dir)?;
            if bytes > self.free {
                bail!(
                    "{}: {} does not fit, only {} is free on {}",
                    what(),
                    human_bytes(bytes),
                    human_bytes(self.free),
                    self.dir.display()
                );
            }
        }
        self.free -= bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_beyond_the_free_space_names_the_work() {
        let dir = std::env::temp_dir();
        let free = free_bytes(&dir).unwrap();
        assert!(ensure_room(&dir, 1, "tiny").is_ok());
        let err = ensure_room(&dir, free.saturating_add(1 << 40), "downloading x").unwrap_err();
        assert!(
            format!("{err:#}").starts_with("downloading x: needs "),
            "{err:#}"
        );

        let mut room = Room::new(&dir).unwrap();
        room.take(1, || "a".into()).unwrap();
        let err = room
            .take(free.saturating_add(1 << 40), || "entry \"big\"".into())
            .unwrap_err();
        assert!(format!("{err:#}").starts_with("entry \"big\": "), "{err:#}");
    }
}
