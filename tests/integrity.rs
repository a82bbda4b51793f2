//! `verify` checks the whole medium, not only what the media checksum
//! covers, and `inspect` reports the same damage as warnings. The damage is
//! made here from a real hybrid image with a persistence partition (the
//! product's own writer, no root, no QEMU): a copy cut at 50%, a corrupt
//! or missing backup GPT header, overlapping and reversed partition
//! entries written with consistent CRCs, as a broken tool would.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use undercloud_live::image::gpt::crc32;
use undercloud_live::image::{write_hybrid, HybridSpec, IsoSource, VolumeLabel};

const LBA: u64 = 512;

fn pseudo_random(len: usize, mut x: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A FAT ESP holding EFI/BOOT/BOOTX64.EFI.
fn make_esp(path: &Path) {
    let mut f = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap();
    f.set_len(4 << 20).unwrap();
    fatfs::format_volume(&mut f, fatfs::FormatVolumeOptions::new()).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
    let boot = fs.root_dir().create_dir("EFI").unwrap();
    let boot = boot.create_dir("BOOT").unwrap();
    boot.create_file("BOOTX64.EFI")
        .unwrap()
        .write_all(b"MZ not a loader")
        .unwrap();
}

/// A hybrid image with a media checksum and a 24 MiB persistence
/// partition after the volume, in a fresh folder named `name` (each test
/// damages its own).
fn image(name: &str) -> PathBuf {
    let dir = scratch(name);
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    make_esp(&src.join("efiboot.img"));
    fs::write(src.join("squashfs.img"), pseudo_random(2 << 20, 7)).unwrap();
    let persist = src.join("persist.img");
    File::create(&persist).unwrap().set_len(24 << 20).unwrap();
    let file = |iso: &str, host: &str| IsoSource {
        iso_path: iso.into(),
        source: src.join(host),
    };
    let spec = HybridSpec {
        volume_label: VolumeLabel::new("UCL-INTEGRITY").unwrap(),
        epoch: 1_700_000_000,
        seed: "integrity".into(),
        files: vec![
            file("images/efiboot.img", "efiboot.img"),
            file("LiveOS/squashfs.img", "squashfs.img"),
        ],
        esp: "images/efiboot.img".into(),
        root: Some("LiveOS/squashfs.img".into()),
        bios_boot: None,
        mbr_code: None,
        persistence: Some(persist),
        implant_md5: true,
    };
    let img = dir.join("live.iso");
    let report = write_hybrid(&spec, &img).unwrap();
    // The case of the report: the checked volume lies in the first half.
    assert!(report.volume_bytes <= report.size / 2, "{report:?}");
    img
}

fn verify(img: &Path) -> Output {
    run(bin().arg("verify").arg(img))
}

/// verify's one-line error; the test fails if verify passed.
fn verify_error(img: &Path) -> String {
    let o = verify(img);
    let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert!(!o.status.success(), "verify passed a damaged image");
    assert_ne!(o.status.code(), Some(0));
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

/// `inspect --json` (which must succeed) and its warnings.
fn warnings(img: &Path) -> Vec<String> {
    let o = run(bin().args(["inspect", "--json"]).arg(img));
    assert!(o.status.success(), "inspect failed on a damaged image");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["partitions"].as_array().unwrap().len(), 3, "{v}");
    v["warnings"]
        .as_array()
        .expect("a warnings array")
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Edits the partition entries of both GPT headers alike and recomputes
/// their CRCs and the headers' CRCs: a consistent, wrong table.
fn edit_entries(img: &Path, edit: impl Fn(&mut [u8])) {
    let f = File::options().read(true).write(true).open(img).unwrap();
    let last = f.metadata().unwrap().len() / LBA - 1;
    for lba in [1, last] {
        let mut h = [0u8; 92];
        f.read_exact_at(&mut h, lba * LBA).unwrap();
        let at = le64(&h, 72) * LBA;
        let mut e = vec![0u8; 128 * 128];
        f.read_exact_at(&mut e, at).unwrap();
        edit(&mut e);
        f.write_all_at(&e, at).unwrap();
        h[88..92].copy_from_slice(&crc32(&e).to_le_bytes());
        h[16..20].fill(0);
        let crc = crc32(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        f.write_all_at(&h, lba * LBA).unwrap();
    }
}

/// The first and last LBA of entry `n` (1-based).
fn range(e: &[u8], n: usize) -> (u64, u64) {
    let at = (n - 1) * 128;
    (le64(e, at + 32), le64(e, at + 40))
}

fn set_range(e: &mut [u8], n: usize, first: u64, last: u64) {
    let at = (n - 1) * 128;
    e[at + 32..at + 40].copy_from_slice(&first.to_le_bytes());
    e[at + 40..at + 48].copy_from_slice(&last.to_le_bytes());
}

#[test]
fn an_intact_image_verifies() {
    let img = image("integrity-intact");
    let o = verify(&img);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("media checksum OK"), "{out}");
    let len = fs::metadata(&img).unwrap().len();
    assert!(
        out.contains(&format!(
            "GPT OK (both headers, 3 partitions, all inside the {len} bytes)"
        )),
        "{out}"
    );
    assert_eq!(warnings(&img), Vec::<String>::new());
}

/// The reported bug: cut at 50%, the persistence partition and the
/// backup GPT are gone while the checksummed volume is whole. verify said
/// "media checksum OK".
#[test]
fn a_copy_cut_at_half_fails_verify() {
    let img = image("integrity-truncated");
    let len = fs::metadata(&img).unwrap().len();
    File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let err = verify_error(&img);
    assert!(
        err.contains(&format!(
            "live.iso: truncated: the GPT says the medium is {len} bytes, the file has {} \
             (a copy that did not finish?)",
            len / 2
        )),
        "{err}"
    );
    let w = warnings(&img);
    assert!(w[0].starts_with("truncated:"), "{w:?}");
    assert!(w.iter().any(|w| w.contains("backup GPT header")), "{w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("partition 3 (persistence") && w.contains("past the end")),
        "{w:?}"
    );
    let o = run(bin().arg("inspect").arg(&img));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("warning: truncated"),
        "{text}"
    );
}

#[test]
fn a_corrupt_or_missing_backup_header_fails_verify() {
    let img = image("integrity-backup");
    let len = fs::metadata(&img).unwrap().len();
    let last = len / LBA - 1;
    let f = File::options().read(true).write(true).open(&img).unwrap();
    // One byte of the disk GUID: the header's CRC no longer matches.
    let mut b = [0u8];
    f.read_exact_at(&mut b, last * LBA + 56).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], last * LBA + 56).unwrap();
    let err = verify_error(&img);
    assert!(
        err.contains(&format!(
            "the backup GPT header (LBA {last}) is corrupt: its CRC"
        )),
        "{err}"
    );
    assert!(warnings(&img)[0].contains("is corrupt"));

    f.write_all_at(&[0u8; 512], last * LBA).unwrap();
    let err = verify_error(&img);
    assert!(
        err.contains("is missing: there is no GPT signature"),
        "{err}"
    );
    assert!(warnings(&img)[0].contains("is missing"));
}

#[test]
fn overlapping_partitions_fail_verify() {
    let img = image("integrity-overlap");
    // The root now starts inside the ESP.
    edit_entries(&img, |e| {
        let ((_, esp_last), (_, root_last)) = (range(e, 1), range(e, 2));
        set_range(e, 2, esp_last - 7, root_last);
    });
    let err = verify_error(&img);
    assert!(
        err.contains("partition 1 (ESP") && err.contains("overlap"),
        "{err}"
    );
    assert!(warnings(&img).iter().any(|w| w.ends_with("overlap")));
}

#[test]
fn a_reversed_partition_fails_verify() {
    let img = image("integrity-reversed");
    edit_entries(&img, |e| {
        let (first, last) = range(e, 2);
        set_range(e, 2, last, first);
    });
    let err = verify_error(&img);
    assert!(
        err.contains("partition 2 (") && err.contains("is reversed"),
        "{err}"
    );
    assert!(warnings(&img).iter().any(|w| w.contains("is reversed")));
}
