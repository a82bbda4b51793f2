//! Unpacking a base archive into a build root.
