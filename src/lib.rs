//! undercloud-live: build, write, boot and install a hybrid ISO/USB live image
//! of an OpenStack undercloud. The pipeline flows one way (see docs/design.md):
//! spec -> fetch -> rootfs -> elements -> boot assets -> fs -> image -> boot.

pub mod assemble;
pub mod boot;
pub mod build;
pub mod cache;
pub mod chroot;
pub mod cli;
pub mod distro;
pub mod elements;
pub mod fetch;
pub mod fs;
pub mod image;
pub mod inspect;
pub mod install;
pub mod interrupt;
pub mod io;
pub mod kickstart;
pub mod medium;
pub mod prefetch;
pub mod progress;
pub mod qemu;
pub mod rootfs;
pub mod space;
pub mod spec;
pub mod status;
pub mod system;
pub mod undercloud;
pub mod write;
