//! `undercloud-live inspect IMAGE`: what an image (or a device written
//! from one) holds, read with our own parsers and the `gpt` / `fatfs`
//! crates, never by mounting: the partitions and their filesystems, the
//! ISO9660 volume, the El Torito boot entries, the MBR boot code, the ESP's
//! files and the embedded media checksum. A ramdisk (a compressed newc
//! cpio, the `ramdisk` output) is summarised instead, and a qcow2 image is
//! named with its virtual size. What is wrong with a GPT medium as a whole
//! (`image::gpt_check`) is listed as warnings; `verify` refuses it.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::fs::cpio;
use crate::image::gpt_check;
use crate::image::isomd5::{self, Embedded};
use crate::image::layout::{BOOT_RECORD_LBA, LBA, PVD_LBA, SECTOR};

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub number: u32,
    pub name: String,
    pub type_guid: String,
    /// What the type GUID means ("EFI System", "Linux root (x86-64)", ...).
    pub type_name: String,
    pub guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub offset: u64,
    pub bytes: u64,
    /// Filesystem found at the start: vfat, squashfs, erofs, ext4, iso9660.
    pub filesystem: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    pub label: String,
    pub volume_bytes: u64,
    pub application: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootEntry {
    /// "BIOS" (platform 0x00) or "UEFI" (0xEF), or the hex platform id.
    pub platform: String,
    pub bootable: bool,
    /// 2048-byte sector of the boot image.
    pub lba: u32,
    /// 512-byte sectors loaded (0: to the end, for UEFI).
    pub sectors: u16,
    /// A BIOS image whose boot info table points at this volume.
    pub boot_info_table: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EspEntry {
    pub path: String,
    pub bytes: u64,
}

/// A qcow2 image: only its header is read (the partitions are in
/// clusters that would need a qcow2 reader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Qcow2 {
    pub version: u32,
    /// The size of the disk it holds.
    pub virtual_size: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub path: String,
    pub bytes: u64,
    /// MBR boot code present (GRUB's boot_hybrid.img for BIOS from USB).
    pub mbr_boot_code: bool,
    pub disk_guid: Option<String>,
    pub partitions: Vec<Partition>,
    pub volume: Option<Volume>,
    pub el_torito: Vec<BootEntry>,
    pub esp_files: Vec<EspEntry>,
    pub media_checksum: Option<Embedded>,
    /// The file is a ramdisk, not a disk image (the disk fields are empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ramdisk: Option<cpio::Summary>,
    /// The file is a qcow2 image (the disk fields are empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qcow2: Option<Qcow2>,
    /// What is wrong with the GPT medium as a whole (cut short, a missing
    /// or corrupt backup header, partitions past the end, overlapping or
    /// reversed): reported, not refused, so a damaged medium can still be
    /// looked at. `verify` refuses the same findings.
    pub warnings: Vec<String>,
}

/// The filesystem (and label) at byte `offset`, by magic numbers.
pub fn sniff(file: &File, offset: u64) -> (Option<String>, Option<String>) {
    let mut b = vec![0u8; 4096];
    let n = file.read_at(&mut b, offset).unwrap_or(0);
    if n < 2048 {
        return (None, None);
    }
    let text = |r: &[u8]| {
        let s = String::from_utf8_lossy(r)
            .trim_end_matches(['\0', ' '])
            .to_string();
        (!s.is_empty()).then_some(s)
    };
    if &b[0..4] == b"hsqs" {
        return (Some("squashfs".into()), None);
    }
    if b[1024..1028] == 0xE0F5_E1E2u32.to_le_bytes() {
        return (Some("erofs".into()), None);
    }
    if b[1024 + 0x38..1024 + 0x3a] == 0xEF53u16.to_le_bytes() {
        return (Some("ext4".into()), text(&b[1024 + 0x78..1024 + 0x88]));
    }
    if b[510..512] == [0x55, 0xAA] {
        if &b[0x52..0x57] == b"FAT32" {
            return (Some("vfat".into()), text(&b[0x47..0x52]));
        }
        if &b[0x36..0x39] == b"FAT" {
            return (Some("vfat".into()), text(&b[0x2b..0x36]));
        }
    }
    (None, None)
}

/// A window of a file, for fatfs. Writes are refused: inspect never
/// changes the image.
struct Window {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl Read for Window {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.len.saturating_sub(self.pos);
        let n = (buf.len() as u64).min(left) as usize;
        let got = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl Write for Window {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "inspect is read-only",
        ))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Window {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::other("seek out of range"))?;
        Ok(self.pos)
    }
}

/// Reads `len` bytes at `at` of the FAT volume at `base`.
fn read_fat_bytes(file: &File, base: u64, at: u64, len: u64) -> Result<Vec<u8>> {
    let mut b = vec![0u8; len as usize];
    file.read_exact_at(&mut b, base + at)
        .context("reading the ESP's FAT")?;
    Ok(b)
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

/// Where a FAT volume keeps what, from its boot sector.
struct FatGeometry {
    sector: u64,
    reserved: u64,
    fats: u64,
    fat_sectors: u64,
    root_sectors: u64,
    /// Byte offset of cluster 2.
    data: u64,
    cluster_bytes: u64,
    clusters: u64,
    /// 12, 16 or 32.
    bits: u64,
    /// FAT32: the root folder's first cluster.
    root_cluster: u64,
}

impl FatGeometry {
    fn read(bs: &[u8], len: u64) -> Result<FatGeometry> {
        let sector = le16(bs, 11);
        let per_cluster = u64::from(bs[13]);
        let (reserved, fats, root_entries) = (le16(bs, 14), u64::from(bs[16]), le16(bs, 17));
        let total = match le16(bs, 19) {
            0 => le32(bs, 32),
            n => n,
        };
        let fat_sectors = match le16(bs, 22) {
            0 => le32(bs, 36),
            n => n,
        };
        let unfit = || anyhow!("the ESP's boot sector does not describe a FAT volume that fits it");
        if ![512, 1024, 2048, 4096].contains(&sector)
            || !per_cluster.is_power_of_two()
            || reserved == 0
            || fats == 0
            || fat_sectors == 0
            || total.saturating_mul(sector) > len
        {
            return Err(unfit());
        }
        let root_sectors = (root_entries * 32).div_ceil(sector);
        let data_sector = reserved + fats * fat_sectors + root_sectors;
        if data_sector >= total {
            return Err(unfit());
        }
        // As fatfs decides the FAT type: by the number of clusters.
        let clusters = (total - data_sector) / per_cluster;
        let bits = match clusters {
            0..4085 => 12,
            4085..65525 => 16,
            _ => 32,
        };
        Ok(FatGeometry {
            sector,
            reserved,
            fats,
            fat_sectors,
            root_sectors,
            data: data_sector * sector,
            cluster_bytes: per_cluster * sector,
            clusters,
            bits,
            root_cluster: le32(bs, 44),
        })
    }

    /// The byte range of cluster `c`.
    fn cluster(&self, c: u64) -> (u64, u64) {
        (self.data + (c - 2) * self.cluster_bytes, self.cluster_bytes)
    }
}

/// The allocation table, and which clusters a chain has already claimed.
struct FatChains {
    fat: Vec<u8>,
    bits: u64,
    /// One past the last cluster number.
    end: u64,
    claimed: Vec<bool>,
}

impl FatChains {
    /// The next cluster after `n` as fatfs reads it (None: end, free, bad).
    fn next(&self, n: u64) -> Result<Option<u64>> {
        let at = (n * self.bits / 8) as usize;
        let fat = &self.fat;
        let raw = match self.bits {
            12 if at + 1 < fat.len() => {
                let pair = le16(fat, at);
                if n % 2 == 1 {
                    pair >> 4
                } else {
                    pair & 0xFFF
                }
            }
            16 if at + 1 < fat.len() => le16(fat, at),
            32 if at + 3 < fat.len() => le32(fat, at) & 0x0FFF_FFFF,
            _ => bail!("the ESP's FAT is shorter than its cluster count"),
        };
        let bad = match self.bits {
            12 => 0xFF7,
            16 => 0xFFF7,
            _ => 0x0FFF_FFF7,
        };
        Ok(match raw {
            0 => None,
            r if r >= bad => None,
            r if r < 2 || r >= self.end => {
                bail!("a cluster chain of the ESP leaves the volume (cluster {r})")
            }
            r => Some(r),
        })
    }

    /// Claims the chain from `first`; its clusters, in order.
    fn chain(&mut self, first: u64) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        let mut at = Some(first);
        while let Some(c) = at {
            if c < 2 || c >= self.end {
                bail!("a file or folder of the ESP starts outside the volume (cluster {c})");
            }
            if std::mem::replace(&mut self.claimed[c as usize], true) {
                bail!("the ESP's folders or cluster chains loop (cluster {c} is reached twice)");
            }
            out.push(c);
            at = self.next(c)?;
        }
        Ok(out)
    }
}

/// Walks the FAT volume at `offset` the way fatfs will, refusing what would
/// make fatfs loop: a directory reached twice (a subdirectory entry pointing
/// back at an ancestor, or at the root through cluster 0), a cluster chain
/// that loops or leaves the volume, two chains sharing a cluster. fatfs
/// checks none of these; a loop made `inspect` run forever and `medium cat`
/// read gigabytes. Every cluster is claimed once, so the walk is linear in
/// the volume's size.
fn check_fat(file: &File, offset: u64, len: u64) -> Result<()> {
    if len < 512 {
        bail!("the ESP is smaller than a boot sector");
    }
    let g = FatGeometry::read(&read_fat_bytes(file, offset, 0, 512)?, len)?;
    let end = g.clusters + 2;
    let fat_len = (g.fat_sectors * g.sector).min((end * g.bits).div_ceil(8) + 1);
    let mut chains = FatChains {
        fat: read_fat_bytes(file, offset, g.reserved * g.sector, fat_len)?,
        bits: g.bits,
        end,
        claimed: vec![false; end as usize],
    };
    let root: Vec<(u64, u64)> = if g.bits == 32 {
        chains
            .chain(g.root_cluster)?
            .into_iter()
            .map(|c| g.cluster(c))
            .collect()
    } else {
        vec![(
            (g.reserved + g.fats * g.fat_sectors) * g.sector,
            g.root_sectors * g.sector,
        )]
    };
    let mut dirs = vec![root];
    while let Some(ranges) = dirs.pop() {
        for (at, n) in ranges {
            let bytes = read_fat_bytes(file, offset, at, n)?;
            if !check_fat_dir(&bytes, &g, &mut chains, &mut dirs)? {
                break;
            }
        }
    }
    Ok(())
}

/// One piece of a folder: claims each entry's chain and queues subfolders.
/// False at the end-of-folder mark.
fn check_fat_dir(
    bytes: &[u8],
    g: &FatGeometry,
    chains: &mut FatChains,
    dirs: &mut Vec<Vec<(u64, u64)>>,
) -> Result<bool> {
    for e in bytes.chunks_exact(32) {
        let attr = e[11];
        match e[0] {
            0 => return Ok(false),
            0xE5 => continue,
            _ if attr == 0x0F || attr & 0x08 != 0 => continue,
            _ if &e[..11] == b".          " || &e[..11] == b"..         " => continue,
            _ => {}
        }
        let hi = if g.bits == 32 { le16(e, 20) } else { 0 };
        let first = (hi << 16) | le16(e, 26);
        if attr & 0x10 != 0 {
            if first == 0 {
                // fatfs opens cluster 0 as the root: a loop.
                bail!("a folder of the ESP points back at the root");
            }
            let sub = chains
                .chain(first)?
                .into_iter()
                .map(|c| g.cluster(c))
                .collect();
            dirs.push(sub);
        } else if first != 0 {
            chains.chain(first)?;
        }
    }
    Ok(true)
}

/// The FAT at `offset`, opened read-only in place (after [`check_fat`]).
fn open_fat(file: &File, offset: u64, len: u64) -> Result<fatfs::FileSystem<Window>> {
    check_fat(file, offset, len)?;
    let w = Window {
        file: file.try_clone().context("duplicating the image handle")?,
        start: offset,
        len,
        pos: 0,
    };
    fatfs::FileSystem::new(w, fatfs::FsOptions::new()).context("reading the ESP's FAT")
}

fn list_fat(file: &File, offset: u64, len: u64) -> Result<Vec<EspEntry>> {
    let fs = open_fat(file, offset, len)?;
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = stack.pop() {
        for e in dir.iter() {
            let e = e.context("reading an ESP directory")?;
            // By short name, as check_fat skips them: a long name could
            // dress up a ".." entry (pointing at the parent) as a folder.
            let short = e.short_file_name_as_bytes();
            if short == b"." || short == b".." {
                continue;
            }
            let name = e.file_name();
            let path = format!("{prefix}{name}");
            if e.is_dir() {
                stack.push((format!("{path}/"), e.to_dir()));
            } else {
                out.push(EspEntry {
                    path,
                    bytes: e.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// One file of the FAT at `offset` (`path` with `/` separators, case as
/// FAT compares it), or `None` when it is not there.
pub fn read_fat_file(file: &File, offset: u64, len: u64, path: &str) -> Result<Option<Vec<u8>>> {
    let fs = open_fat(file, offset, len)?;
    let rel = path.trim_start_matches('/');
    let f = match fs.root_dir().open_file(rel) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("opening {rel} on the ESP")),
    };
    let mut out = Vec::new();
    // No file is larger than the partition holding it, whatever its
    // directory entry says.
    f.take(len)
        .read_to_end(&mut out)
        .with_context(|| format!("reading {rel} from the ESP"))?;
    Ok(Some(out))
}

fn el_torito(file: &File, volume: u64) -> Result<Vec<BootEntry>> {
    let mut rec = vec![0u8; SECTOR as usize];
    file.read_exact_at(&mut rec, BOOT_RECORD_LBA * SECTOR)
        .context("reading the El Torito boot record")?;
    if rec[0] != 0 || &rec[1..6] != b"CD001" || !rec[7..].starts_with(b"EL TORITO SPECIFICATION") {
        return Ok(Vec::new());
    }
    let catalog = u32::from_le_bytes([rec[0x47], rec[0x48], rec[0x49], rec[0x4a]]);
    let mut cat = vec![0u8; SECTOR as usize];
    file.read_exact_at(&mut cat, u64::from(catalog) * SECTOR)
        .context("reading the El Torito boot catalog")?;
    let platform_name = |p: u8| match p {
        0x00 => "BIOS".to_string(),
        0xEF => "UEFI".to_string(),
        other => format!("0x{other:02x}"),
    };
    let entry = |e: &[u8], platform: u8| -> BootEntry {
        let lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
        let mut bit = false;
        if platform == 0 && u64::from(lba) * SECTOR < volume {
            let mut t = [0u8; 16];
            if file.read_exact_at(&mut t, u64::from(lba) * SECTOR).is_ok() {
                // A boot info table names the PVD's sector, then the image's.
                bit = u64::from(u32::from_le_bytes([t[8], t[9], t[10], t[11]])) == PVD_LBA
                    && u32::from_le_bytes([t[12], t[13], t[14], t[15]]) == lba;
            }
        }
        BootEntry {
            platform: platform_name(platform),
            bootable: e[0] == 0x88,
            lba,
            sectors: u16::from_le_bytes([e[6], e[7]]),
            boot_info_table: bit,
        }
    };
    let mut out = vec![entry(&cat[32..64], cat[1])];
    let mut at = 64;
    while at + 32 <= cat.len() {
        let h = &cat[at..at + 32];
        if h[0] != 0x90 && h[0] != 0x91 {
            break;
        }
        let n = u16::from_le_bytes([h[2], h[3]]) as usize;
        for i in 0..n {
            let s = at + 32 * (i + 1);
            if s + 32 > cat.len() {
                break;
            }
            out.push(entry(&cat[s..s + 32], h[1]));
        }
        at += 32 * (n + 1);
        if h[0] == 0x91 {
            break;
        }
    }
    Ok(out)
}

/// Magic of a qcow2 header ("QFI\xfb").
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

/// The first bytes of `file`: enough for `cpio::sniff` to decide.
fn head(file: &File, path: &Path) -> Result<Vec<u8>> {
    let mut b = vec![0u8; 256 << 10];
    let mut n = 0;
    while n < b.len() {
        let got = file
            .read_at(&mut b[n..], n as u64)
            .with_context(|| format!("reading {}", path.display()))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    b.truncate(n);
    Ok(b)
}

/// An inspection of a file that is not a disk image: the disk fields empty.
fn not_a_disk(path: &Path, bytes: u64) -> Inspection {
    Inspection {
        path: path.display().to_string(),
        bytes,
        mbr_boot_code: false,
        disk_guid: None,
        partitions: Vec::new(),
        volume: None,
        el_torito: Vec::new(),
        esp_files: Vec::new(),
        media_checksum: None,
        ramdisk: None,
        qcow2: None,
        warnings: Vec::new(),
    }
}

/// The disk GUID and partitions of the GPT (none without one), read by the
/// gpt crate after `check_headers` made sure it will not panic.
fn read_gpt(file: &File, path: &Path, bytes: u64) -> Result<(Option<String>, Vec<Partition>)> {
    let mut partitions = Vec::new();
    let mut disk_guid = None;
    let has_gpt = crate::image::gpt::check_headers(file, bytes)
        .with_context(|| format!("{}", path.display()))?;
    let disk = if has_gpt {
        gpt::GptConfig::new()
            .writable(false)
            .logical_block_size(gpt::disk::LogicalBlockSize::Lb512)
            // The handle already checked to be a file or a block device, not
            // a second open of the path (which could be swapped in between).
            .open_from_device(file.try_clone().context("duplicating the image handle")?)
            .ok()
    } else {
        None
    };
    if let Some(disk) = disk {
        disk_guid = Some(disk.guid().to_string());
        for (n, p) in disk.partitions() {
            let guid = p.part_type_guid.guid.to_string().to_ascii_uppercase();
            // Entries come from the disk: a reversed or huge one must not
            // overflow here (gpt_check names it in the warnings).
            let offset = p.first_lba.saturating_mul(LBA);
            let (filesystem, label) = sniff(file, offset);
            partitions.push(Partition {
                number: *n,
                name: p.name.clone(),
                type_name: crate::image::gpt::type_name(&p.part_type_guid.guid)
                    .unwrap_or("unknown")
                    .to_string(),
                type_guid: guid,
                guid: p.part_guid.to_string(),
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                offset,
                bytes: (p.last_lba.saturating_add(1))
                    .saturating_sub(p.first_lba)
                    .saturating_mul(LBA),
                filesystem,
                label,
            });
        }
    }
    Ok((disk_guid, partitions))
}

pub fn inspect(path: &Path) -> Result<Inspection> {
    let file = crate::io::open_image(path, "image")?;
    let bytes = file
        .seek_end()
        .with_context(|| format!("sizing {}", path.display()))?;
    let head = head(&file, path)?;
    if head.starts_with(QCOW2_MAGIC) {
        if head.len() < 32 {
            anyhow::bail!("{}: a qcow2 header, cut short", path.display());
        }
        let be32 =
            |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let virtual_size = (u64::from(be32(24)) << 32) | u64::from(be32(28));
        return Ok(Inspection {
            qcow2: Some(Qcow2 {
                version: be32(4),
                virtual_size,
            }),
            ..not_a_disk(path, bytes)
        });
    }
    if cpio::sniff(&head).is_some() {
        return Ok(Inspection {
            ramdisk: Some(cpio::summarize(path)?),
            ..not_a_disk(path, bytes)
        });
    }
    let mut mbr = [0u8; 512];
    file.read_exact_at(&mut mbr, 0)
        .with_context(|| format!("reading the MBR of {}", path.display()))?;
    let mbr_boot_code = mbr[..440].iter().any(|&b| b != 0);

    let (disk_guid, partitions) = read_gpt(&file, path, bytes)?;

    let (volume, media_checksum, el) = match isomd5::find_pvd(&file, path) {
        Ok((_, volume_bytes, pvd)) => {
            let text = |r: &[u8]| String::from_utf8_lossy(r).trim_end().to_string();
            let v = Volume {
                label: text(&pvd[40..72]),
                volume_bytes,
                application: text(&pvd[574..702]),
            };
            let el = el_torito(&file, volume_bytes)
                .with_context(|| format!("reading El Torito of {}", path.display()))?;
            (Some(v), isomd5::read_embedded(&pvd), el)
        }
        Err(_) => (None, None, Vec::new()),
    };

    let warnings = gpt_warnings(&file, bytes).with_context(|| format!("{}", path.display()))?;
    // An ESP cut short or reversed is in the warnings; reading its FAT
    // would only fail (and fail the whole report).
    let whole = |p: &&Partition| p.bytes > 0 && p.offset.saturating_add(p.bytes) <= bytes;
    let esp_files = match partitions
        .iter()
        .filter(whole)
        .find(|p| p.type_name == "EFI System" && p.filesystem.as_deref() == Some("vfat"))
    {
        Some(p) => list_fat(&file, p.offset, p.bytes)
            .with_context(|| format!("listing the ESP of {}", path.display()))?,
        None => Vec::new(),
    };

    Ok(Inspection {
        path: path.display().to_string(),
        bytes,
        mbr_boot_code,
        disk_guid,
        partitions,
        volume,
        el_torito: el,
        esp_files,
        media_checksum,
        ramdisk: None,
        qcow2: None,
        warnings,
    })
}

/// What [`gpt_check::check`] finds wrong with the medium, in words (none
/// without a GPT).
fn gpt_warnings(file: &File, bytes: u64) -> Result<Vec<String>> {
    let findings = gpt_check::check(file, bytes).context("checking the GPT")?;
    Ok(findings
        .map(|f| f.problems.iter().map(ToString::to_string).collect())
        .unwrap_or_default())
}

trait SeekEnd {
    fn seek_end(&self) -> io::Result<u64>;
}

impl SeekEnd for File {
    /// Size of a file or a block device (whose metadata length is 0).
    fn seek_end(&self) -> io::Result<u64> {
        let mut f = self;
        let end = f.seek(SeekFrom::End(0))?;
        f.seek(SeekFrom::Start(0))?;
        Ok(end)
    }
}

/// The human-readable report.
pub fn render(i: &Inspection) -> String {
    let mut s = format!("{}: {} bytes\n", i.path, i.bytes);
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    if let Some(q) = &i.qcow2 {
        s += &format!(
            "qcow2 image (version {}): virtual disk of {} bytes ({:.1} GiB)\n",
            q.version,
            q.virtual_size,
            gib(q.virtual_size)
        );
        s += &format!(
            "partitions are not read from qcow2: `qemu-img convert -O raw {p} {p}.raw`, \
             then inspect {p}.raw\n",
            p = i.path
        );
        return s;
    }
    if let Some(r) = &i.ramdisk {
        s += &format!(
            "ramdisk: newc cpio, compression {}, {} entries, {} bytes of data ({:.1} MiB)\n",
            r.compression,
            r.entries,
            r.bytes,
            r.bytes as f64 / (1u64 << 20) as f64
        );
        s += if r.has_init {
            "/init: yes (the kernel runs it)\n"
        } else {
            "/init: no (the kernel would look for a root= device instead)\n"
        };
        return s;
    }
    s += &format!(
        "MBR boot code: {}\n",
        if i.mbr_boot_code {
            "yes (BIOS boot from USB/disk)"
        } else {
            "no"
        }
    );
    match &i.disk_guid {
        Some(g) => s += &format!("GPT disk {g}\n"),
        None => s += "GPT: none\n",
    }
    for p in &i.partitions {
        s += &format!(
            "  {} {:<12} {:<20} LBA {}..{} ({} bytes) {}{}\n",
            p.number,
            p.name,
            p.type_name,
            p.first_lba,
            p.last_lba,
            p.bytes,
            p.filesystem.as_deref().unwrap_or("?"),
            p.label
                .as_ref()
                .map(|l| format!(" label {l}"))
                .unwrap_or_default()
        );
    }
    match &i.volume {
        Some(v) => {
            s += &format!(
                "ISO9660 volume {:?}: {} bytes (application {})\n",
                v.label, v.volume_bytes, v.application
            );
        }
        None => s += "ISO9660: none\n",
    }
    for (n, e) in i.el_torito.iter().enumerate() {
        s += &format!(
            "  El Torito {}: {} {}image at sector {}, {} sectors{}\n",
            n + 1,
            e.platform,
            if e.bootable { "" } else { "(not bootable) " },
            e.lba,
            e.sectors,
            if e.boot_info_table {
                ", boot info table"
            } else {
                ""
            }
        );
    }
    if !i.esp_files.is_empty() {
        s += "ESP files:\n";
        for f in &i.esp_files {
            s += &format!("  {:<40} {} bytes\n", f.path, f.bytes);
        }
    }
    match &i.media_checksum {
        Some(m) => {
            s += &format!(
            "media checksum: MD5 {} (isomd5sum format; {} fragments; last {} sectors unchecked)\n",
            m.md5, m.fragment_count, m.skip_sectors
        )
        }
        None => s += "media checksum: none\n",
    }
    for w in &i.warnings {
        s += &format!("warning: {w}\n");
    }
    // Labels, partition and file names come from the disk: a hostile image
    // must not send escape sequences to the terminal.
    s.chars()
        .map(|c| if c.is_control() && c != '\n' { '?' } else { c })
        .collect()
}

/// What lies in bytes `start..end`, for naming a damaged region.
pub fn describe_range(i: &Inspection, start: u64, end: u64) -> String {
    let mut parts: Vec<String> = i
        .partitions
        .iter()
        .filter(|p| p.offset < end && start < p.offset + p.bytes)
        .map(|p| format!("GPT partition {} ({}, {})", p.number, p.name, p.type_name))
        .collect();
    let first = i
        .partitions
        .iter()
        .map(|p| p.offset)
        .min()
        .unwrap_or(u64::MAX);
    if start < first {
        parts.insert(
            0,
            "ISO9660 metadata, boot catalog and small files (kernel, initrd, loaders)".into(),
        );
    }
    if parts.is_empty() {
        "no partition (padding)".into()
    } else {
        parts.join(" and ")
    }
}

/// `undercloud-live verify`: checks the whole medium's GPT (see
/// [`check_medium`]), then recomputes the embedded media checksum of an
/// image or device. Ok: a one-line summary; a mismatch is an error naming
/// the byte range of the first part that differs and what lies there.
pub fn verify(path: &Path) -> Result<String> {
    // First: the checksum only covers the ISO volume, and on a copy cut
    // inside it the truncation says more than a failed read would.
    let medium = check_medium(path)?;
    match isomd5::check(path)? {
        isomd5::Check::Good { md5, checked_bytes } => Ok(format!(
            "{}: media checksum OK (MD5 {md5}, {checked_bytes} bytes checked){medium}",
            path.display()
        )),
        isomd5::Check::Bad {
            start,
            end,
            fragment,
            parts,
        } => {
            let what = inspect(path)
                .map(|i| describe_range(&i, start, end))
                .unwrap_or_else(|_| "unknown contents".into());
            let part = match fragment {
                Some(k) => format!("part {k} of {parts}"),
                None => format!("part {parts} of {parts}, after the last fragment sum"),
            };
            anyhow::bail!(
                "{}: media check FAILED: bytes {start}..{end} ({part}) differ from the embedded checksum; that range holds {what}",
                path.display()
            )
        }
    }
}

/// The GPT of the whole medium, beyond what the media checksum covers:
/// both headers, the size they give, every partition inside it. An error
/// names the first problem (and how many more there are); Ok: words for
/// the summary line, empty when there is no GPT (a plain ISO).
fn check_medium(path: &Path) -> Result<String> {
    let file = crate::io::open_image(path, "image")?;
    // seek_end: a block device's metadata length is 0.
    let len = file
        .seek_end()
        .with_context(|| format!("sizing {}", path.display()))?;
    let found = gpt_check::check(&file, len)
        .with_context(|| format!("checking the GPT of {}", path.display()))?;
    let Some(f) = found else {
        return Ok(String::new());
    };
    if let Some(first) = f.problems.first() {
        let more = match f.problems.len() - 1 {
            0 => String::new(),
            n => format!(" ({n} more: `undercloud-live inspect` lists them)"),
        };
        bail!("{}: {first}{more}", path.display());
    }
    Ok(format!(
        "; GPT OK (both headers, {} partitions, all inside the {len} bytes)",
        f.partitions
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_disk_reach_the_terminal_without_escapes() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x");
        std::fs::write(&p, vec![0u8; 4096]).unwrap();
        let mut i = inspect(&p).unwrap();
        i.path = "evil\x1b]0;title\x07\u{9b}31m.img".into();
        let text = render(&i);
        assert!(
            text.starts_with("evil?]0;title??31m.img: 4096 bytes\n"),
            "{text}"
        );
    }

    #[test]
    fn sniffs_magic_numbers() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x");
        let mut b = vec![0u8; 8192];
        b[4096 + 1024 + 0x38..4096 + 1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        b[4096 + 1024 + 0x78..4096 + 1024 + 0x7f].copy_from_slice(b"PERSIST");
        b[..4].copy_from_slice(b"hsqs");
        std::fs::write(&p, &b).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(sniff(&f, 0), (Some("squashfs".into()), None));
        assert_eq!(
            sniff(&f, 4096),
            (Some("ext4".into()), Some("PERSIST".into()))
        );
    }

    #[test]
    fn ramdisk_is_summarised() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        std::fs::write(root.join("usr/lib/systemd/systemd"), b"#!/bin/sh\n").unwrap();
        std::os::unix::fs::symlink("usr/lib/systemd/systemd", root.join("init")).unwrap();
        let out = t.path().join("x.initramfs");
        let packed = cpio::pack(&root, &out, &cpio::PackOptions::default()).unwrap();
        let i = inspect(&out).unwrap();
        let r = i.ramdisk.as_ref().unwrap();
        assert_eq!(
            (r.compression, r.entries, r.has_init),
            ("zstd", packed.entries, true)
        );
        assert_eq!(r.entries, 6); // . init usr usr/lib usr/lib/systemd usr/lib/systemd/systemd
        assert_eq!(r.bytes, 10 + "usr/lib/systemd/systemd".len() as u64);
        assert!(i.partitions.is_empty() && i.qcow2.is_none() && !i.mbr_boot_code);
        let text = render(&i);
        assert!(
            text.contains("ramdisk: newc cpio, compression zstd, 6 entries"),
            "{text}"
        );
        assert!(text.contains("/init: yes"), "{text}");
        assert!(!text.contains("GPT"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&i).unwrap();
        assert_eq!(json["ramdisk"]["compression"], "zstd");
        assert_eq!(json["ramdisk"]["has_init"], true);
        assert!(json.get("qcow2").is_none());
    }

    #[test]
    fn qcow2_is_named_with_its_virtual_size() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk.qcow2");
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[24..32].copy_from_slice(&(10u64 << 30).to_be_bytes());
        std::fs::write(&p, &h).unwrap();
        let i = inspect(&p).unwrap();
        assert_eq!(
            i.qcow2,
            Some(Qcow2 {
                version: 3,
                virtual_size: 10 << 30
            })
        );
        let text = render(&i);
        assert!(
            text.contains("qcow2 image (version 3): virtual disk of 10737418240 bytes (10.0 GiB)"),
            "{text}"
        );
        assert!(text.contains("qemu-img convert -O raw"), "{text}");
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(json["qcow2"]["virtual_size"], 10u64 << 30);
        assert!(json.get("ramdisk").is_none());
        std::fs::write(&p, b"QFI\xfb\0\0\0\x03").unwrap();
        assert!(inspect(&p).is_err());
    }

    /// A plain disk (the `disk` output's layout) in `dir`: BIOS boot, an
    /// ESP (FAT with EFI/BOOT/BOOTX64.EFI) at 2 MiB, ext4 root; no ISO9660
    /// volume, no El Torito.
    fn gpt_disk(dir: &Path) -> std::path::PathBuf {
        use crate::image::gpt::{protective_mbr, write_gpt, PartitionSpec};
        let p = dir.join("disk.raw");
        let mib = 1u64 << 20;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap();
        f.set_len(64 * mib).unwrap();
        let part = |name: &str, ty: gpt::partition_types::Type, from: u64, to: u64| PartitionSpec {
            name: name.into(),
            type_guid: ty,
            guid: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()),
            first_lba: from * mib / LBA,
            last_lba: to * mib / LBA - 1,
        };
        let parts = [
            part("bios", gpt::partition_types::BIOS, 1, 2),
            part("esp", gpt::partition_types::EFI, 2, 34),
            part("root", gpt::partition_types::LINUX_FS, 34, 63),
        ];
        let mbr = protective_mbr(64 * mib, None, [1, 2, 3, 4]).unwrap();
        write_gpt(&mut f, &p, uuid::Uuid::nil(), &parts, &mbr).unwrap();
        // The ESP: a FAT with one file.
        let esp = dir.join("esp.img");
        {
            let mut e = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&esp)
                .unwrap();
            e.set_len(32 * mib).unwrap();
            fatfs::format_volume(
                &mut e,
                fatfs::FormatVolumeOptions::new().volume_label(*b"ESP        "),
            )
            .unwrap();
            let fs = fatfs::FileSystem::new(&mut e, fatfs::FsOptions::new()).unwrap();
            fs.root_dir().create_dir("EFI").unwrap();
            fs.root_dir().create_dir("EFI/BOOT").unwrap();
            fs.root_dir()
                .create_file("EFI/BOOT/BOOTX64.EFI")
                .unwrap()
                .write_all(b"MZ")
                .unwrap();
        }
        f.write_all_at(&std::fs::read(&esp).unwrap(), 2 * mib)
            .unwrap();
        // The root: an ext4 superblock's magic and label.
        let sb = 34 * mib + 1024;
        f.write_all_at(&0xEF53u16.to_le_bytes(), sb + 0x38).unwrap();
        f.write_all_at(b"root", sb + 0x78).unwrap();
        drop(f);
        p
    }

    #[test]
    fn gpt_disk_without_iso9660() {
        let t = tempfile::tempdir().unwrap();
        let p = gpt_disk(t.path());

        let i = inspect(&p).unwrap();
        assert!(i.volume.is_none() && i.el_torito.is_empty() && i.media_checksum.is_none());
        let kinds: Vec<_> = i
            .partitions
            .iter()
            .map(|p| {
                (
                    p.type_name.as_str(),
                    p.filesystem.as_deref(),
                    p.label.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("BIOS boot", None, None),
                ("EFI System", Some("vfat"), Some("ESP")),
                ("Linux filesystem", Some("ext4"), Some("root")),
            ]
        );
        assert_eq!(i.esp_files.len(), 1);
        let text = render(&i);
        assert!(text.contains("ISO9660: none"), "{text}");
        assert!(text.contains("EFI/BOOT/BOOTX64.EFI"), "{text}");
        assert!(
            !text.contains("ramdisk") && !text.contains("qcow2"),
            "{text}"
        );
    }

    /// Sets the u32 at `field` of the primary GPT header and fixes its CRC.
    fn patch_gpt_header(p: &Path, field: u64, value: u32) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap();
        f.write_all_at(&value.to_le_bytes(), LBA + field).unwrap();
        let mut h = [0u8; 92];
        f.read_exact_at(&mut h, LBA).unwrap();
        h[16..20].fill(0);
        f.write_all_at(&crate::image::gpt::crc32(&h).to_le_bytes(), LBA + 16)
            .unwrap();
    }

    /// Hostile GPT headers get a one-line error, not a panic in the gpt
    /// crate (it asserts an entry size of 128).
    #[test]
    fn hostile_gpt_headers_are_refused() {
        let t = tempfile::tempdir().unwrap();
        for (field, value, says) in [
            (84, 64, "partition entry size 64"),
            (84, 0, "partition entry size 0"),
            (80, 1 << 30, "1073741824 partition entries"),
            (12, 4096, "header size 4096"),
            (72, 1 << 30, "past the end"),
        ] {
            let p = gpt_disk(t.path());
            patch_gpt_header(&p, field, value);
            let e = format!("{:#}", inspect(&p).unwrap_err());
            assert!(e.contains(says) && !e.contains('\n'), "{e}");
            std::fs::remove_file(&p).unwrap();
            std::fs::remove_file(t.path().join("esp.img")).unwrap();
        }
    }

    /// A copy cut short (here: inside the root partition, the backup GPT
    /// gone) is listed with warnings, and refused by verify with the sizes.
    #[test]
    fn a_truncated_disk_is_listed_with_warnings_and_fails_verify() {
        let t = tempfile::tempdir().unwrap();
        let p = gpt_disk(t.path());
        open_rw(&p).set_len(40 << 20).unwrap();
        let i = inspect(&p).unwrap();
        assert_eq!(i.partitions.len(), 3);
        assert_eq!(i.esp_files.len(), 1, "the ESP is whole: still listed");
        assert_eq!(i.warnings.len(), 3, "{:?}", i.warnings);
        assert!(i.warnings[0].starts_with("truncated:"), "{:?}", i.warnings);
        assert!(
            i.warnings[1].contains("backup GPT header"),
            "{:?}",
            i.warnings
        );
        assert!(
            i.warnings[2].contains("partition 3 (root"),
            "{:?}",
            i.warnings
        );
        let text = render(&i);
        assert!(
            text.contains("warning: truncated: the GPT says the medium is 67108864 bytes"),
            "{text}"
        );
        let json = serde_json::to_value(&i).unwrap();
        assert_eq!(json["warnings"].as_array().unwrap().len(), 3);

        let e = format!("{:#}", verify(&p).unwrap_err());
        assert!(
            e.contains(
                "disk.raw: truncated: the GPT says the medium is 67108864 bytes, \
                 the file has 41943040 (a copy that did not finish?) \
                 (2 more: `undercloud-live inspect` lists them)"
            ),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    /// An intact disk has no warnings, and verify gets past the GPT to the
    /// media checksum (which this disk, without ISO9660, lacks).
    #[test]
    fn an_intact_disk_has_no_warnings() {
        let t = tempfile::tempdir().unwrap();
        let p = gpt_disk(t.path());
        let i = inspect(&p).unwrap();
        assert!(i.warnings.is_empty(), "{:?}", i.warnings);
        assert!(!render(&i).contains("warning"));
        assert_eq!(
            serde_json::to_value(&i).unwrap()["warnings"],
            serde_json::json!([])
        );
        let e = format!("{:#}", verify(&p).unwrap_err());
        assert!(e.contains("no ISO9660 volume"), "{e}");
    }

    /// A reversed ESP entry made the size computation underflow (a panic
    /// in a debug build); now it is a warning and the ESP is not read.
    #[test]
    fn a_reversed_esp_is_a_warning() {
        use crate::image::gpt_check::tests::{edit_entries, set_range};
        let t = tempfile::tempdir().unwrap();
        let p = gpt_disk(t.path());
        edit_entries(&p, |e| set_range(e, 2, 69631, 4096));
        let i = inspect(&p).unwrap();
        assert_eq!(i.partitions[1].bytes, 0);
        assert!(i.esp_files.is_empty());
        assert!(
            i.warnings
                .iter()
                .any(|w| w.contains("partition 2 (esp, LBA 69631..4096) is reversed")),
            "{:?}",
            i.warnings
        );
        let e = format!("{:#}", verify(&p).unwrap_err());
        assert!(e.contains("is reversed"), "{e}");
    }

    /// Runs `f` on another thread, failing (not hanging) the test if it
    /// has not finished within 30 s.
    fn within_30s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("still running after 30 s: a loop")
    }

    /// The ESP of `gpt_disk` (at 2 MiB): the absolute offset of the
    /// directory entry named `name` (8.3, space padded) inside the
    /// directory at `dir` (None: the root), and the data cluster geometry.
    struct Fat {
        base: u64,
        root: u64,
        data: u64,
        cluster: u64,
        fat: u64,
    }

    fn fat_of(f: &File) -> Fat {
        let base = 2u64 << 20;
        let mut bs = [0u8; 512];
        f.read_exact_at(&mut bs, base).unwrap();
        let le16 = |at: usize| u64::from(u16::from_le_bytes([bs[at], bs[at + 1]]));
        let sector = le16(11);
        let fat_sectors = le16(22);
        assert!(fat_sectors != 0, "the test ESP is FAT12/16");
        let fat = base + le16(14) * sector;
        let root = fat + u64::from(bs[16]) * fat_sectors * sector;
        let data = root + (le16(17) * 32).div_ceil(sector) * sector;
        Fat {
            base,
            root,
            data,
            cluster: u64::from(bs[13]) * sector,
            fat,
        }
    }

    impl Fat {
        fn cluster_at(&self, c: u64) -> u64 {
            self.data + (c - 2) * self.cluster
        }

        /// Offset of the entry named `name` in the directory at `dir`.
        fn entry(&self, f: &File, dir: u64, name: &[u8; 11]) -> u64 {
            let mut b = vec![0u8; 512];
            f.read_exact_at(&mut b, dir).unwrap();
            let i = b
                .chunks_exact(32)
                .position(|e| &e[..11] == name)
                .expect("entry in the test ESP");
            dir + i as u64 * 32
        }

        fn first_cluster(&self, f: &File, entry: u64) -> u64 {
            let mut b = [0u8; 2];
            f.read_exact_at(&mut b, entry + 26).unwrap();
            u64::from(u16::from_le_bytes(b))
        }
    }

    fn open_rw(p: &Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap()
    }

    /// A subfolder pointing back at its parent, or at the root (cluster
    /// 0), made inspect walk forever; now a one-line error.
    #[test]
    fn fat_directory_cycles_are_refused() {
        let t = tempfile::tempdir().unwrap();
        for target in ["parent", "root"] {
            let p = gpt_disk(t.path());
            let f = open_rw(&p);
            let fat = fat_of(&f);
            let efi = fat.entry(&f, fat.root, b"EFI        ");
            let efi_cluster = fat.first_cluster(&f, efi);
            let boot = fat.entry(&f, fat.cluster_at(efi_cluster), b"BOOT       ");
            let to = if target == "parent" { efi_cluster } else { 0 };
            f.write_all_at(&(to as u16).to_le_bytes(), boot + 26)
                .unwrap();
            drop(f);
            let e = within_30s(move || format!("{:#}", inspect(&p).unwrap_err()));
            assert!(e.contains("ESP") && !e.contains('\n'), "{target}: {e}");
            std::fs::remove_file(t.path().join("disk.raw")).unwrap();
            std::fs::remove_file(t.path().join("esp.img")).unwrap();
        }
    }

    /// A file whose cluster chain loops and whose size says 4 GiB made
    /// `medium cat` read gigabytes; now a one-line error.
    #[test]
    fn fat_file_chain_loops_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = gpt_disk(t.path());
        let f = open_rw(&p);
        let fat = fat_of(&f);
        let efi = fat.entry(&f, fat.root, b"EFI        ");
        let boot = fat.entry(
            &f,
            fat.cluster_at(fat.first_cluster(&f, efi)),
            b"BOOT       ",
        );
        let file = fat.entry(
            &f,
            fat.cluster_at(fat.first_cluster(&f, boot)),
            b"BOOTX64 EFI",
        );
        let c = fat.first_cluster(&f, file);
        f.write_all_at(&u32::MAX.to_le_bytes(), file + 28).unwrap();
        // FAT16: the file's one cluster now continues with itself.
        f.write_all_at(&(c as u16).to_le_bytes(), fat.fat + 2 * c)
            .unwrap();
        drop(f);
        let f = File::open(&p).unwrap();
        let (base, len) = (fat.base, 32u64 << 20);
        let e = within_30s(move || {
            format!(
                "{:#}",
                read_fat_file(&f, base, len, "EFI/BOOT/BOOTX64.EFI").unwrap_err()
            )
        });
        assert!(e.contains("loop") && !e.contains('\n'), "{e}");
    }
}
