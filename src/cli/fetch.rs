//! Downloads and their cache: `fetch`, `cache list|prune`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{lib_parser, Ctx};
use crate::cache::{self, manage};
use crate::prefetch;
use crate::progress::human_bytes;

#[derive(Args)]
pub struct FetchArgs {
    /// An image spec (*.yaml), or a base archive URL or path.
    what: String,
    /// Expected sha256 of the archive.
    #[arg(long)]
    sha256: Option<String>,
    /// SHA256SUMS or CHECKSUM file listing the archive.
    #[arg(long)]
    checksum_url: Option<String>,
    /// Unpack the base into this new or empty folder.
    #[arg(long)]
    unpack: Option<PathBuf>,
    /// Download cache (default: $XDG_CACHE_HOME/undercloud-live).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Use only what is already in the cache.
    #[arg(long)]
    offline: bool,
    /// Use a signed checksum list without checking its signature (warns every time).
    #[arg(long)]
    insecure_skip_signature: bool,
}

impl From<FetchArgs> for prefetch::FetchOptions {
    fn from(a: FetchArgs) -> prefetch::FetchOptions {
        prefetch::FetchOptions {
            what: a.what,
            sha256: a.sha256,
            checksum_url: a.checksum_url,
            unpack: a.unpack,
            cache_dir: a.cache_dir,
            offline: a.offline,
            insecure_skip_signature: a.insecure_skip_signature,
        }
    }
}

impl FetchArgs {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let report = prefetch::fetch(&self.into(), &ctx.progress)?;
        if !ctx.quiet {
            println!(
                "{} ({}) in {:.1} s",
                report.path.display(),
                human_bytes(report.size),
                report.fetch_seconds
            );
            if let Some(u) = report.unpacked {
                println!("{u}");
            }
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// Every entry with its kind, size and time since it was last used.
    List(CacheListArgs),
    /// Remove entries not used for a while (and writes a killed build left).
    Prune(PruneArgs),
}

#[derive(Args)]
pub struct CacheListArgs {
    /// Cache folder (default: $UCL_CACHE_DIR, else $XDG_CACHE_HOME/undercloud-live).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

#[derive(Args)]
pub struct PruneArgs {
    /// Remove entries unused for longer than this: days, or 12h, 30m.
    #[arg(long, default_value = "30d", value_parser = lib_parser(manage::parse_age))]
    older_than: Duration,
    /// Remove every entry (writes in progress are kept).
    #[arg(long)]
    all: bool,
    /// Say what would go, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Cache folder (default: $UCL_CACHE_DIR, else $XDG_CACHE_HOME/undercloud-live).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

impl From<&PruneArgs> for manage::Prune {
    fn from(a: &PruneArgs) -> manage::Prune {
        manage::Prune {
            all: a.all,
            older_than: a.older_than,
            dry_run: a.dry_run,
        }
    }
}

impl CacheCommand {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        let text = match self {
            CacheCommand::List(a) => manage::list_text(&cache_dir(a.cache_dir))?,
            CacheCommand::Prune(a) => {
                let rule = manage::Prune::from(&a);
                manage::prune_text(&cache_dir(a.cache_dir), rule)?
            }
        };
        print!("{text}");
        Ok(())
    }
}

fn cache_dir(dir: Option<PathBuf>) -> PathBuf {
    dir.unwrap_or_else(cache::default_cache_dir)
}
