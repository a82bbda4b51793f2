//! Filesystems the build makes: the FAT ESP (in-process), the live root
//! (squashfs or erofs, external mkfs), the persistence partition (ext4) and
//! the ramdisk (the whole root as a compressed newc cpio, in-process).

pub mod cpio;
pub mod erofs;
pub mod esp;
pub mod ext4;
pub mod squashfs;

use std::process::Command;

/// Same root + same epoch = same bytes, with the files' own times kept
/// where they are older than the epoch: mksquashfs (4.5 and later) and
/// mkfs.erofs (1.5 and later) read SOURCE_DATE_EPOCH as the image's time
/// and clamp every newer file time to it. Not `-all-time` or `-T`: a
/// Python byte-code file records its source's time, and with every time
/// set to the epoch no `.pyc` matched its `.py` any more, so Python
/// recompiled each module it imported, at every start (Ironic took 280 s
/// longer to answer under QEMU's TCG).
pub fn clamp_times(cmd: &mut Command, epoch: i64) {
    cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
}
