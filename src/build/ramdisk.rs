//! `format: ramdisk`: `PREFIX.kernel` + `PREFIX.initramfs`, the names
//! Ironic's `deploy_kernel`/`deploy_ramdisk` take as they are. The
//! initramfs is the whole customised root as one compressed newc cpio: the
//! kernel unpacks it into its rootfs and runs the root's own systemd as
//! `/init`, with no dracut, no squashfs and no switch-root (mkosi's
//! `Format=cpio`, dib's ramdisk output).

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::customise::Root;
use super::prepare::{with_suffix, Output, Prepared};
use super::workspace::{Partial, Workspace};
use super::Written;
use crate::fs::cpio;
use crate::interrupt;
use crate::progress::{human_bytes, Progress};
use crate::spec::Compression;

pub fn write(p: &Prepared, _ws: &Workspace, root: Root, progress: &Progress) -> Result<Written> {
    let Output::Ramdisk { prefix } = &p.output else {
        bail!("internal: the ramdisk stage got a {:?} output", p.output);
    };
    let kernel = Partial::new(&with_suffix(prefix, ".kernel"))?;
    fs::copy(&root.kernel.path, &kernel.path)
        .with_context(|| format!("copying {}", root.kernel.path.display()))?;
    prepare_root(&root.path)?;

    let opts = &p.loaded.spec.ramdisk;
    let compression = match opts.compression {
        Some(Compression::Xz) => cpio::Compression::Xz { level: 6 },
        _ => cpio::Compression::default(),
    };
    let initramfs = Partial::new(&with_suffix(prefix, ".initramfs"))?;
    let t = Instant::now();
    progress.step(format!(
        "packing the root as a cpio ramdisk ({})",
        compression.name()
    ));
    let report = cpio::pack(
        &root.path,
        &initramfs.path,
        &cpio::PackOptions {
            epoch: Some(p.epoch as u64),
            compression,
            limit: Some(opts.max_size.0),
        },
    )
    .with_context(|| format!("packing {}", root.path.display()))?;
    interrupt::check()?;
    progress.step(format!("{report} in {:.1} s", t.elapsed().as_secs_f64()));
    let files = vec![initramfs.commit()?, kernel.commit()?];
    progress.step(format!(
        "ramdisk {} + {}",
        human_bytes(files[1].1),
        human_bytes(files[0].1)
    ));
    Ok(Written {
        files,
        kernel: root.kernel.version,
        bios: false,
        md5: None,
    })
}

/// `undercloud-live ramdisk pack`: a folder packed as a ramdisk as it is
/// (no `/init` added, nothing removed), written under a temporary name and
/// renamed when complete. Times are clamped to `SOURCE_DATE_EPOCH` when
/// it is set.
pub fn pack_folder(
    root: &Path,
    out: &Path,
    compression: cpio::Compression,
) -> Result<cpio::PackReport> {
    if !root.is_dir() {
        bail!("--root {}: not a folder", root.display());
    }
    let epoch = match std::env::var_os("SOURCE_DATE_EPOCH") {
        Some(_) => Some(crate::spec::source_date_epoch()? as u64),
        None => None,
    };
    let partial = Partial::new(out)?;
    let report = cpio::pack(
        root,
        &partial.path,
        &cpio::PackOptions {
            epoch,
            compression,
            limit: None,
        },
    )?;
    interrupt::check()?;
    partial.commit()?;
    Ok(report)
}

/// The root as a ramdisk wants it: `/init` is the root's own init (the
/// kernel runs `/init` from an initramfs, never `/sbin/init`), and no
/// kernel or initrd in /boot (the kernel is the other file; an initrd
/// inside the ramdisk would never be used).
fn prepare_root(root: &Path) -> Result<()> {
    let init = root.join("init");
    if fs::symlink_metadata(&init).is_err() {
        let target = [
            "sbin/init",
            "usr/sbin/init",
            "lib/systemd/systemd",
            "usr/lib/systemd/systemd",
        ]
        .iter()
        .find(|t| root.join(t).exists())
        .with_context(|| {
            format!(
                "{} has no /sbin/init or systemd to run as /init (Debian: systemd-sysv)",
                root.display()
            )
        })?;
        std::os::unix::fs::symlink(format!("/{target}"), &init)
            .with_context(|| format!("creating {}", init.display()))?;
    }
    let boot = root.join("boot");
    if let Ok(entries) = fs::read_dir(&boot) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let is_boot_file = ["vmlinuz", "initrd.img", "initramfs-", "System.map"]
                .iter()
                .any(|p| name.starts_with(p));
            if is_boot_file && e.file_type().is_ok_and(|t| !t.is_dir()) {
                fs::remove_file(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    Ok(())
}
