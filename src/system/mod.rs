//! The host system as the pipeline stages see it: the external programs
//! they run and how those are found. Every stage finds its tools here, so a
//! missing one is reported the same way everywhere (the program, then the
//! package that provides it) and the lookup's rules live in one place.

pub mod blockdev;
pub mod process;
#[cfg(test)]
pub mod testing;
pub mod tool;
