//! Block devices as the kernel describes them in sysfs, and what is using
//! them (mounts, swap, device-mapper/RAID holders).
//!
//! Everything is read from files rather than from udev or lsblk so that it
//! works in minimal systems (the live image itself, containers, CI) and so
//! that tests can point it at a fake sysfs tree.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

/// Major and minor number of a block device.
pub type DevId = (u32, u32);

pub fn dev_id(rdev: u64) -> DevId {
    (
        nix::sys::stat::major(rdev) as u32,
        nix::sys::stat::minor(rdev) as u32,
    )
}

#[derive(Clone, Debug, Serialize)]
pub struct Partition {
    pub name: String,
    pub path: PathBuf,
    #[serde(skip)]
    pub dev: DevId,
    pub size: u64,
    /// Filesystem type, when recognisable (udev's database, else a peek at
    /// the superblock).
    pub fstype: Option<String>,
    pub label: Option<String>,
    /// Why the partition is busy: "mounted at /x", "swap", "held by dm-0".
    pub in_use: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Disk {
    pub name: String,
    pub path: PathBuf,
    #[serde(skip)]
    pub dev: DevId,
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
    pub transport: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    #[serde(skip)]
    pub logical_block: u64,
    /// A loop device's backing file.
    pub backing_file: Option<PathBuf>,
    /// Uses of the whole disk (holders, a filesystem directly on it).
    pub in_use: Vec<String>,
    pub partitions: Vec<Partition>,
    /// Removable or USB (or an SD card): a plausible stick to write to.
    pub candidate: bool,
}

impl Disk {
    /// "SanDisk Cruzer Blade" or the transport when nothing better is known.
    pub fn description(&self) -> String {
        let words: Vec<&str> = [self.vendor.as_deref(), self.model.as_deref()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect();
        if let (true, Some(file)) = (words.is_empty(), &self.backing_file) {
            format!("loop device over {}", file.display())
        } else if words.is_empty() {
            format!("{} disk", self.transport)
        } else {
            words.join(" ")
        }
    }

    /// Every reason the disk or one of its partitions is busy, each naming
    /// the device it is about.
    pub fn uses(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .in_use
            .iter()
            .map(|u| format!("{} {u}", self.path.display()))
            .collect();
        for p in &self.partitions {
            all.extend(p.in_use.iter().map(|u| format!("{} {u}", p.path.display())));
        }
        all
    }
}

/// Where sysfs and /dev are; tests point these at a fake tree.
#[derive(Clone, Debug)]
pub struct Sysfs {
    pub sys: PathBuf,
    pub dev: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// What the running system is using: mounts and swap.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    pub mounts: Vec<Mount>,
    pub swaps: Vec<(String, Option<DevId>)>,
}

#[derive(Clone, Debug)]
pub struct Mount {
    /// The device number mountinfo reports for the mount.
    pub dev: DevId,
    /// The device behind `source`, when it is a block device: btrfs and
    /// others report an anonymous device number in mountinfo.
    pub source_dev: Option<DevId>,
    pub source: String,
    pub target: String,
}

impl Usage {
    pub fn read() -> Result<Usage> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        // No swap support in the kernel means no /proc/swaps: no swap.
        let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
        Ok(Usage {
            mounts: parse_mountinfo(&mountinfo, block_dev_of),
            swaps: parse_swaps(&swaps, block_dev_of),
        })
    }

    /// Why `dev` is busy (empty when it is not).
    pub fn uses_of(&self, dev: DevId) -> Vec<String> {
        let mut out = Vec::new();
        for m in &self.mounts {
            if m.dev == dev || m.source_dev == Some(dev) {
                out.push(format!("is mounted at {}", m.target));
            }
        }
        for (name, d) in &self.swaps {
            if *d == Some(dev) {
                out.push(format!("is in use as swap ({name})"));
            }
        }
        out
    }
}

/// The device number of a block special file, if `path` is one.
pub fn block_dev_of(path: &str) -> Option<DevId> {
    let meta = fs::metadata(path).ok()?;
    meta.file_type()
        .is_block_device()
        .then(|| dev_id(meta.rdev()))
}

/// mountinfo fields: id parent maj:min root target options... - fstype source superopts.
pub fn parse_mountinfo(text: &str, resolve: impl Fn(&str) -> Option<DevId>) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(majmin), Some(target), Some(source)) =
            (fields.get(2), fields.get(4), fields.get(sep + 2))
        else {
            continue;
        };
        let Some(dev) = parse_majmin(majmin) else {
            continue;
        };
        let source = unescape(source);
        let source_dev = if source.starts_with('/') {
            resolve(&source)
        } else {
            None
        };
        out.push(Mount {
            dev,
            source_dev,
            source,
            target: unescape(target),
        });
    }
    out
}

/// /proc/swaps: a header line, then "filename type size used priority".
pub fn parse_swaps(
    text: &str,
    resolve: impl Fn(&str) -> Option<DevId>,
) -> Vec<(String, Option<DevId>)> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|name| {
            let name = unescape(name);
            let dev = resolve(&name);
            (name, dev)
        })
        .collect()
}

fn parse_majmin(s: &str) -> Option<DevId> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// The kernel writes space, tab, newline and backslash in paths as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_trim(path: &Path) -> Option<String> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trim(path)?.parse().ok()
}

impl Sysfs {
    /// Every disk in /sys/block worth showing: not RAM disks, unbound
    /// loop devices or optical drives.
    pub fn disks(&self, usage: &Usage) -> Result<Vec<Disk>> {
        let block = self.sys.join("block");
        let mut names: Vec<String> = fs::read_dir(&block)
            .with_context(|| format!("listing {}", block.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if ["ram", "zram", "sr", "fd"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                continue;
            }
            let Some(disk) = self.disk(&name, usage) else {
                continue;
            };
            if disk.size == 0 {
                continue;
            }
            out.push(disk);
        }
        Ok(out)
    }

    /// The sysfs folder of a block device by number, and whether it is a
    /// partition (then its parent folder is the disk).
    pub fn lookup(&self, dev: DevId) -> Option<(PathBuf, bool)> {
        let link = self.sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
        let dir = fs::canonicalize(link).ok()?;
        let partition = dir.join("partition").exists();
        Some((dir, partition))
    }

    /// The whole disk a device number belongs to (itself or its parent).
    pub fn disk_name_of(&self, dev: DevId) -> Option<String> {
        let (dir, partition) = self.lookup(dev)?;
        let disk_dir = if partition {
            dir.parent()?.to_path_buf()
        } else {
            dir
        };
        Some(disk_dir.file_name()?.to_string_lossy().into_owned())
    }

    pub fn disk(&self, name: &str, usage: &Usage) -> Option<Disk> {
        let dir = fs::canonicalize(self.sys.join("block").join(name)).ok()?;
        let dev = parse_majmin(&read_trim(&dir.join("dev"))?)?;
        let size = read_u64(&dir.join("size")).unwrap_or(0) * 512;
        let removable = read_u64(&dir.join("removable")) == Some(1);
        let read_only = read_u64(&dir.join("ro")) == Some(1);
        let transport = transport(name, &dir);
        let device = dir.join("device");
        let usb = usb_device_dir(&dir);
        let first = |paths: &[PathBuf]| paths.iter().find_map(|p| read_trim(p));
        let vendor = first(&[
            device.join("vendor"),
            usb.as_ref()
                .map(|u| u.join("manufacturer"))
                .unwrap_or_default(),
        ])
        .filter(|v| !v.starts_with("0x")); // virtio's PCI vendor id says nothing
        let model = first(&[
            device.join("model"),
            device.join("name"), // MMC/SD
            usb.as_ref().map(|u| u.join("product")).unwrap_or_default(),
        ]);
        let serial = first(&[
            dir.join("serial"),
            device.join("serial"),
            usb.as_ref().map(|u| u.join("serial")).unwrap_or_default(),
        ]);
        let sd_card =
            transport == "mmc" && read_trim(&device.join("type")).as_deref() == Some("SD");
        let logical_block = read_u64(&dir.join("queue/logical_block_size")).unwrap_or(512);
        let backing_file = read_trim(&dir.join("loop/backing_file")).map(PathBuf::from);
        let mut in_use = usage.uses_of(dev);
        in_use.extend(holders(&dir));
        let mut partitions = Vec::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let pdir = e.path();
                if !pdir.join("partition").exists() {
                    continue;
                }
                let pname = e.file_name().to_string_lossy().into_owned();
                let Some(pdev) = read_trim(&pdir.join("dev")).and_then(|s| parse_majmin(&s)) else {
                    continue;
                };
                let mut p_use = usage.uses_of(pdev);
                p_use.extend(holders(&pdir));
                let path = self.dev.join(&pname);
                let (fstype, label) = self.probe(pdev, &path);
                partitions.push(Partition {
                    name: pname,
                    path,
                    dev: pdev,
                    size: read_u64(&pdir.join("size")).unwrap_or(0) * 512,
                    fstype,
                    label,
                    in_use: p_use,
                });
            }
        }
        // sdb2 before sdb10.
        partitions.sort_by_key(|p| (p.name.len(), p.name.clone()));
        Some(Disk {
            name: name.to_string(),
            path: self.dev.join(name),
            dev,
            size,
            removable,
            read_only,
            candidate: removable || transport == "usb" || sd_card,
            transport,
            vendor,
            model,
            serial,
            logical_block,
            backing_file,
            in_use,
            partitions,
        })
    }

    /// Filesystem type and label: udev's database when there is one, else
    /// the few superblock magics worth telling a user about.
    fn probe(&self, dev: DevId, path: &Path) -> (Option<String>, Option<String>) {
        let db = self
            .dev
            .parent()
            .unwrap_or(Path::new("/"))
            .join(format!("run/udev/data/b{}:{}", dev.0, dev.1));
        if let Ok(text) = fs::read_to_string(db) {
            let get = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix("E:")?.strip_prefix(key))
                    .map(str::to_string)
            };
            let fstype = get("ID_FS_TYPE=");
            if fstype.is_some() {
                return (fstype, get("ID_FS_LABEL="));
            }
        }
        (sniff_fs(path).map(str::to_string), None)
    }

    /// The whole disks that `dev` ultimately lives on: through partitions,
    /// device-mapper/RAID slaves and loop devices' backing files.
    pub fn disks_under(&self, dev: DevId, usage: &Usage) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.collect_under(dev, usage, &mut out, 0);
        out
    }

    fn collect_under(&self, dev: DevId, usage: &Usage, out: &mut BTreeSet<String>, depth: u32) {
        if depth > 8 {
            return;
        }
        // Anonymous device numbers (btrfs subvolumes, overlay): the block
        // device is the mount's source.
        if dev.0 == 0 {
            for m in &usage.mounts {
                if m.dev == dev {
                    if let Some(s) = m.source_dev {
                        self.collect_under(s, usage, out, depth + 1);
                    }
                }
            }
            return;
        }
        let Some(name) = self.disk_name_of(dev) else {
            return;
        };
        if !out.insert(name.clone()) {
            return;
        }
        let dir = self.sys.join("block").join(&name);
        for slave in list_names(&dir.join("slaves")) {
            let sdev = read_trim(&dir.join("slaves").join(&slave).join("dev"))
                .and_then(|s| parse_majmin(&s));
            if let Some(sdev) = sdev {
                self.collect_under(sdev, usage, out, depth + 1);
            }
        }
        if let Some(backing) = read_trim(&dir.join("loop/backing_file")) {
            if let Ok(meta) = fs::metadata(&backing) {
                self.collect_under(dev_id(meta.dev()), usage, out, depth + 1);
            }
        }
    }
}

fn list_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Holders are what the kernel stacked on a device: LVM and other
/// device-mapper targets, RAID arrays, bcache.
fn holders(dir: &Path) -> Vec<String> {
    list_names(&dir.join("holders"))
        .into_iter()
        .map(|h| format!("is held by {h} (device-mapper, LVM or RAID)"))
        .collect()
}

/// The bus a disk hangs off, from its place in the device tree.
fn transport(name: &str, dir: &Path) -> String {
    let p = dir.to_string_lossy();
    let t = if name.starts_with("loop") {
        "loop"
    } else if name.starts_with("dm-") {
        "dm"
    } else if name.starts_with("md") {
        "md"
    } else if name.starts_with("nbd") {
        "nbd"
    } else if p.contains("/usb") {
        "usb"
    } else if name.starts_with("nvme") || p.contains("/nvme") {
        "nvme"
    } else if name.starts_with("mmcblk") || p.contains("/mmc_host/") {
        "mmc"
    } else if p.contains("/ata") {
        "sata"
    } else if p.contains("/virtio") {
        "virtio"
    } else if p.contains("/host") {
        "scsi"
    } else {
        "unknown"
    };
    t.to_string()
}

/// The USB device (the folder with idVendor) above a disk, which carries
/// the manufacturer, product and serial strings the stick reports.
fn usb_device_dir(dir: &Path) -> Option<PathBuf> {
    let mut cur = dir.parent();
    while let Some(d) = cur {
        if d.join("idVendor").exists() {
            return Some(d.to_path_buf());
        }
        cur = d.parent();
    }
    None
}

/// A few superblock magics, for showing what is on a stick before it is
/// overwritten. Read-only; unknown or unreadable gives None.
pub fn sniff_fs(path: &Path) -> Option<&'static str> {
    let mut f = fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 68 * 1024];
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    let b = &buf[..n];
    let at = |off: usize, magic: &[u8]| b.get(off..off + magic.len()) == Some(magic);
    if at(1080, &[0x53, 0xEF]) {
        Some("ext4")
    } else if at(4086, b"SWAPSPACE2") || at(65526, b"SWAPSPACE2") {
        Some("swap")
    } else if at(0, b"XFSB") {
        Some("xfs")
    } else if at(65600, b"_BHRfS_M") {
        Some("btrfs")
    } else if at(3, b"NTFS    ") {
        Some("ntfs")
    } else if at(3, b"EXFAT   ") {
        Some("exfat")
    } else if at(82, b"FAT32   ") || at(54, b"FAT16   ") || at(54, b"FAT12   ") {
        Some("vfat")
    } else if at(32769, b"CD001") {
        Some("iso9660")
    } else if at(512 + 24, b"LVM2 001") {
        Some("LVM2_member")
    } else if at(0x1000, &[0xFC, 0x4E, 0x2B, 0xA9]) {
        Some("linux_raid_member")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A fake sysfs with a USB stick (sdb, one partition), an NVMe disk,
    /// an SD card and an eMMC.
    fn fake() -> (tempfile::TempDir, Sysfs) {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        let usbdev = sys.join("devices/pci0000:00/0000:00:14.0/usb2/2-1");
        write(&usbdev.join("idVendor"), "0781\n");
        write(&usbdev.join("manufacturer"), "SanDisk\n");
        write(&usbdev.join("product"), "Cruzer Blade\n");
        write(&usbdev.join("serial"), "4C530001\n");
        let sdb = usbdev.join("2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb");
        write(&sdb.join("dev"), "8:16\n");
        write(&sdb.join("size"), "30031872\n");
        write(&sdb.join("removable"), "0\n");
        write(&sdb.join("ro"), "0\n");
        write(&sdb.join("device/vendor"), "SanDisk \n");
        write(&sdb.join("device/model"), "Cruzer Blade    \n");
        write(&sdb.join("sdb1/partition"), "1\n");
        write(&sdb.join("sdb1/dev"), "8:17\n");
        write(&sdb.join("sdb1/size"), "30029824\n");
        fs::create_dir_all(sdb.join("holders")).unwrap();
        fs::create_dir_all(sdb.join("sdb1/holders")).unwrap();
        let nvme = sys.join("devices/pci0000:00/0000:00:1d.0/0000:3d:00.0/nvme/nvme0/nvme0n1");
        write(&nvme.join("dev"), "259:0\n");
        write(&nvme.join("size"), "1000215216\n");
        write(&nvme.join("removable"), "0\n");
        write(&nvme.join("device/model"), "Samsung SSD 970\n");
        write(&nvme.join("device/serial"), "S4EWNX0N\n");
        write(&nvme.join("nvme0n1p2/partition"), "2\n");
        write(&nvme.join("nvme0n1p2/dev"), "259:2\n");
        write(&nvme.join("nvme0n1p2/size"), "1000\n");
        fs::create_dir_all(nvme.join("nvme0n1p2/holders/dm-0")).unwrap();
        let mmc = sys.join("devices/pci0000:00/0000:00:1e.6/mmc_host/mmc0/mmc0:aaaa");
        write(&mmc.join("type"), "SD\n");
        write(&mmc.join("name"), "SC32G\n");
        write(&mmc.join("block/mmcblk0/dev"), "179:0\n");
        write(&mmc.join("block/mmcblk0/size"), "62333952\n");
        write(&mmc.join("block/mmcblk0/removable"), "0\n");
        let emmc = sys.join("devices/platform/mmc_host/mmc1/mmc1:0001");
        write(&emmc.join("type"), "MMC\n");
        write(&emmc.join("block/mmcblk1/dev"), "179:8\n");
        write(&emmc.join("block/mmcblk1/size"), "62333952\n");
        // In sysfs a disk's `device` links to the device it belongs to.
        symlink(&mmc, mmc.join("block/mmcblk0/device")).unwrap();
        symlink(&emmc, emmc.join("block/mmcblk1/device")).unwrap();
        fs::create_dir_all(sys.join("block")).unwrap();
        fs::create_dir_all(sys.join("dev/block")).unwrap();
        for (name, dir, dev) in [
            ("sdb", sdb.clone(), "8:16"),
            ("nvme0n1", nvme.clone(), "259:0"),
            ("mmcblk0", mmc.join("block/mmcblk0"), "179:0"),
            ("mmcblk1", emmc.join("block/mmcblk1"), "179:8"),
        ] {
            symlink(&dir, sys.join("block").join(name)).unwrap();
            symlink(&dir, sys.join("dev/block").join(dev)).unwrap();
        }
        symlink(sdb.join("sdb1"), sys.join("dev/block/8:17")).unwrap();
        symlink(nvme.join("nvme0n1p2"), sys.join("dev/block/259:2")).unwrap();
        // A device-mapper root on the NVMe partition.
        let dm = sys.join("devices/virtual/block/dm-0");
        write(&dm.join("dev"), "253:0\n");
        write(&dm.join("size"), "1000\n");
        fs::create_dir_all(dm.join("slaves")).unwrap();
        symlink(nvme.join("nvme0n1p2"), dm.join("slaves/nvme0n1p2")).unwrap();
        symlink(&dm, sys.join("block/dm-0")).unwrap();
        symlink(&dm, sys.join("dev/block/253:0")).unwrap();
        let sysfs = Sysfs {
            sys,
            dev: t.path().join("dev"),
        };
        (t, sysfs)
    }

    #[test]
    fn finds_usb_and_sd_candidates_with_their_names() {
        let (_t, sysfs) = fake();
        let usage = Usage {
            mounts: parse_mountinfo(
                "36 25 8:17 / /media/my\\040stick rw,nosuid shared:1 - vfat /dev/sdb1 rw\n",
                |_| None,
            ),
            swaps: Vec::new(),
        };
        let disks = sysfs.disks(&usage).unwrap();
        let names: Vec<_> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["dm-0", "mmcblk0", "mmcblk1", "nvme0n1", "sdb"]);
        let sdb = disks.iter().find(|d| d.name == "sdb").unwrap();
        assert_eq!(sdb.transport, "usb");
        assert!(
            sdb.candidate,
            "USB disks count even when not marked removable"
        );
        assert_eq!(sdb.description(), "SanDisk Cruzer Blade");
        assert_eq!(sdb.serial.as_deref(), Some("4C530001"));
        assert_eq!(sdb.size, 30031872 * 512);
        assert_eq!(sdb.partitions.len(), 1);
        assert_eq!(
            sdb.uses(),
            vec![format!(
                "{} is mounted at /media/my stick",
                sdb.partitions[0].path.display()
            )]
        );
        let sd = disks.iter().find(|d| d.name == "mmcblk0").unwrap();
        assert!(sd.candidate && sd.transport == "mmc");
        assert_eq!(sd.model.as_deref(), Some("SC32G"));
        let emmc = disks.iter().find(|d| d.name == "mmcblk1").unwrap();
        assert!(!emmc.candidate, "eMMC is built-in storage");
        let nvme = disks.iter().find(|d| d.name == "nvme0n1").unwrap();
        assert!(!nvme.candidate);
        assert_eq!(nvme.serial.as_deref(), Some("S4EWNX0N"));
        assert_eq!(
            nvme.partitions[0].in_use,
            ["is held by dm-0 (device-mapper, LVM or RAID)"]
        );
    }

    #[test]
    fn root_on_device_mapper_resolves_to_the_nvme_disk() {
        let (_t, sysfs) = fake();
        let usage = Usage::default();
        let under = sysfs.disks_under((253, 0), &usage);
        assert_eq!(under.into_iter().collect::<Vec<_>>(), ["dm-0", "nvme0n1"]);
        // A partition resolves to its disk.
        assert_eq!(sysfs.disk_name_of((8, 17)).as_deref(), Some("sdb"));
        // btrfs: an anonymous device number, the source names the disk.
        let usage = Usage {
            mounts: parse_mountinfo("27 1 0:31 /@ / rw - btrfs /dev/sdb1 rw\n", |s| {
                (s == "/dev/sdb1").then_some((8, 17))
            }),
            swaps: Vec::new(),
        };
        assert_eq!(
            sysfs
                .disks_under((0, 31), &usage)
                .into_iter()
                .collect::<Vec<_>>(),
            ["sdb"]
        );
    }

    #[test]
    fn swaps_and_escapes() {
        let swaps = parse_swaps(
            "Filename\tType\tSize\tUsed\tPriority\n/dev/sdb2 partition 1024 0 -2\n/swap\\040file file 10 0 -3\n",
            |s| (s == "/dev/sdb2").then_some((8, 18)),
        );
        assert_eq!(
            swaps,
            vec![
                ("/dev/sdb2".to_string(), Some((8, 18))),
                ("/swap file".to_string(), None)
            ]
        );
        let usage = Usage {
            mounts: Vec::new(),
            swaps,
        };
        assert_eq!(usage.uses_of((8, 18)), ["is in use as swap (/dev/sdb2)"]);
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
