//! The command line's types: one file per command family, each command an
//! `*Args` struct that becomes the library's options in one conversion, and
//! a `run` that calls the library and prints its report. `src/main.rs` only
//! parses, sets up the process (`Command::process`) and dispatches.
//!
//! It lives in the library, not the binary, so that `cargo test --lib`
//! checks the whole command line (`tests.rs`).

mod boot;
mod build;
mod elements;
mod fetch;
mod image;
mod live;
#[cfg(test)]
mod tests;
mod undercloud;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::progress::Progress;
use crate::{chroot, interrupt};

pub use boot::BootArgs;
pub use build::{AssembleArgs, BuildArgs, RamdiskCommand};
pub use elements::ElementsCommand;
pub use fetch::{CacheCommand, FetchArgs};
pub use image::{DevicesArgs, InspectArgs, VerifyArgs, WriteArgs};
pub use live::{InstallArgs, MediumCommand};
pub use undercloud::{StatusArgs, UndercloudCommand};

#[derive(Parser)]
#[command(
    name = "undercloud-live",
    version,
    about = "Build, boot, write and look after a live USB/ISO image of an OpenStack undercloud",
    // Help wider than this is hard to read even on a wide terminal; a
    // narrower terminal still wraps at its own width.
    max_term_width = 80
)]
pub struct Cli {
    /// Print only errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

// The doc comment of each variant is its command's help: one list of what
// the program does, in `--help`'s order.
#[derive(Subcommand)]
pub enum Command {
    /// Build a hybrid ISO/USB image from an image spec.
    Build(BuildArgs),
    /// What the cache holds (downloads, package layers, live initrds),
    /// and removing what is stale.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Check an image's (or device's) GPT as a whole (both headers, its
    /// size, every partition inside it), then recompute its embedded media
    /// checksum.
    Verify(VerifyArgs),
    /// Show an image's partitions, ISO volume, boot entries, ESP files and
    /// media checksum, with warnings about a damaged GPT.
    Inspect(InspectArgs),
    /// Download and verify a base into the cache; optionally unpack it.
    Fetch(FetchArgs),
    /// Write the ESP and the hybrid image from a staged ISO tree (no build).
    Assemble(AssembleArgs),
    /// diskimage-builder elements: apply them to a system, or see what
    /// they would do.
    #[command(subcommand)]
    Elements(ElementsCommand),
    /// The live medium this system booted from, and files on its ESP.
    #[command(subcommand)]
    Medium(MediumCommand),
    /// Netboot ramdisks (`build --format ramdisk` makes whole ones).
    #[command(subcommand)]
    Ramdisk(RamdiskCommand),
    /// Boot an image (raw or qcow2), or a kernel and initramfs, in QEMU and
    /// watch its serial console.
    Boot(BootArgs),
    /// Install the live system to a disk (run in the live session).
    Install(InstallArgs),
    /// Inside the image: the state of each undercloud service and endpoint.
    Status(StatusArgs),
    /// Inside the image: the undercloud's boot-time configuration.
    #[command(subcommand)]
    Undercloud(UndercloudCommand),
    /// List removable and USB disks that an image could be written to.
    Devices(DevicesArgs),
    /// Write an image (plain, .xz, .zst or .gz) to one or more USB sticks.
    Write(WriteArgs),
}

/// What every command gets besides its own arguments.
pub struct Ctx {
    /// `--quiet`: print only errors.
    pub quiet: bool,
    pub progress: Progress,
}

impl Ctx {
    pub fn new(quiet: bool) -> Ctx {
        Ctx {
            quiet,
            progress: Progress::new(quiet),
        }
    }
}

/// What a command needs of the process before it starts. `main` sets it
/// up once, before any thread exists, from `Command::process`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    pub mounts: Mounts,
    pub interrupts: Interrupts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mounts {
    /// The host's mount namespace: the command mounts nothing.
    Host,
    /// A private mount namespace that dies with the process, so that a
    /// crash leaves no mount behind; failing to get one as root is an
    /// error. Not root: the command reads and checks its input first and
    /// then refuses with its own message ([`chroot::require_root`]), so a
    /// mistake in a spec is not hidden behind "are you root?".
    Private,
    /// A private mount namespace if we may have one (root); the command
    /// works without.
    PrivateIfRoot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupts {
    /// SIGINT and SIGTERM kill the process at once.
    Default,
    /// SIGINT and SIGTERM raise a flag the work checks: it stops, cleans
    /// up, and the process exits with 128 + the signal.
    Caught,
    /// As `Caught`, but only from a point the command chooses (it calls
    /// `interrupt::install` itself): before it, Ctrl-C at a prompt just
    /// ends the program.
    CaughtLater,
}

impl Process {
    const PLAIN: Process = Process {
        mounts: Mounts::Host,
        interrupts: Interrupts::Default,
    };

    pub fn enter(self) -> Result<()> {
        match self.mounts {
            Mounts::Host => {}
            Mounts::Private if nix::unistd::geteuid().is_root() => chroot::isolate_mounts()?,
            Mounts::Private => {}
            Mounts::PrivateIfRoot => {
                // Not root: nothing to isolate, and not an error.
                let _ = chroot::isolate_mounts();
            }
        }
        if self.interrupts == Interrupts::Caught {
            interrupt::install()?;
        }
        Ok(())
    }
}

impl Command {
    /// The one table of each command's process set-up.
    pub fn process(&self) -> Process {
        use Interrupts::*;
        use Mounts::*;
        let (mounts, interrupts) = match self {
            // The build mounts the root's /proc, /dev and image
            // filesystems.
            Command::Build(_) => (Private, Caught),
            // A debootstrap base mounts /proc in its target; downloads need
            // no root.
            Command::Fetch(_) => (PrivateIfRoot, Caught),
            // Hooks mount in the target; a dry run only reads.
            Command::Elements(ElementsCommand::Apply(a)) if !a.dry_run => (Private, Caught),
            Command::Ramdisk(RamdiskCommand::Pack(_)) => (Host, Caught),
            // Interrupts are caught once the user has confirmed.
            Command::Write(_) => (Host, CaughtLater),
            _ => return Process::PLAIN,
        };
        Process { mounts, interrupts }
    }
}

/// A clap value parser from one of the library's `parse` functions: its
/// error, with every context, becomes clap's message.
fn lib_parser<T: 'static>(
    parse: fn(&str) -> Result<T>,
) -> impl Fn(&str) -> std::result::Result<T, String> + Clone + Send + Sync + 'static {
    move |s| parse(s).map_err(|e| format!("{e:#}"))
}

/// JSON for `--json`, pretty as the other commands print it.
fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string_pretty(value)?)
}
