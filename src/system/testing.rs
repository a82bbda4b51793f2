//! For unit tests: what a test needs (KVM, OVMF, QEMU) may be missing on a
//! laptop; there the test is skipped with its reason, while `make test`
//! and CI set `UCL_REQUIRE_ALL` and a missing need fails the test. And the
//! small root the file-system writers' tests share.

use std::path::{Path, PathBuf};

/// Whether a test may go on: `met`, or else skipped with `reason` printed
/// (failing under `UCL_REQUIRE_ALL`).
pub fn require(met: bool, reason: &str) -> bool {
    if met {
        return true;
    }
    if std::env::var_os("UCL_REQUIRE_ALL").is_some() {
        panic!("{reason} (UCL_REQUIRE_ALL is set: make test and CI need every test to run)");
    }
    eprintln!("skipped: {reason}");
    false
}

/// A root under `dir` as a build leaves it: `etc/hostname` just written
/// (newer than any epoch a test uses) and `etc/old.py` with a packaged
/// file's older time, 1_500_000_000 (2017-07-14 02:40:00 UTC).
pub fn root_with_old_and_new_files(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), "live\n").unwrap();
    let old = root.join("etc/old.py");
    std::fs::write(&old, "x = 1\n").unwrap();
    let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(then)
        .unwrap();
    root
}
