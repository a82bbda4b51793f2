//! The two outputs besides the hybrid image, built from the Debian test
//! base with the marker element (tests/fixtures/specs/minimal.yaml):
//!
//! * `--format ramdisk`: NAME.kernel + NAME.initramfs, built twice with one
//!   SOURCE_DATE_EPOCH to prove the bytes are reproducible, then booted by
//!   direct kernel boot (no disk attached) to the marker, which reports a
//!   root that is the kernel's rootfs;
//! * `--format disk` to a .qcow2: `qemu-img check` finds nothing, it boots
//!   as a virtio disk under UEFI; converted to raw, `sgdisk -v` finds
//!   nothing, and the raw copy enlarged by 1 GiB boots under BIOS with a
//!   root file system that grew by that much on its first boot.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;

const EPOCH: &str = "1700000000";
const MARKER: &str = "UNDERCLOUD-LIVE-MARKER-OK";

fn build(server: &Server, format: &str, out: &Path, cache: &Path, work: &Path) -> f64 {
    let t = Instant::now();
    let spec = repo().join("tests/fixtures/specs/minimal.yaml");
    let o = run(build_command(&spec, server, out, cache, work)
        .args(["--format", format])
        .env("SOURCE_DATE_EPOCH", EPOCH));
    assert!(o.status.success(), "{format} build failed");
    assert!(!work.exists(), "work folder {} left behind", work.display());
    assert!(mounts_under(work).is_empty());
    t.elapsed().as_secs_f64()
}

/// Boots with `args` until the marker; returns the marker's line.
fn boot_to_marker(args: &[&str], log: &Path, what: &str) -> (String, f64) {
    let t = Instant::now();
    let mut cmd = bin();
    cmd.arg("boot")
        .args(args)
        .args(["--expect", MARKER, "--timeout", "420", "--memory", "2048"])
        .args(["--accel", "tcg", "--quiet", "--log"])
        .arg(log);
    let o = run(&mut cmd);
    let console = String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
    assert!(
        o.status.success(),
        "{what} did not reach the marker; console:\n{console}"
    );
    let line = console
        .lines()
        .find(|l| l.contains(MARKER))
        .unwrap_or_default()
        .to_string();
    println!(
        "{what}: marker after {:.0} s: {line}",
        t.elapsed().as_secs_f64()
    );
    (line, t.elapsed().as_secs_f64())
}

/// `rootsize=N` (MiB) from the marker's line.
fn root_mib(line: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("rootsize="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rootsize= in the marker line: {line}"))
}

#[test]
#[ignore = "needs root and QEMU: builds and boots the ramdisk and disk outputs (make test runs it)"]
fn ramdisk_is_reproducible_and_boots_by_direct_kernel_boot() {
    let base = test_base();
    let server = serve(&base, Mode::Normal);
    let dir = scratch("outputs-ramdisk");
    // The build cache every test shares: the second build takes its
    // package layer from it (and the first may too), and must still write
    // the same bytes.
    let cache = cache_root();
    let (a, b) = (dir.join("a/minimal"), dir.join("b/minimal"));
    let secs = build(&server, "ramdisk", &a, &cache, &dir.join("work-a"));
    let kernel = dir.join("a/minimal.kernel");
    let initramfs = dir.join("a/minimal.initramfs");
    assert!(kernel.is_file() && initramfs.is_file());
    let size = std::fs::metadata(&initramfs).unwrap().len();
    println!("ramdisk build: {secs:.0} s, initramfs {} MiB", size >> 20);
    // The kernel must be able to unpack it: a zstd frame holding a newc cpio
    // with /init.
    let head = std::fs::read(&initramfs).unwrap()[..4].to_vec();
    assert_eq!(head, [0x28, 0xb5, 0x2f, 0xfd], "not a zstd frame");
    let listing = tool(Command::new("sh").arg("-c").arg(format!(
        "zstd -dc '{}' | cpio -it --quiet",
        initramfs.display()
    )));
    assert!(listing.lines().any(|l| l == "init"), "no /init in the cpio");
    assert!(listing.lines().any(|l| l == "etc/undercloud-live-marker"));
    let inspect = tool(bin().arg("inspect").arg(&initramfs));
    assert!(inspect.contains("zstd"), "inspect: {inspect}");

    build(&server, "ramdisk", &b, &cache, &dir.join("work-b"));
    for f in ["minimal.kernel", "minimal.initramfs"] {
        assert_eq!(
            sha256_file(&dir.join("a").join(f)),
            sha256_file(&dir.join("b").join(f)),
            "{f} differs between two builds with one SOURCE_DATE_EPOCH"
        );
    }

    let (line, _) = boot_to_marker(
        &[kernel.to_str().unwrap()],
        &dir.join("console.log"),
        "ramdisk (direct kernel boot)",
    );
    // The root is the kernel's own rootfs, not a disk or a live overlay.
    assert!(
        line.contains("rootfs=rootfs") || line.contains("rootfs=tmpfs"),
        "the ramdisk's root is not the unpacked initramfs: {line}"
    );
}

#[test]
#[ignore = "needs root and QEMU: builds and boots the ramdisk and disk outputs (make test runs it)"]
fn disk_image_boots_under_uefi_and_bios_and_grows() {
    let dir = scratch("outputs-disk");
    // The same build the provisioning test deploys (tests/common): made
    // once for both; booted here from a copy.
    let qcow2 = dir.join("minimal.qcow2");
    copy_sparse(&deploy_disk_image(), &qcow2);
    println!(
        "disk image: qcow2 {} MiB",
        std::fs::metadata(&qcow2).unwrap().len() >> 20
    );
    tool(Command::new("qemu-img").arg("check").arg(&qcow2));
    let info = tool(Command::new("qemu-img").args(["info"]).arg(&qcow2));
    assert!(info.contains("file format: qcow2"), "{info}");

    let raw = dir.join("minimal.raw");
    tool(
        Command::new("qemu-img")
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&qcow2)
            .arg(&raw),
    );
    let verify = tool(Command::new("sgdisk").arg("-v").arg(&raw));
    assert!(verify.contains("No problems found"), "sgdisk -v: {verify}");
    let table = tool(Command::new("sgdisk").arg("-p").arg(&raw));
    for code in ["EF00", "EF02", "8304"] {
        assert!(table.contains(code), "no {code} partition:\n{table}");
    }

    let (uefi, _) = boot_to_marker(
        &[
            qcow2.to_str().unwrap(),
            "--as",
            "disk",
            "--firmware",
            "uefi",
        ],
        &dir.join("uefi.log"),
        "disk image (qcow2) under UEFI",
    );
    assert!(
        uefi.contains("rootfs=ext4") && uefi.contains("fw=uefi"),
        "{uefi}"
    );

    // The raw copy, 1 GiB larger, as if written to a bigger disk.
    let len = std::fs::metadata(&raw).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    f.set_len(len + (1 << 30)).unwrap();
    drop(f);
    let (bios, _) = boot_to_marker(
        &[raw.to_str().unwrap(), "--as", "disk", "--firmware", "bios"],
        &dir.join("bios.log"),
        "disk image (raw, 1 GiB larger) under BIOS",
    );
    assert!(
        bios.contains("rootfs=ext4") && bios.contains("fw=bios"),
        "{bios}"
    );
    let (small, big) = (root_mib(&uefi), root_mib(&bios));
    println!("root file system: {small} MiB on the image's size, {big} MiB 1 GiB larger");
    assert!(
        (990..=1034).contains(&(big as i64 - small as i64)),
        "the root did not grow by 1 GiB: {small} MiB -> {big} MiB"
    );
}
