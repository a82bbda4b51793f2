//! End to end: serve the Debian test base over loopback HTTP, build the
//! minimal marker image, check it with independent tools, boot it in QEMU
//! from a CD and from a USB stick, and build it again to prove the bytes are
//! reproducible.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::*;
use sha2::{Digest, Sha256};

const EPOCH: &str = "1700000000";
const MARKER: &str = "UNDERCLOUD-LIVE-MARKER-OK";

fn build(server: &Server, cache: &Path, out: &Path, work: &Path) {
    let t = Instant::now();
    let o = run(bin()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .arg("build")
        .arg(repo().join("tests/specs/minimal.yaml"))
        .arg("--output")
        .arg(out)
        .arg("--base")
        .arg(server.url("rootfs.tar.xz"))
        .arg("--base-checksum-url")
        .arg(server.url("SHA256SUMS"))
        .arg("--cache-dir")
        .arg(cache)
        .arg("--workdir")
        .arg(work));
    assert!(o.status.success(), "build failed");
    assert!(out.is_file());
    assert!(!work.exists(), "work folder {} left behind", work.display());
    assert!(mounts_under(work).is_empty());
    println!(
        "build of {}: {:.0} s, {} MiB",
        out.display(),
        t.elapsed().as_secs_f64(),
        std::fs::metadata(out).unwrap().len() >> 20
    );
}

fn sha256(p: &Path) -> String {
    // sha2 0.11's hashers do not implement io::Write: feed them by hand.
    let mut f = std::fs::File::open(p).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn tool(cmd: &mut Command) -> String {
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

/// Independent readers agree the image is a valid GPT disk, an ISO9660
/// volume with a UEFI El Torito entry, and that its ESP is a clean FAT.
fn check_layout(img: &Path, scratch: &Path) {
    let v = tool(Command::new("sgdisk").arg("-v").arg(img));
    assert!(v.contains("No problems found"), "sgdisk -v:\n{v}");

    let report = tool(
        Command::new("xorriso")
            .args(["-indev"])
            .arg(img)
            .args(["-report_el_torito", "plain"]),
    );
    assert!(
        report
            .lines()
            .any(|l| l.contains("El Torito boot img") && l.contains("UEFI")),
        "no UEFI El Torito entry:\n{report}"
    );

    let info = tool(Command::new("isoinfo").arg("-d").arg("-i").arg(img));
    assert!(info.contains("Volume id: UCL-MINIMAL"), "{info}");
    let files = tool(Command::new("isoinfo").args(["-R", "-f", "-i"]).arg(img));
    for want in [
        "/LiveOS/squashfs.img",
        "/boot/vmlinuz",
        "/boot/initrd.img",
        "/EFI/BOOT/BOOTX64.EFI",
    ] {
        assert!(
            files.lines().any(|l| l == want),
            "{want} missing from the ISO tree:\n{files}"
        );
    }

    // Cut partition 1 (the ESP) out at the extent the GPT gives and fsck it.
    let p1 = tool(Command::new("sgdisk").args(["-i", "1"]).arg(img));
    assert!(
        p1.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
        "partition 1 is not an ESP:\n{p1}"
    );
    let field = |name: &str| -> u64 {
        p1.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{p1}"))
    };
    let (first, last) = (field("First sector"), field("Last sector"));
    let esp = scratch.join("esp.img");
    let data = std::fs::read(img).unwrap();
    std::fs::write(
        &esp,
        &data[(first * 512) as usize..((last + 1) * 512) as usize],
    )
    .unwrap();
    let fsck = tool(Command::new("fsck.fat").arg("-n").arg(&esp));
    assert!(!fsck.contains("differences"), "{fsck}");
    let dir = tool(
        Command::new("mdir")
            .args(["-i"])
            .arg(&esp)
            .arg("::/EFI/BOOT"),
    );
    assert!(dir.contains("BOOTX64") && dir.contains("grubx64"), "{dir}");

    // Partition 2 is the live root: exactly the squashfs bytes.
    let p2 = tool(Command::new("sgdisk").args(["-i", "2"]).arg(img));
    assert!(
        p2.contains("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        "partition 2 type:\n{p2}"
    );
    let start2 = p2
        .lines()
        .find(|l| l.starts_with("First sector"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap();
    assert_eq!(
        &data[start2 * 512..start2 * 512 + 4],
        b"hsqs",
        "partition 2 is not the squashfs"
    );
}

fn boot(img: &Path, media: &str, log: &Path) {
    let t = Instant::now();
    let o = run(bin()
        .arg("boot")
        .arg(img)
        .args(["--as", media, "--firmware", "uefi", "--expect", MARKER])
        .args(["--timeout", "420", "--memory", "2048", "--log"])
        .arg(log)
        .arg("--quiet"));
    let console = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        o.status.success(),
        "boot as {media} did not reach the marker; console:\n{console}"
    );
    // Facts the marker unit reported from inside the booted image.
    let line = console.lines().find(|l| l.contains(MARKER)).unwrap();
    assert!(
        line.contains("rootfs=overlay"),
        "live root is not the overlay: {line}"
    );
    assert!(
        line.contains("hello=Hello,_world!"),
        "package from package-installs missing: {line}"
    );
    println!(
        "boot as {media}: marker after {:.0} s",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn build_check_boot_and_rebuild_identically() {
    let base = test_base();
    let server = serve(&base, Mode::Normal);
    let dir = scratch("e2e");
    let cache = dir.join("cache");
    let a = dir.join("a.iso");
    build(&server, &cache, &a, &dir.join("work-a"));
    check_layout(&a, &dir);
    boot(&a, "cdrom", &dir.join("boot-cdrom.log"));
    boot(&a, "usb", &dir.join("boot-usb.log"));

    // Second build: the base comes from the cache, and every byte matches.
    let before = server.requests.load(std::sync::atomic::Ordering::SeqCst);
    let b = dir.join("b.iso");
    build(&server, &cache, &b, &dir.join("work-b"));
    let after = server.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        after - before <= 1,
        "the cached base was downloaded again ({} requests)",
        after - before
    );
    assert_eq!(
        sha256(&a),
        sha256(&b),
        "two builds with SOURCE_DATE_EPOCH={EPOCH} differ"
    );
}
