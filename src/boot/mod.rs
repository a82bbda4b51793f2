//! Boot assets: the kernel, the live initrd, the EFI loader chain and the
//! boot menu, all taken from the build root so the image boots with the
//! distro's own signed binaries.

pub mod bios;
pub mod kernel;
pub mod loader;
pub mod menu;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::chroot::Chroot;

/// Build the live initrd inside the root with dracut's dmsquash-live module
/// and move it to `out` (outside the root, so it does not end up in the
/// squashfs twice).
pub fn build_initrd(
    chroot: &Chroot,
    kver: &str,
    epoch: i64,
    extra_drivers: &[&str],
    out: &Path,
) -> Result<()> {
    let root = chroot.root();
    if !root.join("usr/bin/dracut").exists() && !root.join("usr/sbin/dracut").exists() {
        bail!("dracut is not installed in the root: add package dracut to an element");
    }
    if !root
        .join("usr/lib/dracut/modules.d/90dmsquash-live")
        .is_dir()
    {
        // Both Debian and Fedora package the module as dracut-live.
        bail!("dracut's dmsquash-live module is missing in the root: add package dracut-live to an element");
    }
    let argv = initrd_argv(kver, extra_drivers);
    let env = vec![("SOURCE_DATE_EPOCH".to_string(), epoch.to_string())];
    chroot.run(&argv, &env, "dracut in the build root")?;
    let built = root.join(INITRD_INSIDE.trim_start_matches('/'));
    move_file(&built, out)?;
    Ok(())
}

/// Where dracut writes the live initrd inside the root.
const INITRD_INSIDE: &str = "/var/tmp/undercloud-live-initrd.img";

/// dracut's command line for the live initrd (also part of the initrd
/// cache's key).
pub fn initrd_argv(kver: &str, extra_drivers: &[&str]) -> Vec<String> {
    let mut drivers =
        "overlay squashfs loop iso9660 sr_mod cdrom usb-storage xhci_pci virtio_blk virtio_scsi ahci ext4"
            .to_string();
    for d in extra_drivers {
        drivers.push(' ');
        drivers.push_str(d);
    }
    [
        "dracut",
        "--force",
        "--no-hostonly",
        // Honour SOURCE_DATE_EPOCH and sort the cpio: same inputs, same initrd.
        "--reproducible",
        "--add",
        "dmsquash-live",
        // The live root needs overlayfs (rd.live.overlay.overlayfs=1), the
        // media drivers, and ext4 for a persistence partition.
        "--add-drivers",
        &drivers,
        "--kver",
        kver,
        INITRD_INSIDE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// rename, or copy + remove across filesystems.
pub fn move_file(from: &Path, to: &Path) -> Result<()> {
    if std::fs::rename(from, to).is_err() {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        std::fs::remove_file(from).with_context(|| format!("removing {}", from.display()))?;
    }
    Ok(())
}

/// The files a build takes out of the root for the boot media.
#[derive(Clone, Debug)]
pub struct BootAssets {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub kver: String,
    pub loader: loader::EfiLoader,
}
