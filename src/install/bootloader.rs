//! Making the installed disk boot: a host-only initramfs, GRUB's
//! configuration on the root, the signed shim + grub on the ESP (the
//! distro's vendor folder plus the removable fallback path EFI/BOOT), an
//! EFI boot entry when the firmware's variables are reachable, and for
//! legacy BIOS GRUB's i386-pc core in the BIOS boot partition with
//! `boot.img` as MBR code.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::config::Filesystem;
use crate::boot::bios;
use crate::boot::loader::{self, EfiLoader};
use crate::chroot::Chroot;
use crate::fs::esp::EspFile;
use crate::image::layout::{ESP_BOOT_DIR, ESP_LOADER_NAME, SHIM_GRUB_NAME, SHIM_MM_NAME};
use crate::spec::Distro;
use crate::system::command::Task;

/// `/boot/grub/grub.cfg` (Fedora: `/boot/grub2/grub.cfg`) on the root.
pub fn grub_cfg(root_uuid: &str, kver: &str, args: &[String]) -> String {
    let serial = args.iter().any(|a| a.starts_with("console=ttyS"));
    let mut s =
        String::from("# written by undercloud-live install\nset default=0\nset timeout=1\n");
    if serial {
        s += "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n";
    }
    s += &format!(
        "search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         menuentry 'undercloud-live' --id installed {{\n\
         \x20   linux /boot/vmlinuz-{kver} root=UUID={root_uuid} ro {}\n\
         \x20   initrd /boot/initramfs-{kver}.img\n\
         }}\n",
        args.join(" ")
    );
    s
}

/// The small config on the ESP (and built into the BIOS core) that finds
/// the root by UUID and reads its grub.cfg.
pub fn stub_cfg(root_uuid: &str, grub_dir: &str) -> String {
    format!(
        "search --no-floppy --fs-uuid --set=root {root_uuid}\n\
         set prefix=($root)/boot/{grub_dir}\n\
         configfile ($root)/boot/{grub_dir}/grub.cfg\n"
    )
}

/// The ESP's files: shim, grub and MokManager under EFI/<vendor> and the
/// removable path EFI/BOOT, each with the stub config. Returns the files
/// and the vendor loader's ESP path (for the boot entry).
pub fn esp_files(root: &Path, distro: Distro, stub: &str) -> Result<(Vec<EspFile>, String)> {
    let EfiLoader::Shim {
        shim,
        grub,
        mm,
        vendor,
    } = loader::find(root, distro)?
    else {
        bail!("the root has no signed shim and grub: the installer boots through shim (Debian: shim-signed, grub-efi-amd64-signed)");
    };
    // The CD grub (Fedora's gcdx64.efi) is what the live image boots; an
    // installed disk wants the disk build when there is one.
    let grub = match grub.file_name().and_then(|n| n.to_str()) {
        Some("gcdx64.efi") if grub.with_file_name("grubx64.efi").is_file() => {
            grub.with_file_name("grubx64.efi")
        }
        _ => grub,
    };
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (shim, grub) = (read(&shim)?, read(&grub)?);
    let mm = mm.map(|p| read(&p)).transpose()?;
    let mut files = Vec::new();
    for (dir, shim_name) in [
        (ESP_BOOT_DIR, ESP_LOADER_NAME),
        (&format!("EFI/{vendor}") as &str, "shimx64.efi"),
    ] {
        files.push(EspFile::bytes(format!("{dir}/{shim_name}"), shim.clone()));
        files.push(EspFile::bytes(
            format!("{dir}/{SHIM_GRUB_NAME}"),
            grub.clone(),
        ));
        if let Some(mm) = &mm {
            files.push(EspFile::bytes(format!("{dir}/{SHIM_MM_NAME}"), mm.clone()));
        }
        files.push(EspFile::bytes(
            format!("{dir}/grub.cfg"),
            stub.as_bytes().to_vec(),
        ));
    }
    Ok((files, format!("\\EFI\\{vendor}\\shimx64.efi")))
}

/// Offsets in GRUB's boot.img and diskboot.img (grub's boot/i386/pc/*.S):
/// the LBA of the core's first sector, the drive check grub-bios-setup
/// turns off for hard disks, and the blocklist at the end of diskboot.
const KERNEL_SECTOR: usize = 0x5c;
const DRIVE_CHECK: usize = 0x66;
const BLOCKLIST_START: usize = 512 - 12;
const BLOCKLIST_LEN: usize = 512 - 4;

/// What grub-bios-setup does for a core embedded at `start` (LBA): boot.img
/// loads diskboot.img from there, diskboot loads the rest of the core from
/// the sectors after it. Returns the 440 bytes of MBR code.
pub fn bios_setup(boot_img: &[u8], core: &mut [u8], start: u64) -> Result<Vec<u8>> {
    if boot_img.len() != 512 || core.len() < 1024 {
        bail!(
            "boot.img ({} bytes) or core.img ({} bytes) is not GRUB's",
            boot_img.len(),
            core.len()
        );
    }
    let mut mbr = boot_img[..440].to_vec();
    mbr[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&start.to_le_bytes());
    mbr[DRIVE_CHECK] = 0x90;
    mbr[DRIVE_CHECK + 1] = 0x90;
    let rest = core.len().div_ceil(512) as u64 - 1;
    core[BLOCKLIST_START..BLOCKLIST_START + 8].copy_from_slice(&(start + 1).to_le_bytes());
    core[BLOCKLIST_LEN..BLOCKLIST_LEN + 2].copy_from_slice(&(rest as u16).to_le_bytes());
    Ok(mbr)
}

/// GRUB's i386-pc core for the BIOS boot partition, made with the root's
/// own grub-mkimage, and its boot.img.
pub fn bios_core(
    chroot: &Chroot,
    distro: Distro,
    fs: Filesystem,
    stub: &str,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let root = chroot.root();
    let mkimage = format!("/{}", distro.facts().bios.mkimage);
    let modules = format!("/{}", bios::MODULE_DIR);
    let cfg = "/var/tmp/undercloud-live-core.cfg";
    let out = "/var/tmp/undercloud-live-core.img";
    fs::write(root.join(&cfg[1..]), stub).context("writing the core's config")?;
    let prefix = format!("/boot/{}", distro.facts().grub_dir);
    let mut argv: Vec<String> = [
        &mkimage as &str,
        "-O",
        "i386-pc",
        "-d",
        &modules,
        "-p",
        &prefix,
        "-c",
        cfg,
        "-o",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(bios::modules(fs.bios_core()).iter().map(|s| s.to_string()));
    let r = chroot.run(&argv, &[], "grub-mkimage (i386-pc) in the target");
    let core = fs::read(root.join(&out[1..]));
    let _ = fs::remove_file(root.join(&cfg[1..]));
    let _ = fs::remove_file(root.join(&out[1..]));
    r?;
    let core = core.context("reading the core image")?;
    let boot =
        fs::read(root.join(bios::MODULE_DIR).join("boot.img")).context("reading boot.img")?;
    Ok((core, boot))
}

impl Filesystem {
    /// The BIOS core that reads a root of this filesystem.
    pub fn bios_core(self) -> bios::Core {
        let fs_module = match self {
            Filesystem::Ext4 => "ext2",
            Filesystem::Xfs => "xfs",
        };
        bios::Core::Disk { fs_module }
    }
}

/// The initramfs grub.cfg names: host-only (only what this machine's root
/// disk and file system need) for an installed disk, generic for a disk
/// image that boots on other machines; never the live modules.
pub fn initramfs(chroot: &Chroot, kver: &str, fs: Filesystem, host_only: bool) -> Result<()> {
    let root = chroot.root();
    if !root.join("usr/bin/dracut").exists() && !root.join("usr/sbin/dracut").exists() {
        bail!("dracut is not installed in the root");
    }
    let out = format!("/boot/initramfs-{kver}.img");
    let argv: Vec<String> = [
        "dracut",
        "--force",
        if host_only {
            "--hostonly"
        } else {
            "--no-hostonly"
        },
        // grub passes root=; a baked-in command line would carry the live
        // session's.
        "--no-hostonly-cmdline",
        "--quiet",
        "--omit",
        "dmsquash-live",
        // Named, in case host-only detection inside the chroot misses the
        // root's file system.
        "--filesystems",
        fs.name(),
        // Host-only plus the usual disk controllers: a disk moved to
        // another machine (or installed from a loop device) still finds
        // its root. Missing ones are skipped by dracut.
        "--add-drivers",
        "virtio_blk virtio_scsi virtio_pci ahci nvme sd_mod usb_storage xhci_pci",
        "--kver",
        kver,
        &out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    chroot.run(&argv, &[], "dracut (host-only) in the target")
}

/// An EFI boot entry through efibootmgr, when the firmware's variables are
/// there and the tool is; otherwise the removable path boots the disk.
/// Returns what happened, for the log; only an interrupt is an error.
pub fn efi_entry(disk: &Path, esp_number: u32, loader: &str) -> Result<String> {
    if !Path::new("/sys/firmware/efi/efivars").is_dir() {
        return Ok(
            "no EFI variables (BIOS boot or not mounted): the ESP's EFI/BOOT path boots the disk"
                .into(),
        );
    }
    let Some(tool) = crate::system::tool::find("efibootmgr") else {
        return Ok("efibootmgr is not installed: no boot entry made; the ESP's EFI/BOOT path boots the disk".into());
    };
    let made = Task::new(
        "efibootmgr",
        Command::new(tool)
            .args(["--create", "--disk"])
            .arg(disk)
            .args([
                "--part",
                &esp_number.to_string(),
                "--label",
                "undercloud-live",
                "--loader",
                loader,
            ])
            // It prints the boot entries it now has: not for our log.
            .stdout(Stdio::null()),
    )
    .run();
    match made {
        Ok(()) => Ok(format!("EFI boot entry 'undercloud-live' -> {loader}")),
        Err(e) if crate::interrupt::is_interrupt(&e) => Err(e),
        // "efibootmgr failed (exit status: 2): <what it said>", or the
        // reason it did not start.
        Err(e) => Ok(format!("{e:#}; the ESP's EFI/BOOT path boots the disk")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_setup_patches_like_grub_bios_setup() {
        let boot = vec![0u8; 512];
        let mut core = vec![0u8; 512 * 100 + 7];
        let mbr = bios_setup(&boot, &mut core, 2048).unwrap();
        assert_eq!(mbr.len(), 440);
        assert_eq!(
            u64::from_le_bytes(mbr[0x5c..0x64].try_into().unwrap()),
            2048
        );
        assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(
            u64::from_le_bytes(core[0x1f4..0x1fc].try_into().unwrap()),
            2049
        );
        assert_eq!(
            u16::from_le_bytes(core[0x1fc..0x1fe].try_into().unwrap()),
            100
        );
        assert!(bios_setup(&boot[..100], &mut core, 1).is_err());
    }

    #[test]
    fn configs_find_the_root_by_uuid() {
        let c = grub_cfg("abc", "6.1.0-1-amd64", &["console=ttyS0,115200n8".into()]);
        assert!(c.contains("search --no-floppy --fs-uuid --set=root abc"));
        assert!(
            c.contains("linux /boot/vmlinuz-6.1.0-1-amd64 root=UUID=abc ro console=ttyS0,115200n8")
        );
        assert!(c.contains("initrd /boot/initramfs-6.1.0-1-amd64.img"));
        assert!(c.contains("terminal_output serial"));
        assert!(!c.contains("rd.live"));
        let s = stub_cfg("abc", "grub");
        assert!(s.contains("configfile ($root)/boot/grub/grub.cfg"));
    }
}
