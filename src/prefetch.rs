//! `undercloud-live fetch`: put a base into the cache (and optionally
//! unpack it) without building an image. A release engineer prefetches
//! before going offline; the benchmark times fetch + verify + unpack alone.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::cache::default_cache_dir;
use crate::fetch::{self, base, Fetcher, Source};
use crate::progress::Progress;
use crate::rootfs::unpack::{self, UnpackStats};
use crate::spec::LoadedSpec;

#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    /// An image spec (`*.yaml`, `*.yml`), a URL or a local archive path.
    pub what: String,
    pub sha256: Option<String>,
    pub checksum_url: Option<String>,
    /// Unpack the fetched base into this (new or empty) folder.
    pub unpack: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub offline: bool,
    pub insecure_skip_signature: bool,
}

#[derive(Clone, Debug)]
pub struct FetchReport {
    pub path: PathBuf,
    pub size: u64,
    pub fetch_seconds: f64,
    pub unpacked: Option<Unpacked>,
}

/// How the base was unpacked.
#[derive(Clone, Copy, Debug)]
pub struct Unpacked {
    pub stats: UnpackStats,
    pub seconds: f64,
    /// Unpacked while it downloaded (then `seconds` is also the download's
    /// time), rather than from the cache afterwards.
    pub streamed: bool,
}

impl std::fmt::Display for Unpacked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unpacked {} entries ({}) in {:.1} s{}",
            self.stats.entries,
            crate::progress::human_bytes(self.stats.bytes),
            self.seconds,
            if self.streamed {
                ", while downloading"
            } else {
                ""
            }
        )
    }
}

fn is_spec(what: &str) -> bool {
    !what.contains("://") && (what.ends_with(".yaml") || what.ends_with(".yml"))
}

pub fn fetch(opts: &FetchOptions, progress: &Progress) -> Result<FetchReport> {
    let plan = if is_spec(&opts.what) {
        let loaded = LoadedSpec::load(std::path::Path::new(&opts.what))?;
        base::plan(
            &loaded,
            &base::Overrides {
                location: None,
                sha256: opts.sha256.clone(),
                checksum_url: opts.checksum_url.clone(),
            },
        )?
    } else {
        base::Plan::Archive(Source {
            location: opts.what.clone(),
            sha256: opts.sha256.clone(),
            checksum_url: opts.checksum_url.clone(),
            require_signature: false,
        })
    };
    let cache_dir = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let fetcher = Fetcher::new(cache_dir.join("downloads"), progress.clone())
        .offline(opts.offline)
        .insecure_skip_signature(opts.insecure_skip_signature);
    progress.step(format!("fetching base {}", plan.describe()));
    let t = Instant::now();
    let (fetched, unpacked) = match &opts.unpack {
        None => (fetch::base::fetch(&fetcher, &plan)?, None),
        Some(dir) => {
            // The outermost folder this run makes: removed again on failure,
            // so a failed fetch leaves nothing of ours behind.
            let made = dir
                .ancestors()
                .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
                .last()
                .map(Path::to_path_buf);
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // Unpacking over an existing tree would mix two bases.
            if std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_some()
            {
                anyhow::bail!("--unpack {}: the folder is not empty", dir.display());
            }
            match fetch_and_unpack(&fetcher, &plan, dir, progress) {
                Ok((fetched, unpacked)) => (fetched, Some(unpacked)),
                Err(e) => {
                    if let Some(m) = made {
                        let _ = std::fs::remove_dir_all(m);
                    }
                    return Err(e);
                }
            }
        }
    };
    let fetch_seconds = match unpacked {
        Some(u) if !u.streamed => t.elapsed().as_secs_f64() - u.seconds,
        _ => t.elapsed().as_secs_f64(),
    };
    if !fetched.verified {
        eprintln!(
            "warning: {} has no checksum: it is used unverified",
            fetched.location
        );
    }
    let size = std::fs::metadata(&fetched.path)
        .with_context(|| format!("reading {}", fetched.path.display()))?
        .len();
    Ok(FetchReport {
        path: fetched.path,
        size,
        fetch_seconds,
        unpacked,
    })
}

/// Fetches the base a plan names and unpacks it into `dest`, an existing
/// empty folder. A base that has to be downloaded is unpacked while it
/// arrives (one pass over the bytes instead of write, then read back), and
/// the tree counts only once the download's digest matched; one already in
/// the cache, or local, is unpacked from there. On any error `dest` is
/// left empty: a half-unpacked or unverified tree is never kept.
pub fn fetch_and_unpack(
    fetcher: &Fetcher,
    plan: &base::Plan,
    dest: &Path,
    progress: &Progress,
) -> Result<(base::Fetched, Unpacked)> {
    let t = Instant::now();
    let result = (|| {
        let label = plan.describe();
        let mut streamed = None;
        let (fetched, consumed) = {
            let mut consume = |r: &mut dyn Read| -> Result<()> {
                streamed = Some(unpack::unpack_from(r, &label, dest, progress)?);
                Ok(())
            };
            fetch::base::fetch_streaming(fetcher, plan, Some(&mut consume))?
        };
        let unpacked = match streamed.filter(|_| consumed) {
            Some(stats) => Unpacked {
                stats,
                seconds: t.elapsed().as_secs_f64(),
                streamed: true,
            },
            None => {
                // The stream's tree (if any) came from a transfer that was
                // cut and resumed: start over from the verified file.
                empty_dir(dest)?;
                let t = Instant::now();
                let stats = unpack::unpack(&fetched.path, dest, progress)?;
                Unpacked {
                    stats,
                    seconds: t.elapsed().as_secs_f64(),
                    streamed: false,
                }
            }
        };
        Ok((fetched, unpacked))
    })();
    if result.is_err() {
        // The error is what counts; a tree that cannot be removed shows up
        // at the next run's "not empty" check.
        let _ = empty_dir(dest);
    }
    result
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        let removed = if path.is_dir() && !path.is_symlink() {
            crate::chroot::remove_tree(&path)
        } else {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
        };
        removed?;
    }
    Ok(())
}
