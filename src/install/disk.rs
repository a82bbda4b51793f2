//! One way to make a bootable disk from a root, whether the target is a
//! block device (`install`) or a file (`build --format disk`).
//!
//! The partitions are reached through loop devices over their byte
//! ranges, which works the same over a disk and over a sparse file; the
//! partition table is written last, so a failure leaves nothing that
//! looks bootable. What differs between the two is a `Kind`: an installed
//! disk is made for the machine it is in (host-only initramfs, an EFI boot
//! entry, random identities), an image for any machine (a generic
//! initramfs, identities derived from the spec's seed, and a root that
//! grows to fill whatever disk it is written to on its first boot).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use uuid::Uuid;

use super::config::Config;
use super::layout::{self, Layout, Role};
use super::{bootloader, copy, finalize, format, Log, LOG_PATH};
use crate::boot::kernel::Kernel;
use crate::chroot::Chroot;
use crate::image::gpt::IdRole;
use crate::spec::Distro;
use crate::system::command::Task;

/// What the disk is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Installed in this machine: host-only initramfs, EFI boot entry.
    Installed,
    /// A file to be written to other machines' disks: generic initramfs,
    /// no boot entry, the root grows on its first boot.
    Image,
}

/// Where partition and file system identities come from.
#[derive(Clone, Debug)]
pub enum Ids {
    /// Fresh random ones: no two installed disks share a UUID.
    Random,
    /// Derived from a seed (the spec's): two builds of one spec agree.
    Seeded(String),
}

impl Ids {
    pub fn uuid(&self, role: IdRole) -> Result<Uuid> {
        match self {
            Ids::Random => layout::random_uuid(),
            Ids::Seeded(seed) => Ok(crate::image::gpt::derive_guid(seed, role)),
        }
    }
}

/// Everything `make` needs, decided before the target is touched.
pub struct DiskJob<'a> {
    /// The root folder to copy onto the disk.
    pub source: &'a Path,
    pub distro: Distro,
    pub kernel: &'a Kernel,
    pub bios: bool,
    pub cfg: &'a Config,
    pub kernel_args: &'a [String],
    /// A whole-disk block device or a regular file of the disk's size.
    pub target: &'a Path,
    pub kind: Kind,
    pub ids: Ids,
    /// Copied into the target's /var/log when set.
    pub log_path: Option<&'a Path>,
}

/// The partitions of a disk of `size` bytes for this job.
pub fn layout(job: &DiskJob, size: u64) -> Result<Layout> {
    Layout::plan(
        size,
        job.cfg
            .esp_size
            .map(|s| s.0)
            .unwrap_or(crate::image::layout::DEFAULT_ESP_SIZE),
        job.bios,
        job.cfg.swap.map(|s| s.0),
        &job.ids,
    )
}

/// The space a root of `used` bytes needs on a disk, with the file
/// system's overhead (a tenth) and `headroom` free.
pub fn needed(used: u64, headroom: u64, esp: u64, bios: bool, swap: u64) -> u64 {
    used + used / 10 + headroom + layout::overhead(esp, bios) + swap
}

/// A mounted file system, unmounted on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(dev: &Path, dir: &Path, fstype: &str) -> Result<Mounted> {
        mount(Some(dev), dir, Some(fstype), MsFlags::empty(), None::<&str>).with_context(|| {
            format!("mounting {} ({fstype}) on {}", dev.display(), dir.display())
        })?;
        Ok(Mounted(dir.to_path_buf()))
    }

    fn unmount(mut self) -> Result<()> {
        let dir = std::mem::take(&mut self.0);
        umount2(&dir, MntFlags::empty()).with_context(|| format!("unmounting {}", dir.display()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() && umount2(&self.0, MntFlags::empty()).is_err() {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}

/// Identities of the file systems fstab and grub find by UUID.
struct FsIds {
    root: Uuid,
    swap: Option<Uuid>,
    esp: u32,
}

/// Makes the file systems, copies and configures the root, makes it boot
/// and writes the partition table last; returns the root's UUID. On an
/// error the caller wipes the table (`layout::wipe_table`).
pub fn make(job: &DiskJob, lay: &Layout, log: &mut Log) -> Result<String> {
    let dev = job.target;
    let part_loop = |role| -> Result<layout::PartLoop> {
        let part = lay
            .get(role)
            .context("layout without a partition it needs")?;
        layout::PartLoop::new(dev, part)
    };
    let fs = job.cfg.filesystem;
    let esp_uuid = job.ids.uuid(IdRole::EspFs)?;
    let ids = FsIds {
        root: job.ids.uuid(IdRole::RootFs)?,
        swap: match lay.get(Role::Swap) {
            Some(_) => Some(job.ids.uuid(IdRole::SwapFs)?),
            None => None,
        },
        esp: u32::from_le_bytes(esp_uuid.as_bytes()[..4].try_into().context("volume id")?),
    };
    let root_loop = part_loop(Role::Root)?;
    let root_dev = root_loop.dev.clone();
    log.step(format!(
        "making {} on the root partition ({})",
        fs.name(),
        root_dev.display()
    ));
    format::mkfs_root(&root_dev, fs, ids.root)?;
    if let Some(u) = ids.swap {
        format::mkswap(&part_loop(Role::Swap)?.dev, u)?;
    }

    let dir = tempfile::Builder::new()
        .prefix("undercloud-live-disk-")
        .tempdir_in(if Path::new("/run").is_dir() {
            "/run"
        } else {
            "/tmp"
        })
        .context("making a mount point")?;
    let mnt = Mounted::new(&root_dev, dir.path(), fs.name())?;
    let root = dir.path();

    log.step(format!("copying {} (cp -a)", job.source.display()));
    copy::copy_root(job.source, root)?;
    let (esp_files, vendor_loader, bios) = make_bootable(job, root, &ids, log)?;

    log.step("syncing and unmounting the root");
    if let Some(p) = job.log_path {
        log.line("installed; the log so far is copied into the target");
        let _ = fs::copy(p, root.join(LOG_PATH.trim_start_matches('/')));
    }
    nix::unistd::sync();
    mnt.unmount()?;
    drop(root_loop);

    log.step("writing the ESP (FAT32: shim, grub, grub.cfg)");
    format::make_esp(&part_loop(Role::Esp)?.dev, ids.esp, &esp_files)?;
    let mbr_code = match bios {
        Some((core, boot_img)) => Some(write_bios_core(dev, lay, core, &boot_img, log)?),
        None => None,
    };
    log.step("writing the partition table");
    lay.write_table(dev, mbr_code.as_deref())?;
    if job.kind == Kind::Installed {
        // efibootmgr reads the ESP's place from the table just written.
        if let Some(esp) = lay.get(Role::Esp) {
            let note = bootloader::efi_entry(dev, esp.number, &vendor_loader)?;
            log.note(note);
        }
    }
    Ok(ids.root.to_string())
}

type BiosCore = (Vec<u8>, Vec<u8>);

/// Configures the copied root and makes it boot: fstab, grub.cfg,
/// password, initramfs, the BIOS core; returns the ESP's files, the vendor
/// loader's ESP path and the BIOS core with its boot.img.
fn make_bootable(
    job: &DiskJob,
    root: &Path,
    ids: &FsIds,
    log: &mut Log,
) -> Result<(Vec<crate::fs::esp::EspFile>, String, Option<BiosCore>)> {
    let fs = job.cfg.filesystem;
    let root_uuid = ids.root.to_string();
    log.step("configuring the system on the disk");
    let mounts = finalize::Mounts {
        root: root_uuid.clone(),
        fs,
        esp: format::fat_uuid(ids.esp),
        swap: ids.swap.map(|u| u.to_string()),
        grow: job.kind == Kind::Image,
    };
    for d in finalize::configure(root, job.cfg, &mounts)? {
        log.note(format!("  {d}"));
    }
    // Fedora keeps the kernel in /usr/lib/modules; grub reads it in /boot.
    let vmlinuz = root.join(format!("boot/vmlinuz-{}", job.kernel.version));
    if !vmlinuz.exists() {
        let inner = job
            .kernel
            .path
            .strip_prefix(job.source)
            .unwrap_or(&job.kernel.path);
        fs::copy(root.join(inner), &vmlinuz).context("copying the kernel to /boot")?;
    }
    let grub_dir = job.distro.facts().grub_dir;
    let stub = bootloader::stub_cfg(&root_uuid, grub_dir);
    let grub_cfg = root.join(format!("boot/{grub_dir}/grub.cfg"));
    fs::create_dir_all(grub_cfg.parent().context("grub folder")?)?;
    fs::write(
        &grub_cfg,
        bootloader::grub_cfg(&root_uuid, &job.kernel.version, job.kernel_args),
    )
    .with_context(|| format!("writing {}", grub_cfg.display()))?;
    log.note(format!(
        "  kernel command line: {}",
        job.kernel_args.join(" ")
    ));

    let chroot = Chroot::enter(root)?;
    set_password(&chroot, job.cfg, log)?;
    log.step(format!(
        "building {} initramfs for {} (dracut)",
        match job.kind {
            Kind::Installed => "a host-only",
            Kind::Image => "a generic",
        },
        job.kernel.version
    ));
    bootloader::initramfs(
        &chroot,
        &job.kernel.version,
        fs,
        job.kind == Kind::Installed,
    )?;
    let bios = if job.bios {
        log.step("making GRUB's BIOS core (grub-mkimage i386-pc)");
        Some(bootloader::bios_core(&chroot, job.distro, fs, &stub)?)
    } else {
        None
    };
    let (esp_files, vendor_loader) = bootloader::esp_files(root, job.distro, &stub)?;
    chroot.close()?;
    Ok((esp_files, vendor_loader, bios))
}

fn set_password(chroot: &Chroot, cfg: &Config, log: &mut Log) -> Result<()> {
    let Some(pw) = cfg
        .root_password
        .as_ref()
        .or(cfg.root_password_hash.as_ref())
    else {
        return Ok(());
    };
    let mut argv = vec!["chpasswd"];
    if cfg.root_password_hash.is_some() {
        argv.push("-e");
    }
    Task::new("chpasswd in the target", &mut chroot.command(&argv, &[]))
        .input(format!("root:{pw}\n"))
        .run()?;
    log.note("  root password set");
    Ok(())
}

/// GRUB's core into the BIOS boot partition; returns the MBR code that
/// loads it.
fn write_bios_core(
    dev: &Path,
    lay: &Layout,
    mut core: Vec<u8>,
    boot_img: &[u8],
    log: &mut Log,
) -> Result<Vec<u8>> {
    log.step("writing GRUB's BIOS core to the BIOS boot partition");
    let part = lay.get(Role::BiosBoot).context("no BIOS boot partition")?;
    if core.len() as u64 > part.size {
        bail!(
            "GRUB's core ({} bytes) does not fit the BIOS boot partition",
            core.len()
        );
    }
    let code = bootloader::bios_setup(boot_img, &mut core, part.start / 512)?;
    let f = OpenOptions::new()
        .write(true)
        .open(dev)
        .with_context(|| format!("opening {}", dev.display()))?;
    f.write_all_at(&core, part.start)
        .with_context(|| format!("writing the core to {}", dev.display()))?;
    f.sync_all()
        .with_context(|| format!("flushing {}", dev.display()))?;
    Ok(code)
}
