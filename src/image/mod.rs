//! The hybrid image: ISO9660 + El Torito + protective MBR + GPT in one file.
//!
//! `hybrid` decides the layout and writes the file; `iso9660`, `eltorito`
//! and `gpt` encode the individual structures.

pub mod eltorito;
pub mod gpt;
pub mod hybrid;
pub mod iso9660;
pub mod isomd5;

pub use hybrid::{write_hybrid, BiosBoot, HybridReport, HybridSpec, IsoSource};
