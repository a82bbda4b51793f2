//! Files and folders a test makes, checks or fills on purpose: a fresh
//! scratch folder, a small tmpfs to run out of space in, a sparse copy of
//! a shared image, the mounts left under a folder, a large file's digest.
//! Apart from `env`, because these touch the file system a test owns, not
//! the host's tools.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::env::{is_root, require};

/// A fresh folder for one test under cargo's per-target temp folder.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Mount points under `dir` visible from this (the host's) namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .map(str::to_string)
        .collect()
}

/// A file's sha256, read in 1 MiB pieces (images are large).
pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    // sha2 0.11's hashers do not implement io::Write: feed them by hand.
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("opening {}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A sparse copy of `from` (a shared image a test boots writable).
pub fn copy_sparse(from: &Path, to: &Path) {
    let o = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .output()
        .expect("running cp");
    assert!(
        o.status.success(),
        "cp {}: {}",
        from.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A small tmpfs, unmounted on drop, for running out of space on purpose.
/// `None` when the test cannot mount one: skipped, or failed under
/// `UCL_REQUIRE_ALL`.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(size: &str) -> Option<SmallFs> {
        if !require(is_root(), "mounting a tmpfs needs root") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !require(ok, "mount -t tmpfs failed") {
            return None;
        }
        Some(SmallFs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
