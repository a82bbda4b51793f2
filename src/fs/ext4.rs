//! The persistence partition: an empty ext4 filesystem with the folders
//! dracut's dmsquash-live expects for a persistent overlayfs overlay
//! (`rd.live.overlay=LABEL=<label>:/LiveOS/overlay` uses `/LiveOS/overlay`
//! as the upper dir and its sibling `/LiveOS/ovlwork` as the work dir).
//!
//! mkfs.ext4 and debugfs (package e2fsprogs) make it. `mkfs.ext4 -d` would
//! copy the staging folders' ctime, which cannot be set, so the folders are
//! made with debugfs instead; both honour E2FSPROGS_FAKE_TIME, and the UUID
//! and directory hash seed are given, so the bytes are reproducible.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::system::command::Task;
use crate::system::tool;

pub fn check_tools() -> Result<()> {
    for name in ["mkfs.ext4", "debugfs"] {
        tool::require(name, "e2fsprogs")?;
    }
    Ok(())
}

/// Writes an ext4 image of `size` bytes (rounded down to 4 KiB) to `out`.
pub fn make_persistence(out: &Path, size: u64, label: &str, uuid: &str, epoch: i64) -> Result<()> {
    check_tools()?;
    let size = size / 4096 * 4096;
    {
        let f = File::create(out).with_context(|| format!("creating {}", out.display()))?;
        // Sparse: the empty filesystem costs a few MiB on disk.
        f.set_len(size)
            .with_context(|| format!("sizing {}", out.display()))?;
    }
    let fake_time = epoch.to_string();
    let mut mkfs = Command::new(tool::require("mkfs.ext4", "e2fsprogs")?);
    mkfs.args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid, "-E"])
        .arg(format!("root_owner=0:0,hash_seed={uuid}"))
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", &fake_time)
        .stdout(Stdio::null());
    Task::new("mkfs.ext4", &mut mkfs)
        .run()
        .with_context(|| format!("making the persistence filesystem {}", out.display()))?;

    let mut debugfs = Command::new(tool::require("debugfs", "e2fsprogs")?);
    debugfs
        .args(["-w", "-f", "-"])
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", &fake_time);
    let o = Task::new(format!("debugfs on {}", out.display()), &mut debugfs)
        .input(b"mkdir LiveOS\nmkdir LiveOS/overlay\nmkdir LiveOS/ovlwork\n")
        .output()?;
    // debugfs exits 0 even when a command fails; its complaints go to stderr
    // after the banner line.
    let err = String::from_utf8_lossy(&o.stderr);
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !o.status.success() || !complaints.is_empty() {
        bail!(
            "debugfs could not make the overlay folders in {}: {}",
            out.display(),
            complaints.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_with_overlay_folders() {
        if !crate::system::testing::require(check_tools().is_ok(), "e2fsprogs not installed") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let uuid = "8d1c6f0e-49a4-4e33-a6f7-7a9c1e0f2b35";
        let (a, b) = (t.path().join("a.img"), t.path().join("b.img"));
        make_persistence(&a, 32 << 20, "T-PERSIST", uuid, 1_700_000_000).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        make_persistence(&b, 32 << 20, "T-PERSIST", uuid, 1_700_000_000).unwrap();
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        let o = Command::new(tool::find("debugfs").unwrap())
            .args(["-R", "ls -l /LiveOS"])
            .arg(&a)
            .output()
            .unwrap();
        let ls = String::from_utf8_lossy(&o.stdout);
        assert!(ls.contains("overlay") && ls.contains("ovlwork"), "{ls}");
    }
}
