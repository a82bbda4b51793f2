//! The fixed layout of what `build` and `assemble` write: the units, sector
//! numbers, alignments and paths a reader of the hybrid image or the disk
//! output would need, in one place. Constants private to one format's
//! encoder (ISO9660 record sizes, FAT internals, the cpio header) stay with
//! that encoder; what is here is the layout the pieces agree on.
//!
//! The hybrid image, in 2048-byte sectors (see `hybrid` for the whole map):
//! system area with the protective MBR and primary GPT (0..16), volume
//! descriptors (16, 17, 18), metadata, the boot catalog, the files, the ESP
//! and live root on 1 MiB boundaries, a tail pad, then the persistence
//! partition and the backup GPT.

use crate::io::MIB;

// --- Units --------------------------------------------------------------

/// ISO9660 logical sector (and logical block) size: everything in the
/// volume is addressed in these units (ECMA-119 6.1.2: 2048 on a CD's
/// 2048-byte sectors, and every reader assumes it).
pub const SECTOR: u64 = 2048;

/// The 512-byte logical block of the disk view (USB sticks, disk images):
/// what the protective MBR and the GPT count in.
pub const LBA: u64 = 512;

// --- The ISO9660 volume ---------------------------------------------------

/// Sector of the primary volume descriptor: the 16 sectors before it are
/// the system area (ECMA-119 6.2.1), which holds the MBR and primary GPT.
pub const PVD_LBA: u64 = 16;

/// Sector of the El Torito boot record: right after the PVD, where firmware
/// looks for it (El Torito 1.0 section 2.0 fixes it at sector 17).
pub const BOOT_RECORD_LBA: u64 = 17;

/// Sector of the volume descriptor set terminator, after the only two
/// descriptors we write; the path tables start right after it.
pub const TERMINATOR_LBA: u64 = 18;

/// ISO path of the El Torito boot catalog (the name xorriso and lorax use).
pub const CATALOG_PATH: &str = "boot.catalog";

/// 1 MiB in 2048-byte sectors: the ESP and the live root start on such a
/// boundary so their GPT partitions start on 2048-LBA boundaries, which
/// partitioning tools expect and flash media are fastest with.
pub const PARTITION_ALIGN: u64 = MIB / SECTOR;

/// Files at least this big start on a 4 KiB boundary, the block size of the
/// filesystems that share extents (XFS, btrfs), so copying them into the
/// image can reflink; the padding is at most one sector, under 4 % of such
/// a file.
pub const BLOCK_ALIGN_MIN: u64 = 64 << 10;

/// Zero sectors at the end of the volume: isomd5sum leaves the last 15
/// unchecked (burned CDs often cannot read them), so no file may lie there;
/// 16 also hold the 9 sectors of the backup GPT.
pub const TAIL_PAD: u64 = 16;

// --- Paths in the ISO9660 tree -------------------------------------------

/// The ESP's FAT image: the El Torito UEFI entry and GPT partition 1 point
/// at it (lorax uses the same path).
pub const ESP_ISO_PATH: &str = "images/efiboot.img";

/// The kernel, where grub.cfg's `linux` line reads it.
pub const ISO_KERNEL: &str = "boot/vmlinuz";

/// The live initrd, where grub.cfg's `initrd` line reads it.
pub const ISO_INITRD: &str = "boot/initrd.img";

/// The grub.cfg the BIOS grub reads: its core is made with the prefix
/// /boot/grub on the ISO9660 volume.
pub const ISO_GRUB_CFG: &str = "boot/grub/grub.cfg";

/// A squashfs live root: the path dracut's dmsquash-live looks for first
/// and mounts as squashfs.
pub const SQUASHFS_ROOT: &str = "LiveOS/squashfs.img";

/// An erofs live root: dracut 059 mounts only squashfs.img as squashfs,
/// but LiveOS/rootfs.img with whatever filesystem it holds.
pub const EROFS_ROOT: &str = "LiveOS/rootfs.img";

// --- Paths and names on the ESP ------------------------------------------

/// The ESP's FAT volume label (at most 11 uppercase characters).
pub const ESP_LABEL: &str = "UCL-ESP";

/// The removable-media folder UEFI firmware boots from without a boot
/// entry (the UEFI specification's removable media boot behaviour): the
/// only path a USB stick can rely on.
pub const ESP_BOOT_DIR: &str = "EFI/BOOT";

/// The removable-media loader for x86-64 in `ESP_BOOT_DIR`.
pub const ESP_LOADER: &str = "EFI/BOOT/BOOTX64.EFI";

/// `ESP_LOADER`'s file name, for trees that put the same loader under
/// several folders (the installer's vendor folder and `ESP_BOOT_DIR`).
pub const ESP_LOADER_NAME: &str = "BOOTX64.EFI";

/// The grub shim starts: shim loads it by this name from its own folder,
/// whatever the distribution called the file (Fedora's CD grub is
/// gcdx64.efi).
pub const SHIM_GRUB_NAME: &str = "grubx64.efi";

/// MokManager, which shim loads by this name from its own folder when a
/// key enrolment is pending.
pub const SHIM_MM_NAME: &str = "mmx64.efi";

/// Where GRUB's BIOS El Torito core is placed in the ISO tree.
pub const ISO_ELTORITO: &str = "boot/grub/i386-pc/eltorito.img";

/// The persistence partition's upper and work folders, where dracut's
/// `rd.live.overlay` looks for them.
pub const OVERLAY_DIR: &str = "/LiveOS/overlay";

/// The kernel on the ESP, for systemd-boot (it cannot read ISO9660).
pub const ESP_KERNEL: &str = "undercloud-live/vmlinuz";

/// The live initrd on the ESP, beside `ESP_KERNEL`.
pub const ESP_INITRD: &str = "undercloud-live/initrd.img";

/// systemd-boot's settings file, where it always reads it.
pub const SD_LOADER_CONF: &str = "loader/loader.conf";

/// Folder of systemd-boot's entries (Boot Loader Specification type 1).
pub const SD_ENTRIES_DIR: &str = "loader/entries";

/// Our one systemd-boot entry, in `SD_ENTRIES_DIR`; loader.conf names it
/// as the default.
pub const SD_ENTRY: &str = "undercloud-live.conf";

// --- The disk output (`format: disk`, `install`) ---------------------------

/// Partitions of the disk output start and end on 1 MiB boundaries, as
/// partitioning tools make them; the first starts 1 MiB in, which leaves
/// room for the primary GPT, and the last ends 1 MiB or more before the
/// end, above the backup GPT.
pub const DISK_ALIGN: u64 = MIB;

/// The BIOS boot partition holds GRUB's core image (about 150 KiB).
pub const BIOS_BOOT_SIZE: u64 = MIB;

/// The ESP `install` makes when the config names no size: room for the
/// loaders of several kernels and vendors.
pub const DEFAULT_ESP_SIZE: u64 = 256 * MIB;

/// The disk image's ESP: shim, grub and MokManager take a few MiB; 64 MiB
/// is the smallest FAT32 the ESP writer makes (512-byte clusters).
pub const DISK_IMAGE_ESP: u64 = 64 * MIB;

// The relations the layout rests on, checked when the crate compiles: a
// change to one constant that breaks another's assumption fails the build.
const _: () = {
    // The system area holds the protective MBR and the whole primary GPT
    // (LBA 0..34 of 512 bytes).
    assert!(PVD_LBA * SECTOR >= 34 * LBA);
    assert!(BOOT_RECORD_LBA == PVD_LBA + 1 && TERMINATOR_LBA == BOOT_RECORD_LBA + 1);
    // Partition starts fall on whole 512-byte LBAs, 1 MiB apart.
    assert!(PARTITION_ALIGN * SECTOR == MIB && MIB % LBA == 0);
    // Big files start on 4 KiB: two sectors.
    assert!(BLOCK_ALIGN_MIN % (2 * SECTOR) == 0);
    // The tail pad holds the backup GPT (33 LBAs) when nothing follows.
    assert!(TAIL_PAD * SECTOR >= 33 * LBA);
    // A FAT label holds 11 bytes.
    assert!(ESP_LABEL.len() <= 11);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_loader_is_named_in_the_boot_folder() {
        assert_eq!(ESP_LOADER, format!("{ESP_BOOT_DIR}/{ESP_LOADER_NAME}"));
    }
}
