//! What the test host offers and how a test runs programs on it: whether
//! it is root, where a tool is, `require!` (skip a test with a reason, or
//! fail it under `UCL_REQUIRE_ALL`), the repository, and running the built
//! binary or an independent tool. Kept apart from the data and the servers
//! so that a suite needing only these does not read past the rest.

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_undercloud-live"))
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running undercloud-live");
    eprintln!("$ {cmd:?}\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Set by `make test` and CI: every test's needs must be met there, so a
/// missing tool or device is a failure instead of a skip.
pub const REQUIRE_ALL: &str = "UCL_REQUIRE_ALL";

/// Whether what a test needs is here. When it is not, the test is skipped
/// with `reason` on standard error, or fails with it under
/// `UCL_REQUIRE_ALL`. Use through `require!`.
pub fn require(met: bool, reason: &str) -> bool {
    if met {
        return true;
    }
    if std::env::var_os(REQUIRE_ALL).is_some() {
        panic!("{reason} ({REQUIRE_ALL} is set: make test and CI need every test to run)");
    }
    eprintln!("skipped: {reason}");
    false
}

/// `require!(condition, "reason {}", x)`: returns from the test (skipped,
/// reason printed) when the condition is false, or fails under
/// `UCL_REQUIRE_ALL`.
// Exported at the crate root, so suites call it by its bare name; the path
// goes through `common`, which re-exports `require` from here.
#[macro_export]
macro_rules! require {
    ($met:expr, $($reason:tt)+) => {
        if !$crate::common::require($met, &format!($($reason)+)) {
            return;
        }
    };
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `tool`'s path: PATH, then the sbin folders (a user's PATH often lacks
/// them, and gdisk, mkfs and losetup live there).
pub fn tool_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "command -v {tool} >/dev/null || test -x /usr/sbin/{tool} || test -x /sbin/{tool}"
        ))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs an independent tool (sgdisk, xorriso, qemu-img ...) and returns its
/// stdout and stderr; a failure fails the test with both.
pub fn tool(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed:\n{text}");
    text
}
