//! Filesystems made for the image: the FAT ESP (in-process) and the live root (mksquashfs).

pub mod esp;
pub mod squashfs;
