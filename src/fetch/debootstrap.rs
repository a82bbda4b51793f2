//! A Debian base made on the spot with debootstrap, cached as a tarball.
//!
//! Debian publishes no rootfs tarball to download; `debootstrap` builds one
//! from the archive's signed package indexes (debootstrap checks the
//! Release file with the host's debian-archive-keyring). The result is packed
//! into `<cache>/debootstrap/<release>-<key>.tar.zst`, keyed by everything
//! that decides its content (release, mirror, variant, include list), so a
//! second build skips the minutes debootstrap takes. From there the normal
//! pipeline unpacks it like any other base.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::Fetcher;
use crate::chroot;
use crate::system::command::Task;

/// The Debian mirror used when a spec names none.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// What debootstrap is asked to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debootstrap {
    pub release: String,
    pub mirror: String,
    /// debootstrap's `--variant`; `minbase` (essential + apt) is what a
    /// live image grows from: elements add the kernel and the rest.
    pub variant: String,
    /// Extra packages (`--include`).
    pub include: Vec<String>,
}

impl Debootstrap {
    pub fn new(release: &str, mirror: Option<&str>, include: &[String]) -> Result<Self> {
        if release.is_empty()
            || !release
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            bail!("base.release {release:?} is not a Debian release name such as bookworm");
        }
        for p in include {
            if p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.:".contains(c))
            {
                bail!("base.include: {p:?} is not a Debian package name");
            }
        }
        let mut include = include.to_vec();
        // Order does not change what debootstrap installs; it must not
        // change the cache key either.
        include.sort();
        include.dedup();
        Ok(Debootstrap {
            release: release.to_string(),
            mirror: mirror
                .unwrap_or(DEFAULT_MIRROR)
                .trim_end_matches('/')
                .to_string(),
            variant: "minbase".to_string(),
            include,
        })
    }

    /// Hex key over every input; a format version first, so a change to
    /// how the tarball is made invalidates old ones.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            "undercloud-live debootstrap v1",
            &self.release,
            &self.mirror,
            &self.variant,
            &self.include.join(","),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }

    /// Where the tarball is cached.
    pub fn tarball(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join("debootstrap").join(format!(
            "{}-{}.tar.zst",
            self.release,
            &self.key()[..16]
        ))
    }

    /// The debootstrap argument list (kept pure so it can be tested).
    pub fn args(&self, target: &Path) -> Vec<String> {
        let mut a = vec![format!("--variant={}", self.variant)];
        if !self.include.is_empty() {
            a.push(format!("--include={}", self.include.join(",")));
        }
        a.push(self.release.clone());
        a.push(target.display().to_string());
        a.push(self.mirror.clone());
        a
    }
}

/// The cached tarball of `d`, made first if missing.
pub fn base_tarball(fetcher: &Fetcher, d: &Debootstrap) -> Result<PathBuf> {
    let out = d.tarball(fetcher.cache_dir());
    if out.is_file() {
        fetcher.progress().step(format!(
            "debootstrap base {} from {} found in the cache",
            d.release, d.mirror
        ));
        return Ok(out);
    }
    if fetcher.is_offline() {
        bail!(
            "debootstrap base {} from {} is not in the cache ({}) and downloads are off (offline)",
            d.release,
            d.mirror,
            out.display()
        );
    }
    let tool = crate::system::tool::require("debootstrap", "debootstrap")?;
    if !nix::unistd::geteuid().is_root() {
        bail!("debootstrap needs root (it creates device nodes and owners)");
    }
    let dir = out
        .parent()
        .with_context(|| format!("{} has no parent folder", out.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Beside the cache entry: same filesystem, so the rename is atomic.
    let work = dir.join(format!(".work-{}", std::process::id()));
    if work.exists() {
        chroot::remove_tree(&work)?;
    }
    fs::create_dir(&work).with_context(|| format!("creating {}", work.display()))?;
    let result = make(fetcher, d, &tool, &work, &out);
    if let Err(e) = chroot::remove_tree(&work) {
        eprintln!("warning: {e:#}");
    }
    result.map(|()| out)
}

fn make(fetcher: &Fetcher, d: &Debootstrap, tool: &Path, work: &Path, out: &Path) -> Result<()> {
    let root = work.join("root");
    let log_path = work.join("debootstrap.log");
    let what = format!("debootstrap {} from {}", d.release, d.mirror);
    fetcher
        .progress()
        .step(format!("{what} ({}); this takes a few minutes", d.variant));
    // Its output is long and explains a failure only as a whole: all of
    // it goes to the log, whose last lines the error shows.
    Task::new(what, Command::new(tool).args(d.args(&root)))
        .log(&log_path)
        .run()?;
    // debootstrap keeps the .debs it installed; they are worth nothing in
    // an image and would double the tarball.
    for sub in ["var/cache/apt/archives", "var/lib/apt/lists"] {
        let p = root.join(sub);
        if let Ok(rd) = fs::read_dir(&p) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
    fetcher.progress().step(format!(
        "packing the debootstrap root into {}",
        out.display()
    ));
    let tmp = work.join("base.tar.zst");
    crate::rootfs::pack::pack(&root, &tmp)
        .with_context(|| format!("packing {}", root.display()))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", tmp.display()))?;
    fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_covers_every_input_and_ignores_include_order() {
        let a = Debootstrap::new("bookworm", None, &["a".into(), "b".into()]).unwrap();
        let b = Debootstrap::new("bookworm", None, &["b".into(), "a".into()]).unwrap();
        assert_eq!(a.key(), b.key());
        let c = Debootstrap::new(
            "bookworm",
            Some("http://m/debian/"),
            &["a".into(), "b".into()],
        )
        .unwrap();
        assert_ne!(a.key(), c.key());
        assert_eq!(c.mirror, "http://m/debian");
        let d = Debootstrap::new("trixie", None, &["a".into(), "b".into()]).unwrap();
        assert_ne!(a.key(), d.key());
        let mut e = a.clone();
        e.variant = "buildd".into();
        assert_ne!(a.key(), e.key());
    }

    #[test]
    fn arguments() {
        let d = Debootstrap::new("bookworm", None, &["ca-certificates".into()]).unwrap();
        assert_eq!(
            d.args(Path::new("/w/root")),
            vec![
                "--variant=minbase",
                "--include=ca-certificates",
                "bookworm",
                "/w/root",
                "http://deb.debian.org/debian"
            ]
        );
        assert!(Debootstrap::new("book worm", None, &[]).is_err());
        assert!(Debootstrap::new("bookworm", None, &["a,b".into()]).is_err());
    }
}
