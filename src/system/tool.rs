//! Finding external programs.
//!
//! PATH first, then the sbin folders: `sudo` and `su` without `-` give root
//! a user's PATH without them, and mkfs, debootstrap and losetup live there
//! on Debian.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

/// Folders searched after PATH. Only the sbin ones: a PATH without
/// /usr/bin is the caller's choice (the tests hide a tool that way).
const SBIN: [&str; 2] = ["/usr/sbin", "/sbin"];

/// `name` as an executable file on PATH or in the sbin folders.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// `name`, or an error naming the package that provides it.
pub fn require(name: &str, package: &str) -> Result<PathBuf> {
    find(name).ok_or_else(|| anyhow!("{name} not found: install package {package}"))
}

/// A regular file (symlinks followed) that someone may execute: a
/// non-executable file of that name on PATH is not the program.
pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_program_and_names_the_package_of_a_missing_one() {
        // sh is on every system this runs on.
        assert!(find("sh").is_some_and(|p| p.is_absolute()));
        let e = require("no-such-tool-ucl", "some-package").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no-such-tool-ucl not found: install package some-package"
        );
    }

    #[test]
    fn a_file_that_is_not_executable_is_not_the_program() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("prog");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(!is_executable(&f));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(is_executable(&f));
        assert!(!is_executable(d.path()), "a folder is not a program");
    }
}
