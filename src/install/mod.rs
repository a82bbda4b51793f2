//! `undercloud-live install`: put the live system on a disk.
//!
//! Steps, each logged with its time: check the target (the write command's
//! rules, never the live medium, big enough), wipe it, make the file
//! systems (through loop devices over the partitions' byte ranges), copy
//! the image's read-only root, configure it (fstab by UUID, fresh
//! machine-id, host name, password, keys, network, no live leftovers),
//! build a host-only initramfs, install GRUB (UEFI through shim, BIOS
//! through the i386-pc core), and last write the partition table. A
//! failure leaves the disk without a partition table (see `layout`).

pub mod bootloader;
pub mod config;
pub mod copy;
pub mod disk;
pub mod finalize;
pub mod format;
pub mod layout;
pub mod target;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::boot::kernel;
use crate::progress::{human_bytes, Progress};
use crate::system::command::Task;
use crate::write::devices::{Sysfs, Usage};
use config::{After, Config};

/// Where the installer's own log goes (and is copied into the target).
pub const LOG_PATH: &str = "/var/log/undercloud-live-install.log";

#[derive(Clone, Debug, Default)]
pub struct InstallOptions {
    pub target: Option<PathBuf>,
    pub config: Option<Config>,
    /// Do not ask.
    pub yes: bool,
    pub keep_live_changes: bool,
    /// Copy this root instead of the live image's.
    pub source: Option<PathBuf>,
    /// The whole-disk device of the live medium, never a target.
    pub medium: Option<PathBuf>,
    /// The log file (default `LOG_PATH`).
    pub log: Option<PathBuf>,
    /// The running system's kernel command line (for the live arguments
    /// to drop); read from /proc/cmdline when `None`.
    pub cmdline: Option<String>,
}

/// What was done, for the caller and the tests.
#[derive(Debug)]
pub struct Report {
    pub target: PathBuf,
    pub root_uuid: String,
    pub bios: bool,
    pub after: After,
    /// (step, seconds)
    pub timings: Vec<(String, f64)>,
}

/// Progress lines, each also appended to the log with its time.
pub struct Log {
    progress: Progress,
    /// Put before each progress line ("install: ").
    prefix: &'static str,
    file: Option<fs::File>,
    started: Instant,
    step_start: Instant,
    step: String,
    timings: Vec<(String, f64)>,
}

impl Log {
    pub fn new(progress: Progress, prefix: &'static str, path: &Path) -> Log {
        if let Some(d) = path.parent() {
            let _ = fs::create_dir_all(d);
        }
        let file = OpenOptions::new().create(true).append(true).open(path).ok();
        Log {
            progress,
            prefix,
            file,
            started: Instant::now(),
            step_start: Instant::now(),
            step: String::new(),
            timings: Vec::new(),
        }
    }

    pub fn line(&mut self, msg: &str) {
        if let Some(f) = &mut self.file {
            let _ = writeln!(f, "[{:7.1}] {msg}", self.started.elapsed().as_secs_f64());
        }
    }

    /// Starts a timed step.
    pub fn step(&mut self, msg: impl Into<String>) {
        self.end_step();
        let msg = msg.into();
        self.progress.step(format!("{}{msg}", self.prefix));
        self.line(&msg);
        self.step = msg;
        self.step_start = Instant::now();
    }

    pub fn note(&mut self, msg: impl AsRef<str>) {
        self.progress
            .step(format!("{}{}", self.prefix, msg.as_ref()));
        self.line(msg.as_ref());
    }

    pub fn end_step(&mut self) {
        if !self.step.is_empty() {
            let secs = self.step_start.elapsed().as_secs_f64();
            self.line(&format!("  ({secs:.1} s)"));
            self.timings.push((std::mem::take(&mut self.step), secs));
        }
    }
}

/// Everything checked and decided before the disk is touched.
struct Plan {
    cfg: Config,
    source: PathBuf,
    distro: crate::spec::Distro,
    kernel: kernel::Kernel,
    bios: bool,
    target: target::Target,
    kernel_args: Vec<String>,
}

fn plan(opts: &InstallOptions, log: &mut Log) -> Result<Plan> {
    let cfg = opts.config.clone().unwrap_or_default();
    for w in &cfg.warnings {
        log.note(format!("warning: {w}"));
    }
    let target_path = opts
        .target
        .clone()
        .or_else(|| cfg.target.as_ref().map(PathBuf::from))
        .context("no target disk: pass --target DEVICE (or set target: in the config)")?;
    let keep = opts.keep_live_changes || cfg.keep_live_changes;
    let source = match (&opts.source, keep) {
        (Some(s), _) => s.clone(),
        (None, true) => PathBuf::from("/"),
        (None, false) => copy::live_root().with_context(|| {
            format!(
                "not a live session: none of {} holds the image's root (pass --source ROOT, or --keep-live-changes to copy the running system)",
                copy::LIVE_ROOTS.join(", ")
            )
        })?,
    };
    let (distro, _) = crate::elements::apply::os_release(&source)?;
    let kernel = kernel::find(&source)?;
    // Fail on a missing loader now, not after the copy.
    bootloader::esp_files(&source, distro, "")?;
    let why_not = crate::boot::bios::missing(&source, distro, cfg.filesystem.bios_core());
    let bios = match (cfg.bios, why_not) {
        (Some(true), Some(why)) => bail!("bios: true, but {why}"),
        (Some(b), _) => b,
        (None, why) => why.is_none(),
    };
    format::check_tools(cfg.filesystem, cfg.swap.is_some())?;

    log.step(format!("measuring {}", source.display()));
    let used = copy::measure(&source)?;
    let esp = cfg
        .esp_size
        .map(|s| s.0)
        .unwrap_or(crate::image::layout::DEFAULT_ESP_SIZE);
    let swap = cfg.swap.map(|s| s.0).unwrap_or(0);
    // File system overhead and room to breathe: a tenth more, 256 MiB more.
    let need = disk::needed(used, 256 << 20, esp, bios, swap);
    log.note(format!(
        "the root holds {}; the target needs at least {}",
        human_bytes(used),
        human_bytes(need)
    ));
    let (sysfs, usage) = (Sysfs::default(), Usage::read()?);
    let target = target::check(
        &target_path,
        &target::Checks {
            sysfs: &sysfs,
            usage: &usage,
            medium: opts.medium.as_deref(),
            need,
        },
    )?;
    let cmdline = match &opts.cmdline {
        Some(c) => c.clone(),
        None => fs::read_to_string("/proc/cmdline").unwrap_or_default(),
    };
    // Outside a live session the running kernel's arguments belong to
    // another system: only the config's are used.
    let live_args = if cmdline.split_whitespace().any(|a| a == "rd.live.image") {
        cmdline
    } else {
        String::new()
    };
    let kernel_args = finalize::kernel_args(&live_args, &cfg);
    Ok(Plan {
        cfg,
        source,
        distro,
        kernel,
        bios,
        target,
        kernel_args,
    })
}

fn confirm(p: &Plan) -> Result<()> {
    crate::write::ask_yes_no(
        "install",
        &format!(
            "Install undercloud-live to {} ({}, {}), destroying everything on it? [y/N] ",
            p.target.shown(),
            p.target.disk.description(),
            human_bytes(p.target.disk.size)
        ),
    )
}

/// Installs; the whole story is in the log.
pub fn install(opts: &InstallOptions, progress: Progress) -> Result<Report> {
    let log_path = opts.log.clone().unwrap_or_else(|| PathBuf::from(LOG_PATH));
    let mut log = Log::new(progress, "install: ", &log_path);
    log.line("undercloud-live install started");
    let p = match plan(opts, &mut log) {
        Ok(p) => p,
        Err(e) => {
            log.line(&format!("refused: {e:#}"));
            return Err(e);
        }
    };
    if !opts.yes {
        confirm(&p)?;
    }
    let dev = p.target.disk.path.clone();
    log.step(format!("wiping {}", p.target.shown()));
    layout::wipe_disk(&dev, p.target.disk.size)?;
    let job = disk::DiskJob {
        source: &p.source,
        distro: p.distro,
        kernel: &p.kernel,
        bios: p.bios,
        cfg: &p.cfg,
        kernel_args: &p.kernel_args,
        target: &dev,
        kind: disk::Kind::Installed,
        ids: disk::Ids::Random,
        log_path: Some(&log_path),
    };
    let lay = disk::layout(&job, p.target.disk.size)?;
    let r = disk::make(&job, &lay, &mut log);
    match r {
        Ok(root_uuid) => {
            log.end_step();
            log.note(format!(
                "done: {} boots {} in {:.0} s",
                p.target.shown(),
                if p.bios {
                    "under UEFI and BIOS"
                } else {
                    "under UEFI"
                },
                log.started.elapsed().as_secs_f64()
            ));
            Ok(Report {
                target: dev,
                root_uuid,
                bios: p.bios,
                after: p.cfg.after,
                timings: log.timings,
            })
        }
        Err(e) => {
            log.end_step();
            log.line(&format!("failed: {e:#}"));
            match layout::wipe_table(&dev, &lay) {
                Ok(()) => log.note(format!("wiped the partition table of {}", dev.display())),
                Err(w) => log.note(format!("could not wipe {}: {w:#}", dev.display())),
            }
            Err(e)
        }
    }
}

/// The value of `key=` on a kernel command line.
pub fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

/// Ends the live session as the config says (unattended installs).
pub fn after(what: After) -> Result<()> {
    let verb = match what {
        After::Poweroff => "poweroff",
        After::Reboot => "reboot",
        After::None => return Ok(()),
    };
    Task::new(
        format!("systemctl {verb}"),
        Command::new("systemctl").args(["--no-block", verb]),
    )
    .run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_values() {
        let c =
            "root=live:X undercloud-live.install=/dev/vdb undercloud-live.install-config=i.yaml";
        assert_eq!(
            cmdline_value(c, "undercloud-live.install").as_deref(),
            Some("/dev/vdb")
        );
        assert_eq!(
            cmdline_value(c, "undercloud-live.install-config").as_deref(),
            Some("i.yaml")
        );
        assert_eq!(cmdline_value(c, "nothing"), None);
    }
}

/// The command line's request, before the live medium and the kernel
/// command line fill the gaps.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub target: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub yes: bool,
    pub keep_live_changes: bool,
    pub source: Option<PathBuf>,
    pub live_medium: Option<PathBuf>,
    pub log: Option<PathBuf>,
    /// As the boot-time unit runs it: target and config named on the
    /// kernel command line (`undercloud-live.install=DEV`,
    /// `undercloud-live.install-config=NAME` on the ESP), no questions,
    /// then power off or reboot as the config says.
    pub unattended: bool,
}

pub const CMDLINE_TARGET: &str = "undercloud-live.install";
pub const CMDLINE_CONFIG: &str = "undercloud-live.install-config";

pub fn run(req: &Request, progress: Progress) -> Result<Report> {
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let medium = match &req.live_medium {
        Some(p) => Some(crate::medium::Medium::open(p)?),
        None => crate::medium::Medium::discover().context("finding the live medium")?,
    };
    let mut target = req.target.clone();
    let config = match &req.config {
        Some(p) => Some(config::load(p)?),
        None if req.unattended => match cmdline_value(&cmdline, CMDLINE_CONFIG) {
            Some(name) => {
                let m = medium.as_ref().with_context(|| {
                    format!("{CMDLINE_CONFIG}={name}: no live medium found to read it from")
                })?;
                let bytes = m.read_esp_file(&name)?.with_context(|| {
                    format!("{CMDLINE_CONFIG}={name}: no such file on the live medium's ESP")
                })?;
                Some(config::parse(&bytes, Path::new(&name))?)
            }
            None => None,
        },
        None => None,
    };
    if req.unattended && target.is_none() {
        target = cmdline_value(&cmdline, CMDLINE_TARGET).map(PathBuf::from);
    }
    if req.unattended {
        // At boot the disk's node may still be on its way (a slow
        // controller, udev busy): give it half a minute.
        if let Some(t) = &target {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !t.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
        }
    }
    let opts = InstallOptions {
        target,
        config,
        yes: req.yes || req.unattended,
        keep_live_changes: req.keep_live_changes,
        source: req.source.clone(),
        medium: medium.as_ref().map(|m| m.disk().to_path_buf()),
        log: req.log.clone(),
        cmdline: Some(cmdline),
    };
    install(&opts, progress)
}
