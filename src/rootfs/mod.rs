//! Unpacking a base archive into a build root.

pub mod unpack;
