//! The hybrid image: ISO9660 + El Torito + protective MBR + GPT in one file.
//!
//! `layout` holds the fixed geometry and paths every reader of the image
//! relies on; `hybrid` lays the files out and writes the file; `iso9660`,
//! `eltorito` and `gpt` encode the individual structures; `gpt_check`
//! checks a GPT medium as a whole (both headers, every partition inside
//! it); `label` holds the validated volume labels.

pub mod eltorito;
pub mod gpt;
pub mod gpt_check;
pub mod hybrid;
pub mod iso9660;
pub mod isomd5;
pub mod label;
pub mod layout;

pub use hybrid::{write_hybrid, BiosBoot, HybridReport, HybridSpec, IsoSource};
pub use label::{PersistLabel, VolumeLabel};
