//! `undercloud-live fetch`: put a base into the cache (and optionally
//! unpack it) without building an image. A release engineer prefetches
//! before going offline; the benchmark times fetch + verify + unpack alone.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::build::default_cache_dir;
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
    pub unpacked: Option<(UnpackStats, f64)>,
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
    let fetched = fetch::base::fetch(&fetcher, &plan)?;
    let fetch_seconds = t.elapsed().as_secs_f64();
    if !fetched.verified {
        eprintln!(
            "warning: {} has no checksum: it is used unverified",
            fetched.location
        );
    }
    let size = std::fs::metadata(&fetched.path)
        .with_context(|| format!("reading {}", fetched.path.display()))?
        .len();
    let unpacked = match &opts.unpack {
        None => None,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            // Unpacking over an existing tree would mix two bases.
            if std::fs::read_dir(dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .next()
                .is_some()
            {
                anyhow::bail!("--unpack {}: the folder is not empty", dir.display());
            }
            let t = Instant::now();
            let stats = unpack::unpack(&fetched.path, dir, progress)?;
            Some((stats, t.elapsed().as_secs_f64()))
        }
    };
    Ok(FetchReport {
        path: fetched.path,
        size,
        fetch_seconds,
        unpacked,
    })
}
