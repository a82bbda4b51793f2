//! Unpacking a base archive into a build root.

pub mod oci;
pub mod pack;
pub mod unpack;
