//! Filesystems the build makes: the FAT ESP (in-process), the live root
//! (squashfs or erofs, external mkfs), the persistence partition (ext4) and
//! the ramdisk (the whole root as a compressed newc cpio, in-process).

pub mod cpio;
pub mod erofs;
pub mod esp;
pub mod ext4;
pub mod squashfs;
