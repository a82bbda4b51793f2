//! Command line: parse, call the library, print errors. Nothing else lives
//! here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use undercloud_live::build::{self, BuildOptions};
use undercloud_live::elements::{apply, hooks::Phase};
use undercloud_live::progress::{human_bytes, Progress};
use undercloud_live::spec::Distro;
use undercloud_live::undercloud::{configure, nodes};
use undercloud_live::{
    assemble, cache, chroot, inspect, install, interrupt, medium, prefetch, qemu, spec, status,
    write,
};

fn parse_format(s: &str) -> Result<spec::OutputFormat, String> {
    spec::OutputFormat::parse(s).map_err(|e| format!("{e:#}"))
}

fn parse_compression(s: &str) -> Result<spec::RootCompression, String> {
    spec::RootCompression::parse(s).map_err(|e| format!("{e:#}"))
}

fn parse_size(s: &str) -> Result<spec::ByteSize, String> {
    spec::ByteSize::parse(s).map_err(|e| format!("{e:#}"))
}

fn parse_forward(s: &str) -> Result<qemu::Forward, String> {
    s.parse().map_err(|e| format!("{e:#}"))
}

fn parse_link(s: &str) -> Result<qemu::Link, String> {
    s.parse().map_err(|e| format!("{e:#}"))
}

#[derive(Parser)]
#[command(
    name = "undercloud-live",
    version,
    about = "Build, boot, write and look after a live USB/ISO image of an OpenStack undercloud"
)]
struct Cli {
    /// Print only errors.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a hybrid ISO/USB image from an image spec.
    Build {
        /// The image spec (YAML).
        spec: PathBuf,
        /// Output (default: the spec's `output`, else NAME.iso, NAME.kernel
        /// + NAME.initramfs, or NAME.raw); a disk named .qcow2 is qcow2.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// What to build: hybrid (the live image), ramdisk (NAME.kernel +
        /// NAME.initramfs for network boot) or disk (a deployable raw or
        /// qcow2 disk image). Default: the spec's `format`, else hybrid.
        #[arg(long, value_parser = parse_format)]
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
        #[arg(long, value_parser = parse_compression)]
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
        #[arg(long, value_parser = parse_size)]
        persistent_size: Option<spec::ByteSize>,
    },
    /// What the cache holds (downloads, package layers, live initrds),
    /// and removing what is stale.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Check an image's (or device's) GPT as a whole (both headers, its
    /// size, every partition inside it), then recompute its embedded media
    /// checksum.
    Verify {
        /// Image file or block device.
        image: PathBuf,
    },
    /// Show an image's partitions, ISO volume, boot entries, ESP files and
    /// media checksum, with warnings about a damaged GPT.
    Inspect {
        /// Image file or block device.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Download and verify a base into the cache; optionally unpack it.
    Fetch {
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
    },
    /// Write the ESP and the hybrid image from a staged ISO tree (no build).
    Assemble {
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
    },
    /// diskimage-builder elements: apply them to a system, or see what
    /// they would do.
    Elements {
        #[command(subcommand)]
        command: ElementsCommand,
    },
    /// The live medium this system booted from, and files on its ESP.
    Medium {
        #[command(subcommand)]
        command: MediumCommand,
    },
    /// Netboot ramdisks (`build --format ramdisk` makes whole ones).
    Ramdisk {
        #[command(subcommand)]
        command: RamdiskCommand,
    },
    /// Boot an image (raw or qcow2), or a kernel and initramfs, in QEMU and
    /// watch its serial console.
    Boot {
        /// The image; or NAME.kernel, booted directly with the
        /// NAME.initramfs beside it (a netboot ramdisk).
        image: Option<PathBuf>,
        /// How the image is attached [default: cdrom].
        #[arg(long = "as", value_enum)]
        media: Option<MediaArg>,
        /// Boot this kernel directly (QEMU loads it; no boot drive).
        #[arg(long, value_name = "FILE")]
        kernel: Option<PathBuf>,
        /// The initramfs for --kernel.
        #[arg(long, value_name = "FILE")]
        initrd: Option<PathBuf>,
        /// More kernel command line, after "console=ttyS0,115200 panic=-1".
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        append: Option<String>,
        /// [default: uefi for an image, bios for a kernel]
        #[arg(long, value_enum)]
        firmware: Option<FirmwareArg>,
        /// Succeed as soon as this text appears on the serial console.
        #[arg(long)]
        expect: Option<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        #[arg(long, default_value_t = 2)]
        cpus: u32,
        /// Accelerator: auto uses KVM only where it really works.
        #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
        accel: AccelArg,
        /// Also write the console to this file.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Let the guest write to the image (default: changes are discarded).
        #[arg(long)]
        writable: bool,
        /// Attach this raw or qcow2 file as one more virtio disk, writable
        /// (repeatable; e.g. a blank disk to install to).
        #[arg(long = "disk")]
        disks: Vec<PathBuf>,
        /// Forward host 127.0.0.1:HOSTPORT to the guest's GUESTPORT (TCP,
        /// repeatable); gives the guest a user-mode network card.
        #[arg(long = "forward", value_name = "HOSTPORT:GUESTPORT", value_parser = parse_forward)]
        forwards: Vec<qemu::Forward>,
        /// A network card on a point-to-point link to another VM: Ethernet
        /// frames as UDP from 127.0.0.1:LOCALPORT to 127.0.0.1:PEERPORT
        /// (repeatable; comes before the --forward card, so the guest
        /// names it first). For a provisioning network in a test bed.
        #[arg(long = "link", value_name = "LOCALPORT:PEERPORT", value_parser = parse_link)]
        links: Vec<qemu::Link>,
    },
    /// Install the live system to a disk (run in the live session).
    Install {
        /// Whole-disk device to install to (wiped).
        #[arg(long)]
        target: Option<PathBuf>,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        /// Install config: YAML, or a kickstart (*.ks, *.cfg).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Copy the running system with its changes, not the image's
        /// read-only root.
        #[arg(long)]
        keep_live_changes: bool,
        /// Copy this root folder instead of the live image's root.
        #[arg(long)]
        source: Option<PathBuf>,
        /// The live medium (never a target; holds the unattended config).
        /// Default: found from the kernel command line.
        #[arg(long)]
        live_medium: Option<PathBuf>,
        /// Log file.
        #[arg(long, default_value = install::LOG_PATH)]
        log: PathBuf,
        /// Target and config from the kernel command line
        /// (undercloud-live.install=DEV, undercloud-live.install-config=NAME
        /// on the ESP), no questions, then power off or reboot as configured.
        #[arg(long)]
        unattended: bool,
    },
    /// Inside the image: the state of each undercloud service and endpoint.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Keep checking up to this many seconds until everything is up.
        #[arg(long, value_name = "SECONDS")]
        wait: Option<u64>,
    },
    /// Inside the image: the undercloud's boot-time configuration.
    Undercloud {
        #[command(subcommand)]
        command: UndercloudCommand,
    },
    /// List removable and USB disks that an image could be written to.
    Devices {
        /// List every disk, fixed ones and the system disk included.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write an image (plain, .xz, .zst or .gz) to one or more USB sticks.
    Write {
        /// The image; compression is told by its first bytes.
        image: PathBuf,
        /// Whole-disk devices (/dev/sdX), written in parallel.
        #[arg(required = true)]
        devices: Vec<PathBuf>,
        /// Do not ask for confirmation (needed without a terminal).
        #[arg(long, short)]
        yes: bool,
        /// Also allow disks that are neither removable nor USB.
        #[arg(long)]
        allow_fixed: bool,
        /// Allow regular files as targets (created if missing).
        #[arg(long)]
        to_file: bool,
        /// Skip reading every target back to compare checksums.
        #[arg(long)]
        no_verify: bool,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which elements, and where to find them.
#[derive(clap::Args, Clone)]
struct SelectionArgs {
    /// Elements, as disk-image-create takes them (dependencies are added).
    #[arg(value_name = "ELEMENT")]
    names: Vec<String>,
    /// Element to apply (repeatable; the same as naming it).
    #[arg(long = "element", short = 'e')]
    elements: Vec<String>,
    /// Leave this element out, with what only it needed (repeatable).
    #[arg(long = "exclude-element", short = 'x')]
    exclude_elements: Vec<String>,
    /// Element folder searched before ELEMENTS_PATH (repeatable).
    #[arg(long = "elements-path")]
    elements_path: Vec<PathBuf>,
    /// Distro of the target (default: from its os-release).
    #[arg(long, value_enum)]
    distro: Option<DistroArg>,
    /// Release (DIB_RELEASE; default: from the target's os-release).
    #[arg(long)]
    release: Option<String>,
    /// A kickstart, applied as one more element after the others.
    #[arg(long)]
    kickstart: Option<PathBuf>,
    /// YAML map from the kickstart's package names to the target's.
    #[arg(long)]
    kickstart_package_map: Option<PathBuf>,
    /// IMAGE_NAME for the hooks.
    #[arg(long)]
    image_name: Option<String>,
    /// DIB_IMAGE_CACHE for the hooks.
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Tell hooks not to download (DIB_OFFLINE=1).
    #[arg(long)]
    offline: bool,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Every entry with its kind, size and time since it was last used.
    List {
        /// Cache folder (default: $UCL_CACHE_DIR, else $XDG_CACHE_HOME/undercloud-live).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Remove entries not used for a while (and writes a killed build left).
    Prune {
        /// Remove entries unused for longer than this: days, or 12h, 30m.
        #[arg(long, default_value = "30d", value_parser = parse_age)]
        older_than: std::time::Duration,
        /// Remove every entry (writes in progress are kept).
        #[arg(long)]
        all: bool,
        /// Say what would go, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Cache folder (default: $UCL_CACHE_DIR, else $XDG_CACHE_HOME/undercloud-live).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    undercloud_live::cache::manage::parse_age(s).map_err(|e| format!("{e:#}"))
}

#[derive(Subcommand)]
enum RamdiskCommand {
    /// Pack a folder as a compressed newc cpio, as the ramdisk output does
    /// (sorted, owners and modes kept, times clamped to SOURCE_DATE_EPOCH).
    Pack {
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
    },
}

#[derive(Subcommand)]
enum MediumCommand {
    /// Which disk the live system was booted from, and where its ESP is.
    Show {
        /// An image file or device instead of the running system's medium.
        #[arg(long)]
        device: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print a file of the medium's ESP (e.g. undercloud.yaml) to stdout.
    Cat {
        /// Path on the ESP, '/'-separated.
        path: String,
        /// An image file or device instead of the running system's medium.
        #[arg(long)]
        device: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum UndercloudCommand {
    /// Read undercloud.yaml (the live medium's ESP, else /etc/undercloud,
    /// else defaults), check it, write ironic.conf, dnsmasq, nginx, network
    /// and ~stack/undercloudrc.
    Configure {
        /// Use this undercloud.yaml instead of looking for one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The root to configure.
        #[arg(long, default_value = "/")]
        root: PathBuf,
        /// Check the file and print what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Enrol the nodes of nodes.yaml (the live medium's ESP, else
    /// /etc/undercloud) into Ironic; nodes Ironic knows by name are left
    /// alone. Runs at every boot. Calls the API as OS_USERNAME with
    /// OS_PASSWORD when set (a sourced ~stack/undercloudrc), else, as root,
    /// as the configured API user.
    Enroll {
        /// Use this nodes.yaml instead of looking for one.
        #[arg(long)]
        nodes: Option<PathBuf>,
        /// Ironic's API [default: the undercloud's (api= in
        /// /etc/undercloud/endpoints: https with ironic.tls), else
        /// http://127.0.0.1:6385].
        #[arg(long)]
        api: Option<String>,
        /// Seconds to wait for the API to answer.
        #[arg(long, default_value_t = 600)]
        wait: u64,
        /// Check the file and list its nodes; enrol nothing.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Subcommand)]
enum ElementsCommand {
    /// Run elements on a running (`--target /`) or installed system (a
    /// root folder, entered with a chroot).
    Apply {
        #[command(flatten)]
        sel: SelectionArgs,
        /// The system's root folder.
        #[arg(long)]
        target: PathBuf,
        /// Phases to run, comma separated (default: all).
        #[arg(long, value_delimiter = ',')]
        phases: Vec<String>,
        /// Leave out this hook (NAME or PHASE/NAME; repeatable).
        #[arg(long = "exclude-hook")]
        exclude_hooks: Vec<String>,
        /// Print the plan and change nothing (environment.d files run in a
        /// sandbox that cannot write the host).
        #[arg(long)]
        dry_run: bool,
        /// Also write hook output to this file.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// What will run, in what order, from which element. Reads only:
    /// environment.d files (for `when:` filters) run in a sandbox that sees
    /// the elements, /usr and /etc read-only, and no network.
    Plan {
        #[command(flatten)]
        sel: SelectionArgs,
        /// Phases to show, comma separated (default: all).
        #[arg(long, value_delimiter = ',')]
        phases: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The expanded element set and where each element comes from.
    Deps {
        #[command(flatten)]
        sel: SelectionArgs,
        #[arg(long)]
        json: bool,
    },
    /// One element: its files, dependencies and what it does.
    Show {
        name: String,
        #[command(flatten)]
        sel: SelectionArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DistroArg {
    Debian,
    Fedora,
}

impl SelectionArgs {
    fn into_selection(self) -> apply::Selection {
        // Positional names first, then -e ones: breadth-first order follows
        // the list, and a command line uses one form or the other.
        let mut elements = self.names;
        elements.extend(self.elements);
        apply::Selection {
            elements,
            exclude: self.exclude_elements,
            elements_path: self.elements_path,
            distro: self.distro.map(|d| match d {
                DistroArg::Debian => Distro::Debian,
                DistroArg::Fedora => Distro::Fedora,
            }),
            release: self.release,
            kickstart: self.kickstart,
            kickstart_package_map: self.kickstart_package_map,
            image_name: self.image_name,
            cache_dir: self.cache_dir,
            offline: self.offline,
        }
    }
}

fn parse_phases(names: &[String]) -> anyhow::Result<Vec<Phase>> {
    names
        .iter()
        .map(|n| {
            Phase::from_dir(n.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--phases: unknown phase {n:?} (one of {})",
                    Phase::ALL.map(|p| p.dir()).join(", ")
                )
            })
        })
        .collect()
}

#[derive(Clone, Copy, ValueEnum)]
enum MediaArg {
    Cdrom,
    Usb,
    Disk,
}

#[derive(Clone, Copy, ValueEnum)]
enum FirmwareArg {
    Uefi,
    UefiSecure,
    Bios,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let Some(sig) = interrupt::signal() else {
                // One line: the contexts joined with ": ". Multi-line
                // details (console tails) follow on their own lines.
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            };
            // Work stopped by the signal: its contexts ("reading x.part")
            // say only where it stopped. Other errors (a write's "first MiB
            // zeroed") are kept. 128 + the signal, as a shell reports a
            // process the signal killed.
            if interrupt::is_interrupt(&e) {
                eprintln!("error: interrupted by {sig}");
            } else {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(128 + sig as u8)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let progress = Progress::new(cli.quiet);
    match cli.command {
        Command::Build {
            spec,
            output,
            base,
            base_sha256,
            base_checksum_url,
            elements_path,
            exclude_elements,
            workdir,
            cache_dir,
            keep_workdir,
            compression,
            no_cache,
            offline,
            insecure_skip_signature,
            kickstart,
            kickstart_package_map,
            log,
            persistent_size,
            format,
        } => {
            // Before any thread exists: mounts made by the build then live
            // only in this process's namespace.
            chroot::isolate_mounts()?;
            interrupt::install()?;
            let report = build::build(
                &BuildOptions {
                    spec,
                    output,
                    format,
                    base,
                    base_sha256,
                    base_checksum_url,
                    elements_path,
                    exclude_elements,
                    workdir,
                    cache_dir,
                    keep_workdir,
                    compression,
                    no_cache,
                    offline,
                    insecure_skip_signature,
                    kickstart,
                    kickstart_package_map,
                    log,
                    persistent_size,
                },
                &progress,
            )?;
            if !cli.quiet {
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
                println!(
                    "{} {}: {} (kernel {}, {boots}) built in {:.0} s",
                    report.format.name(),
                    files.join(" + "),
                    human_bytes(report.size),
                    report.kernel,
                    report.seconds
                );
            }
            Ok(())
        }
        Command::Assemble {
            tree,
            esp_dir,
            label,
            root,
            output,
            no_media_checksum,
        } => {
            let r = assemble::assemble(&assemble::AssembleOptions {
                tree,
                esp_dir,
                label,
                root,
                output: output.clone(),
                seed: None,
                media_checksum: !no_media_checksum,
                epoch: None,
            })?;
            if !cli.quiet {
                println!(
                    "{}: {} ({} files, ESP {})",
                    output.display(),
                    human_bytes(r.size),
                    r.files,
                    r.esp_fat
                );
            }
            Ok(())
        }
        Command::Fetch {
            what,
            sha256,
            checksum_url,
            unpack,
            cache_dir,
            offline,
            insecure_skip_signature,
        } => {
            // A debootstrap base mounts /proc in its target: as root, keep
            // such mounts in a namespace that dies with us. Not being root
            // is fine for downloads, so a failure here is not an error.
            let _ = chroot::isolate_mounts();
            interrupt::install()?;
            let report = prefetch::fetch(
                &prefetch::FetchOptions {
                    what,
                    sha256,
                    checksum_url,
                    unpack,
                    cache_dir,
                    offline,
                    insecure_skip_signature,
                },
                &progress,
            )?;
            if !cli.quiet {
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
        Command::Elements { command } => match command {
            ElementsCommand::Apply {
                sel,
                target,
                phases,
                exclude_hooks,
                dry_run,
                log,
            } => {
                let opts = apply::ApplyOptions {
                    selection: sel.into_selection(),
                    target,
                    phases: parse_phases(&phases)?,
                    exclude_hooks,
                    dry_run,
                    log,
                };
                if !dry_run {
                    chroot::isolate_mounts()?;
                    interrupt::install()?;
                }
                apply::apply(&opts, &progress)
            }
            ElementsCommand::Plan { sel, phases, json } => {
                print!(
                    "{}",
                    apply::plan(&sel.into_selection(), &parse_phases(&phases)?, json)?
                );
                Ok(())
            }
            ElementsCommand::Deps { sel, json } => {
                print!("{}", apply::deps(&sel.into_selection(), json)?);
                Ok(())
            }
            ElementsCommand::Show { name, sel, json } => {
                print!("{}", apply::show(&sel.into_selection(), &name, json)?);
                Ok(())
            }
        },
        Command::Ramdisk {
            command:
                RamdiskCommand::Pack {
                    root,
                    output,
                    compression,
                    level,
                },
        } => {
            interrupt::install()?;
            let compression = undercloud_live::fs::cpio::Compression::parse(&compression, level)?;
            let report = build::pack_folder(&root, &output, compression)?;
            if !cli.quiet {
                println!("{}: {report}", output.display());
            }
            Ok(())
        }
        Command::Medium { command } => {
            let find = |device: Option<PathBuf>| -> anyhow::Result<medium::Medium> {
                match device {
                    Some(d) => medium::Medium::open(&d),
                    None => medium::Medium::discover()?.ok_or_else(|| {
                        anyhow::anyhow!(
                            "this system was not booted from a live medium (no root=live: on the kernel command line); name one with --device"
                        )
                    }),
                }
            };
            match command {
                MediumCommand::Show { device, json } => {
                    let m = find(device)?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&m)?);
                    } else {
                        print!("{}", medium::render(&m));
                    }
                }
                MediumCommand::Cat { path, device } => {
                    let m = find(device)?;
                    let bytes = m.read_esp_file(&path)?.ok_or_else(|| {
                        anyhow::anyhow!("{path} is not on the ESP of {}", m.disk().display())
                    })?;
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&bytes)
                        .map_err(|e| anyhow::anyhow!("writing to stdout: {e}"))?;
                }
            }
            Ok(())
        }
        Command::Status { json, wait } => {
            let report = status::status(wait.map(Duration::from_secs))?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report)
                        .map_err(|e| anyhow::anyhow!("encoding the report: {e}"))?
                );
            } else {
                print!("{}", status::render_table(&report));
            }
            if !report.ready {
                anyhow::bail!("{}", status::summary(&report));
            }
            Ok(())
        }
        Command::Undercloud { command } => match command {
            UndercloudCommand::Configure {
                config,
                root,
                dry_run,
            } => {
                let out = configure::configure(&configure::Options {
                    root,
                    config,
                    dry_run,
                })?;
                if !cli.quiet || dry_run {
                    print!("{out}");
                }
                Ok(())
            }
            UndercloudCommand::Enroll {
                nodes,
                api,
                wait,
                check,
            } => {
                let out = nodes::run(&nodes::Options {
                    nodes,
                    api,
                    wait: std::time::Duration::from_secs(wait),
                    check,
                })?;
                if !cli.quiet || check {
                    print!("{out}");
                }
                Ok(())
            }
        },
        Command::Cache { command } => match command {
            CacheCommand::List { cache_dir } => {
                let dir = cache_dir.unwrap_or_else(undercloud_live::cache::default_cache_dir);
                print!("{}", cache::manage::list_text(&dir)?);
                Ok(())
            }
            CacheCommand::Prune {
                older_than,
                all,
                dry_run,
                cache_dir,
            } => {
                let dir = cache_dir.unwrap_or_else(undercloud_live::cache::default_cache_dir);
                let rule = cache::manage::Prune {
                    all,
                    older_than,
                    dry_run,
                };
                print!("{}", cache::manage::prune_text(&dir, rule)?);
                Ok(())
            }
        },
        Command::Verify { image } => {
            let summary = inspect::verify(&image)?;
            if !cli.quiet {
                println!("{summary}");
            }
            Ok(())
        }
        Command::Inspect { image, json } => {
            let report = inspect::inspect(&image)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", inspect::render(&report));
            }
            Ok(())
        }
        Command::Boot {
            image,
            media,
            kernel,
            initrd,
            append,
            firmware,
            expect,
            timeout,
            memory,
            cpus,
            accel,
            log,
            writable,
            disks,
            forwards,
            links,
        } => {
            let media = media.map(|m| match m {
                MediaArg::Cdrom => qemu::Media::Cdrom,
                MediaArg::Usb => qemu::Media::Usb,
                MediaArg::Disk => qemu::Media::Disk,
            });
            let boot = qemu::Boot::choose(image, media, kernel, initrd, append)?;
            let opts = qemu::BootOptions {
                firmware: match firmware {
                    Some(FirmwareArg::Uefi) => qemu::Firmware::Uefi,
                    Some(FirmwareArg::UefiSecure) => qemu::Firmware::UefiSecure,
                    Some(FirmwareArg::Bios) => qemu::Firmware::Bios,
                    None => boot.default_firmware(),
                },
                boot,
                expect: expect.clone(),
                timeout: Duration::from_secs(timeout),
                memory_mib: memory,
                cpus,
                accel: match accel {
                    AccelArg::Auto => qemu::Accel::Auto,
                    AccelArg::Kvm => qemu::Accel::Kvm,
                    AccelArg::Tcg => qemu::Accel::Tcg,
                },
                log,
                echo: !cli.quiet,
                writable,
                extra_drives: disks,
                forwards,
                links,
            };
            match qemu::boot(&opts)? {
                qemu::BootOutcome::Marker { elapsed } => {
                    if !cli.quiet {
                        eprintln!(
                            "==> found {:?} after {:.1} s",
                            expect.unwrap_or_default(),
                            elapsed.as_secs_f64()
                        );
                    }
                }
                qemu::BootOutcome::PoweredOff { elapsed } => {
                    if !cli.quiet {
                        eprintln!("==> guest powered off after {:.1} s", elapsed.as_secs_f64());
                    }
                }
            }
            Ok(())
        }
        Command::Install {
            target,
            yes,
            config,
            keep_live_changes,
            source,
            live_medium,
            log,
            unattended,
        } => {
            let req = install::Request {
                target,
                config,
                yes,
                keep_live_changes,
                source,
                live_medium,
                log: Some(log),
                unattended,
            };
            match install::run(&req, progress.clone()) {
                Ok(report) => {
                    // One plain line for the console and the tests, quiet or not.
                    println!(
                        "undercloud-live install: done ({})",
                        report.target.display()
                    );
                    if unattended {
                        install::after(report.after)?;
                    }
                    Ok(())
                }
                Err(e) => {
                    if unattended {
                        println!("undercloud-live install: FAILED: {e:#}");
                    }
                    Err(e)
                }
            }
        }
        Command::Devices { all, json } => {
            let devices = write::list_devices(all)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                print!("{}", write::render_devices(&devices, all));
            }
            Ok(())
        }
        Command::Write {
            image,
            devices,
            yes,
            allow_fixed,
            to_file,
            no_verify,
            json,
        } => {
            let plan = write::plan(&write::WriteOptions {
                image,
                targets: devices,
                allow_fixed,
                to_file,
            })?;
            if yes {
                if !cli.quiet {
                    eprint!("{}", write::describe(&plan));
                }
            } else {
                write::confirm(&plan)?;
            }
            // Only now: Ctrl-C at the prompt should just end the program.
            interrupt::install()?;
            let report = write::execute(plan, !no_verify, &progress)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if !cli.quiet {
                print!("{}", report.render());
            }
            match report.error() {
                Some(e) => Err(anyhow::anyhow!(e)),
                None => Ok(()),
            }
        }
    }
}
