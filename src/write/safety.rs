//! Which targets may be written, decided before a single byte is.
//!
//! Two kinds of "no":
//! - a *refusal* (an error) when the target looks like the wrong device:
//!   not a block device, a fixed disk, busy (mounted, swap, LVM/RAID), the
//!   disk of the running system or of the image. The whole command stops,
//!   because a command line with one wrong device in it may have others;
//! - a *skip* when the device is right but cannot take the image (too
//!   small, read-only): the other sticks are still written, and the summary
//!   and exit status report the skipped one as failed.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::devices::{dev_id, Disk, Sysfs, Usage};
use super::source::Source;
use crate::progress::human_bytes;

pub struct Context<'a> {
    pub sysfs: &'a Sysfs,
    pub usage: &'a Usage,
    /// Disks under the running system's root filesystem.
    pub root_disks: BTreeSet<String>,
    /// Disks under the file system the image is read from.
    pub image_disks: BTreeSet<String>,
    pub image: &'a Source,
    pub allow_fixed: bool,
    pub to_file: bool,
}

impl<'a> Context<'a> {
    pub fn new(
        sysfs: &'a Sysfs,
        usage: &'a Usage,
        image: &'a Source,
        allow_fixed: bool,
        to_file: bool,
    ) -> Result<Context<'a>> {
        let root = fs::metadata("/").context("reading /")?;
        Ok(Context {
            sysfs,
            usage,
            root_disks: sysfs.disks_under(dev_id(root.dev()), usage),
            image_disks: sysfs.disks_under(dev_id(image.st_dev), usage),
            image,
            allow_fixed,
            to_file,
        })
    }
}

#[derive(Clone, Debug)]
pub enum Kind {
    Block(Box<Disk>),
    /// A regular file (`--to-file`); `exists` false means it will be made.
    File {
        exists: bool,
    },
}

#[derive(Clone, Debug)]
pub struct Target {
    /// As the user named it.
    pub path: PathBuf,
    pub kind: Kind,
}

impl Target {
    /// The user's name, plus the kernel's when they differ
    /// ("/dev/disk/by-id/usb-X (/dev/sdb)").
    pub fn shown(&self) -> String {
        match &self.kind {
            Kind::Block(d) if d.path != self.path => {
                format!("{} ({})", self.path.display(), d.path.display())
            }
            _ => self.path.display().to_string(),
        }
    }

    pub fn disk(&self) -> Option<&Disk> {
        match &self.kind {
            Kind::Block(d) => Some(d),
            Kind::File { .. } => None,
        }
    }
}

#[derive(Debug)]
pub enum Verdict {
    Write(Target),
    Skip(Target, String),
}

/// Look at one target; refuse (Err) or say whether it can be written.
pub fn inspect(path: &Path, ctx: &Context) -> Result<Verdict> {
    let shown = path.display();
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && ctx.to_file => {
            return file_verdict(path, false, ctx);
        }
        Err(e) => return Err(e).with_context(|| format!("{shown}: cannot use it as a target")),
    };
    let ft = meta.file_type();
    if ft.is_file() {
        if !ctx.to_file {
            bail!("{shown}: not a block device (pass --to-file to write to a regular file)");
        }
        if (meta.dev(), meta.ino()) == ctx.image.id {
            bail!("{shown}: is the image itself");
        }
        return file_verdict(path, true, ctx);
    }
    let disk = whole_disk(&shown.to_string(), &meta, ctx.sysfs, ctx.usage)?;
    let target = Target {
        path: path.to_path_buf(),
        kind: Kind::Block(Box::new(disk)),
    };
    let skip = match &target.kind {
        Kind::Block(disk) => judge(&target.shown(), disk, ctx)?,
        Kind::File { .. } => None,
    };
    Ok(match skip {
        Some(reason) => Verdict::Skip(target, reason),
        None => Verdict::Write(target),
    })
}

/// A `--to-file` target: written to a temporary file beside it and renamed
/// over it when complete, so its folder needs room for the whole image
/// while the old file (if any) still exists. Skipped, not refused, when
/// the room is not there: the name is right, the disk is full.
fn file_verdict(path: &Path, exists: bool, ctx: &Context) -> Result<Verdict> {
    let target = Target {
        path: path.to_path_buf(),
        kind: Kind::File { exists },
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(size) = ctx.image.size else {
        // A compressed image whose size is unknown: the writer's ENOSPC
        // handling removes the partial file instead.
        return Ok(Verdict::Write(target));
    };
    let free = crate::space::free_bytes(dir)
        .with_context(|| format!("{}: cannot use it as a target", path.display()))?;
    if free < size {
        let why = format!(
            "not enough room: a {} image, {} free on {}",
            human_bytes(size),
            human_bytes(free),
            dir.display()
        );
        return Ok(Verdict::Skip(target, why));
    }
    Ok(Verdict::Write(target))
}

/// The disk behind a target's metadata: refused unless it is a block device
/// that is a whole disk (a partition is named with its disk).
pub fn whole_disk(shown: &str, meta: &fs::Metadata, sysfs: &Sysfs, usage: &Usage) -> Result<Disk> {
    if !meta.file_type().is_block_device() {
        bail!("{shown}: not a block device");
    }
    let dev = dev_id(meta.rdev());
    let Some((dir, partition)) = sysfs.lookup(dev) else {
        bail!("{shown}: block device {}:{} is not in sysfs", dev.0, dev.1);
    };
    if partition {
        let disk = dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| format!(" of /dev/{}", n.to_string_lossy()))
            .unwrap_or_default();
        bail!("{shown}: is a partition{disk}; name the whole disk");
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sysfs
        .disk(&name, usage)
        .with_context(|| format!("{shown}: cannot read {} in sysfs", dir.display()))
}

/// The checks on a disk: Err to refuse, Some(reason) to skip it.
pub fn judge(shown: &str, disk: &Disk, ctx: &Context) -> Result<Option<String>> {
    if ctx.root_disks.contains(&disk.name) {
        bail!("{shown}: holds the running system's root file system");
    }
    if ctx.image_disks.contains(&disk.name) {
        bail!(
            "{shown}: holds the image {} being written",
            ctx.image.path.display()
        );
    }
    if let Some(backing) = &disk.backing_file {
        if let Ok(m) = fs::metadata(backing) {
            if (m.dev(), m.ino()) == ctx.image.id {
                bail!(
                    "{shown}: is a loop device over the image {} itself",
                    ctx.image.path.display()
                );
            }
        }
    }
    let uses = disk.uses();
    if !uses.is_empty() {
        bail!("{shown}: in use: {}", uses.join("; "));
    }
    if !disk.candidate && !ctx.allow_fixed {
        let what = if disk.vendor.is_some() || disk.model.is_some() {
            format!("{}, {}", disk.transport, disk.description())
        } else {
            disk.transport.clone()
        };
        bail!("{shown}: not a removable or USB disk ({what}); pass --allow-fixed to write to it anyway");
    }
    if disk.read_only {
        return Ok(Some("read-only".to_string()));
    }
    if let Some(size) = ctx.image.size {
        if disk.size < size {
            return Ok(Some(format!(
                "too small: {} for a {} image",
                human_bytes(disk.size),
                human_bytes(size)
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::source::Format;

    fn disk(name: &str) -> Disk {
        Disk {
            name: name.into(),
            path: PathBuf::from(format!("/dev/{name}")),
            dev: (8, 16),
            size: 8 << 30,
            removable: true,
            read_only: false,
            transport: "usb".into(),
            vendor: Some("Kingston".into()),
            model: Some("DataTraveler".into()),
            serial: None,
            logical_block: 512,
            backing_file: None,
            in_use: Vec::new(),
            partitions: Vec::new(),
            candidate: true,
        }
    }

    fn source(size: Option<u64>) -> Source {
        Source {
            path: PathBuf::from("/images/ucl.iso"),
            format: Format::Raw,
            size,
            file_len: 1,
            id: (u64::MAX, u64::MAX),
            st_dev: 0,
        }
    }

    fn check(d: &Disk, src: &Source, allow_fixed: bool) -> Result<Option<String>> {
        let sysfs = Sysfs::default();
        let usage = Usage::default();
        let ctx = Context {
            sysfs: &sysfs,
            usage: &usage,
            root_disks: ["vda".to_string()].into(),
            image_disks: ["sdc".to_string()].into(),
            image: src,
            allow_fixed,
            to_file: false,
        };
        judge(&d.path.display().to_string(), d, &ctx)
    }

    fn refusal(d: &Disk, allow_fixed: bool) -> String {
        format!(
            "{:#}",
            check(d, &source(Some(1 << 30)), allow_fixed).unwrap_err()
        )
    }

    #[test]
    fn root_and_image_disks_are_refused_even_with_allow_fixed() {
        let e = refusal(&disk("vda"), true);
        assert!(
            e.starts_with("/dev/vda: holds the running system's root"),
            "{e}"
        );
        let e = refusal(&disk("sdc"), true);
        assert!(
            e.starts_with("/dev/sdc: holds the image /images/ucl.iso"),
            "{e}"
        );
    }

    #[test]
    fn busy_disks_are_refused_naming_the_partition() {
        let mut d = disk("sdb");
        d.partitions.push(crate::write::devices::Partition {
            name: "sdb1".into(),
            path: "/dev/sdb1".into(),
            dev: (8, 17),
            size: 1,
            fstype: None,
            label: None,
            in_use: vec!["is mounted at /media/stick".into()],
        });
        let e = refusal(&d, true);
        assert_eq!(e, "/dev/sdb: in use: /dev/sdb1 is mounted at /media/stick");
    }

    #[test]
    fn fixed_disks_need_allow_fixed() {
        let mut d = disk("sda");
        d.candidate = false;
        d.transport = "sata".into();
        let e = refusal(&d, false);
        assert!(
            e.starts_with("/dev/sda: not a removable or USB disk (sata"),
            "{e}"
        );
        assert!(e.contains("--allow-fixed"), "{e}");
        assert_eq!(check(&d, &source(Some(1)), true).unwrap(), None);
    }

    #[test]
    fn small_or_read_only_disks_are_skipped_not_refused() {
        let mut d = disk("sdb");
        d.size = 512 << 20;
        let why = check(&d, &source(Some(1 << 30)), false).unwrap().unwrap();
        assert_eq!(why, "too small: 512.0 MiB for a 1.0 GiB image");
        // Unknown size (gzip): found out while writing.
        assert_eq!(check(&d, &source(None), false).unwrap(), None);
        d.read_only = true;
        let why = check(&d, &source(None), false).unwrap().unwrap();
        assert_eq!(why, "read-only");
    }
}
