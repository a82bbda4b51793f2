//! In the live session: `install`, `medium`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{json, Ctx};
use crate::{install, medium};

#[derive(Args)]
pub struct InstallArgs {
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
}

impl From<InstallArgs> for install::Request {
    fn from(a: InstallArgs) -> install::Request {
        install::Request {
            target: a.target,
            config: a.config,
            yes: a.yes,
            keep_live_changes: a.keep_live_changes,
            source: a.source,
            live_medium: a.live_medium,
            log: Some(a.log),
            unattended: a.unattended,
        }
    }
}

impl InstallArgs {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let req = install::Request::from(self);
        match install::run(&req, ctx.progress.clone()) {
            Ok(report) => {
                // One plain line for the console and the tests, quiet or not.
                println!(
                    "undercloud-live install: done ({})",
                    report.target.display()
                );
                if req.unattended {
                    install::after(report.after)?;
                }
                Ok(())
            }
            Err(e) => {
                // The documented console line of the boot-time unit
                // (docs/install.md), beside the usual error line.
                if req.unattended {
                    println!("undercloud-live install: FAILED: {e:#}");
                }
                Err(e)
            }
        }
    }
}

#[derive(Subcommand)]
pub enum MediumCommand {
    /// Which disk the live system was booted from, and where its ESP is.
    Show(MediumShowArgs),
    /// Print a file of the medium's ESP (e.g. undercloud.yaml) to stdout.
    Cat(MediumCatArgs),
}

#[derive(Args)]
pub struct MediumShowArgs {
    /// An image file or device instead of the running system's medium.
    #[arg(long)]
    device: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct MediumCatArgs {
    /// Path on the ESP, '/'-separated.
    path: String,
    /// An image file or device instead of the running system's medium.
    #[arg(long)]
    device: Option<PathBuf>,
}

impl MediumCommand {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        match self {
            MediumCommand::Show(a) => {
                let m = find_medium(a.device)?;
                if a.json {
                    println!("{}", json(&m)?);
                } else {
                    print!("{}", medium::render(&m));
                }
            }
            MediumCommand::Cat(a) => {
                let m = find_medium(a.device)?;
                let bytes = m.read_esp_file(&a.path)?.ok_or_else(|| {
                    anyhow::anyhow!("{} is not on the ESP of {}", a.path, m.disk().display())
                })?;
                std::io::stdout()
                    .write_all(&bytes)
                    .map_err(|e| anyhow::anyhow!("writing to stdout: {e}"))?;
            }
        }
        Ok(())
    }
}

/// `--device`, else the medium this system booted from.
fn find_medium(device: Option<PathBuf>) -> Result<medium::Medium> {
    match device {
        Some(d) => medium::Medium::open(&d),
        None => medium::Medium::discover()?.ok_or_else(|| {
            anyhow::anyhow!(
                "this system was not booted from a live medium (no root=live: on the kernel command line); name one with --device"
            )
        }),
    }
}
