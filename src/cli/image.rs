//! Looking at and writing finished images: `verify`, `inspect`, `devices`,
//! `write`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::{json, Ctx};
use crate::{inspect, interrupt, write};

#[derive(Args)]
pub struct VerifyArgs {
    /// Image file or block device.
    image: PathBuf,
}

impl VerifyArgs {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let summary = inspect::verify(&self.image)?;
        if !ctx.quiet {
            println!("{summary}");
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct InspectArgs {
    /// Image file or block device.
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl InspectArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        let report = inspect::inspect(&self.image)?;
        if self.json {
            println!("{}", json(&report)?);
        } else {
            print!("{}", inspect::render(&report));
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct DevicesArgs {
    /// List every disk, fixed ones and the system disk included.
    #[arg(long)]
    all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl DevicesArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        let devices = write::list_devices(self.all)?;
        if self.json {
            println!("{}", json(&devices)?);
        } else {
            print!("{}", write::render_devices(&devices, self.all));
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct WriteArgs {
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
}

impl WriteArgs {
    /// What the library checks and writes; the rest (asking, reading
    /// back, the report's form) is the command's.
    fn options(&self) -> write::WriteOptions {
        write::WriteOptions {
            image: self.image.clone(),
            targets: self.devices.clone(),
            allow_fixed: self.allow_fixed,
            to_file: self.to_file,
        }
    }

    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let plan = write::plan(&self.options())?;
        if self.yes {
            if !ctx.quiet {
                eprint!("{}", write::describe(&plan));
            }
        } else {
            write::confirm(&plan)?;
        }
        // Only now (`Interrupts::CaughtLater`): Ctrl-C at the prompt should
        // just end the program.
        interrupt::install()?;
        let report = write::execute(plan, !self.no_verify, &ctx.progress)?;
        if self.json {
            println!("{}", json(&report)?);
        } else if !ctx.quiet {
            print!("{}", report.render());
        }
        match report.error() {
            Some(e) => Err(anyhow::anyhow!(e)),
            None => Ok(()),
        }
    }
}
