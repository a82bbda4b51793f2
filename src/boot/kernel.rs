//! Finding the kernel in a root: Debian keeps it as /boot/vmlinuz-<kver>,
//! Fedora's kernel-core as /lib/modules/<kver>/vmlinuz (and copies it to
//! /boot only through kernel-install, which container-built roots skip).

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub version: String,
    /// Path of the kernel image on the host (inside the root folder).
    pub path: PathBuf,
}

/// The newest kernel that has its modules installed.
pub fn find(root: &Path) -> Result<Kernel> {
    let mut found: Vec<Kernel> = Vec::new();
    for modules in ["usr/lib/modules", "lib/modules"] {
        let Ok(entries) = fs::read_dir(root.join(modules)) else {
            continue;
        };
        for e in entries.flatten() {
            let kver = e.file_name().to_string_lossy().into_owned();
            if found.iter().any(|k| k.version == kver) {
                continue;
            }
            let candidates = [
                e.path().join("vmlinuz"),
                root.join("boot").join(format!("vmlinuz-{kver}")),
            ];
            if let Some(path) = candidates.into_iter().find(|p| p.is_file()) {
                found.push(Kernel {
                    version: kver,
                    path,
                });
            }
        }
    }
    found.sort_by(|a, b| version_cmp(&a.version, &b.version));
    match found.pop() {
        Some(k) => Ok(k),
        None => bail!(
            "no kernel found in the root (looked for /boot/vmlinuz-<version> and /usr/lib/modules/<version>/vmlinuz): add the kernel package (linux-image-amd64 on Debian, kernel on Fedora) to an element"
        ),
    }
}

/// Compare version strings the way `sort -V` roughly does: runs of digits
/// numerically, everything else bytewise.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (nx, ny) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                nx.len().cmp(&ny.len()).then_with(|| nx.cmp(ny))
            }
            _ => x.1.cmp(y.1),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_layout() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for v in ["6.1.0-9-amd64", "6.1.0-28-amd64"] {
            fs::create_dir_all(r.join("lib/modules").join(v)).unwrap();
            fs::create_dir_all(r.join("boot")).unwrap();
            fs::write(r.join("boot").join(format!("vmlinuz-{v}")), "k").unwrap();
        }
        // Modules without a kernel image (a removed kernel) are ignored.
        fs::create_dir_all(r.join("lib/modules/7.0.0-1-amd64")).unwrap();
        let k = find(r).unwrap();
        assert_eq!(k.version, "6.1.0-28-amd64");
        assert_eq!(k.path, r.join("boot/vmlinuz-6.1.0-28-amd64"));
    }

    #[test]
    fn fedora_layout() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let v = "6.17.7-300.fc43.x86_64";
        fs::create_dir_all(r.join("usr/lib/modules").join(v)).unwrap();
        fs::write(r.join("usr/lib/modules").join(v).join("vmlinuz"), "k").unwrap();
        let k = find(r).unwrap();
        assert_eq!(k.version, v);
    }

    #[test]
    fn no_kernel_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let e = format!("{:#}", find(t.path()).unwrap_err());
        assert!(e.contains("no kernel found"), "{e}");
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(version_cmp("6.1.0-9", "6.1.0-28"), Ordering::Less);
        assert_eq!(version_cmp("6.10", "6.9"), Ordering::Greater);
    }
}
