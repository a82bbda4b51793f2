//! `undercloud-live cache list|prune` on a cache folder the test fills:
//! what the table shows, what prune removes and what it keeps.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::time::{Duration, SystemTime};

use common::*;

fn age(p: &std::path::Path, days: u64) {
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(days * 86400))
        .unwrap();
}

#[test]
fn list_and_prune() {
    let dir = scratch("cache-cli");
    let c = dir.join("cache");
    fs::create_dir_all(c.join("layers")).unwrap();
    fs::create_dir_all(c.join("initrd")).unwrap();
    fs::create_dir_all(c.join("downloads/debootstrap")).unwrap();
    let old = c.join("layers/minimal-0123456789abcdef.tar.zst");
    let new = c.join("initrd/minimal-fedcba9876543210.img");
    let base = c.join("downloads/debootstrap/trixie-0f69238bffc34aa8.tar.zst");
    fs::write(&old, vec![0u8; 3 << 20]).unwrap();
    fs::write(
        c.join("layers/minimal-0123456789abcdef.tar.zst.inputs"),
        "a b\n",
    )
    .unwrap();
    fs::write(&new, vec![0u8; 1 << 20]).unwrap();
    fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    age(&old, 40);
    age(&base, 10);

    let o = run(bin().args(["cache", "list", "--cache-dir"]).arg(&c));
    assert!(o.status.success());
    let table = String::from_utf8_lossy(&o.stdout);
    for want in [
        "layers",
        "minimal-0123456789abcdef.tar.zst",
        "40d",
        "downloads/debootstrap",
        "3 entries",
    ] {
        assert!(table.contains(want), "{want} missing:\n{table}");
    }
    assert!(!table.contains(".inputs"), "{table}");

    // The default: unused for 30 days. A dry run first.
    let o = run(bin()
        .args(["cache", "prune", "--dry-run", "--cache-dir"])
        .arg(&c));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("would remove layers/minimal-0123456789abcdef.tar.zst"),
        "{said}"
    );
    assert!(old.exists());
    let o = run(bin().args(["cache", "prune", "--cache-dir"]).arg(&c));
    assert!(o.status.success());
    assert!(!old.exists() && new.exists() && base.exists());
    assert!(!c
        .join("layers/minimal-0123456789abcdef.tar.zst.inputs")
        .exists());

    let o = run(bin()
        .args(["cache", "prune", "--older-than", "7d", "--cache-dir"])
        .arg(&c));
    assert!(String::from_utf8_lossy(&o.stdout).contains("removed 1 entry,"));
    assert!(!base.exists() && new.exists());

    let o = run(bin()
        .args(["cache", "prune", "--older-than", "3w", "--cache-dir"])
        .arg(&c));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not an age"));
    let o = run(bin()
        .args(["cache", "prune", "--all", "--cache-dir"])
        .arg(&c));
    assert!(o.status.success() && !new.exists());
}
