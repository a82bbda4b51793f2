//! Shared helpers for the integration tests, one module per concern, so a
//! suite's reader finds a helper by what it is about:
//!
//! - `http`: the one loopback HTTP/1.1 server every test that needs a web
//!   server uses (a folder of files, a mirror that misbehaves on purpose,
//!   or a fake API behind a handler);
//! - `fs`: scratch folders, a small tmpfs, sparse copies, mounts, digests;
//! - `env`: what the test host has (root, tools), `require!`, and running
//!   the built binary or another tool;
//! - `data`: the slow inputs several suites share (the test base, the
//!   cached ramdisk and images) and the build command on them;
//! - `testbed`, `ucvm`, `upstream`: the provisioning test bed, the booted
//!   undercloud VM, and the upstream elements from PyPI.
//!
//! The first four are re-exported here, so a suite's `use common::*;` sees
//! every helper without knowing which file holds it.
// Each suite is its own crate and uses only some of these helpers.
#![allow(dead_code)]

pub mod data;
pub mod env;
pub mod fs;
pub mod http;
pub mod testbed;
pub mod ucvm;
pub mod upstream;

// A suite that takes none of a module's helpers leaves its re-export
// unused: not a mistake here.
#[allow(unused_imports)]
pub use {data::*, env::*, fs::*, http::*};
