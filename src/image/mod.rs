//! The hybrid image: ISO9660 + El Torito + protective MBR + GPT in one file.
//!
//! `hybrid` decides the layout and writes the file; `iso9660`, `eltorito`
//! and `gpt` encode the individual structures; `gpt_check` checks a GPT
//! medium as a whole (both headers, every partition inside it).

pub mod eltorito;
pub mod gpt;
pub mod gpt_check;
pub mod hybrid;
pub mod iso9660;
pub mod isomd5;

/// Where the ESP's FAT image sits in the ISO9660 tree (the El Torito UEFI
/// entry points at it, and so does the GPT's ESP partition).
pub const ESP_ISO_PATH: &str = "images/efiboot.img";

pub use hybrid::{write_hybrid, BiosBoot, HybridReport, HybridSpec, IsoSource};
