//! Filesystems the build makes: the FAT ESP (in-process), the live root
//! (squashfs or erofs, external mkfs) and the persistence partition (ext4).

pub mod erofs;
pub mod esp;
pub mod ext4;
pub mod squashfs;
