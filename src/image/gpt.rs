//! The disk view of the hybrid image: a protective MBR in sector 0 and a GPT
//! (header at LBA 1, 128 entries at LBA 2..33, backup at the very end).
//!
//! The primary GPT lives in the ISO 9660 system area (the first 32 KiB, which
//! ISO readers ignore); the backup lives past the last file, inside the ISO
//! volume space but outside every file. The `gpt` crate writes headers,
//! entries and CRCs; we only decide what goes in them.

use anyhow::{bail, Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::mbr::ProtectiveMBR;
use gpt::partition::Partition;
use gpt::partition_types::Type;
use gpt::GptConfig;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use uuid::Uuid;

use super::layout::LBA;

/// Bytes the backup GPT needs at the end of the disk: 128 entries of 128
/// bytes (32 sectors) followed by the backup header (1 sector).
pub const BACKUP_BYTES: u64 = 33 * LBA;

/// Namespace for our name-based (v5) GUIDs, itself derived from a fixed URL
/// so that it never changes between builds or versions.
fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://undercloud-live/image/gpt")
}

/// What a derived identity is for: one seed gives each role its own GUID
/// (or serial), the same in every build of one spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdRole {
    /// The GPT disk GUID.
    Disk,
    /// The ESP partition (and, through `derive_u32`, the FAT serial of a
    /// hybrid image's ESP).
    Esp,
    /// The live root partition of a hybrid image.
    Root,
    /// The persistence partition and its ext4 file system.
    Persistence,
    PersistenceFs,
    /// The erofs live root's UUID.
    Erofs,
    /// A disk image's partitions and file systems.
    BiosBoot,
    SwapPart,
    RootPart,
    EspFs,
    RootFs,
    SwapFs,
}

impl IdRole {
    /// The name hashed with the seed: never change one, or every image's
    /// GUIDs change.
    pub fn name(self) -> &'static str {
        match self {
            IdRole::Disk => "disk",
            IdRole::Esp => "esp",
            IdRole::Root => "root",
            IdRole::Persistence => "persistence",
            IdRole::PersistenceFs => "persistence-fs",
            IdRole::Erofs => "erofs",
            IdRole::BiosBoot => "bios-boot",
            IdRole::SwapPart => "swap-part",
            IdRole::RootPart => "root-part",
            IdRole::EspFs => "esp-fs",
            IdRole::RootFs => "root-fs",
            IdRole::SwapFs => "swap",
        }
    }
}

/// A deterministic GUID for `role` of the image built from `seed`: the
/// same seed always yields the same GUIDs, two seeds (two images)
/// practically never collide.
pub fn derive_guid(seed: &str, role: IdRole) -> Uuid {
    Uuid::new_v5(&namespace(), format!("{seed}\0{}", role.name()).as_bytes())
}

/// One partition to record, in 512-byte LBAs (inclusive range).
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub name: String,
    pub type_guid: Type,
    pub guid: Uuid,
    pub first_lba: u64,
    pub last_lba: u64,
}

/// Partition type GUID of an EFI System Partition.
pub fn esp_type() -> Type {
    gpt::partition_types::EFI
}

/// The partition types our images use (and Windows' basic data, which a
/// reformatted stick shows), by name: the gpt crate's constants, so no
/// GUID is spelled out anywhere else. `None` for any other type.
pub fn type_name(guid: &Uuid) -> Option<&'static str> {
    use gpt::partition_types::{BASIC, BIOS, EFI, LINUX_FS, LINUX_ROOT_X64, LINUX_SWAP};
    [
        (EFI, "EFI System"),
        (LINUX_ROOT_X64, "Linux root (x86-64)"),
        (LINUX_FS, "Linux filesystem"),
        (LINUX_SWAP, "Linux swap"),
        (BASIC, "Basic data"),
        (BIOS, "BIOS boot"),
    ]
    .into_iter()
    .find(|(t, _)| t.guid == *guid)
    .map(|(_, name)| name)
}

/// Whether a type GUID in text form (any case) is the ESP's.
pub fn is_esp_type(guid: &str) -> bool {
    Uuid::parse_str(guid).is_ok_and(|g| g == esp_type().guid)
}

/// Discoverable Partitions Specification "Linux root (x86-64)".
pub fn root_x86_64_type() -> Type {
    gpt::partition_types::LINUX_ROOT_X64
}

/// Sector 0: a protective MBR with one 0xEE partition from LBA 1 to the last
/// LBA (capped at 0xFFFFFFFF sectors, as UEFI 2.x 5.2.3 prescribes for larger
/// disks), optional boot code in bytes 0..440 and a disk signature.
pub fn protective_mbr(
    disk_bytes: u64,
    boot_code: Option<&[u8]>,
    signature: [u8; 4],
) -> Result<[u8; 512]> {
    let sectors = disk_bytes / LBA;
    let size = (sectors.saturating_sub(1)).min(u64::from(u32::MAX)) as u32;
    let mut mbr = ProtectiveMBR::with_lb_size(size);
    if let Some(code) = boot_code {
        if code.len() > 440 {
            bail!(
                "mbr boot code is {} bytes; at most 440 fit before the disk signature",
                code.len()
            );
        }
        let mut full = [0u8; 440];
        full[..code.len()].copy_from_slice(code);
        mbr.set_bootcode(full);
    }
    mbr.set_disk_signature(signature);
    Ok(mbr.to_bytes())
}

/// Writes the primary and backup GPT into `file`, which must already have its
/// final length (the backup header goes into its last 512 bytes), then the
/// protective MBR into sector 0. `path` is only for messages.
pub fn write_gpt(
    file: &mut File,
    path: &Path,
    disk_guid: Uuid,
    partitions: &[PartitionSpec],
    mbr: &[u8; 512],
) -> Result<()> {
    let ctx = || format!("writing GPT to {}", path.display());
    let mut disk = GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, Some(disk_guid))
        .with_context(ctx)?;

    let (first_usable, last_usable) = {
        let h = disk.primary_header().with_context(ctx)?;
        (h.first_usable, h.last_usable)
    };
    let mut table = BTreeMap::new();
    for (i, p) in partitions.iter().enumerate() {
        // The crate does not validate entries; a partition outside the usable
        // range would make a table that sgdisk and firmware reject.
        if p.first_lba < first_usable || p.last_lba > last_usable || p.first_lba > p.last_lba {
            bail!(
                "partition {} ({}..={}) is outside the usable LBAs {}..={} of {}",
                p.name,
                p.first_lba,
                p.last_lba,
                first_usable,
                last_usable,
                path.display()
            );
        }
        table.insert(
            i as u32 + 1,
            Partition {
                part_type_guid: p.type_guid.clone(),
                part_guid: p.guid,
                first_lba: p.first_lba,
                last_lba: p.last_lba,
                flags: 0,
                name: p.name.clone(),
            },
        );
    }
    disk.update_partitions(table).with_context(ctx)?;
    disk.write().with_context(ctx)?;

    file.write_all_at(mbr, 0)
        .with_context(|| format!("writing protective MBR to {}", path.display()))?;
    Ok(())
}

/// Largest partition count accepted from a GPT header read back: the
/// specification's minimum array holds 128, real tools write 128, and a
/// larger count only makes the reader allocate and scan more.
const MAX_GPT_ENTRIES: u32 = 1024;

/// Checks the GPT header at `lba` of a disk of `len` bytes before the gpt
/// crate reads it: that crate asserts (panics) on an entry size other than
/// 128 and trusts counts and addresses. `Ok(false)` when no GPT signature
/// is there.
fn check_header_at(file: &File, len: u64, lba: u64) -> Result<bool> {
    let mut h = [0u8; LBA as usize];
    match lba.checked_add(1).and_then(|n| n.checked_mul(LBA)) {
        Some(end) if end <= len => {}
        _ => return Ok(false),
    }
    file.read_exact_at(&mut h, lba * LBA)
        .with_context(|| format!("reading the GPT header at LBA {lba}"))?;
    if &h[..8] != b"EFI PART" {
        return Ok(false);
    }
    let u32_at = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
    let header_size = u32_at(12);
    let current = u64_at(24);
    let (first_usable, last_usable) = (u64_at(40), u64_at(48));
    let (entries_lba, count, entry_size) = (u64_at(72), u32_at(80), u32_at(84));
    let lbas = len / LBA;
    let bad = |what: String| anyhow::anyhow!("GPT header at LBA {lba} is invalid: {what}");
    if !(92..=LBA as u32).contains(&header_size) {
        return Err(bad(format!(
            "header size {header_size} (must be 92 to 512)"
        )));
    }
    if entry_size != 128 {
        return Err(bad(format!(
            "partition entry size {entry_size} (must be 128)"
        )));
    }
    if count == 0 || count > MAX_GPT_ENTRIES {
        return Err(bad(format!(
            "{count} partition entries (must be 1 to {MAX_GPT_ENTRIES})"
        )));
    }
    if current != lba {
        return Err(bad(format!("it says it is at LBA {current}")));
    }
    // The backup LBA and the last usable LBA are not held against `len`:
    // the gpt crate reads neither to find the entries, and on a copy cut
    // short they do point past the end, which `gpt_check` reports
    // (inspect lists such a medium, verify refuses it).
    if entries_lba >= lbas || first_usable > last_usable {
        return Err(bad("it points past the end of the disk".to_string()));
    }
    // u32 * 128 cannot overflow a u64; the table must fit on the disk.
    let table_lbas = (u64::from(count) * 128).div_ceil(LBA);
    if entries_lba < 2 || entries_lba + table_lbas > lbas {
        return Err(bad("its partition table lies outside the disk".to_string()));
    }
    Ok(true)
}

/// Checks the GPT headers of a disk (or image) of `len` bytes that the
/// gpt crate will read, so it may read them without panicking; `Ok(false)`
/// when there is no GPT. The crate takes the entries from the primary
/// header when its CRC holds, else from the header in the *last* sector of
/// the disk (not where the primary says the backup is): that is the one
/// to check then.
pub fn check_headers(file: &File, len: u64) -> Result<bool> {
    if !check_header_at(file, len, 1)? {
        return Ok(false);
    }
    let mut h = [0u8; LBA as usize];
    file.read_exact_at(&mut h, LBA)
        .context("reading the GPT header at LBA 1")?;
    // As the crate decides: its CRC runs over the first 92 bytes, whatever
    // the header's size field says.
    let stored = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
    h[16..20].fill(0);
    if crc32(&h[..92]) != stored && len / LBA > 2 {
        check_header_at(file, len, len / LBA - 1)?;
    }
    Ok(true)
}

/// CRC-32 (IEEE 802.3, reflected), as GPT headers and entry arrays carry
/// it. Bitwise: it only ever runs over a header and at most 128 KiB of
/// entries.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_deterministic_and_distinct() {
        let a = derive_guid("seed-1", IdRole::Disk);
        assert_eq!(a, derive_guid("seed-1", IdRole::Disk));
        assert_ne!(a, derive_guid("seed-1", IdRole::Esp));
        assert_ne!(a, derive_guid("seed-2", IdRole::Disk));
        assert_eq!(a.get_version_num(), 5);
        // "ab"+"c" must not equal "a"+"bc".
        assert_ne!(
            derive_guid("ab", IdRole::Esp),
            derive_guid("a", IdRole::Esp)
        );
    }

    #[test]
    fn protective_mbr_layout() {
        let mbr = protective_mbr(10 << 20, Some(&[0xFA, 0xEB]), [1, 2, 3, 4]).unwrap();
        assert_eq!(&mbr[..2], &[0xFA, 0xEB]);
        assert!(mbr[2..440].iter().all(|&b| b == 0));
        assert_eq!(&mbr[440..444], &[1, 2, 3, 4]);
        let p = &mbr[446..462];
        assert_eq!(p[4], 0xEE);
        assert_eq!(u32::from_le_bytes(p[8..12].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_le_bytes(p[12..16].try_into().unwrap()),
            (10 << 20) / 512 - 1
        );
        assert!(mbr[462..510].iter().all(|&b| b == 0));
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);

        // Huge disks cap the size field.
        let mbr = protective_mbr(4 << 40, None, [0; 4]).unwrap();
        assert_eq!(
            u32::from_le_bytes(mbr[458..462].try_into().unwrap()),
            u32::MAX
        );
        assert!(protective_mbr(1 << 20, Some(&[0; 441]), [0; 4]).is_err());
    }

    #[test]
    fn writes_a_table_the_crate_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(8 << 20).unwrap();
        let guid = derive_guid("t", IdRole::Disk);
        let parts = vec![PartitionSpec {
            name: "ESP".into(),
            type_guid: esp_type(),
            guid: derive_guid("t", IdRole::Esp),
            first_lba: 2048,
            last_lba: 4095,
        }];
        let mbr = protective_mbr(8 << 20, None, [9; 4]).unwrap();
        write_gpt(&mut f, &path, guid, &parts, &mbr).unwrap();
        drop(f);

        let disk = GptConfig::new().open(&path).unwrap();
        assert_eq!(*disk.guid(), guid);
        let h = disk.primary_header().unwrap();
        assert_eq!(h.num_parts, 128);
        assert_eq!(h.part_start, 2);
        assert_eq!(h.backup_lba, (8 << 20) / 512 - 1);
        let p = &disk.partitions()[&1];
        assert_eq!((p.first_lba, p.last_lba), (2048, 4095));
        assert_eq!(p.part_guid, derive_guid("t", IdRole::Esp));

        // Outside the usable range is an error, not a broken table.
        let mut f = File::options().read(true).write(true).open(&path).unwrap();
        let bad = vec![PartitionSpec {
            first_lba: 10,
            ..parts[0].clone()
        }];
        assert!(write_gpt(&mut f, &path, guid, &bad, &mbr).is_err());
    }

    /// With the primary's CRC broken the gpt crate takes the entries from
    /// the header in the disk's last sector, and asserts (panics) on an
    /// entry size other than 128: that header is the one checked, even
    /// when the primary puts the backup elsewhere (an image on a larger
    /// stick).
    #[test]
    fn the_last_sector_is_checked_when_the_primary_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let mut f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        f.set_len(8 << 20).unwrap();
        let mbr = protective_mbr(8 << 20, None, [9; 4]).unwrap();
        write_gpt(&mut f, &path, Uuid::nil(), &[], &mbr).unwrap();
        assert!(check_headers(&f, 8 << 20).unwrap());
        // The "stick" is 1 MiB larger; its last sector holds a header with
        // 64-byte entries and a good CRC.
        let (old, new) = ((8u64 << 20) / LBA - 1, (9u64 << 20) / LBA - 1);
        f.set_len(9 << 20).unwrap();
        let mut h = [0u8; 92];
        f.read_exact_at(&mut h, old * LBA).unwrap();
        h[24..32].copy_from_slice(&new.to_le_bytes());
        h[84..88].copy_from_slice(&64u32.to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, new * LBA).unwrap();
        assert!(check_headers(&f, 9 << 20).unwrap(), "the primary is used");
        f.write_all_at(&[0xff], LBA + 40).unwrap();
        let e = format!("{:#}", check_headers(&f, 9 << 20).unwrap_err());
        assert!(e.contains("partition entry size 64"), "{e}");
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn type_names_and_the_esp_type_in_any_case() {
        assert_eq!(type_name(&esp_type().guid), Some("EFI System"));
        assert_eq!(
            type_name(&gpt::partition_types::BIOS.guid),
            Some("BIOS boot")
        );
        assert_eq!(type_name(&Uuid::nil()), None);
        assert!(is_esp_type("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"));
        assert!(is_esp_type("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"));
        assert!(!is_esp_type("0FC63DAF-8483-4772-8E79-3D69D8477DE4"));
        assert!(!is_esp_type("not a guid"));
    }
}
