//! Making images: `build`, `assemble`, `ramdisk pack`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{lib_parser, Ctx};
use crate::build::{self, BuildOptions, BuildReport};
use crate::fs::cpio;
use crate::progress::human_bytes;
use crate::{assemble, spec};

#[derive(Args)]
pub struct BuildArgs {
    /// The image spec (YAML).
    spec: PathBuf,
    /// Output (default: the spec's `output`, else NAME.iso, NAME.kernel
    /// + NAME.initramfs, or NAME.raw); a disk named .qcow2 is qcow2.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// What to build: hybrid (the live image), ramdisk (NAME.kernel +
    /// NAME.initramfs for network boot) or disk (a deployable raw or
    /// qcow2 disk image). Default: the spec's `format`, else hybrid.
    #[arg(long, value_parser = lib_parser(spec::OutputFormat::parse))]
    format: Option<spec::OutputFormat>,
    /// Use this base archive (URL or path) instead of the spec's.
    #[arg(long)]
    base: Option<String>,
    /// Expected sha256 of --base.
    #[arg(long)]
    base_sha256: Option<String>,
    /// SHA256SUMS or CHECKSUM file listing --base.
    #[arg(long)]
    base_checksum_url: Option<String>,
    /// Element folder searched before the spec's elements_path (repeatable).
    #[arg(long = "elements-path")]
    elements_path: Vec<PathBuf>,
    /// Leave this element out, with what only it needed (repeatable).
    #[arg(long = "exclude-element", short = 'x')]
    exclude_elements: Vec<String>,
    /// Work folder (default: a new folder under $TMPDIR or /tmp).
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Download cache (default: $XDG_CACHE_HOME/undercloud-live).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Keep the work folder for inspection.
    #[arg(long)]
    keep_workdir: bool,
    /// Live root compression, overriding the spec's root.compression:
    /// fastest, smallest, or a compressor with an optional level
    /// (zstd:19, xz; erofs: lz4, lz4hc:12, lzma).
    #[arg(long, value_parser = lib_parser(spec::RootCompression::parse))]
    compression: Option<spec::RootCompression>,
    /// Build every stage afresh: neither use nor store the cached
    /// package layer and live initrd (picks up packages the mirror
    /// published since they were cached).
    #[arg(long)]
    no_cache: bool,
    /// Use only what is already in the cache.
    #[arg(long)]
    offline: bool,
    /// Use a signed checksum list without checking its signature (warns every time).
    #[arg(long)]
    insecure_skip_signature: bool,
    /// Apply this kickstart after the spec's elements.
    #[arg(long)]
    kickstart: Option<PathBuf>,
    /// YAML map from the kickstart's package names to the base's.
    #[arg(long)]
    kickstart_package_map: Option<PathBuf>,
    /// Build log (default: OUTPUT.log beside the image).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Add a persistence partition of this size (e.g. 1GiB), or resize
    /// the spec's.
    #[arg(long, value_parser = lib_parser(spec::ByteSize::parse))]
    persistent_size: Option<spec::ByteSize>,
}

impl From<BuildArgs> for BuildOptions {
    fn from(a: BuildArgs) -> BuildOptions {
        BuildOptions {
            spec: a.spec,
            output: a.output,
            format: a.format,
            base: a.base,
            base_sha256: a.base_sha256,
            base_checksum_url: a.base_checksum_url,
            elements_path: a.elements_path,
            exclude_elements: a.exclude_elements,
            workdir: a.workdir,
            cache_dir: a.cache_dir,
            keep_workdir: a.keep_workdir,
            no_cache: a.no_cache,
            offline: a.offline,
            insecure_skip_signature: a.insecure_skip_signature,
            kickstart: a.kickstart,
            kickstart_package_map: a.kickstart_package_map,
            log: a.log,
            compression: a.compression,
            persistent_size: a.persistent_size,
        }
    }
}

impl BuildArgs {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let report = build::build(&self.into(), &ctx.progress)?;
        if !ctx.quiet {
            println!("{}", build_summary(&report));
        }
        Ok(())
    }
}

/// "hybrid out.iso (1.2 GiB): 1.2 GiB (kernel 6.8, BIOS + UEFI) built in 300 s"
fn build_summary(report: &BuildReport) -> String {
    let boots = match report.format {
        spec::OutputFormat::Ramdisk => "network boot",
        _ if report.bios => "BIOS + UEFI",
        _ => "UEFI only",
    };
    let files: Vec<String> = report
        .files
        .iter()
        .map(|(p, s)| format!("{} ({})", p.display(), human_bytes(*s)))
        .collect();
    format!(
        "{} {}: {} (kernel {}, {boots}) built in {:.0} s",
        report.format.name(),
        files.join(" + "),
        human_bytes(report.size),
        report.kernel,
        report.seconds
    )
}

#[derive(Args)]
// clap writes the usage on one line, and four required options make it
// wider than the 80 columns the rest of the help keeps to.
#[command(
    override_usage = "undercloud-live assemble [OPTIONS] --tree <TREE> --esp-dir <ESP_DIR>
       --label <LABEL> --output <OUTPUT>"
)]
pub struct AssembleArgs {
    /// Folder whose files become the ISO9660 tree.
    #[arg(long)]
    tree: PathBuf,
    /// Folder whose files become the EFI system partition.
    #[arg(long)]
    esp_dir: PathBuf,
    /// ISO volume label.
    #[arg(long)]
    label: String,
    /// ISO path of the live root in the tree (GPT partition 2).
    #[arg(long)]
    root: Option<String>,
    #[arg(long, short)]
    output: PathBuf,
    /// Leave out the media checksum (implantisomd5's format) that
    /// `verify` and the boot menu's media check read: it costs a read of
    /// every byte through MD5.
    #[arg(long)]
    no_media_checksum: bool,
}

impl From<AssembleArgs> for assemble::AssembleOptions {
    fn from(a: AssembleArgs) -> assemble::AssembleOptions {
        assemble::AssembleOptions {
            tree: a.tree,
            esp_dir: a.esp_dir,
            label: a.label,
            root: a.root,
            output: a.output,
            // The command line has no options for these: the IDs derive
            // from the label, times from SOURCE_DATE_EPOCH (else now).
            seed: None,
            media_checksum: !a.no_media_checksum,
            epoch: None,
        }
    }
}

impl AssembleArgs {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = assemble::AssembleOptions::from(self);
        let r = assemble::assemble(&opts)?;
        if !ctx.quiet {
            println!(
                "{}: {} ({} files, ESP {})",
                opts.output.display(),
                human_bytes(r.size),
                r.files,
                r.esp_fat
            );
        }
        Ok(())
    }
}

#[derive(Subcommand)]
pub enum RamdiskCommand {
    /// Pack a folder as a compressed newc cpio, as the ramdisk output does
    /// (sorted, owners and modes kept, times clamped to SOURCE_DATE_EPOCH).
    Pack(PackArgs),
}

#[derive(Args)]
pub struct PackArgs {
    /// The folder to pack (its contents become the archive's root).
    #[arg(long)]
    root: PathBuf,
    #[arg(long, short)]
    output: PathBuf,
    /// zstd (default), xz or none.
    #[arg(long, default_value = "zstd")]
    compression: String,
    /// Compression level (zstd 1-19, default 9; xz 0-9, default 6).
    #[arg(long)]
    level: Option<i64>,
}

impl RamdiskCommand {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let RamdiskCommand::Pack(a) = self;
        let compression = cpio::Compression::parse(&a.compression, a.level)?;
        let report = build::pack_folder(&a.root, &a.output, compression)?;
        if !ctx.quiet {
            println!("{}: {report}", a.output.display());
        }
        Ok(())
    }
}
