//! Which disk may be installed to, decided before a single byte is written.
//!
//! The write command's rules (a whole disk, not busy, not the running
//! system's) plus the installer's own: never the live medium the system
//! runs from, and big enough for the root. Fixed disks are the point here,
//! so they are not refused.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::progress::human_bytes;
use crate::write::devices::{dev_id, DevId, Disk, Sysfs, Usage};
use crate::write::safety;

/// A disk that passed every check.
#[derive(Clone, Debug)]
pub struct Target {
    /// As the user named it.
    pub path: PathBuf,
    pub disk: Disk,
}

impl Target {
    pub fn shown(&self) -> String {
        if self.disk.path != self.path {
            format!("{} ({})", self.path.display(), self.disk.path.display())
        } else {
            self.path.display().to_string()
        }
    }
}

/// What the checks compare against.
pub struct Checks<'a> {
    pub sysfs: &'a Sysfs,
    pub usage: &'a Usage,
    /// The whole disk the live system was booted from, if known.
    pub medium: Option<&'a Path>,
    /// Bytes the install needs on the target.
    pub need: u64,
}

fn rdev_of(path: &Path) -> Option<DevId> {
    let m = fs::metadata(path).ok()?;
    m.file_type().is_block_device().then(|| dev_id(m.rdev()))
}

pub fn check(path: &Path, c: &Checks) -> Result<Target> {
    let shown = path.display();
    let meta = fs::metadata(path).with_context(|| format!("{shown}: cannot use it as a target"))?;
    let disk = safety::whole_disk(&shown.to_string(), &meta, c.sysfs, c.usage)?;
    if let Some(medium) = c.medium {
        let same_disk = rdev_of(medium)
            .and_then(|d| c.sysfs.disk_name_of(d))
            .is_some_and(|n| n == disk.name);
        if same_disk {
            bail!(
                "{shown}: is the live medium this system runs from ({})",
                medium.display()
            );
        }
    }
    let root = fs::metadata("/").context("reading /")?;
    if c.sysfs
        .disks_under(dev_id(root.dev()), c.usage)
        .contains(&disk.name)
    {
        bail!("{shown}: holds the running system's root file system");
    }
    let uses = disk.uses();
    if !uses.is_empty() {
        bail!("{shown}: in use: {}", uses.join("; "));
    }
    if disk.read_only {
        bail!("{shown}: is read-only");
    }
    if disk.size < c.need {
        bail!(
            "{shown}: too small: {} for an install that needs {}",
            human_bytes(disk.size),
            human_bytes(c.need)
        );
    }
    Ok(Target {
        path: path.to_path_buf(),
        disk,
    })
}

/// The device node of partition `n` of `disk` (`/dev/vda` -> `/dev/vda3`,
/// `/dev/loop0` or `/dev/nvme0n1` -> `...p3`).
pub fn partition_path(disk: &Path, n: u32) -> PathBuf {
    let s = disk.display().to_string();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{n}"))
    } else {
        PathBuf::from(format!("{s}{n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names() {
        assert_eq!(
            partition_path(Path::new("/dev/vda"), 3),
            Path::new("/dev/vda3")
        );
        assert_eq!(
            partition_path(Path::new("/dev/loop7"), 1),
            Path::new("/dev/loop7p1")
        );
        assert_eq!(
            partition_path(Path::new("/dev/nvme0n1"), 2),
            Path::new("/dev/nvme0n1p2")
        );
    }

    #[test]
    fn a_regular_file_is_refused() {
        let t = tempfile::NamedTempFile::new().unwrap();
        let (sysfs, usage) = (Sysfs::default(), Usage::default());
        let c = Checks {
            sysfs: &sysfs,
            usage: &usage,
            medium: None,
            need: 0,
        };
        let e = check(t.path(), &c).unwrap_err();
        assert!(format!("{e:#}").contains("not a block device"), "{e:#}");
    }
}
