//! `undercloud-live build`: the pipeline from a spec to one of three
//! outputs.
//!
//! prepare (every check that needs no work) -> fetch + unpack -> elements
//! and kickstart (the customised root) -> one output stage per format:
//! the hybrid live image, a netboot ramdisk, or a deployable disk image.
//! Each stage is a function with a typed input and output; `Workspace`
//! names every work path; a failed or interrupted build leaves no output
//! under its final name, no mounts and no work folder.

mod customise;
mod disk;
mod hybrid;
mod initrd;
mod layer;
mod prepare;
mod ramdisk;
mod workspace;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::progress::Progress;
use crate::spec::{self, OutputFormat};

pub use prepare::Output;
pub use ramdisk::pack_folder;

#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub spec: PathBuf,
    pub output: Option<PathBuf>,
    /// Override the spec's `format:`.
    pub format: Option<OutputFormat>,
    /// Override the spec's base source (a URL or a local path).
    pub base: Option<String>,
    pub base_sha256: Option<String>,
    pub base_checksum_url: Option<String>,
    /// Searched before the spec's elements_path.
    pub elements_path: Vec<PathBuf>,
    /// Elements left out of the expanded set, with what only they needed.
    pub exclude_elements: Vec<String>,
    pub workdir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub keep_workdir: bool,
    /// Neither use nor store cached build stages (the package layer, the
    /// live initrd): `--no-cache`.
    pub no_cache: bool,
    pub offline: bool,
    /// Use a signed checksum list without checking its signature (warns).
    pub insecure_skip_signature: bool,
    /// A kickstart applied after the spec's elements (overrides the spec's).
    pub kickstart: Option<PathBuf>,
    /// Package-name map for the kickstart (overrides the spec's).
    pub kickstart_package_map: Option<PathBuf>,
    /// Build log (default: `<output>.log` beside the output).
    pub log: Option<PathBuf>,
    /// Override the spec's `root.compression`: `--compression`.
    pub compression: Option<spec::RootCompression>,
    /// Add (or resize) the persistence partition: `--persistent-size`.
    pub persistent_size: Option<spec::ByteSize>,
}

#[derive(Clone, Debug)]
pub struct BuildReport {
    pub format: OutputFormat,
    /// The image (hybrid, disk) or the kernel (ramdisk).
    pub output: PathBuf,
    /// Every file written, with its size.
    pub files: Vec<(PathBuf, u64)>,
    pub size: u64,
    pub seconds: f64,
    pub kernel: String,
    /// Whether the output boots under legacy BIOS too (not for ramdisks:
    /// the bootloader that loads them decides).
    pub bios: bool,
    /// The embedded media checksum (hex MD5) of a hybrid image.
    pub md5: Option<String>,
}

/// What an output stage hands back.
pub(crate) struct Written {
    pub files: Vec<(PathBuf, u64)>,
    pub kernel: String,
    pub bios: bool,
    pub md5: Option<String>,
}

pub fn build(opts: &BuildOptions, progress: &Progress) -> Result<BuildReport> {
    let started = Instant::now();
    let plan = prepare::prepare(opts)?;
    crate::chroot::require_root("build")?;
    let ws = workspace::Workspace::create(opts, &plan.loaded.spec.name)?;
    // The log is opened once the base is here: a build that cannot even
    // fetch leaves nothing beside its output's name.
    let base = customise::fetch_base(&plan, opts, &ws, progress)?;
    let log = plan.open_log(progress)?;
    let written = match plan.format {
        OutputFormat::Hybrid => {
            let (root, live) =
                customise::customise(&plan, &ws, base, progress, &log, hybrid::live_boot)?;
            hybrid::write(&plan, &ws, root, live, progress)?
        }
        OutputFormat::Ramdisk => {
            let (root, ()) = customise::customise(&plan, &ws, base, progress, &log, |_| Ok(()))?;
            ramdisk::write(&plan, &ws, root, progress)?
        }
        OutputFormat::Disk => {
            let (root, ()) = customise::customise(&plan, &ws, base, progress, &log, |_| Ok(()))?;
            disk::write(&plan, &ws, root, progress)?
        }
    };
    drop(ws);
    if let Some(note) =
        crate::cache::Store::new(&plan.cache_dir).size_note(crate::cache::warn_size())
    {
        eprintln!("{note}");
    }
    Ok(plan.report(written, started))
}
