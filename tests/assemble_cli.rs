//! `undercloud-live assemble` from the command line, with and without the
//! media checksum, checked by isomd5sum's own checkisomd5. Fast: no QEMU.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::{bin, have, run, scratch};
use std::fs;
use std::path::Path;
use std::process::Command;

fn stage(dir: &Path) {
    fs::create_dir_all(dir.join("tree/LiveOS")).unwrap();
    fs::create_dir_all(dir.join("esp/EFI/BOOT")).unwrap();
    // Pseudo-random bytes (xorshift64), so the checksum covers real data.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let root: Vec<u8> = (0..(3 << 20) + 12_345)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(dir.join("tree/LiveOS/squashfs.img"), root).unwrap();
    fs::write(
        dir.join("esp/EFI/BOOT/BOOTX64.EFI"),
        b"MZ not a real loader",
    )
    .unwrap();
}

fn assemble(dir: &Path, out: &str, extra: &[&str]) {
    let o = run(bin()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("--quiet")
        .arg("assemble")
        .arg("--tree")
        .arg(dir.join("tree"))
        .arg("--esp-dir")
        .arg(dir.join("esp"))
        .args([
            "--label",
            "UCL-ASM",
            "--root",
            "LiveOS/squashfs.img",
            "--output",
        ])
        .arg(dir.join(out))
        .args(extra));
    assert!(o.status.success(), "assemble {extra:?} failed");
}

/// checkisomd5's verdict and everything it printed (it prints to both).
fn checkisomd5(img: &Path) -> (bool, String) {
    let o = Command::new("checkisomd5").arg(img).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn media_checksum_is_on_by_default_and_can_be_left_out() {
    assert!(
        have("checkisomd5"),
        "checkisomd5 missing: scripts/install-deps"
    );
    let dir = scratch("assemble-cli");
    stage(&dir);

    assemble(&dir, "with.iso", &[]);
    let (ok, text) = checkisomd5(&dir.join("with.iso"));
    assert!(ok && text.contains("PASS"), "{text}");

    assemble(&dir, "without.iso", &["--no-media-checksum"]);
    let (ok, text) = checkisomd5(&dir.join("without.iso"));
    assert!(!ok && text.contains("No checksum"), "{text}");
    let o = run(bin().arg("verify").arg(dir.join("without.iso")));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no media checksum"),
        "{err}"
    );

    // The same image otherwise: only the 512-byte field differs.
    let (a, b) = (
        fs::read(dir.join("with.iso")).unwrap(),
        fs::read(dir.join("without.iso")).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    assert!(differ > 0 && differ <= 512, "{differ} bytes differ");
}
