//! Copying the root: from the live image's read-only root (what was built,
//! without the session's changes) or, with `--keep-live-changes`, from the
//! running system.
//!
//! GNU `cp -a` (= `-dR --preserve=all`) keeps owners, modes, times, hard
//! links and every extended attribute, which carries ACLs
//! (system.posix_acl_*), file capabilities (security.capability) and
//! SELinux labels; `--sparse=always` keeps holes; `-x` stays on the one
//! file system, so a live "/" does not drag /proc or /run along.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::system::command::Task;

/// Where dracut's dmsquash-live leaves the image's root mounted read-only:
/// `/run/rootfsbase` with the overlayfs overlay (rd.live.overlay.overlayfs,
/// what our images use), else the device-mapper snapshot's origin.
pub const LIVE_ROOTS: &[&str] = &[
    "/run/rootfsbase",
    "/run/initramfs/squashfs",
    "/run/initramfs/live-base",
];

/// The live image's read-only root, if this is a live session.
pub fn live_root() -> Option<PathBuf> {
    LIVE_ROOTS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("etc").is_dir() && p.join("usr").is_dir())
}

/// Bytes the tree under `root` occupies (allocated blocks, each hard-linked
/// file once, without other file systems).
pub fn measure(root: &Path) -> Result<u64> {
    let top = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let m = e
                .metadata()
                .with_context(|| format!("reading {}", e.path().display()))?;
            if m.dev() != top.dev() {
                continue;
            }
            if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
                continue;
            }
            // Squashfs does not report what a file takes once copied: count
            // the length, rounded to ext4's 4 KiB blocks, when it is more
            // than the blocks (a sparse file is counted as if filled).
            let used = (m.blocks() * 512).max(m.len().div_ceil(4096) * 4096);
            total += if m.file_type().is_symlink() { 0 } else { used };
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(total)
}

/// Copies the contents of `from` into the (empty, mounted) `to`.
pub fn copy_root(from: &Path, to: &Path) -> Result<()> {
    if !from.join("etc").is_dir() {
        bail!("{}: not a root file system (no /etc)", from.display());
    }
    let mut cmd = Command::new("cp");
    cmd.args(["-a", "-x", "--sparse=always"])
        .arg(from.join("."))
        .arg(to);
    Task::new(
        format!("copying {} to the target", from.display()),
        &mut cmd,
    )
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    #[ignore = "needs root: copies owners and trusted xattrs (make test runs it)"]
    fn copy_keeps_links_modes_xattrs_and_holes() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::create_dir_all(&dst).unwrap();
        fs::write(src.join("etc/a"), b"hello").unwrap();
        fs::hard_link(src.join("etc/a"), src.join("etc/b")).unwrap();
        std::os::unix::fs::symlink("a", src.join("etc/l")).unwrap();
        let sparse = fs::File::create(src.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        let xattr_ok = Command::new("setfattr")
            .args(["-n", "user.ucl", "-v", "yes"])
            .arg(src.join("etc/a"))
            .status()
            .is_ok_and(|s| s.success());
        // chown clears set-user-id: owner first, then the mode.
        std::os::unix::fs::lchown(src.join("etc/b"), Some(1234), Some(4321)).unwrap();
        fs::set_permissions(src.join("etc/a"), fs::Permissions::from_mode(0o4751)).unwrap();

        copy_root(&src, &dst).unwrap();
        let a = fs::metadata(dst.join("etc/a")).unwrap();
        let b = fs::metadata(dst.join("etc/b")).unwrap();
        assert_eq!(a.ino(), b.ino(), "hard link lost");
        assert_eq!(a.mode() & 0o7777, 0o4751);
        assert_eq!((b.uid(), b.gid()), (1234, 4321));
        assert_eq!(fs::read_link(dst.join("etc/l")).unwrap(), Path::new("a"));
        let s = fs::metadata(dst.join("sparse")).unwrap();
        assert_eq!(s.len(), 64 << 20);
        assert!(s.blocks() < 1024, "holes filled: {} blocks", s.blocks());
        if xattr_ok {
            let o = Command::new("getfattr")
                .args(["-n", "user.ucl", "--only-values"])
                .arg(dst.join("etc/a"))
                .output()
                .unwrap();
            assert_eq!(o.stdout, b"yes");
        }
        // Each hard-linked file once (4 KiB), the sparse file by its length
        // (conservative: see `measure`), folders and symlinks by blocks.
        let n = measure(&src).unwrap();
        assert!(
            ((64 << 20) + 4096..(64 << 20) + (64 << 10)).contains(&n),
            "{n}"
        );
    }

    #[test]
    fn copy_refuses_a_non_root() {
        let t = tempfile::tempdir().unwrap();
        let e = copy_root(t.path(), t.path()).unwrap_err();
        assert!(format!("{e:#}").contains("not a root"), "{e:#}");
    }
}
