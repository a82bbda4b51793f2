//! The host system as the pipeline stages see it: the external programs
//! they run, how those are found (`tool`) and how they are run
//! (`command::Task`). Every stage finds and runs its tools here, so a
//! missing one is reported the same way everywhere (the program, then the
//! package that provides it), a failing one too (what it was doing, its
//! exit status, its last words), and the rules live in one place.
//! `process` sets children up between fork and exec (their own process
//! group, or shut in the `sandbox` planned here); it and `blockdev` (the
//! block-device ioctls) are the crate's only files with `unsafe` code.
//! `netlink` asks the kernel about network interfaces, in safe code.

pub mod blockdev;
pub mod command;
pub mod netlink;
pub mod process;
pub mod sandbox;
#[cfg(test)]
pub mod testing;
pub mod tool;
