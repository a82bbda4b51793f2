//! For unit tests: what a test needs (KVM, OVMF, QEMU) may be missing on a
//! laptop; there the test is skipped with its reason, while `make test`
//! and CI set `UCL_REQUIRE_ALL` and a missing need fails the test.

/// Whether a test may go on: `met`, or else skipped with `reason` printed
/// (failing under `UCL_REQUIRE_ALL`).
pub fn require(met: bool, reason: &str) -> bool {
    if met {
        return true;
    }
    if std::env::var_os("UCL_REQUIRE_ALL").is_some() {
        panic!("{reason} (UCL_REQUIRE_ALL is set: make test and CI need every test to run)");
    }
    eprintln!("skipped: {reason}");
    false
}
