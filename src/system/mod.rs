//! The host system as the pipeline stages see it: the external programs
//! they run, how those are found (`tool`) and how they are run
//! (`command::Task`). Every stage finds and runs its tools here, so a
//! missing one is reported the same way everywhere (the program, then the
//! package that provides it), a failing one too (what it was doing, its
//! exit status, its last words), and the rules live in one place.

pub mod blockdev;
pub mod command;
pub mod process;
#[cfg(test)]
pub mod testing;
pub mod tool;
