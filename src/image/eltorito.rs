//! El Torito (Bootable CD-ROM Format Specification 1.0): the boot record
//! volume descriptor, the boot catalog, and the boot-info-table patch.
//!
//! The catalog is a 2048-byte file in the ISO tree. Its first entry (the
//! "default") is what a BIOS boots; further entries sit in sections, one per
//! platform. UEFI firmware looks at every entry and takes the ones for
//! platform 0xEF, so a UEFI-only image has the UEFI entry as default and a
//! BIOS+UEFI image has the BIOS entry as default and the UEFI one in a final
//! section (the layout xorriso and lorax produce).

use super::layout::SECTOR;
use anyhow::{bail, Result};

/// Platform IDs of the validation entry and section headers.
pub const PLATFORM_X86: u8 = 0x00;
pub const PLATFORM_EFI: u8 = 0xEF;

/// Boot indicator: bootable.
const BOOTABLE: u8 = 0x88;
/// Boot media type: no emulation (the image is loaded as is).
const NO_EMULATION: u8 = 0x00;
/// Section header indicators.
const MORE_SECTIONS: u8 = 0x90;
const FINAL_SECTION: u8 = 0x91;

/// One bootable image in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootEntry {
    pub platform: u8,
    /// LBA (2048-byte sectors) of the image.
    pub lba: u32,
    /// "Sector count": virtual 512-byte sectors to load (see the helpers).
    pub sector_count: u16,
}

/// Boot record volume descriptor (El Torito 2.0): announces El Torito and
/// points at the catalog. It follows the primary volume descriptor.
pub fn boot_record(catalog_lba: u32) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR as usize];
    d[0] = 0; // volume descriptor type: boot record
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    // Boot system identifier, padded with zeros (not spaces) per El Torito.
    d[7..7 + 23].copy_from_slice(b"EL TORITO SPECIFICATION");
    d[0x47..0x4B].copy_from_slice(&catalog_lba.to_le_bytes());
    d
}

/// Validation entry (El Torito 2.1): header ID 1, the platform of the default
/// entry, a checksum making the sixteen little-endian words sum to zero, and
/// the 0x55 0xAA key bytes.
pub fn validation_entry(platform: u8) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[0] = 0x01;
    e[1] = platform;
    e[30] = 0x55;
    e[31] = 0xAA;
    let sum = words_sum(&e);
    e[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    e
}

fn words_sum(b: &[u8]) -> u16 {
    b.chunks_exact(2).fold(0u16, |s, w| {
        s.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    })
}

fn boot_entry_bytes(e: &BootEntry) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = BOOTABLE;
    b[1] = NO_EMULATION;
    // Load segment 0 means the traditional 0x7C0; system type 0 for no emulation.
    b[6..8].copy_from_slice(&e.sector_count.to_le_bytes());
    b[8..12].copy_from_slice(&e.lba.to_le_bytes());
    b
}

/// Builds the catalog sector. `entries[0]` is the default entry; the others
/// follow in sections grouped by consecutive platform, the last section
/// header marked final.
pub fn catalog(entries: &[BootEntry]) -> Result<Vec<u8>> {
    let Some(default) = entries.first() else {
        bail!("an El Torito catalog needs at least one boot entry");
    };
    let mut groups: Vec<(u8, Vec<&BootEntry>)> = Vec::new();
    for e in &entries[1..] {
        match groups.last_mut() {
            Some((p, list)) if *p == e.platform => list.push(e),
            _ => groups.push((e.platform, vec![e])),
        }
    }
    let needed = 64
        + groups
            .iter()
            .map(|(_, l)| 32 * (1 + l.len()))
            .sum::<usize>();
    if needed > SECTOR as usize {
        bail!(
            "{} boot entries do not fit one catalog sector",
            entries.len()
        );
    }

    let mut cat = vec![0u8; SECTOR as usize];
    cat[..32].copy_from_slice(&validation_entry(default.platform));
    cat[32..64].copy_from_slice(&boot_entry_bytes(default));
    let mut pos = 64;
    let n = groups.len();
    for (i, (platform, list)) in groups.iter().enumerate() {
        let h = &mut cat[pos..pos + 32];
        h[0] = if i + 1 == n {
            FINAL_SECTION
        } else {
            MORE_SECTIONS
        };
        h[1] = *platform;
        h[2..4].copy_from_slice(&(list.len() as u16).to_le_bytes());
        pos += 32;
        for e in list {
            // Section entries share the default entry's layout; byte 12
            // (selection criteria type) stays 0: none.
            cat[pos..pos + 32].copy_from_slice(&boot_entry_bytes(e));
            pos += 32;
        }
    }
    Ok(cat)
}

/// Sector count for the UEFI entry of an image of `len` bytes.
///
/// The field counts 512-byte sectors in 16 bits, so it can describe at most
/// 65535 * 512 bytes (32 MiB - 512). Up to that we write the exact count.
/// Beyond it we write 0, as xorriso/libisofs do for platform 0xEF entries
/// (`write_section_entry` in libisofs' eltorito.c): EDK2's PartitionDxe
/// (ElTorito.c) treats a count below 2 as "the image extends to the end of
/// the volume" and exposes everything from the image's LBA on, so the FAT
/// driver sees the whole ESP and bounds it by its own BPB. Writing 65535
/// instead would make EDK2 expose a partition cut short in the middle of a
/// large FAT image.
pub fn uefi_sector_count(len: u64) -> u16 {
    let sectors = len.div_ceil(512);
    if sectors <= u64::from(u16::MAX) {
        sectors as u16
    } else {
        0
    }
}

/// Sector count for the BIOS (no emulation) entry of an image of `len` bytes.
///
/// With a boot info table the image is a loader that reads the rest of
/// itself using the table (GRUB's cdboot, ISOLINUX), and the convention
/// (xorriso's default load_size=2048, mkisofs' `-boot-load-size 4`) is to let
/// the BIOS load only the first 2048 bytes, which every BIOS handles. Without
/// one, the BIOS has to load the whole image: its size rounded up to 2048
/// bytes, in 512-byte units, capped at the field's 65535.
pub fn bios_sector_count(len: u64, boot_info_table: bool) -> u16 {
    if boot_info_table {
        return 4;
    }
    let sectors = len.div_ceil(SECTOR) * 4;
    sectors.clamp(1, u64::from(u16::MAX)) as u16
}

/// Writes the boot info table (the El Torito/ISOLINUX convention, used by
/// GRUB's eltorito image too) into `image` at bytes 8..64: LBA of the primary
/// volume descriptor, LBA of the image, its length, and the 32-bit sum of its
/// little-endian words from byte 64 on (a short final word is zero-padded).
/// Bytes 24..64 are reserved and zeroed.
pub fn patch_boot_info_table(image: &mut [u8], pvd_lba: u32, image_lba: u32) -> Result<()> {
    if image.len() < 64 {
        bail!(
            "boot image of {} bytes is too small for a boot info table (needs 64)",
            image.len()
        );
    }
    let Ok(len) = u32::try_from(image.len()) else {
        bail!(
            "boot image of {} bytes is too large for a boot info table",
            image.len()
        );
    };
    let checksum = image[64..].chunks(4).fold(0u32, |sum, w| {
        let mut word = [0u8; 4];
        word[..w.len()].copy_from_slice(w);
        sum.wrapping_add(u32::from_le_bytes(word))
    });
    image[8..12].copy_from_slice(&pvd_lba.to_le_bytes());
    image[12..16].copy_from_slice(&image_lba.to_le_bytes());
    image[16..20].copy_from_slice(&len.to_le_bytes());
    image[20..24].copy_from_slice(&checksum.to_le_bytes());
    image[24..64].fill(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_entry_checksum_sums_to_zero() {
        for platform in [PLATFORM_X86, PLATFORM_EFI] {
            let e = validation_entry(platform);
            assert_eq!(words_sum(&e), 0);
            assert_eq!(e[0], 1);
            assert_eq!(e[1], platform);
            assert_eq!(&e[30..32], &[0x55, 0xAA]);
        }
        // Known value: for platform 0 the words are 0x0001 and 0xAA55, so
        // the checksum is 0x55AA (what mkisofs-made catalogs carry).
        let e = validation_entry(PLATFORM_X86);
        assert_eq!(u16::from_le_bytes([e[28], e[29]]), 0x55AA);
    }

    #[test]
    fn uefi_only_catalog() {
        let uefi = BootEntry {
            platform: PLATFORM_EFI,
            lba: 512,
            sector_count: 2880,
        };
        let cat = catalog(&[uefi]).unwrap();
        assert_eq!(cat.len(), 2048);
        assert_eq!(cat[1], PLATFORM_EFI);
        assert_eq!(words_sum(&cat[..32]), 0);
        assert_eq!(cat[32], 0x88);
        assert_eq!(cat[33], 0);
        assert_eq!(&cat[38..40], &2880u16.to_le_bytes());
        assert_eq!(&cat[40..44], &512u32.to_le_bytes());
        // No section header follows a lone default entry.
        assert!(cat[64..].iter().all(|&b| b == 0));
    }

    #[test]
    fn bios_and_uefi_catalog() {
        let bios = BootEntry {
            platform: PLATFORM_X86,
            lba: 40,
            sector_count: 4,
        };
        let uefi = BootEntry {
            platform: PLATFORM_EFI,
            lba: 512,
            sector_count: 0,
        };
        let cat = catalog(&[bios, uefi]).unwrap();
        assert_eq!(cat[1], PLATFORM_X86);
        assert_eq!(words_sum(&cat[..32]), 0);
        assert_eq!(&cat[40..44], &40u32.to_le_bytes());
        // Final section header for platform 0xEF with one entry.
        assert_eq!(&cat[64..68], &[0x91, 0xEF, 1, 0]);
        assert_eq!(cat[96], 0x88);
        assert_eq!(&cat[102..104], &[0, 0]);
        assert_eq!(&cat[104..108], &512u32.to_le_bytes());
        assert!(cat[128..].iter().all(|&b| b == 0));
        assert!(catalog(&[]).is_err());
    }

    #[test]
    fn sector_counts() {
        assert_eq!(uefi_sector_count(2880 * 512), 2880);
        assert_eq!(uefi_sector_count(1000), 2);
        assert_eq!(uefi_sector_count(65535 * 512), 65535);
        assert_eq!(uefi_sector_count(65535 * 512 + 1), 0);
        assert_eq!(uefi_sector_count(200 << 20), 0);
        assert_eq!(bios_sector_count(30_000, true), 4);
        assert_eq!(bios_sector_count(30_000, false), 60);
        assert_eq!(bios_sector_count(1 << 30, false), 65535);
    }

    #[test]
    fn boot_record_points_at_catalog() {
        let d = boot_record(0x1234);
        assert_eq!(&d[0..7], b"\x00CD001\x01");
        assert_eq!(&d[7..30], b"EL TORITO SPECIFICATION");
        assert!(d[30..0x47].iter().all(|&b| b == 0));
        assert_eq!(&d[0x47..0x4B], &[0x34, 0x12, 0, 0]);
    }

    #[test]
    fn boot_info_table() {
        let mut img = vec![0xFFu8; 64];
        img.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 3]); // 1 + 2 + 3
        patch_boot_info_table(&mut img, 16, 40).unwrap();
        assert_eq!(&img[8..12], &16u32.to_le_bytes());
        assert_eq!(&img[12..16], &40u32.to_le_bytes());
        assert_eq!(&img[16..20], &73u32.to_le_bytes());
        assert_eq!(&img[20..24], &6u32.to_le_bytes());
        assert!(img[24..64].iter().all(|&b| b == 0));
        assert_eq!(&img[..8], &[0xFF; 8]);
        assert!(patch_boot_info_table(&mut [0u8; 10], 16, 40).is_err());
    }
}
