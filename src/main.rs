//! Command line: parse, call the library, print errors. Nothing else lives
//! here.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use undercloud_live::build::{self, BuildOptions};
use undercloud_live::progress::{human_bytes, Progress};
use undercloud_live::{chroot, inspect, interrupt, qemu, spec};

fn parse_size(s: &str) -> Result<spec::ByteSize, String> {
    spec::ByteSize::parse(s).map_err(|e| format!("{e:#}"))
}

#[derive(Parser)]
#[command(
    name = "undercloud-live",
    version,
    about = "Build, boot and look after a live USB/ISO image of an OpenStack undercloud"
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
        /// Output image (default: the spec's `output`, else NAME.iso).
        #[arg(long, short)]
        output: Option<PathBuf>,
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
        /// Work folder (default: a new folder under $TMPDIR or /tmp).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// Download cache (default: $XDG_CACHE_HOME/undercloud-live).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Keep the work folder for inspection.
        #[arg(long)]
        keep_workdir: bool,
        /// Use only what is already in the cache.
        #[arg(long)]
        offline: bool,
        /// Add a persistence partition of this size (e.g. 1GiB), or resize
        /// the spec's.
        #[arg(long, value_parser = parse_size)]
        persistent_size: Option<spec::ByteSize>,
    },
    /// Recompute an image's (or device's) embedded media checksum.
    Verify {
        /// Image file or block device.
        image: PathBuf,
    },
    /// Show an image's partitions, ISO volume, boot entries, ESP files and
    /// media checksum.
    Inspect {
        /// Image file or block device.
        image: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Boot an image in QEMU and watch its serial console.
    Boot {
        image: PathBuf,
        /// How the image is attached.
        #[arg(long = "as", value_enum, default_value_t = MediaArg::Cdrom)]
        media: MediaArg,
        #[arg(long, value_enum, default_value_t = FirmwareArg::Uefi)]
        firmware: FirmwareArg,
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
    },
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
            // One line: the contexts joined with ": ". Multi-line details
            // (console tails) follow on their own lines.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
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
            workdir,
            cache_dir,
            keep_workdir,
            offline,
            persistent_size,
        } => {
            // Before any thread exists: mounts made by the build then live
            // only in this process's namespace.
            chroot::isolate_mounts()?;
            interrupt::install()?;
            let report = build::build(
                &BuildOptions {
                    spec,
                    output,
                    base,
                    base_sha256,
                    base_checksum_url,
                    elements_path,
                    workdir,
                    cache_dir,
                    keep_workdir,
                    offline,
                    persistent_size,
                },
                &progress,
            )?;
            if !cli.quiet {
                println!(
                    "{}: {} (kernel {}, {}) built in {:.0} s",
                    report.output.display(),
                    human_bytes(report.size),
                    report.kernel,
                    if report.bios {
                        "BIOS + UEFI"
                    } else {
                        "UEFI only"
                    },
                    report.seconds
                );
            }
            Ok(())
        }
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
            firmware,
            expect,
            timeout,
            memory,
            cpus,
            accel,
            log,
            writable,
        } => {
            let opts = qemu::BootOptions {
                image,
                media: match media {
                    MediaArg::Cdrom => qemu::Media::Cdrom,
                    MediaArg::Usb => qemu::Media::Usb,
                    MediaArg::Disk => qemu::Media::Disk,
                },
                firmware: match firmware {
                    FirmwareArg::Uefi => qemu::Firmware::Uefi,
                    FirmwareArg::UefiSecure => qemu::Firmware::UefiSecure,
                    FirmwareArg::Bios => qemu::Firmware::Bios,
                },
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
                extra_drives: Vec::new(),
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
    }
}
