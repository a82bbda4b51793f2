//! The hybrid layout: one file that is an ISO 9660 volume with El Torito
//! boot entries and, at the same time, a GPT disk whose partitions are files
//! of that volume.
//!
//! Layout, in 2048-byte sectors:
//!
//! ```text
//!  0..16   system area: protective MBR (512-byte LBA 0), GPT header (LBA 1),
//!          128 GPT entries (LBA 2..33); ISO readers skip these 32 KiB
//!  16      primary volume descriptor
//!  17      El Torito boot record
//!  18      volume descriptor set terminator
//!  19..    L path table, M path table, directories (path table order),
//!          Rock Ridge continuation areas
//!  then    boot.catalog, then every other file (sorted by path)
//!  1 MiB   the ESP file  = El Torito UEFI image = GPT partition 1
//!  1 MiB   the root file = GPT partition 2 (if any)
//!  +16     tail pad: the last sectors of a volume are not read reliably
//!          from every CD, so media checks skip them (isomd5sum: 15)
//!  1 MiB   persistence image = GPT partition 3 (if any), outside the volume
//!  end     backup GPT entries + header in the last 33 LBAs
//! ```
//!
//! Without persistence the volume space size covers the whole file, backup
//! GPT included, so the ISO view and the disk view describe the same bytes.
//! A persistence partition changes at run time, so it lies after the volume:
//! the media checksum (implantisomd5's format, over the volume) stays valid. Only metadata is
//! built in memory; file contents are copied straight from the sources.

use super::eltorito::{self, BootEntry, PLATFORM_EFI, PLATFORM_X86};
use super::gpt::{self as gpt_view, PartitionSpec, BACKUP_BYTES};
use super::iso9660::{self as iso, DirRecord, NameMangler, PathRecord, SystemUse, Timestamp};
use super::isomd5;
use super::label::VolumeLabel;
use super::layout::{
    BLOCK_ALIGN_MIN, BOOT_RECORD_LBA, CATALOG_PATH, LBA, PARTITION_ALIGN, PVD_LBA, SECTOR,
    TAIL_PAD, TERMINATOR_LBA,
};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A regular file of the ISO tree. Parent directories are implied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoSource {
    /// Path inside the image, e.g. "LiveOS/squashfs.img" (case kept).
    pub iso_path: String,
    /// File on the build host with the contents.
    pub source: PathBuf,
}

/// Legacy BIOS boot image (El Torito platform 0, no emulation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosBoot {
    /// iso_path (among the files) of GRUB's i386-pc-eltorito image.
    pub iso_path: String,
    /// Patch a boot info table into bytes 8..64 of the image as written.
    pub boot_info_table: bool,
    /// Patch GRUB's own boot info, as xorriso's `--grub2-boot-info`: GRUB's
    /// i386-pc El Torito image is cdboot.img (2048 bytes), then diskboot.img,
    /// whose block list (byte 2548 of the image) must hold the 512-byte LBA
    /// where the rest of the core starts (image LBA x 4 + 5). The MBR code
    /// (boot_hybrid.img) loads diskboot.img, which reads the core from there:
    /// without it BIOS boots from USB/disk stop at "GRUB loading.".
    pub grub2_boot_info: bool,
}

/// Where `BiosBoot::grub2_boot_info` patches the El Torito image.
const GRUB2_BOOT_INFO: usize = 2548;

/// Everything the hybrid image is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridSpec {
    /// ISO volume id.
    pub volume_label: VolumeLabel,
    /// SOURCE_DATE_EPOCH: every timestamp in the volume.
    pub epoch: i64,
    /// Seed for the GPT disk and partition GUIDs.
    pub seed: String,
    pub files: Vec<IsoSource>,
    /// iso_path of the FAT ESP image: El Torito UEFI entry and GPT partition 1.
    pub esp: String,
    /// iso_path of the live root image: GPT partition 2 ("Linux root (x86-64)").
    pub root: Option<String>,
    /// Legacy BIOS El Torito entry (becomes the default entry).
    pub bios_boot: Option<BiosBoot>,
    /// Up to 440 bytes of MBR boot code (GRUB's boot_hybrid.img). When a BIOS
    /// image is given too, bytes 0x1b0..0x1b8 are patched as xorriso's
    /// `--grub2-mbr` does: the 512-byte LBA of the BIOS image plus 4, which is
    /// where boot_hybrid.img finds the rest of GRUB.
    pub mbr_code: Option<Vec<u8>>,
    /// An ext4 image appended after the ISO volume as GPT partition 3
    /// ("Linux filesystem"): the persistent overlay.
    pub persistence: Option<PathBuf>,
    /// Embed an isomd5sum-compatible checksum of the volume in the primary
    /// volume descriptor (see `isomd5`).
    pub implant_md5: bool,
}

/// What `write_partition_table` laid out, for the report and the
/// persistence copy: (offset, length) in bytes.
struct PartitionTable {
    disk_guid: uuid::Uuid,
    esp: (u64, u64),
    root: Option<(u64, u64)>,
    persistence: Option<(PathBuf, u64, u64)>,
}

/// Where things ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HybridReport {
    /// Size of the written file in bytes (a multiple of 2048).
    pub size: u64,
    /// Byte offset and length of GPT partition 1 (the ESP file's extent,
    /// rounded up to whole 512-byte sectors).
    pub esp: (u64, u64),
    /// Byte offset and length of GPT partition 2, if there is a root.
    pub root: Option<(u64, u64)>,
    /// Byte offset and length of GPT partition 3, if there is persistence.
    pub persistence: Option<(u64, u64)>,
    /// Bytes of the ISO volume (what the media checksum covers, less its
    /// unchecked tail).
    pub volume_bytes: u64,
    pub disk_guid: uuid::Uuid,
    /// The implanted media checksum (hex MD5), if asked for.
    pub md5: Option<String>,
}

/// A BIOS boot image is read into memory to patch its boot info table; real
/// ones (GRUB's eltorito.img, isolinux.bin) are far smaller than this.
const MAX_PATCHED_BIOS_IMAGE: u64 = 16 << 20;
/// Where GRUB's boot_hybrid.img expects the LBA of its core image.
const GRUB2_MBR_PATCH: usize = 0x1b0;
/// Bytes copied between two reports to the checksum that follows the copy.
/// The checksum reads large files from their sources (HASH_FROM_SOURCE_MIN)
/// and waits on the copy only for small files and gaps, so pieces can be
/// large: each copy_file_range call is a transaction on a filesystem that
/// reflinks, and a 1 GiB root in 16 MiB pieces made 64 of them.
const COPY_PIECE: u64 = 256 << 20;
/// Files at least this big are hashed for the media checksum from their
/// source rather than read back from the image (see `copied_extents`).
const HASH_FROM_SOURCE_MIN: u64 = 1 << 20;

/// Writes the hybrid image described by `spec` to `out` (created or
/// truncated). The caller takes care of temporary names and renaming.
pub fn write_hybrid(spec: &HybridSpec, out: &Path) -> Result<HybridReport> {
    let plan = Plan::new(spec)?;
    plan.write(spec, out)
}

// ---------------------------------------------------------------------------
// Planning

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir(usize),
    File(usize),
}

#[derive(Debug)]
struct FileItem {
    iso_path: String,
    /// Host file; None for the boot catalog, which we generate.
    source: Option<PathBuf>,
    size: u64,
    lba: u32,
    serial: u32,
}

#[derive(Debug)]
struct DirItem {
    parent: usize,
    /// Real names while the tree is built.
    entries: BTreeMap<String, Node>,
    /// (ISO identifier, real name, node), in ECMA-119 record order.
    children: Vec<(Vec<u8>, String, Node)>,
    ident: Vec<u8>,
    lba: u32,
    sectors: u64,
    serial: u32,
    subdirs: u32,
}

/// What a directory record points at.
#[derive(Debug, Clone, Copy)]
enum Target {
    Dir(usize),
    /// A file and the index of its section (multi-extent files have several).
    File(usize, usize),
}

#[derive(Debug)]
struct Record {
    ident: Vec<u8>,
    flags: u8,
    target: Target,
    su: SystemUse,
    /// Where the continuation area went: (LBA, byte offset).
    ce: Option<(u32, u32)>,
    offset: usize,
}

struct Plan {
    files: Vec<FileItem>,
    dirs: Vec<DirItem>,
    /// Directory indices in path table order (root first).
    order: Vec<usize>,
    records: Vec<Vec<Record>>, // per directory index
    path_table_size: u32,
    l_path_lba: u32,
    m_path_lba: u32,
    ce_lba: u32,
    ce_sectors: u64,
    catalog: usize,
    esp: usize,
    root: Option<usize>,
    bios: Option<usize>,
    /// Sectors of the ISO volume.
    volume_sectors: u64,
    /// The persistence image: (host file, size, first 2048-byte sector).
    persistence: Option<(PathBuf, u64, u64)>,
    /// Sectors of the whole file.
    total_sectors: u64,
    record_date: [u8; 7],
    volume_date: [u8; 17],
}

/// "/EFI//BOOT/x" -> "EFI/BOOT/x"; rejects empty, "." and ".." components
/// and names Rock Ridge / Linux cannot carry.
fn normalize(iso_path: &str) -> Result<String> {
    let parts: Vec<&str> = iso_path.trim_start_matches('/').split('/').collect();
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            bail!("iso path {iso_path:?} has an empty, '.' or '..' component");
        }
        if p.contains('\0') {
            bail!("iso path {iso_path:?} contains a NUL byte");
        }
        if p.len() > 255 {
            bail!("iso path {iso_path:?} has a component longer than 255 bytes");
        }
    }
    Ok(parts.join("/"))
}

impl Plan {
    fn new(spec: &HybridSpec) -> Result<Plan> {
        let stamp = Timestamp::from_epoch(spec.epoch);
        let record_date = stamp
            .record_bytes()
            .with_context(|| format!("epoch {}", spec.epoch))?;
        let volume_date = stamp
            .volume_bytes()
            .with_context(|| format!("epoch {}", spec.epoch))?;

        // Files, stat'ed now so that sizes (and thus the layout) are known.
        let mut files = Vec::with_capacity(spec.files.len() + 1);
        files.push(FileItem {
            iso_path: CATALOG_PATH.to_string(),
            source: None,
            size: SECTOR,
            lba: 0,
            serial: 0,
        });
        for f in &spec.files {
            let iso_path = normalize(&f.iso_path)?;
            if iso_path == CATALOG_PATH {
                bail!(
                    "iso path {:?} is reserved for the El Torito boot catalog",
                    f.iso_path
                );
            }
            let meta = std::fs::metadata(&f.source)
                .with_context(|| format!("reading {} for {}", f.source.display(), f.iso_path))?;
            if !meta.is_file() {
                bail!(
                    "reading {} for {}: not a regular file",
                    f.source.display(),
                    f.iso_path
                );
            }
            files.push(FileItem {
                iso_path,
                source: Some(f.source.clone()),
                size: meta.len(),
                lba: 0,
                serial: 0,
            });
        }

        let find = |what: &str, p: &str| -> Result<usize> {
            let want = normalize(p)?;
            files
                .iter()
                .position(|f| f.source.is_some() && f.iso_path == want)
                .with_context(|| format!("{what} {p:?} is not among the image files"))
        };
        let esp = find("esp", &spec.esp)?;
        let root = spec.root.as_deref().map(|p| find("root", p)).transpose()?;
        let bios = spec
            .bios_boot
            .as_ref()
            .map(|b| find("bios boot image", &b.iso_path))
            .transpose()?;
        if root == Some(esp) {
            bail!("esp and root are the same file {:?}", spec.esp);
        }
        if bios.is_some() && (bios == Some(esp) || bios == root) {
            bail!("the bios boot image must be a file of its own, not the esp or root");
        }
        if files[esp].size == 0 {
            bail!("esp {:?} is empty", spec.esp);
        }
        if let Some(r) = root {
            if files[r].size == 0 {
                bail!("root {:?} is empty", files[r].iso_path);
            }
        }

        let persistence = match &spec.persistence {
            Some(p) => {
                let meta = std::fs::metadata(p)
                    .with_context(|| format!("reading persistence image {}", p.display()))?;
                if !meta.is_file() || meta.len() == 0 || meta.len() % LBA != 0 {
                    bail!(
                        "persistence image {} must be a non-empty file of whole 512-byte sectors",
                        p.display()
                    );
                }
                Some((p.clone(), meta.len(), 0))
            }
            None => None,
        };

        let mut dirs = vec![DirItem::new(0, vec![0])];
        for (i, f) in files.iter().enumerate() {
            insert(&mut dirs, &f.iso_path, i)?;
        }

        let mut plan = Plan {
            files,
            dirs,
            order: Vec::new(),
            records: Vec::new(),
            path_table_size: 0,
            l_path_lba: 0,
            m_path_lba: 0,
            ce_lba: 0,
            ce_sectors: 0,
            catalog: 0,
            esp,
            root,
            bios,
            volume_sectors: 0,
            persistence: None,
            total_sectors: 0,
            record_date,
            volume_date,
        };
        plan.persistence = persistence;
        plan.name_and_order();
        plan.build_records()?;
        plan.assign_lbas()?;
        Ok(plan)
    }

    /// Gives every entry its ISO identifier, sorts the directories' records,
    /// numbers directories in path table order and hands out serial numbers.
    fn name_and_order(&mut self) {
        for d in &mut self.dirs {
            // Mangle in byte order of the real names: deterministic, and the
            // first of two clashing names keeps the plain identifier.
            let mut m = NameMangler::new();
            let mut children: Vec<(Vec<u8>, String, Node)> = d
                .entries
                .iter()
                .map(|(name, node)| {
                    let ident = match node {
                        Node::Dir(_) => m.dir(name),
                        Node::File(_) => m.file(name),
                    };
                    (ident.into_bytes(), name.clone(), *node)
                })
                .collect();
            children.sort_by(|a, b| iso::cmp_identifiers(&a.0, &b.0));
            d.subdirs = children
                .iter()
                .filter(|c| matches!(c.2, Node::Dir(_)))
                .count() as u32;
            d.children = children;
        }
        for i in 0..self.dirs.len() {
            let idents: Vec<(usize, Vec<u8>)> = self.dirs[i]
                .children
                .iter()
                .filter_map(|(id, _, n)| match n {
                    Node::Dir(d) => Some((*d, id.clone())),
                    Node::File(_) => None,
                })
                .collect();
            for (d, id) in idents {
                self.dirs[d].ident = id;
            }
        }

        // Path table order (ECMA-119 9.4.1): by level, then by parent's
        // number, then by identifier. A breadth-first walk over children
        // already sorted by identifier yields exactly that.
        let mut queue = VecDeque::from([0usize]);
        while let Some(d) = queue.pop_front() {
            self.order.push(d);
            for (_, _, n) in &self.dirs[d].children {
                if let Node::Dir(c) = n {
                    queue.push_back(*c);
                }
            }
        }
        let mut serial = 1u32;
        for &d in &self.order {
            self.dirs[d].serial = serial;
            serial += 1;
        }
        // By path, not by position in the spec: listing the same files in
        // another order must not change a byte.
        let mut by_path: Vec<usize> = (0..self.files.len()).collect();
        by_path.sort_by(|&a, &b| self.files[a].iso_path.cmp(&self.files[b].iso_path));
        for i in by_path {
            self.files[i].serial = serial;
            serial += 1;
        }
    }

    /// Builds every directory's records with their Rock Ridge entries. Sizes
    /// are known now; LBAs are filled in when encoding.
    fn build_records(&mut self) -> Result<()> {
        let date = self.record_date;
        let tf = iso::rr_tf(date);
        let dir_px = |d: &DirItem| iso::rr_px(iso::MODE_DIR, 2 + d.subdirs, d.serial);
        let mut all = Vec::with_capacity(self.dirs.len());
        for (di, d) in self.dirs.iter().enumerate() {
            let mut recs = Vec::new();
            // "." carries the directory's own attributes; in the root it also
            // opens with SP and names the extension (ER) for SUSP readers.
            let mut dot = Vec::new();
            if di == 0 {
                dot.push(iso::susp_sp());
            }
            dot.push(dir_px(d));
            dot.push(tf.clone());
            if di == 0 {
                dot.push(iso::susp_er_rrip());
            }
            recs.push(record(vec![0], iso::FLAG_DIRECTORY, Target::Dir(di), &dot)?);
            let parent = &self.dirs[d.parent];
            let dotdot = vec![dir_px(parent), tf.clone()];
            recs.push(record(
                vec![1],
                iso::FLAG_DIRECTORY,
                Target::Dir(d.parent),
                &dotdot,
            )?);
            for (ident, name, node) in &d.children {
                let nm = iso::rr_nm(name.as_bytes());
                match *node {
                    Node::Dir(c) => {
                        let mut e = vec![dir_px(&self.dirs[c]), tf.clone()];
                        e.extend(nm);
                        recs.push(record(
                            ident.clone(),
                            iso::FLAG_DIRECTORY,
                            Target::Dir(c),
                            &e,
                        )?);
                    }
                    Node::File(f) => {
                        let file = &self.files[f];
                        let mut e = vec![iso::rr_px(iso::MODE_FILE, 1, file.serial), tf.clone()];
                        e.extend(nm);
                        // Multi-extent: every section repeats name and Rock
                        // Ridge entries (Linux takes attributes from the first
                        // record and the name from the last).
                        let sections = section_count(file.size);
                        for s in 0..sections {
                            let flags = if s + 1 < sections {
                                iso::FLAG_MULTI_EXTENT
                            } else {
                                0
                            };
                            recs.push(record(ident.clone(), flags, Target::File(f, s), &e)?);
                        }
                    }
                }
            }
            let lengths: Vec<usize> = recs
                .iter()
                .map(|r| iso::record_len(r.ident.len(), r.su.inline_len()))
                .collect();
            let (offsets, sectors) = iso::pack_records(&lengths);
            for (r, off) in recs.iter_mut().zip(offsets) {
                r.offset = off;
            }
            // The directory's own records state its size in 32 bits.
            if sectors * SECTOR > u64::from(u32::MAX) {
                bail!(
                    "a directory with {} entries is too large for ISO 9660",
                    recs.len()
                );
            }
            all.push((recs, sectors));
        }
        for (d, (_, sectors)) in all.iter().enumerate() {
            self.dirs[d].sectors = *sectors;
        }
        self.records = all.into_iter().map(|(recs, _)| recs).collect();
        Ok(())
    }

    fn path_records(&self) -> Result<Vec<PathRecord>> {
        let mut number = vec![0u16; self.dirs.len()];
        for (i, &d) in self.order.iter().enumerate() {
            number[d] = u16::try_from(i + 1)
                .context("more than 65535 directories do not fit the path table")?;
        }
        Ok(self
            .order
            .iter()
            .map(|&d| PathRecord {
                ident: self.dirs[d].ident.clone(),
                extent: self.dirs[d].lba,
                parent: number[self.dirs[d].parent],
            })
            .collect())
    }

    fn assign_lbas(&mut self) -> Result<()> {
        let pt_size = iso::path_table(&self.path_records()?, false).len() as u64;
        self.path_table_size = pt_size as u32;
        let pt_sectors = iso::sectors_for(pt_size);
        let mut next = TERMINATOR_LBA + 1;
        self.l_path_lba = next as u32;
        next += pt_sectors;
        self.m_path_lba = next as u32;
        next += pt_sectors;
        for &d in &self.order {
            self.dirs[d].lba = lba32(next)?;
            next += self.dirs[d].sectors;
        }

        // Continuation areas, packed into sectors; an area never crosses one.
        self.ce_lba = lba32(next)?;
        let mut pos = 0u64; // byte offset from ce_lba
        for &d in &self.order {
            for r in &mut self.records[d] {
                let len = r.su.continuation.len() as u64;
                if len == 0 {
                    continue;
                }
                if pos % SECTOR + len > SECTOR {
                    pos = pos.div_ceil(SECTOR) * SECTOR;
                }
                r.ce = Some((lba32(next + pos / SECTOR)?, (pos % SECTOR) as u32));
                pos += len;
            }
        }
        self.ce_sectors = iso::sectors_for(pos);
        next += self.ce_sectors;

        // The catalog, then the small files, then ESP and root on 1 MiB.
        let catalog = self.catalog;
        let (esp, root) = (self.esp, self.root);
        let mut rest: Vec<usize> = (0..self.files.len())
            .filter(|&i| i != catalog && i != esp && Some(i) != root)
            .collect();
        rest.sort_by(|&a, &b| self.files[a].iso_path.cmp(&self.files[b].iso_path));
        // Large files start on a 4 KiB boundary (two sectors), the block
        // size of the filesystems that share extents (XFS, btrfs): there the
        // kernel's copy_file_range reflinks them into the image instead of
        // copying. Small ones stay packed.
        let sector_align = |size: u64| if size >= BLOCK_ALIGN_MIN { 2 } else { 1 };
        let rest: Vec<(usize, u64)> = rest
            .into_iter()
            .map(|i| (i, sector_align(self.files[i].size)))
            .collect();
        let mut place = |i: usize, next: &mut u64, align: u64| -> Result<()> {
            let f = &mut self.files[i];
            if f.size == 0 {
                return Ok(()); // empty files point at LBA 0 and take no space
            }
            *next = next.div_ceil(align) * align;
            f.lba = lba32(*next)?;
            *next += iso::sectors_for(f.size);
            Ok(())
        };
        place(catalog, &mut next, 1)?;
        for (i, align) in rest {
            place(i, &mut next, align)?;
        }
        place(esp, &mut next, PARTITION_ALIGN)?;
        if let Some(r) = root {
            place(r, &mut next, PARTITION_ALIGN)?;
        }
        // The backup GPT takes the last 33 LBAs, inside the tail pad when
        // nothing follows the volume; whole sectors keep the file size a
        // multiple of 2048 so the volume space can cover it all.
        self.volume_sectors = next + TAIL_PAD;
        self.total_sectors = self.volume_sectors;
        if let Some((_, size, lba)) = &mut self.persistence {
            let start = self.volume_sectors.div_ceil(PARTITION_ALIGN) * PARTITION_ALIGN;
            *lba = start;
            self.total_sectors = start + iso::sectors_for(*size) + iso::sectors_for(BACKUP_BYTES);
        }
        lba32(self.total_sectors).context("the image would exceed 2^32 sectors of 2048 bytes")?;
        Ok(())
    }

    fn total_bytes(&self) -> u64 {
        self.total_sectors * SECTOR
    }

    /// Byte extent of a file as a GPT partition: whole 512-byte sectors.
    fn extent(&self, i: usize) -> (u64, u64) {
        let f = &self.files[i];
        (u64::from(f.lba) * SECTOR, f.size.div_ceil(LBA) * LBA)
    }

    // -----------------------------------------------------------------------
    // Encoding

    fn encode_dir(&self, d: usize) -> Vec<u8> {
        let mut buf = vec![0u8; (self.dirs[d].sectors * SECTOR) as usize];
        for r in &self.records[d] {
            let (extent, data_len) = match r.target {
                Target::Dir(t) => (self.dirs[t].lba, (self.dirs[t].sectors * SECTOR) as u32),
                Target::File(f, s) => {
                    let file = &self.files[f];
                    iso::file_sections(file.lba, file.size)[s]
                }
            };
            let mut su = r.su.inline.clone();
            if let Some((lba, off)) = r.ce {
                su.extend(iso::susp_ce(lba, off, r.su.continuation.len() as u32));
            }
            let bytes = DirRecord {
                extent,
                data_len,
                date: self.record_date,
                flags: r.flags,
                ident: &r.ident,
                system_use: &su,
            }
            .encode();
            buf[r.offset..r.offset + bytes.len()].copy_from_slice(&bytes);
        }
        buf
    }

    fn encode_continuations(&self) -> Vec<u8> {
        let mut buf = vec![0u8; (self.ce_sectors * SECTOR) as usize];
        for recs in &self.records {
            for r in recs {
                if let Some((lba, off)) = r.ce {
                    let at = (u64::from(lba - self.ce_lba) * SECTOR) as usize + off as usize;
                    buf[at..at + r.su.continuation.len()].copy_from_slice(&r.su.continuation);
                }
            }
        }
        buf
    }

    fn encode_pvd(&self, volume_id: &str) -> Vec<u8> {
        let root = &self.dirs[0];
        let root_record = DirRecord {
            extent: root.lba,
            data_len: (root.sectors * SECTOR) as u32,
            date: self.record_date,
            flags: iso::FLAG_DIRECTORY,
            ident: &[0],
            system_use: &[],
        }
        .encode();
        iso::primary_volume_descriptor(&iso::PrimaryVolume {
            volume_id,
            volume_space: self.volume_sectors as u32,
            path_table_size: self.path_table_size,
            l_path_table: self.l_path_lba,
            m_path_table: self.m_path_lba,
            root_record: &root_record,
            date: self.volume_date,
        })
    }

    fn encode_catalog(&self, spec: &HybridSpec) -> Result<Vec<u8>> {
        let esp = &self.files[self.esp];
        let uefi = BootEntry {
            platform: PLATFORM_EFI,
            lba: esp.lba,
            sector_count: eltorito::uefi_sector_count(esp.size),
        };
        let entries = match (&spec.bios_boot, self.bios) {
            (Some(b), Some(i)) => {
                let f = &self.files[i];
                let bios = BootEntry {
                    platform: PLATFORM_X86,
                    lba: f.lba,
                    sector_count: eltorito::bios_sector_count(f.size, b.boot_info_table),
                };
                vec![bios, uefi]
            }
            _ => vec![uefi],
        };
        eltorito::catalog(&entries)
    }

    fn write(&self, spec: &HybridSpec, out: &Path) -> Result<HybridReport> {
        let shown = out.display();
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(out)
            .with_context(|| format!("creating {shown}"))?;
        // Final size first: gaps stay holes (zeros), and the GPT code finds
        // the backup header's place from the file length.
        file.set_len(self.total_bytes())
            .with_context(|| format!("sizing {shown}"))?;
        self.write_descriptors(spec, &file, out)?;
        // The GPT and the MBR next: they follow from the layout alone and
        // lie in the system area and the last sectors, where no file goes,
        // so writing them before the file data changes no byte, and leaves
        // only file data for the media checksum to wait for.
        let table = self.write_partition_table(spec, &mut file, out)?;
        let md5 = self.copy_and_sum(spec, &mut file, out)?;
        // After the volume, so outside the checksum.
        if let Some((source, off, len)) = &table.persistence {
            copy_into(&mut file, out, *off, source, "persistence", *len, &|_| {})?;
        }
        Ok(HybridReport {
            size: self.total_bytes(),
            esp: table.esp,
            root: table.root,
            persistence: table.persistence.map(|(_, off, len)| (off, len)),
            volume_bytes: self.volume_sectors * SECTOR,
            disk_guid: table.disk_guid,
            md5,
        })
    }

    /// The ISO9660 metadata: volume descriptors, path tables, directories,
    /// Rock Ridge continuations and the El Torito catalog.
    fn write_descriptors(&self, spec: &HybridSpec, file: &File, out: &Path) -> Result<()> {
        let shown = out.display();
        let put = |bytes: &[u8], lba: u64, what: &str| -> Result<()> {
            file.write_all_at(bytes, lba * SECTOR)
                .with_context(|| format!("writing {what} to {shown}"))
        };
        put(
            &self.encode_pvd(spec.volume_label.as_str()),
            PVD_LBA,
            "primary volume descriptor",
        )?;
        let catalog_lba = self.files[self.catalog].lba;
        put(
            &eltorito::boot_record(catalog_lba),
            BOOT_RECORD_LBA,
            "El Torito boot record",
        )?;
        put(
            &iso::terminator(),
            TERMINATOR_LBA,
            "volume descriptor terminator",
        )?;
        let paths = self.path_records()?;
        put(
            &iso::path_table(&paths, false),
            u64::from(self.l_path_lba),
            "L path table",
        )?;
        put(
            &iso::path_table(&paths, true),
            u64::from(self.m_path_lba),
            "M path table",
        )?;
        for &d in &self.order {
            put(
                &self.encode_dir(d),
                u64::from(self.dirs[d].lba),
                "directory",
            )?;
        }
        put(
            &self.encode_continuations(),
            u64::from(self.ce_lba),
            "rock ridge continuation area",
        )?;
        put(
            &self.encode_catalog(spec)?,
            u64::from(catalog_lba),
            "El Torito boot catalog",
        )?;
        Ok(())
    }

    /// The protective MBR (with GRUB's code for BIOS) and the GPT: the ESP,
    /// the root and the persistence partition over their extents.
    fn write_partition_table(
        &self,
        spec: &HybridSpec,
        file: &mut File,
        out: &Path,
    ) -> Result<PartitionTable> {
        let disk_guid = gpt_view::derive_guid(&spec.seed, gpt_view::IdRole::Disk);
        let (esp_off, esp_len) = self.extent(self.esp);
        let mut parts = vec![PartitionSpec {
            name: "ESP".to_string(),
            type_guid: gpt_view::esp_type(),
            guid: gpt_view::derive_guid(&spec.seed, gpt_view::IdRole::Esp),
            first_lba: esp_off / LBA,
            last_lba: (esp_off + esp_len) / LBA - 1,
        }];
        let root = self.root.map(|r| self.extent(r));
        if let Some((off, len)) = root {
            parts.push(PartitionSpec {
                name: "root".to_string(),
                type_guid: gpt_view::root_x86_64_type(),
                guid: gpt_view::derive_guid(&spec.seed, gpt_view::IdRole::Root),
                first_lba: off / LBA,
                last_lba: (off + len) / LBA - 1,
            });
        }
        let persistence = self
            .persistence
            .as_ref()
            .map(|(source, size, lba)| (source.clone(), lba * SECTOR, *size));
        if let Some((_, off, len)) = &persistence {
            parts.push(PartitionSpec {
                name: "persistence".to_string(),
                type_guid: gpt::partition_types::LINUX_FS,
                guid: gpt_view::derive_guid(&spec.seed, gpt_view::IdRole::Persistence),
                first_lba: off / LBA,
                last_lba: (off + len) / LBA - 1,
            });
        }
        let mbr_code = match (&spec.mbr_code, self.bios) {
            (Some(code), Some(bios)) => {
                let mut code = code.clone();
                if code.len() <= 440 {
                    code.resize(440, 0);
                    let lba512 = u64::from(self.files[bios].lba) * (SECTOR / LBA) + 4;
                    code[GRUB2_MBR_PATCH..GRUB2_MBR_PATCH + 8]
                        .copy_from_slice(&lba512.to_le_bytes());
                }
                Some(code)
            }
            (code, _) => code.clone(),
        };
        let guid_bytes = disk_guid.as_bytes();
        let signature = [guid_bytes[0], guid_bytes[1], guid_bytes[2], guid_bytes[3]];
        let mbr = gpt_view::protective_mbr(self.total_bytes(), mbr_code.as_deref(), signature)?;
        gpt_view::write_gpt(file, out, disk_guid, &parts, &mbr)?;
        Ok(PartitionTable {
            disk_guid,
            esp: (esp_off, esp_len),
            root,
            persistence,
        })
    }

    /// The files' data in image order, the media checksum following it on
    /// another thread; returns the checksum when the spec implants one.
    fn copy_and_sum(
        &self,
        spec: &HybridSpec,
        file: &mut File,
        out: &Path,
    ) -> Result<Option<String>> {
        let shown = out.display();
        // File data in image order, the media checksum following it on
        // another thread: the wall time is about the longer of the two
        // instead of their sum (the checksum used to read the image again
        // once it was complete).
        let mut order: Vec<usize> = (0..self.files.len())
            .filter(|&i| self.files[i].source.is_some() && self.files[i].size > 0)
            .collect();
        order.sort_by_key(|&i| self.files[i].lba);
        let first = order
            .first()
            .map_or(u64::MAX, |&i| u64::from(self.files[i].lba) * SECTOR);
        let ready = isomd5::Ready::new(first);
        std::thread::scope(|scope| -> Result<Option<String>> {
            let hasher = if spec.implant_md5 {
                let reader = File::open(out).with_context(|| format!("reading {shown}"))?;
                let follow = isomd5::Follow::new(&ready, self.copied_extents(spec, &order));
                Some(scope.spawn(move || isomd5::sum_volume(&reader, out, Some(&follow))))
            } else {
                None
            };
            // No early return until the hasher is told how the copy ended:
            // it would wait for bytes that never come.
            let copied = self.copy_files(spec, file, out, &order, &ready);
            match &copied {
                Ok(()) => ready.finish(),
                Err(_) => ready.abandon(),
            }
            // The data is final: flush it to disk now, while the checksum
            // (the longer job) still runs, rather than in the caller's
            // fsync after it. Only the checksum's one sector is left then.
            let copied = match copied {
                Ok(()) if hasher.is_some() => {
                    file.sync_data().with_context(|| format!("syncing {shown}"))
                }
                other => other,
            };
            let sum = hasher.map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(anyhow!("computing the media checksum of {shown} failed"))
                })
            });
            copied?;
            match sum {
                Some(sum) => Ok(Some(isomd5::write_sum(file, out, sum?)?.md5)),
                None => Ok(None),
            }
        })
    }

    /// The large files whose bytes go into the image unchanged (not a
    /// patched BIOS boot image), as extents for the media checksum to read
    /// from the source files while they are copied. Small files are left
    /// to be read back from the image: they are copied at once, and opening
    /// thousands of them twice would cost more than it saves.
    fn copied_extents(&self, spec: &HybridSpec, order: &[usize]) -> Vec<isomd5::Extent> {
        order
            .iter()
            .filter(|&&i| !self.is_patched_bios(spec, i))
            .filter_map(|&i| {
                let f = &self.files[i];
                let source = f
                    .source
                    .as_ref()
                    .filter(|_| f.size >= HASH_FROM_SOURCE_MIN)?;
                Some(isomd5::Extent {
                    offset: u64::from(f.lba) * SECTOR,
                    len: f.size,
                    path: source.clone(),
                })
            })
            .collect()
    }

    /// Whether file `i` is the BIOS boot image and gets patched on its way
    /// into the image (its bytes then differ from its source's).
    fn is_patched_bios(&self, spec: &HybridSpec, i: usize) -> bool {
        Some(i) == self.bios
            && spec
                .bios_boot
                .as_ref()
                .is_some_and(|b| b.boot_info_table || b.grub2_boot_info)
    }

    /// Copies every file's data into `file`, in image order (`order`),
    /// raising `ready` as the bytes before each point become final.
    fn copy_files(
        &self,
        spec: &HybridSpec,
        file: &mut File,
        out: &Path,
        order: &[usize],
        ready: &isomd5::Ready,
    ) -> Result<()> {
        let shown = out.display();
        for &i in order {
            let f = &self.files[i];
            let Some(source) = &f.source else { continue };
            let offset = u64::from(f.lba) * SECTOR;
            if self.is_patched_bios(spec, i) {
                let (patch, grub2) = spec
                    .bios_boot
                    .as_ref()
                    .map_or((false, false), |b| (b.boot_info_table, b.grub2_boot_info));
                let mut image = read_small(source, &f.iso_path, f.size)?;
                if patch {
                    eltorito::patch_boot_info_table(&mut image, lba32(PVD_LBA)?, f.lba)
                        .with_context(|| format!("patching boot info table into {}", f.iso_path))?;
                }
                if grub2 {
                    if image.len() < GRUB2_BOOT_INFO + 8 {
                        bail!(
                            "bios boot image {} is {} bytes, too short for GRUB's boot info at byte {GRUB2_BOOT_INFO}",
                            f.iso_path,
                            image.len()
                        );
                    }
                    let core = u64::from(f.lba) * (SECTOR / LBA) + 5;
                    image[GRUB2_BOOT_INFO..GRUB2_BOOT_INFO + 8]
                        .copy_from_slice(&core.to_le_bytes());
                }
                file.write_all_at(&image, offset)
                    .with_context(|| format!("writing {} to {shown}", f.iso_path))?;
            } else {
                copy_into(file, out, offset, source, &f.iso_path, f.size, &|end| {
                    ready.advance(end)
                })?;
            }
            ready.advance(offset + f.size);
        }
        Ok(())
    }
}

impl DirItem {
    fn new(parent: usize, ident: Vec<u8>) -> DirItem {
        DirItem {
            parent,
            entries: BTreeMap::new(),
            children: Vec::new(),
            ident,
            lba: 0,
            sectors: 0,
            serial: 0,
            subdirs: 0,
        }
    }
}

/// Adds file `index` at `path`, creating the directories on the way.
fn insert(dirs: &mut Vec<DirItem>, path: &str, index: usize) -> Result<()> {
    let parts: Vec<&str> = path.split('/').collect();
    let (name, parents) = parts
        .split_last()
        .with_context(|| format!("iso path {path:?} is empty"))?;
    let mut cur = 0usize;
    for (depth, p) in parents.iter().enumerate() {
        cur = match dirs[cur].entries.get(*p) {
            Some(Node::Dir(d)) => *d,
            Some(Node::File(_)) => {
                bail!(
                    "iso path {path:?} needs {:?} as a directory, but it is a file",
                    parents[..=depth].join("/")
                )
            }
            None => {
                let d = dirs.len();
                dirs.push(DirItem::new(cur, Vec::new()));
                dirs[cur].entries.insert(p.to_string(), Node::Dir(d));
                d
            }
        };
    }
    match dirs[cur].entries.get(*name) {
        Some(Node::File(_)) => bail!("iso path {path:?} is given twice"),
        Some(Node::Dir(_)) => bail!("iso path {path:?} is also a directory of other files"),
        None => {
            dirs[cur]
                .entries
                .insert(name.to_string(), Node::File(index));
            Ok(())
        }
    }
}

/// Number of directory records (sections) a file of `size` bytes needs.
fn section_count(size: u64) -> usize {
    if size <= u64::from(u32::MAX) {
        1
    } else {
        size.div_ceil(iso::MAX_EXTENT) as usize
    }
}

fn record(ident: Vec<u8>, flags: u8, target: Target, entries: &[Vec<u8>]) -> Result<Record> {
    let su = iso::layout_system_use(entries, iso::system_use_room(ident.len()))?;
    Ok(Record {
        ident,
        flags,
        target,
        su,
        ce: None,
        offset: 0,
    })
}

fn lba32(lba: u64) -> Result<u32> {
    u32::try_from(lba).context("the image would exceed 2^32 sectors of 2048 bytes")
}

/// Copies `size` bytes of `source` to `offset` in `out`, data segments
/// only: `out` was sized up front, so a hole in the source (a sparse
/// persistence image, a sparse test file) stays a hole that reads as zeros,
/// and costs neither disk nor time. Each segment moves with
/// copy_file_range (`std::io::copy` between files), in the kernel, in
/// pieces of COPY_PIECE; after each, `copied` gets the offset in `out` below
/// which this file's bytes are written (for the checksum that follows).
fn copy_into(
    out: &mut File,
    out_path: &Path,
    offset: u64,
    source: &Path,
    iso_path: &str,
    size: u64,
    copied: &dyn Fn(u64),
) -> Result<()> {
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsFd;
    let ctx = || {
        format!(
            "copying {} for {iso_path} into {}",
            source.display(),
            out_path.display()
        )
    };
    let mut src = File::open(source)
        .with_context(|| format!("reading {} for {iso_path}", source.display()))?;
    let actual = src
        .metadata()
        .with_context(|| format!("reading {} for {iso_path}", source.display()))?
        .len();
    if actual < size {
        bail!(
            "reading {} for {iso_path}: it shrank from {size} to {actual} bytes while the image was written",
            source.display()
        );
    }
    let mut pos = 0u64;
    while pos < size {
        // Filesystems without SEEK_DATA support report the whole file as data.
        let data = match lseek(src.as_fd(), pos as i64, Whence::SeekData) {
            Ok(d) => d as u64,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
            Err(_) => pos,
        };
        if data >= size {
            break;
        }
        let hole = match lseek(src.as_fd(), data as i64, Whence::SeekHole) {
            Ok(h) => (h as u64).min(size),
            Err(_) => size,
        };
        src.seek(SeekFrom::Start(data)).with_context(ctx)?;
        out.seek(SeekFrom::Start(offset + data))
            .with_context(|| format!("seeking in {}", out_path.display()))?;
        let mut at = data;
        while at < hole {
            let want = (hole - at).min(COPY_PIECE);
            let n = std::io::copy(&mut (&mut src).take(want), out).with_context(ctx)?;
            if n != want {
                bail!(
                    "reading {} for {iso_path}: it shrank while the image was written",
                    source.display()
                );
            }
            at += n;
            copied(offset + at);
        }
        pos = hole;
    }
    Ok(())
}

/// Reads a small file completely (a BIOS boot image to patch).
fn read_small(source: &Path, iso_path: &str, size: u64) -> Result<Vec<u8>> {
    if size > MAX_PATCHED_BIOS_IMAGE {
        bail!(
            "bios boot image {} for {iso_path} is {size} bytes; a boot info table is only patched into images up to {MAX_PATCHED_BIOS_IMAGE} bytes",
            source.display()
        );
    }
    let data = std::fs::read(source)
        .with_context(|| format!("reading {} for {iso_path}", source.display()))?;
    if data.len() as u64 != size {
        bail!(
            "reading {} for {iso_path}: its size changed from {size} to {} bytes while the image was written",
            source.display(),
            data.len()
        );
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plan over real (tiny) files, as `write_hybrid` would make it.
    fn small_plan(dir: &Path) -> (HybridSpec, Plan) {
        plan_of(
            dir,
            &[
                ("images/efiboot.img", 4096),
                ("LiveOS/squashfs.img", 5000),
                ("a.txt", 3),
            ],
            Some("/LiveOS/squashfs.img"),
        )
    }

    /// A plan over files of these sizes (`images/efiboot.img` is the ESP).
    fn plan_of(dir: &Path, sizes: &[(&str, usize)], root: Option<&str>) -> (HybridSpec, Plan) {
        let mut files = Vec::new();
        for &(name, len) in sizes {
            let host = dir.join(name.replace('/', "_"));
            std::fs::write(&host, vec![1u8; len]).unwrap();
            files.push(IsoSource {
                iso_path: name.to_string(),
                source: host,
            });
        }
        let spec = HybridSpec {
            volume_label: VolumeLabel::new("T").unwrap(),
            epoch: 0,
            seed: "s".to_string(),
            files,
            esp: "images/efiboot.img".to_string(),
            root: root.map(str::to_string),
            bios_boot: None,
            mbr_code: None,
            persistence: None,
            implant_md5: false,
        };
        let plan = Plan::new(&spec).unwrap();
        (spec, plan)
    }

    #[test]
    fn root_dot_record_announces_rock_ridge() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, plan) = small_plan(tmp.path());
        let root = plan.encode_dir(0);
        let len = root[0] as usize;
        let ident_len = root[32] as usize;
        assert_eq!((ident_len, root[33]), (1, 0), "first record is '.'");
        // System Use starts right after the identifier (odd length: no pad).
        let su = &root[34..len];
        assert_eq!(&su[..7], b"SP\x07\x01\xbe\xef\x00", "SP opens the field");
        let ce_at = su
            .windows(4)
            .position(|w| w == b"CE\x1c\x01")
            .expect("CE entry");
        let ce = &su[ce_at..ce_at + 28];
        let lba = u32::from_le_bytes(ce[4..8].try_into().unwrap());
        let off = u32::from_le_bytes(ce[12..16].try_into().unwrap()) as usize;
        let n = u32::from_le_bytes(ce[20..24].try_into().unwrap()) as usize;
        assert_eq!(lba, plan.ce_lba);
        let area = plan.encode_continuations();
        let er = &area[off..off + n];
        assert_eq!(&er[..2], b"ER");
        assert_eq!(&er[8..18], b"IEEE_P1282");
    }

    #[test]
    fn layout_aligns_partitions_and_keeps_the_tail_free() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, plan) = small_plan(tmp.path());
        let esp = &plan.files[plan.esp];
        let root = &plan.files[plan.root.unwrap()];
        assert_eq!(u64::from(esp.lba) % PARTITION_ALIGN, 0);
        assert_eq!(u64::from(root.lba) % PARTITION_ALIGN, 0);
        assert!(root.lba > esp.lba);
        // 5000 bytes -> a 5120-byte partition, rounded to 512-byte LBAs.
        assert_eq!(plan.extent(plan.root.unwrap()).1, 5120);
        // Everything ends before the backup GPT.
        let end = plan
            .files
            .iter()
            .map(|f| u64::from(f.lba) * SECTOR + f.size)
            .max()
            .unwrap();
        assert!(end <= plan.total_bytes() - BACKUP_BYTES);
        assert!(
            end + 15 * SECTOR <= plan.volume_sectors * SECTOR,
            "tail pad"
        );
        assert_eq!(plan.total_bytes() % SECTOR, 0);
        // The catalog is the first file after the metadata.
        assert!(plan.files[plan.catalog].lba < esp.lba);
    }

    #[test]
    fn large_files_start_on_4_kib_for_reflinks_and_small_ones_stay_packed() {
        let tmp = tempfile::tempdir().unwrap();
        // Small ones between large ones, so that each large one follows an
        // odd number of sectors unless it is aligned.
        let big = BLOCK_ALIGN_MIN as usize;
        let (_, plan) = plan_of(
            tmp.path(),
            &[
                ("images/efiboot.img", 4096),
                ("a/1", 100),
                ("a/2", big),
                ("a/3", 100),
                ("a/4", 3 * big + 1),
                ("a/5", 2049),
                ("a/6", 100),
            ],
            None,
        );
        let lba = |p: &str| {
            let f = plan.files.iter().find(|f| f.iso_path == p).unwrap();
            u64::from(f.lba)
        };
        assert_eq!(lba("a/2") % 2, 0);
        assert_eq!(lba("a/4") % 2, 0);
        // Small files follow each other with no gap.
        assert_eq!(lba("a/6"), lba("a/5") + 2);
        assert!(lba("a/3") == lba("a/2") + BLOCK_ALIGN_MIN / SECTOR);
    }

    #[test]
    fn paths() {
        assert_eq!(
            normalize("/EFI/BOOT/BOOTX64.EFI").unwrap(),
            "EFI/BOOT/BOOTX64.EFI"
        );
        assert!(normalize("a//b").is_err());
        assert!(normalize("a/../b").is_err());
        assert!(normalize("").is_err());
        assert!(normalize("a/").is_err());
    }

    #[test]
    fn tree_conflicts() {
        let mut dirs = vec![DirItem::new(0, vec![0])];
        insert(&mut dirs, "a/b", 1).unwrap();
        assert!(insert(&mut dirs, "a/b", 2).is_err());
        assert!(insert(&mut dirs, "a/b/c", 3).is_err());
        assert!(insert(&mut dirs, "a", 4).is_err());
        insert(&mut dirs, "a/c", 5).unwrap();
        assert_eq!(dirs.len(), 2);
    }

    #[test]
    fn sections() {
        assert_eq!(section_count(0), 1);
        assert_eq!(section_count(u64::from(u32::MAX)), 1);
        assert_eq!(section_count(1 << 32), 2);
        assert_eq!(section_count(3 * iso::MAX_EXTENT), 3);
    }
}
