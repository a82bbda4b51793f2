//! `format: disk`: a deployable whole-disk image made from the customised
//! root by the same code `install` uses for a real disk
//! (`install::disk`): GPT with an ESP (shim + grub), a BIOS boot partition
//! (GRUB's i386-pc core) and an ext4 root that grows to fill the disk it
//! is written to on the first boot. Raw (sparse), or qcow2 through
//! qemu-img.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::customise::Root;
use super::prepare::{Output, Prepared};
use super::workspace::{Partial, Workspace};
use super::Written;
use crate::image::layout::DISK_IMAGE_ESP;
use crate::install::{self, bootloader, config::Config, copy, disk, finalize};
use crate::interrupt;
use crate::io::MIB;
use crate::progress::{human_bytes, Progress};
use crate::system::command::Task;

/// Free space left in the root by default.
const DEFAULT_HEADROOM: u64 = 256 << 20;

pub fn write(p: &Prepared, ws: &Workspace, root: Root, progress: &Progress) -> Result<Written> {
    let Output::Disk { path, qcow2 } = &p.output else {
        bail!("internal: the disk stage got a {:?} output", p.output);
    };
    let spec = &p.loaded.spec;
    let distro = spec.base.distro;
    bootloader::esp_files(&root.path, distro, "")?;
    let cfg = Config {
        esp_size: Some(crate::spec::ByteSize(DISK_IMAGE_ESP)),
        ..Default::default()
    };
    let why_not = crate::boot::bios::missing(&root.path, distro, cfg.filesystem.bios_core());
    if let Some(why) = &why_not {
        eprintln!("note: {why}: the disk image boots under UEFI only");
    }
    let bios = why_not.is_none();
    let size = disk_size(p, &root.path, bios, progress)?;
    // Serial and VGA consoles both, unless the spec says which.
    let kernel_args = kernel_args(&spec.kernel_cmdline);

    // A qcow2 is converted from a raw image in the work folder; a raw
    // image is made in place under its temporary name.
    let partial = Partial::new(path)?;
    let raw = if *qcow2 {
        ws.raw_disk()
    } else {
        partial.path.clone()
    };
    let raw = raw.as_path();
    let t = Instant::now();
    make_sparse(raw, size)?;
    let job = disk::DiskJob {
        source: &root.path,
        distro,
        kernel: &root.kernel,
        bios,
        cfg: &cfg,
        kernel_args: &kernel_args,
        target: raw,
        kind: disk::Kind::Image,
        ids: disk::Ids::Seeded(p.loaded.seed()),
        log_path: None,
    };
    let lay = disk::layout(&job, size)?;
    let mut log = install::Log::new(progress.clone(), "disk: ", &p.log_path);
    disk::make(&job, &lay, &mut log)?;
    log.end_step();
    interrupt::check()?;
    if *qcow2 {
        to_qcow2(raw, &partial.path, progress)?;
    }
    let file = partial.commit()?;
    progress.step(format!(
        "disk image {} ({} virtual) written in {:.1} s",
        file.0.display(),
        human_bytes(size),
        t.elapsed().as_secs_f64()
    ));
    Ok(Written {
        files: vec![file],
        kernel: root.kernel.version,
        bios,
        md5: None,
    })
}

/// The image's size: the spec's `disk.size`, which must hold the root, or
/// the root's content plus the headroom, the ESP, the BIOS boot partition
/// and the GPT, rounded up to a MiB.
fn disk_size(p: &Prepared, root: &Path, bios: bool, progress: &Progress) -> Result<u64> {
    let opts = &p.loaded.spec.disk;
    let headroom = opts.headroom.map(|h| h.0).unwrap_or(DEFAULT_HEADROOM);
    let used = copy::measure(root)?;
    let size = choose_size(used, headroom, bios, opts.size.map(|s| s.0))?;
    progress.step(format!(
        "the root holds {}; the disk image is {} ({} headroom)",
        human_bytes(used),
        human_bytes(size),
        human_bytes(headroom)
    ));
    Ok(size)
}

fn choose_size(used: u64, headroom: u64, bios: bool, requested: Option<u64>) -> Result<u64> {
    let need = disk::needed(used, headroom, DISK_IMAGE_ESP, bios, 0).div_ceil(MIB) * MIB;
    match requested {
        Some(s) if s < need => bail!(
            "disk.size {} is too small: the root holds {}, and with {} of headroom, the ESP and the partition table the image needs {}",
            human_bytes(s),
            human_bytes(used),
            human_bytes(headroom),
            human_bytes(need)
        ),
        Some(s) => Ok(s.div_ceil(MIB) * MIB),
        None => Ok(need),
    }
}

/// The spec's kernel arguments, or consoles on the screen and the first
/// serial port when the spec names none (the last one named gets
/// systemd's and the kernel's messages: serial, for a server's console).
fn kernel_args(spec_args: &[String]) -> Vec<String> {
    let mut args: Vec<String> = spec_args
        .iter()
        .filter(|a| !finalize::is_live_arg(a))
        .cloned()
        .collect();
    if !args.iter().any(|a| a.starts_with("console=")) {
        args.insert(0, "console=tty0".into());
        args.insert(1, "console=ttyS0,115200n8".into());
    }
    args
}

/// A sparse file of `size` bytes (a fresh one: nothing of an older file
/// with the same name survives).
fn make_sparse(path: &Path, size: u64) -> Result<()> {
    let _ = fs::remove_file(path);
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_len(size)
        .with_context(|| format!("sizing {} to {}", path.display(), human_bytes(size)))?;
    Ok(())
}

/// qemu-img, the field's converter, with the zero ranges left out.
fn to_qcow2(raw: &Path, out: &Path, progress: &Progress) -> Result<()> {
    progress.step("converting to qcow2 (qemu-img)");
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(raw)
        .arg(out);
    Task::new("qemu-img convert", &mut cmd).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_content_plus_headroom_or_what_the_spec_says() {
        // 700 MiB of files: a tenth for ext4, 256 MiB free, 64 MiB ESP,
        // 1 MiB BIOS boot, 1 MiB at each end for the GPT.
        let s = choose_size(700 * MIB, 256 * MIB, true, None).unwrap();
        assert_eq!(
            s,
            700 * MIB + 70 * MIB + 256 * MIB + 64 * MIB + MIB + 2 * MIB
        );
        assert_eq!(
            choose_size(700 * MIB, 256 * MIB, true, Some(4 << 30)).unwrap(),
            4 << 30
        );
        let e = choose_size(700 * MIB, 256 * MIB, false, Some(512 * MIB)).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("disk.size 512.0 MiB is too small"), "{e}");
        assert!(e.contains("700.0 MiB"), "{e}");
    }

    #[test]
    fn consoles_by_default_and_no_live_arguments() {
        assert_eq!(
            kernel_args(&[]),
            vec!["console=tty0", "console=ttyS0,115200n8"]
        );
        let a = kernel_args(&[
            "console=ttyS0,115200n8".into(),
            "rd.live.overlay.overlayfs=1".into(),
            "panic=-1".into(),
        ]);
        assert_eq!(a, vec!["console=ttyS0,115200n8", "panic=-1"]);
    }
}
