//! The EFI system partition image: a FAT volume written in-process with `fatfs`.
//!
//! The same bytes serve as the GPT ESP of a USB stick and as the El Torito
//! UEFI boot image of a CD, so the image is sized to its content: an El Torito
//! entry can state at most 65535 × 512 bytes (32 MiB), and a small ESP keeps
//! the hybrid image small.
//!
//! Layout decisions (see `plan_size`):
//! - 512-byte clusters up to 260 MiB. FAT type then follows the volume size
//!   (fatfs picks it from the cluster count, as the FAT specification says):
//!   FAT12 below 4085 clusters (volumes of 1–2 MiB), FAT16 up to 32 MiB and
//!   FAT32 from 33 MiB (65525 clusters of 512 bytes plus the FATs). UEFI reads
//!   all three; FAT12/16 is what lets a few-MiB ESP (shim, grub, config) exist
//!   at all, since FAT32 cannot be smaller than about 33 MiB.
//! - Above 260 MiB (only when the caller asks for lots of free space), 4 KiB
//!   clusters keep the FAT small; FAT32 needs ≥ 65525 of them, which 260 MiB
//!   gives.
//! - The size is rounded up to whole MiB. Whole MiB never fall into the gaps
//!   where no FAT type fits the cluster count (e.g. 32.5 MiB with 512-byte
//!   clusters is too many clusters for FAT16 and too few for FAT32).
//!
//! Reproducibility: timestamps come from `EspOptions::epoch`, the volume id
//! from the options, directories are created first in order of first mention,
//! then files in the given order; the image is built in memory from zeros.
//!
//! fatfs 0.3.6 writes long-name entries in front of "." and ".." and points
//! ".." at cluster 2 for children of a FAT32 root; both make `fsck.fat`
//! complain (rafalh/rust-fatfs#117). `fix_dot_entries` repairs them after
//! unmounting, with a small independent FAT walker.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions, TimeProvider};

use crate::io::MIB;

/// What goes into one file of the ESP.
#[derive(Clone, Debug)]
pub enum EspContent {
    /// Copied from this host file (followed if it is a symlink).
    Path(PathBuf),
    /// These bytes.
    Bytes(Vec<u8>),
}

/// One file of the ESP, e.g. `EFI/BOOT/BOOTX64.EFI`.
#[derive(Clone, Debug)]
pub struct EspFile {
    /// Path inside the volume, `/`-separated, relative (no leading `/`).
    pub dest: String,
    pub content: EspContent,
}

impl EspFile {
    /// A file of these bytes at `dest`.
    pub fn bytes(dest: impl Into<String>, data: Vec<u8>) -> EspFile {
        EspFile {
            dest: dest.into(),
            content: EspContent::Bytes(data),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EspOptions {
    /// FAT volume label: at most 11 characters, uppercase; empty for none.
    pub label: String,
    pub volume_id: u32,
    /// Seconds since 1970 (UTC) for every timestamp; clamped to FAT's
    /// 1980–2107 range.
    pub epoch: i64,
    /// Free space to leave in the volume, in bytes.
    pub extra_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspReport {
    /// Size of the image in bytes (a whole number of MiB).
    pub size: u64,
    /// "FAT12", "FAT16" or "FAT32".
    pub fat_type: String,
}

const SECTOR: u64 = 512;
const DIR_ENTRY: u64 = 32;
/// UTF-16 units per long-name entry.
const LFN_UNITS: u64 = 13;
/// fatfs's default root directory size for FAT12/16, in entries.
const DEFAULT_ROOT_ENTRIES: u64 = 512;
/// Up to this size 512-byte clusters; above it 4 KiB (see module docs).
const SMALL_CLUSTER_LIMIT: u64 = 260 * MIB;
/// Slack on top of the computed need, so a rounding slip in the estimate can
/// never make a write fail.
const SLACK: u64 = 64 * 1024;

/// Writes a FAT image holding `files` to `out` (created or truncated; the
/// caller handles temp file + rename).
pub fn write_esp(files: &[EspFile], opts: &EspOptions, out: &Path) -> Result<EspReport> {
    let label = volume_label(&opts.label)?;
    let tree = Tree::new(files)?;

    let mut sizes = Vec::with_capacity(files.len());
    for file in files {
        sizes.push(content_len(&file.content)?);
    }
    let plan = plan_size(&tree, &sizes, opts.extra_bytes)?;
    let len = usize::try_from(plan.size).context("ESP size does not fit in memory")?;

    // Built in memory: fatfs issues many small reads and writes, which are
    // cheap on a buffer and slow as syscalls; an ESP is at most a few hundred
    // MiB, usually a few.
    let mut img = vec![0u8; len];
    let fat_type = {
        let mut format = FormatVolumeOptions::new()
            .bytes_per_cluster(plan.cluster as u32)
            .max_root_dir_entries(plan.root_entries)
            .volume_id(opts.volume_id);
        if let Some(label) = label {
            format = format.volume_label(label);
        }
        fatfs::format_volume(Cursor::new(&mut img[..]), format)
            .map_err(|e| anyhow!("formatting the FAT volume: {e}"))?;

        let _clock = ClockGuard::set(dos_datetime(opts.epoch));
        let fs = FileSystem::new(
            Cursor::new(&mut img[..]),
            FsOptions::new()
                .time_provider(&EPOCH_CLOCK)
                .update_accessed_date(false),
        )
        .map_err(|e| anyhow!("opening the new FAT volume: {e}"))?;
        put_files(&fs, &tree, files, &sizes)?;
        let stats = fs
            .stats()
            .map_err(|e| anyhow!("reading FAT statistics: {e}"))?;
        let free = u64::from(stats.free_clusters()) * u64::from(stats.cluster_size());
        if free < opts.extra_bytes {
            // The size plan is an upper bound by construction; this is a bug.
            bail!(
                "ESP sizing left {free} bytes free, {} requested",
                opts.extra_bytes
            );
        }
        let fat_type = fs.fat_type();
        fs.unmount()
            .map_err(|e| anyhow!("finishing the FAT volume: {e}"))?;
        fat_type
    };
    fix_dot_entries(&mut img, fat_type).context("repairing ESP directory entries")?;

    write_sparse(&img, out).with_context(|| format!("writing ESP image {}", out.display()))?;
    Ok(EspReport {
        size: plan.size,
        fat_type: match fat_type {
            FatType::Fat12 => "FAT12",
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        }
        .to_owned(),
    })
}

/// Writes `files` into a FAT volume that is already formatted and empty
/// (the installer's ESP on its partition; `write_esp` makes its own).
pub fn fill<IO: fatfs::ReadWriteSeek>(fs: &FileSystem<IO>, files: &[EspFile]) -> Result<()> {
    let tree = Tree::new(files)?;
    let sizes = files
        .iter()
        .map(|f| content_len(&f.content))
        .collect::<Result<Vec<u64>>>()?;
    put_files(fs, &tree, files, &sizes)
}

/// Creates `tree`'s folders, parents first, then the files.
fn put_files<IO: fatfs::ReadWriteSeek>(
    fs: &FileSystem<IO>,
    tree: &Tree,
    files: &[EspFile],
    sizes: &[u64],
) -> Result<()> {
    let root = fs.root_dir();
    for dir in &tree.dirs {
        root.create_dir(dir)
            .map_err(|e| anyhow!("creating directory {dir} in the ESP: {e}"))?;
    }
    for (file, &size) in files.iter().zip(sizes) {
        let mut fat_file = root
            .create_file(&file.dest)
            .map_err(|e| anyhow!("creating {} in the ESP: {e}", file.dest))?;
        copy_content(&file.content, size, &mut fat_file)
            .with_context(|| format!("writing {} to the ESP", file.dest))?;
        fat_file
            .flush()
            .map_err(|e| anyhow!("writing {} to the ESP: {e}", file.dest))?;
    }
    Ok(())
}

/// The label as FAT stores it: 11 bytes, space padded; `None` for no label.
fn volume_label(label: &str) -> Result<Option<[u8; 11]>> {
    if label.is_empty() {
        return Ok(None);
    }
    if label.len() > 11 {
        bail!("ESP volume label {label:?} is longer than 11 characters");
    }
    // Short-name characters only; lowercase is refused rather than folded so
    // the label the user wrote is the label the firmware shows.
    let ok =
        |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || " !#$%&'()-@^_`{}~".contains(c);
    if let Some(bad) = label.chars().find(|&c| !ok(c)) {
        bail!("ESP volume label {label:?} contains {bad:?}: use uppercase letters, digits, space or !#$%&'()-@^_`{{}}~");
    }
    let mut raw = [b' '; 11];
    raw[..label.len()].copy_from_slice(label.as_bytes());
    Ok(Some(raw))
}

/// The directory tree implied by the files' destinations.
#[derive(Debug, Default)]
struct Tree {
    /// Every directory (not the root), parents before children, in order of
    /// first mention: the order they are created in.
    dirs: Vec<String>,
    /// Per directory ("" for the root): its children's names, for sizing.
    children: HashMap<String, Vec<String>>,
}

impl Tree {
    fn new(files: &[EspFile]) -> Result<Tree> {
        let mut tree = Tree::default();
        tree.children.insert(String::new(), Vec::new());
        // FAT names are case-insensitive: key everything by the uppercase path.
        let mut kinds: HashMap<String, bool /* is_dir */> = HashMap::new();
        for file in files {
            let parts = dest_parts(&file.dest)?;
            let mut parent = String::new();
            for (i, part) in parts.iter().enumerate() {
                let path = if parent.is_empty() {
                    (*part).to_owned()
                } else {
                    format!("{parent}/{part}")
                };
                let is_dir = i + 1 < parts.len();
                match kinds.get(&path.to_uppercase()) {
                    Some(&seen_dir) if seen_dir && is_dir => {}
                    Some(&seen_dir) => {
                        let what = if seen_dir { "a directory" } else { "a file" };
                        bail!(
                            "ESP path {} conflicts with another entry: {path} is already {what} (FAT names ignore case)",
                            file.dest
                        );
                    }
                    None => {
                        kinds.insert(path.to_uppercase(), is_dir);
                        if let Some(siblings) = tree.children.get_mut(&parent) {
                            siblings.push((*part).to_owned());
                        }
                        if is_dir {
                            tree.dirs.push(path.clone());
                            tree.children.insert(path.clone(), Vec::new());
                        }
                    }
                }
                parent = path;
            }
        }
        Ok(tree)
    }
}

/// Splits and checks a destination path; the characters allowed are the ones
/// fatfs accepts in long names.
fn dest_parts(dest: &str) -> Result<Vec<&str>> {
    if dest.is_empty() || dest.starts_with('/') || dest.ends_with('/') {
        bail!("ESP path {dest:?} must be relative, like EFI/BOOT/BOOTX64.EFI");
    }
    let parts: Vec<&str> = dest.split('/').collect();
    for part in &parts {
        if part.is_empty() || *part == "." || *part == ".." {
            bail!("ESP path {dest:?} has an empty, \".\" or \"..\" component");
        }
        if part.encode_utf16().count() > 255 {
            bail!("ESP path {dest:?}: a name is longer than 255 characters");
        }
        let ok = |c: char| {
            c.is_ascii_alphanumeric()
                || ('\u{80}'..='\u{FFFF}').contains(&c)
                || "$%'-_@~`!(){}. +,;=[]^#&".contains(c)
        };
        if let Some(bad) = part.chars().find(|&c| !ok(c)) {
            bail!("ESP path {dest:?} contains {bad:?}, which FAT names cannot hold");
        }
    }
    Ok(parts)
}

fn content_len(content: &EspContent) -> Result<u64> {
    match content {
        EspContent::Bytes(bytes) => Ok(bytes.len() as u64),
        EspContent::Path(path) => {
            let meta = std::fs::metadata(path)
                .with_context(|| format!("reading ESP source {}", path.display()))?;
            if !meta.is_file() {
                bail!("ESP source {} is not a regular file", path.display());
            }
            Ok(meta.len())
        }
    }
}

fn copy_content(content: &EspContent, size: u64, to: &mut impl Write) -> Result<()> {
    match content {
        EspContent::Bytes(bytes) => to.write_all(bytes).map_err(|e| anyhow!("{e}")),
        EspContent::Path(path) => {
            let src = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            // Read whole, then written in one call: the image is in memory
            // anyway, and fatfs handles one large write cluster run by
            // cluster run where io::copy's 8 KiB pieces cost a read and a
            // FAT walk each. Exactly the size the plan was made for: a file
            // that changes under us is an error, not a silently different
            // image.
            let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            let copied =
                src.take(size)
                    .read_to_end(&mut data)
                    .with_context(|| format!("copying {}", path.display()))? as u64;
            if copied != size {
                bail!(
                    "{} changed while being copied ({size} bytes expected, {copied} read)",
                    path.display()
                );
            }
            to.write_all(&data).map_err(|e| anyhow!("{e}"))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct SizePlan {
    size: u64,
    cluster: u64,
    /// Root directory entries for FAT12/16 (fatfs ignores it for FAT32).
    root_entries: u16,
}

/// Volume size for this content: an upper bound on what fatfs will use,
/// rounded up to whole MiB.
///
/// It assumes the worst of every FAT type at once (FAT32's 8 reserved sectors
/// and 4-byte FAT entries, FAT16's fixed root region, the root directory also
/// in clusters), so whichever type fatfs settles on, the content fits. Growth
/// from rounding only adds clusters, and each costs 8 bytes of FAT against
/// 512 or more of space, so rounding can never make it not fit.
fn plan_size(tree: &Tree, sizes: &[u64], extra: u64) -> Result<SizePlan> {
    let estimate = |cluster: u64| -> Result<SizePlan> {
        let clusters_for = |bytes: u64| bytes.div_ceil(cluster);
        let entries_for = |names: &[String]| -> u64 {
            names
                .iter()
                .map(|n| 1 + (n.encode_utf16().count() as u64).div_ceil(LFN_UNITS))
                .sum()
        };
        let mut clusters: u64 = sizes.iter().map(|&s| clusters_for(s)).sum();
        for dir in &tree.dirs {
            let names = tree.children.get(dir).map_or(&[][..], Vec::as_slice);
            // fatfs writes ".", ".." and a long-name entry for each.
            let entries = 4 + entries_for(names);
            clusters += clusters_for(entries * DIR_ENTRY).max(1);
        }
        let root_names = tree.children.get("").map_or(&[][..], Vec::as_slice);
        let root_entries = 1 /* volume label */ + entries_for(root_names);
        clusters += clusters_for(root_entries * DIR_ENTRY).max(1);
        clusters += clusters_for(extra.saturating_add(SLACK));

        let root_cap = root_entries.max(DEFAULT_ROOT_ENTRIES).next_multiple_of(16);
        let root_cap = u16::try_from(root_cap)
            .map_err(|_| anyhow!("too many entries in the ESP's root directory"))?;
        let root_sectors = u64::from(root_cap) * DIR_ENTRY / SECTOR;
        let fat_sectors = ((clusters + 2) * 4).div_ceil(SECTOR);
        let bytes = (8 + root_sectors + 2 * fat_sectors) * SECTOR + clusters * cluster;
        Ok(SizePlan {
            size: bytes.next_multiple_of(MIB),
            cluster,
            root_entries: root_cap,
        })
    };
    let plan = estimate(512)?;
    let plan = if plan.size > SMALL_CLUSTER_LIMIT {
        estimate(4096)?
    } else {
        plan
    };
    if plan.size / SECTOR > u64::from(u32::MAX) {
        bail!("ESP of {} bytes is too large for FAT", plan.size);
    }
    Ok(plan)
}

thread_local! {
    /// The time fatfs stamps on entries while `write_esp` runs on this thread.
    static NOW: Cell<fatfs::DateTime> = const { Cell::new(DOS_EPOCH) };
}

const DOS_EPOCH: fatfs::DateTime = fatfs::DateTime {
    date: fatfs::Date {
        year: 1980,
        month: 1,
        day: 1,
    },
    time: fatfs::Time {
        hour: 0,
        min: 0,
        sec: 0,
        millis: 0,
    },
};

/// fatfs wants a `&'static` time provider, but the time is per call: the
/// provider reads a thread-local that `ClockGuard` sets for one write.
#[derive(Debug)]
struct EpochClock;

static EPOCH_CLOCK: EpochClock = EpochClock;

impl TimeProvider for EpochClock {
    fn get_current_date(&self) -> fatfs::Date {
        NOW.with(Cell::get).date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        NOW.with(Cell::get)
    }
}

struct ClockGuard(fatfs::DateTime);

impl ClockGuard {
    fn set(now: fatfs::DateTime) -> ClockGuard {
        ClockGuard(NOW.with(|c| c.replace(now)))
    }
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        NOW.with(|c| c.set(self.0));
    }
}

/// Seconds since 1970 UTC as a FAT date and time (FAT has no time zone;
/// reproducible builds mean UTC). Clamped to FAT's range, 1980-01-01 to
/// 2107-12-31 23:59:58, because SOURCE_DATE_EPOCH=0 is common.
fn dos_datetime(epoch: i64) -> fatfs::DateTime {
    const MIN: i64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: i64 = 4_354_819_198; // 2107-12-31T23:59:58Z
    let t = epoch.clamp(MIN, MAX);
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    fatfs::DateTime {
        date: fatfs::Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        time: fatfs::Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: (secs % 60) as u16,
            millis: 0,
        },
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01, by eras of 400
/// years (146097 days) counted from 0000-03-01 so leap days end each year.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + i64::from(month <= 2);
    (year, month, day)
}

/// Where a FAT volume keeps things, read back from its boot sector.
struct Geometry {
    fat_type: FatType,
    cluster_bytes: usize,
    fat_offset: usize,
    data_offset: usize,
    clusters: u32,
    root: DirLoc,
}

#[derive(Clone, Copy)]
enum DirLoc {
    /// FAT12/16 root: a fixed region.
    Fixed { offset: usize, len: usize },
    /// A cluster chain starting here.
    Chain(u32),
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le32(b: &[u8], at: usize) -> u64 {
    u64::from(u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]))
}

impl Geometry {
    fn read(img: &[u8], fat_type: FatType) -> Result<Geometry> {
        if img.len() < 512 {
            bail!("image shorter than a boot sector");
        }
        let sector = le16(img, 11);
        let per_cluster = u64::from(img[13]);
        let reserved = le16(img, 14);
        let fats = u64::from(img[16]);
        let root_entries = le16(img, 17);
        let total = match le16(img, 19) {
            0 => le32(img, 32),
            n => n,
        };
        let fat_sectors = match le16(img, 22) {
            0 => le32(img, 36),
            n => n,
        };
        let root_sectors = (root_entries * DIR_ENTRY).div_ceil(sector.max(1));
        let data_sector = reserved + fats * fat_sectors + root_sectors;
        let cluster_bytes = sector * per_cluster;
        if cluster_bytes == 0 || total * sector > img.len() as u64 || data_sector > total {
            bail!("boot sector does not describe this image");
        }
        let clusters = (total - data_sector) / per_cluster;
        let root = if fat_type == FatType::Fat32 {
            DirLoc::Chain(le32(img, 44) as u32)
        } else {
            DirLoc::Fixed {
                offset: ((reserved + fats * fat_sectors) * sector) as usize,
                len: (root_sectors * sector) as usize,
            }
        };
        Ok(Geometry {
            fat_type,
            cluster_bytes: cluster_bytes as usize,
            fat_offset: (reserved * sector) as usize,
            data_offset: (data_sector * sector) as usize,
            clusters: clusters as u32,
            root,
        })
    }

    /// Next cluster in a chain, `None` at its end (or on anything that is
    /// not a valid data cluster).
    fn next(&self, img: &[u8], n: u32) -> Option<u32> {
        let n_usize = n as usize;
        let (value, end) = match self.fat_type {
            FatType::Fat12 => {
                let at = self.fat_offset + n_usize + n_usize / 2;
                let pair = le16(img, at) as u32;
                (if n % 2 == 1 { pair >> 4 } else { pair & 0xFFF }, 0xFF8)
            }
            FatType::Fat16 => (le16(img, self.fat_offset + 2 * n_usize) as u32, 0xFFF8),
            FatType::Fat32 => (
                le32(img, self.fat_offset + 4 * n_usize) as u32 & 0x0FFF_FFFF,
                0x0FFF_FFF8,
            ),
        };
        (value >= 2 && value < end && value < self.clusters + 2).then_some(value)
    }

    fn chain(&self, img: &[u8], first: u32) -> Result<Vec<u32>> {
        if first < 2 || first >= self.clusters + 2 {
            bail!("directory starts at invalid cluster {first}");
        }
        let mut chain = vec![first];
        let mut n = first;
        while let Some(next) = self.next(img, n) {
            if chain.len() > self.clusters as usize {
                bail!("cluster chain from {first} loops");
            }
            chain.push(next);
            n = next;
        }
        Ok(chain)
    }

    fn ranges(&self, img: &[u8], loc: DirLoc) -> Result<Vec<(usize, usize)>> {
        Ok(match loc {
            DirLoc::Fixed { offset, len } => vec![(offset, len)],
            DirLoc::Chain(first) => self
                .chain(img, first)?
                .into_iter()
                .map(|c| {
                    let at = self.data_offset + (c as usize - 2) * self.cluster_bytes;
                    (at, self.cluster_bytes)
                })
                .collect(),
        })
    }

    fn read_dir(&self, img: &[u8], loc: DirLoc) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (at, len) in self.ranges(img, loc)? {
            out.extend_from_slice(&img[at..at + len]);
        }
        Ok(out)
    }

    fn write_dir(&self, img: &mut [u8], loc: DirLoc, data: &[u8]) -> Result<()> {
        let mut rest = data;
        for (at, len) in self.ranges(img, loc)? {
            let (head, tail) = rest.split_at(len.min(rest.len()));
            img[at..at + head.len()].copy_from_slice(head);
            rest = tail;
        }
        Ok(())
    }
}

const ATTR_LFN: u8 = 0x0F;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const DOT: &[u8; 11] = b".          ";
const DOTDOT: &[u8; 11] = b"..         ";

/// Puts "." and ".." in the first two slots of every subdirectory (dropping
/// the long-name entries fatfs writes before them) and points ".." of the
/// root's children at cluster 0, as the FAT specification requires.
fn fix_dot_entries(img: &mut [u8], fat_type: FatType) -> Result<()> {
    let geo = Geometry::read(img, fat_type)?;
    let root = geo.root;
    fix_children(img, &geo, root, 0, 0)
}

/// `loc` is a directory whose own entries are already right; `cluster` is its
/// first cluster, 0 for the root.
fn fix_children(
    img: &mut [u8],
    geo: &Geometry,
    loc: DirLoc,
    cluster: u32,
    depth: u32,
) -> Result<()> {
    if depth > 64 {
        bail!("directories nested too deep (a loop?)");
    }
    let data = geo.read_dir(img, loc)?;
    for entry in data.chunks_exact(DIR_ENTRY as usize) {
        let attr = entry[11];
        match entry[0] {
            0x00 => break,
            0xE5 => continue,
            _ if attr == ATTR_LFN || attr & ATTR_VOLUME != 0 || attr & ATTR_DIR == 0 => continue,
            _ if &entry[..11] == DOT || &entry[..11] == DOTDOT => continue,
            _ => {}
        }
        let first = ((le16(entry, 20) << 16) | le16(entry, 26)) as u32;
        let sub = DirLoc::Chain(first);
        let mut dir = geo.read_dir(img, sub)?;
        fix_dots(&mut dir, first, cluster)?;
        geo.write_dir(img, sub, &dir)?;
        fix_children(img, geo, sub, first, depth + 1)?;
    }
    Ok(())
}

/// Rewrites the start of one subdirectory's entries.
fn fix_dots(dir: &mut Vec<u8>, own: u32, parent: u32) -> Result<()> {
    let e = DIR_ENTRY as usize;
    let name = |i: usize, dir: &[u8]| -> [u8; 11] {
        let mut n = [0u8; 11];
        if dir.len() >= (i + 1) * e {
            n.copy_from_slice(&dir[i * e..i * e + 11]);
        }
        n
    };
    let attr = |i: usize, dir: &[u8]| dir.get(i * e + 11).copied();
    if &name(0, dir) == DOT && &name(1, dir) == DOTDOT {
        // Already the right layout.
    } else if attr(0, dir) == Some(ATTR_LFN)
        && &name(1, dir) == DOT
        && attr(2, dir) == Some(ATTR_LFN)
        && &name(3, dir) == DOTDOT
    {
        let len = dir.len();
        // Keep "." and "..", drop the two long-name entries, shift the rest
        // up by two slots and free the two slots this leaves at the end.
        let mut fixed = Vec::with_capacity(len);
        fixed.extend_from_slice(&dir[e..2 * e]);
        fixed.extend_from_slice(&dir[3 * e..4 * e]);
        fixed.extend_from_slice(&dir[4 * e..]);
        fixed.resize(len, 0);
        *dir = fixed;
    } else {
        bail!("directory at cluster {own} does not start with \".\" and \"..\"");
    }
    let set_cluster = |slot: &mut [u8], n: u32| {
        slot[20..22].copy_from_slice(&((n >> 16) as u16).to_le_bytes());
        slot[26..28].copy_from_slice(&(n as u16).to_le_bytes());
    };
    set_cluster(&mut dir[..e], own);
    set_cluster(&mut dir[e..2 * e], parent);
    Ok(())
}

/// Writes the image, seeking over all-zero blocks so the file is sparse
/// (an ESP with generous free space is mostly zeros). No fsync: the file is
/// a scratch input that is copied (or reflinked) into the image, and the
/// image is synced as a whole before it gets its final name; a sync here
/// would be one more disk flush of bytes that are deleted right after.
fn write_sparse(img: &[u8], out: &Path) -> io::Result<()> {
    const BLOCK: usize = 64 * 1024;
    let mut file = File::create(out)?;
    for (i, block) in img.chunks(BLOCK).enumerate() {
        if block.iter().any(|&b| b != 0) {
            file.seek(SeekFrom::Start((i * BLOCK) as u64))?;
            file.write_all(block)?;
        }
    }
    file.set_len(img.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn opts() -> EspOptions {
        EspOptions {
            label: "UCLIVE".to_owned(),
            volume_id: 0x1234_ABCD,
            epoch: 1_700_000_000,
            extra_bytes: 0,
        }
    }

    /// Deterministic, incompressible-looking test data.
    fn pattern(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn have(tool: &str) -> bool {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        crate::system::testing::require(found, &format!("{tool} not installed"))
    }

    /// `fsck.fat -n` must succeed and report nothing beyond its banner and
    /// summary line.
    fn assert_fsck_clean(img: &Path) {
        let out = Command::new("fsck.fat")
            .arg("-n")
            .arg(img)
            .output()
            .expect("running fsck.fat");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "fsck.fat failed:\n{text}");
        for line in text.lines() {
            assert!(
                line.starts_with("fsck.fat ") || line.contains(" files, "),
                "fsck.fat complained:\n{text}"
            );
        }
    }

    fn mcopy_out(img: &Path, path: &str) -> Vec<u8> {
        let out = Command::new("mcopy")
            .arg("-n")
            .arg("-i")
            .arg(img)
            .arg(format!("::{path}"))
            .arg("-")
            .output()
            .expect("running mcopy");
        assert!(
            out.status.success(),
            "mcopy {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn tool_output(cmd: &str, args: &[&str], img: &Path) -> String {
        let out = Command::new(cmd)
            .arg("-i")
            .arg(img)
            .args(args)
            .output()
            .expect("running an mtools command");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn round_trip_through_fsck_and_mtools() {
        if !have("fsck.fat") || !have("mcopy") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("shimx64.efi");
        std::fs::write(&shim, pattern(300_000, 1)).unwrap();
        let files = vec![
            EspFile {
                dest: "EFI/BOOT/BOOTX64.EFI".to_owned(),
                content: EspContent::Path(shim.clone()),
            },
            EspFile::bytes("EFI/BOOT/grubx64.efi", pattern(1_500_000, 2)),
            EspFile::bytes("EFI/BOOT/grub.cfg", b"set timeout=1\n".to_vec()),
            EspFile::bytes(
                "EFI/debian/grub.cfg",
                b"configfile /EFI/BOOT/grub.cfg\n".to_vec(),
            ),
            EspFile::bytes("boot/grub/fonts/deeper/still/unicode.pf2", pattern(5000, 3)),
            EspFile::bytes("empty.txt", Vec::new()),
            EspFile::bytes(
                "a-rather-long-file-name-that-needs-several-lfn-entries.conf",
                pattern(513, 4),
            ),
        ];
        let img = dir.path().join("esp.img");
        let report = write_esp(&files, &opts(), &img).unwrap();
        assert_eq!(report.size % MIB, 0);
        assert_eq!(std::fs::metadata(&img).unwrap().len(), report.size);
        assert_eq!(report.size, 2 * MIB, "{report:?}");
        assert_eq!(report.fat_type, "FAT12");
        assert_fsck_clean(&img);

        for file in &files {
            let want = match &file.content {
                EspContent::Bytes(b) => b.clone(),
                EspContent::Path(p) => std::fs::read(p).unwrap(),
            };
            assert!(mcopy_out(&img, &file.dest) == want, "{} differs", file.dest);
        }

        let listing = tool_output("mdir", &["-/", "::"], &img);
        for name in ["grubx64.efi", "unicode.pf2", "debian", "deeper", "still"] {
            assert!(listing.contains(name), "{name} missing from:\n{listing}");
        }
        // Timestamps from the epoch: 1700000000 is 2023-11-14 22:13:20 UTC.
        assert!(listing.contains("2023-11-14  22:13"), "{listing}");

        let info = tool_output("minfo", &["::"], &img);
        assert!(info.contains("UCLIVE"), "{info}");
        assert!(info.to_lowercase().contains("1234abcd"), "{info}");
        let label = tool_output("mlabel", &["-s", "::"], &img);
        assert!(label.contains("UCLIVE"), "{label}");
    }

    #[test]
    fn same_inputs_same_bytes() {
        let files = vec![
            EspFile::bytes("EFI/BOOT/BOOTX64.EFI", pattern(70_000, 5)),
            EspFile::bytes("EFI/BOOT/grub.cfg", b"x".to_vec()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        write_esp(&files, &opts(), &a).unwrap();
        write_esp(&files, &opts(), &b).unwrap();
        let later = EspOptions {
            epoch: 1_800_000_000,
            ..opts()
        };
        write_esp(&files, &later, &c).unwrap();
        let (a, b, c) = (
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            std::fs::read(c).unwrap(),
        );
        assert!(a == b, "two writes differ");
        assert!(a != c, "the epoch does not reach the image");
    }

    #[test]
    fn twenty_mib_file_is_fat16_and_valid() {
        let data = pattern(20 * MIB as usize, 6);
        let files = vec![EspFile::bytes("EFI/BOOT/initrd.img", data.clone())];
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("esp.img");
        let report = write_esp(&files, &opts(), &img).unwrap();
        // Fits the 32 MiB El Torito limit, so FAT16 by the rule above.
        assert_eq!(report.fat_type, "FAT16");
        assert_eq!(report.size, 21 * MIB);
        if have("fsck.fat") && have("mcopy") {
            assert_fsck_clean(&img);
            assert!(mcopy_out(&img, "EFI/BOOT/initrd.img") == data);
        }
    }

    #[test]
    fn forty_mib_is_fat32_and_valid() {
        let data = pattern(40 * MIB as usize, 7);
        let files = vec![
            EspFile::bytes("EFI/BOOT/BOOTX64.EFI", pattern(1000, 8)),
            EspFile::bytes("live/vmlinuz", data.clone()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("esp.img");
        let report = write_esp(&files, &opts(), &img).unwrap();
        assert_eq!(report.fat_type, "FAT32");
        assert_eq!(report.size, 41 * MIB);
        if have("fsck.fat") && have("mcopy") {
            assert_fsck_clean(&img);
            assert!(mcopy_out(&img, "live/vmlinuz") == data);
            assert!(mcopy_out(&img, "EFI/BOOT/BOOTX64.EFI") == pattern(1000, 8));
        }
    }

    #[test]
    fn extra_bytes_stay_free() {
        let files = vec![EspFile::bytes("EFI/BOOT/BOOTX64.EFI", pattern(100_000, 9))];
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("esp.img");
        let o = EspOptions {
            extra_bytes: 10 * MIB,
            ..opts()
        };
        let report = write_esp(&files, &o, &img).unwrap();
        // fatfs mounts read-write only, so look at a copy.
        let copy = dir.path().join("copy.img");
        std::fs::copy(&img, &copy).unwrap();
        let disk = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&copy)
            .unwrap();
        let fs = FileSystem::new(disk, FsOptions::new()).unwrap();
        let stats = fs.stats().unwrap();
        let free = u64::from(stats.free_clusters()) * u64::from(stats.cluster_size());
        assert!(free >= 10 * MIB, "only {free} free in {report:?}");
        assert!(report.size <= 12 * MIB, "{report:?}");
    }

    #[test]
    fn many_entries_and_shapes_fit() {
        if !have("fsck.fat") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // More root entries than FAT16's default 512-entry root region, and
        // directories spanning several clusters.
        let mut files = Vec::new();
        for i in 0..600 {
            files.push(EspFile::bytes(
                format!("file-number-{i:04}.cfg"),
                pattern(i * 37, i as u32),
            ));
        }
        for i in 0..300 {
            files.push(EspFile::bytes(
                format!("EFI/many/f{i}"),
                pattern(i % 7 * 512, 1),
            ));
        }
        let img = dir.path().join("esp.img");
        let report = write_esp(&files, &opts(), &img).unwrap();
        assert_fsck_clean(&img);
        assert!(report.size <= 16 * MIB, "{report:?}");
        if have("mcopy") {
            assert!(mcopy_out(&img, "file-number-0599.cfg") == pattern(599 * 37, 599));
            assert!(mcopy_out(&img, "EFI/many/f299") == pattern(299 % 7 * 512, 1));
        }
    }

    #[test]
    fn sizes_across_fat_boundaries_fit() {
        // One file per size around the FAT12/16 and FAT16/32 boundaries.
        let dir = tempfile::tempdir().unwrap();
        for mib_tenths in [15u64, 19, 20, 21, 25, 305, 315, 318, 320, 322, 330] {
            let len = (mib_tenths * MIB / 10) as usize;
            let files = vec![
                EspFile::bytes("EFI/BOOT/BOOTX64.EFI", vec![0xAB; len]),
                EspFile::bytes("EFI/BOOT/grub.cfg", b"x".to_vec()),
            ];
            let img = dir.path().join(format!("esp{mib_tenths}.img"));
            let report =
                write_esp(&files, &opts(), &img).unwrap_or_else(|e| panic!("{mib_tenths}: {e:#}"));
            if have("fsck.fat") {
                assert_fsck_clean(&img);
            }
            if report.size <= 32 * MIB {
                assert_ne!(report.fat_type, "FAT32", "{report:?}");
            } else {
                assert_eq!(report.fat_type, "FAT32", "{report:?}");
            }
        }
    }

    #[test]
    fn missing_source_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-shim.efi");
        let files = vec![EspFile {
            dest: "EFI/BOOT/BOOTX64.EFI".to_owned(),
            content: EspContent::Path(missing.clone()),
        }];
        let err = write_esp(&files, &opts(), &dir.path().join("esp.img")).unwrap_err();
        assert!(
            format!("{err:#}").contains(&missing.display().to_string()),
            "{err:#}"
        );
    }

    #[test]
    fn bad_inputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("esp.img");
        let one = vec![EspFile::bytes("EFI/BOOT/BOOTX64.EFI", vec![1])];
        for label in ["lowercase", "TWELVE CHARS", "BAD/LABEL"] {
            let o = EspOptions {
                label: label.to_owned(),
                ..opts()
            };
            let err = write_esp(&one, &o, &out).unwrap_err();
            assert!(format!("{err}").contains(label), "{err}");
        }
        let cases: [&[&str]; 6] = [
            &["EFI/BOOT/X", "efi/boot/x"],
            &["EFI/BOOT", "EFI/BOOT/X"],
            &["EFI/BOOT/X", "EFI/BOOT"],
            &["/EFI/X"],
            &["EFI//X"],
            &["EFI/a:b"],
        ];
        for case in cases {
            let files: Vec<EspFile> = case.iter().map(|d| EspFile::bytes(*d, vec![1])).collect();
            let err = write_esp(&files, &opts(), &out).unwrap_err();
            assert!(format!("{err}").contains("ESP path"), "{case:?}: {err}");
        }
    }

    #[test]
    fn no_label_is_fine() {
        if !have("fsck.fat") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("esp.img");
        let o = EspOptions {
            label: String::new(),
            ..opts()
        };
        write_esp(&[EspFile::bytes("A/B/C", vec![7; 10])], &o, &img).unwrap();
        assert_fsck_clean(&img);
    }

    #[test]
    fn dos_dates() {
        let d = dos_datetime(1_700_000_000);
        assert_eq!((d.date.year, d.date.month, d.date.day), (2023, 11, 14));
        assert_eq!((d.time.hour, d.time.min, d.time.sec), (22, 13, 20));
        assert_eq!(dos_datetime(0), DOS_EPOCH);
        assert_eq!(dos_datetime(-5), DOS_EPOCH);
        let leap = dos_datetime(951_782_400); // 2000-02-29
        assert_eq!(
            (leap.date.year, leap.date.month, leap.date.day),
            (2000, 2, 29)
        );
        let last = dos_datetime(i64::MAX);
        assert_eq!(
            (last.date.year, last.date.month, last.date.day),
            (2107, 12, 31)
        );
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }
}
