//! File systems on the new partitions: the field's own mkfs tools for the
//! root and swap (found on PATH, the missing package named), the `fatfs`
//! crate for the ESP (no dosfstools needed, and no vfat mount either: the
//! ESP is written in user space).

use std::fs::OpenOptions;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};
use uuid::Uuid;

use super::config::Filesystem;
use crate::fs::esp::{self, EspFile};
use crate::system::command::Task;

fn tool(name: &str, package: &str) -> Result<PathBuf> {
    crate::system::tool::require(name, package)
}

/// Checks up front that the tools for `fs` (and swap) are there, so a
/// missing package is reported before the disk is touched.
pub fn check_tools(fs: Filesystem, swap: bool) -> Result<()> {
    match fs {
        Filesystem::Ext4 => tool("mkfs.ext4", "e2fsprogs")?,
        Filesystem::Xfs => tool("mkfs.xfs", "xfsprogs")?,
    };
    if swap {
        tool("mkswap", "util-linux")?;
    }
    Ok(())
}

pub fn mkfs_root(dev: &Path, fs: Filesystem, uuid: Uuid) -> Result<()> {
    let u = uuid.to_string();
    let mut cmd = match fs {
        Filesystem::Ext4 => {
            let mut c = Command::new(tool("mkfs.ext4", "e2fsprogs")?);
            c.args(["-q", "-F", "-L", "root", "-U", &u]);
            c
        }
        Filesystem::Xfs => {
            let mut c = Command::new(tool("mkfs.xfs", "xfsprogs")?);
            c.args(["-q", "-f", "-L", "root", "-m", &format!("uuid={u}")]);
            c
        }
    };
    cmd.arg(dev);
    Task::new(format!("mkfs.{} on {}", fs.name(), dev.display()), &mut cmd).run()
}

pub fn mkswap(dev: &Path, uuid: Uuid) -> Result<()> {
    let mut cmd = Command::new(tool("mkswap", "util-linux")?);
    cmd.args(["-L", "swap", "-U", &uuid.to_string()]).arg(dev);
    Task::new(format!("mkswap on {}", dev.display()), &mut cmd).run()
}

/// The ESP's FAT volume id as fstab and blkid write it ("1234-ABCD").
pub fn fat_uuid(volume_id: u32) -> String {
    format!("{:04X}-{:04X}", volume_id >> 16, volume_id & 0xffff)
}

/// Formats `dev` as FAT32 and writes `files` (ESP path, content).
pub fn make_esp(dev: &Path, volume_id: u32, files: &[EspFile]) -> Result<()> {
    let ctx = || format!("writing the ESP on {}", dev.display());
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(ctx)?;
    fatfs::format_volume(
        &mut f,
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            // 512-byte clusters: FAT32 needs 65525 of them, and the
            // smallest ESP allowed (64 MiB) has 131072.
            .bytes_per_cluster(512)
            .volume_id(volume_id)
            .volume_label(*b"EFI        "),
    )
    .with_context(ctx)?;
    {
        let fs = FileSystem::new(&mut f, FsOptions::new()).with_context(ctx)?;
        esp::fill(&fs, files).with_context(ctx)?;
        fs.unmount().with_context(ctx)?;
    }
    f.sync_all().with_context(ctx)
}

/// Reads one ESP file back (for the checks after writing).
pub fn read_esp_file(dev: &Path, path: &str) -> Result<Vec<u8>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(|| format!("opening {}", dev.display()))?;
    let fs = FileSystem::new(f, FsOptions::new())
        .with_context(|| format!("reading the FAT on {}", dev.display()))?;
    let mut file = fs
        .root_dir()
        .open_file(path)
        .with_context(|| format!("{path} on {}", dev.display()))?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esp_round_trip_fat32() {
        let t = tempfile::NamedTempFile::new().unwrap();
        t.as_file().set_len(64 << 20).unwrap();
        let files = vec![
            EspFile::bytes("EFI/BOOT/BOOTX64.EFI", b"shim".to_vec()),
            EspFile::bytes("EFI/BOOT/grub.cfg", b"cfg".to_vec()),
            EspFile::bytes("EFI/debian/grub.cfg", b"cfg2".to_vec()),
        ];
        make_esp(t.path(), 0x1234abcd, &files).unwrap();
        assert_eq!(
            read_esp_file(t.path(), "EFI/BOOT/grub.cfg").unwrap(),
            b"cfg"
        );
        assert_eq!(
            read_esp_file(t.path(), "EFI/debian/grub.cfg").unwrap(),
            b"cfg2"
        );
        let fs = FileSystem::new(std::fs::File::open(t.path()).unwrap(), FsOptions::new());
        // fatfs wants write access even to read; check the type by hand.
        drop(fs);
        let mut boot = [0u8; 512];
        std::os::unix::fs::FileExt::read_exact_at(t.as_file(), &mut boot, 0).unwrap();
        assert_eq!(&boot[82..90], b"FAT32   ");
        assert_eq!(fat_uuid(0x1234abcd), "1234-ABCD");
    }
}
