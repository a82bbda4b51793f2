//! Writing the image to USB sticks the way a careful operator would: pick
//! the device safely, ask, write several sticks from one read of the
//! image, first MiB last, read every stick back. See docs/write.md.
//!
//! - `devices`: sysfs discovery and what uses a disk;
//! - `safety`: the refusals, decided before anything is opened for writing;
//! - `source`: the image, plain or compressed, and its size;
//! - `writer`: the fan-out writer and the read-back.

pub mod devices;
pub mod safety;
pub mod source;
pub mod writer;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write as _};
use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;

use crate::interrupt;
use crate::progress::{human_bytes, Progress};
use devices::{Disk, Sysfs, Usage};
use safety::{Context, Kind, Target, Verdict};
use source::Source;
use writer::DeviceReport;

// ------------------------------------------------------------- devices

/// A disk as `undercloud-live devices` shows it.
#[derive(Debug, Serialize)]
pub struct DeviceEntry {
    #[serde(flatten)]
    pub disk: Disk,
    /// Holds the running system's root file system.
    pub system: bool,
}

/// Candidate targets (removable, USB or SD), or with `all` every disk.
pub fn list_devices(all: bool) -> Result<Vec<DeviceEntry>> {
    let sysfs = Sysfs::default();
    let usage = Usage::read()?;
    let root = std::fs::metadata("/")
        .map(|m| std::os::unix::fs::MetadataExt::dev(&m))
        .map(|d| sysfs.disks_under(devices::dev_id(d), &usage))
        .unwrap_or_default();
    Ok(sysfs
        .disks(&usage)?
        .into_iter()
        .map(|disk| DeviceEntry {
            system: root.contains(&disk.name),
            disk,
        })
        .filter(|e| all || (e.disk.candidate && !e.system))
        .collect())
}

pub fn render_devices(entries: &[DeviceEntry], all: bool) -> String {
    if entries.is_empty() {
        return if all {
            "no disks found\n".into()
        } else {
            "no removable or USB disks found (--all lists every disk)\n".into()
        };
    }
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let d = &e.disk;
            let mut notes = d.uses();
            if e.system {
                notes.insert(0, "system disk".into());
            }
            if d.read_only {
                notes.push("read-only".into());
            }
            if !d.candidate {
                notes.push("fixed".into());
            }
            [
                d.path.display().to_string(),
                human_bytes(d.size),
                d.transport.clone(),
                d.description(),
                d.serial.clone().unwrap_or_else(|| "-".into()),
                if notes.is_empty() {
                    "-".into()
                } else {
                    notes.join("; ")
                },
            ]
        })
        .collect();
    let header = ["DEVICE", "SIZE", "TRANSPORT", "MODEL", "SERIAL", "NOTES"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(header.map(String::from)).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

// --------------------------------------------------------------- write

pub struct WriteOptions {
    pub image: PathBuf,
    pub targets: Vec<PathBuf>,
    pub allow_fixed: bool,
    pub to_file: bool,
}

/// The checked image and targets, before anything is written.
pub struct Plan {
    pub source: Source,
    pub targets: Vec<Target>,
    /// Right devices that cannot take the image (too small, read-only).
    pub skipped: Vec<(Target, String)>,
}

/// Open the image and check every target. Any refusal stops everything,
/// and all refusals are reported at once.
pub fn plan(opts: &WriteOptions) -> Result<Plan> {
    let source = Source::open(&opts.image)?;
    let sysfs = Sysfs::default();
    let usage = Usage::read()?;
    let ctx = Context::new(&sysfs, &usage, &source, opts.allow_fixed, opts.to_file)?;
    let mut refusals = Vec::new();
    let mut targets = Vec::new();
    let mut skipped = Vec::new();
    // Two names for one device (/dev/sdb and a /dev/disk/by-id link)
    // would mean two writers on one disk.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for path in &opts.targets {
        let verdict = match safety::inspect(path, &ctx) {
            Ok(v) => v,
            Err(e) => {
                refusals.push(format!("{e:#}"));
                continue;
            }
        };
        let t = match &verdict {
            Verdict::Write(t) | Verdict::Skip(t, _) => t,
        };
        let key = match &t.kind {
            Kind::Block(d) => d.name.clone(),
            Kind::File { .. } => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
        };
        if let Some(first) = seen.insert(key, path.display().to_string()) {
            refusals.push(format!(
                "{}: the same device as {first}, named twice",
                path.display()
            ));
            continue;
        }
        match verdict {
            Verdict::Write(t) => targets.push(t),
            Verdict::Skip(t, why) => skipped.push((t, why)),
        }
    }
    if !refusals.is_empty() {
        bail!("refusing to write: {}", refusals.join("; "));
    }
    if targets.is_empty() {
        let why: Vec<String> = skipped
            .iter()
            .map(|(t, why)| format!("{}: {why}", t.shown()))
            .collect();
        bail!("nothing to write to: {}", why.join("; "));
    }
    Ok(Plan {
        source,
        targets,
        skipped,
    })
}

/// What is about to be destroyed, for the operator to read.
pub fn describe(plan: &Plan) -> String {
    let src = &plan.source;
    let mut out = format!(
        "image {} ({}, {})\n",
        src.path.display(),
        src.format.name(),
        src.size
            .map(human_bytes)
            .unwrap_or_else(|| format!("{} compressed, size unknown", human_bytes(src.file_len)))
    );
    out.push_str("will be overwritten:\n");
    for t in &plan.targets {
        match &t.kind {
            Kind::Block(d) => {
                let serial = d
                    .serial
                    .as_deref()
                    .map(|s| format!(", serial {s}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {}  {}, {}, {}{serial}",
                    t.shown(),
                    d.description(),
                    human_bytes(d.size),
                    d.transport
                );
                if d.partitions.is_empty() {
                    out.push_str("      no partitions\n");
                }
                for p in &d.partitions {
                    let fs = p.fstype.as_deref().unwrap_or("unknown contents");
                    let label = p
                        .label
                        .as_deref()
                        .map(|l| format!(" \"{l}\""))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "      {}  {}  {fs}{label}",
                        p.name,
                        human_bytes(p.size)
                    );
                }
            }
            Kind::File { exists } => {
                let _ = writeln!(
                    out,
                    "  {}  {}",
                    t.shown(),
                    if *exists { "regular file" } else { "new file" }
                );
            }
        }
    }
    if !plan.skipped.is_empty() {
        out.push_str("skipped (reported as failed):\n");
        for (t, why) in &plan.skipped {
            let _ = writeln!(out, "  {}  {why}", t.shown());
        }
    }
    out
}

/// Ask y/N on the terminal. Without a terminal there is nobody to ask,
/// and writing anyway would make `--yes` pointless: refuse.
pub fn confirm(plan: &Plan) -> Result<()> {
    let n = plan.targets.len();
    ask_yes_no(
        "write",
        &format!(
            "{}Write the image to {}, destroying everything on {}? [y/N] ",
            describe(plan),
            if n == 1 {
                plan.targets[0].shown()
            } else {
                format!("these {n} devices")
            },
            if n == 1 { "it" } else { "them" }
        ),
    )
}

/// Asks `question` on the terminal; Err unless answered y or yes. With no
/// terminal it refuses to `verb` (the caller's `--yes` is the way round).
pub fn ask_yes_no(verb: &str, question: &str) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to {verb} without confirmation: no terminal to ask on (pass --yes)");
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        bail!("not confirmed; nothing was written");
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub image: PathBuf,
    pub format: source::Format,
    /// Uncompressed image size, when known before writing.
    pub size: Option<u64>,
    /// sha256 of the uncompressed image, as written (with verification).
    pub sha256: Option<String>,
    pub devices: Vec<DeviceReport>,
    pub interrupted: bool,
}

impl Report {
    pub fn failed(&self) -> Vec<&DeviceReport> {
        self.devices.iter().filter(|d| !d.ok).collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let width = self
            .devices
            .iter()
            .map(|d| d.device.chars().count())
            .max()
            .unwrap_or(0);
        for d in &self.devices {
            let status = if d.ok {
                let rate = |secs: f64| {
                    if secs > 0.0 {
                        format!("{}/s", human_bytes((d.bytes_written as f64 / secs) as u64))
                    } else {
                        "-".into()
                    }
                };
                let mut s = format!(
                    "ok: {} written in {:.1} s ({})",
                    human_bytes(d.bytes_written),
                    d.write_seconds,
                    rate(d.write_seconds)
                );
                if let (true, Some(v)) = (d.verified, d.verify_seconds) {
                    let _ = write!(s, ", verified in {v:.1} s ({})", rate(v));
                }
                if !d.direct_io {
                    s.push_str(", buffered I/O");
                }
                s
            } else {
                let err = d.error.as_deref().unwrap_or("failed");
                // Errors name their device; the line already does.
                let err = err.strip_prefix(&format!("{}: ", d.device)).unwrap_or(err);
                let mut s = format!("FAILED: {err}");
                if d.first_mib_zeroed {
                    s.push_str(" (first MiB zeroed: it will not boot)");
                }
                s
            };
            let _ = writeln!(out, "{:<width$}  {status}", d.device);
            for n in &d.notes {
                let _ = writeln!(out, "{:<width$}  note: {n}", "");
            }
        }
        if let Some(sha) = &self.sha256 {
            let _ = writeln!(out, "image sha256 {sha}");
        }
        out
    }

    /// The one-line error for the exit status, None when all went well.
    pub fn error(&self) -> Option<String> {
        let failed = self.failed();
        if self.interrupted {
            let zeroed: Vec<&str> = failed
                .iter()
                .filter(|d| d.first_mib_zeroed)
                .map(|d| d.device.as_str())
                .collect();
            return Some(if zeroed.is_empty() {
                "interrupted".into()
            } else {
                format!(
                    "interrupted; the first MiB of {} is zeroed, so a half-written stick does not boot",
                    zeroed.join(", ")
                )
            });
        }
        if failed.is_empty() {
            return None;
        }
        let names: Vec<&str> = failed.iter().map(|d| d.device.as_str()).collect();
        Some(format!(
            "{} of {} targets failed: {}",
            failed.len(),
            self.devices.len(),
            names.join(", ")
        ))
    }
}

/// Write the planned targets. Per-target failures are in the report; the
/// call itself fails only before anything is written.
pub fn execute(plan: Plan, verify: bool, progress: &Progress) -> Result<Report> {
    let mut reports = Vec::new();
    let mut sinks = Vec::new();
    let mut order = Vec::new();
    for t in &plan.targets {
        match writer::open(t) {
            Ok(s) => {
                order.push(None);
                sinks.push(s);
            }
            Err(e) => order.push(Some(DeviceReport {
                device: t.shown(),
                error: Some(format!("{e:#}")),
                ..Default::default()
            })),
        }
    }
    if !sinks.is_empty() {
        progress.step(format!(
            "writing {} to {}",
            plan.source.path.display(),
            sinks
                .iter()
                .map(|s| s.shown().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let (written, sha256) = if sinks.is_empty() {
        (Vec::new(), None)
    } else {
        writer::run(&plan.source, sinks, verify, progress)
    };
    let mut written = written.into_iter();
    for slot in order {
        match slot {
            Some(r) => reports.push(r),
            None => reports.extend(written.next()),
        }
    }
    for (t, why) in &plan.skipped {
        reports.push(DeviceReport {
            device: t.shown(),
            error: Some(why.clone()),
            ..Default::default()
        });
    }
    Ok(Report {
        image: plan.source.path.clone(),
        format: plan.source.format,
        size: plan.source.size,
        sha256,
        devices: reports,
        interrupted: interrupt::interrupted(),
    })
}
