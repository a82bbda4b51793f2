//! The media checksum (isomd5sum format) against the real checkisomd5,
//! `verify` and `inspect` on a small hybrid image with a persistence
//! partition, and a root image over 4 GiB (ISO level 3, multi-extent)
//! read back byte-exact by xorriso.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, have, tool_path};
use sha2::{Digest, Sha256};
use undercloud_live::image::{write_hybrid, HybridSpec, IsoSource, VolumeLabel};

const EPOCH: i64 = 1_700_000_000;

fn small_esp(path: &Path) {
    let mut f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(4 << 20).unwrap();
    fatfs::format_volume(&mut f, fatfs::FormatVolumeOptions::new()).unwrap();
    let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
    let d = fs.root_dir().create_dir("EFI").unwrap();
    let d = d.create_dir("BOOT").unwrap();
    let mut x = d.create_file("BOOTX64.EFI").unwrap();
    std::io::Write::write_all(&mut x, b"MZ not really a loader").unwrap();
}

/// A small image: ESP, a 3 MiB "root", and optionally a persistence file.
fn image(dir: &Path, persistence: Option<PathBuf>, md5: bool) -> PathBuf {
    let esp = dir.join("efiboot.img");
    small_esp(&esp);
    let root = dir.join("root.img");
    let mut data = vec![0u8; 3 << 20];
    data[..4].copy_from_slice(b"hsqs");
    for (i, b) in data.iter_mut().enumerate().skip(4) {
        *b = (i * 7 % 251) as u8;
    }
    fs::write(&root, data).unwrap();
    let out = dir.join("img.iso");
    write_hybrid(
        &HybridSpec {
            volume_label: VolumeLabel::new("UCL-MEDIA").unwrap(),
            epoch: EPOCH,
            seed: "media-test".into(),
            files: vec![
                IsoSource {
                    iso_path: "images/efiboot.img".into(),
                    source: esp,
                },
                IsoSource {
                    iso_path: "LiveOS/squashfs.img".into(),
                    source: root,
                },
            ],
            esp: "images/efiboot.img".into(),
            root: Some("LiveOS/squashfs.img".into()),
            bios_boot: None,
            mbr_code: None,
            persistence,
            implant_md5: md5,
        },
        &out,
    )
    .unwrap();
    out
}

fn flip(path: &Path, at: u64) {
    let f = File::options().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x01], at).unwrap();
}

#[test]
fn media_checksum_is_checkisomd5_compatible_and_verify_names_the_region() {
    let t = tempfile::tempdir().unwrap();
    let img = image(t.path(), None, true);

    if have("checkisomd5") {
        let o = Command::new("checkisomd5").arg(&img).output().unwrap();
        assert!(
            o.status.success(),
            "checkisomd5 rejects our checksum: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        eprintln!("checkisomd5 not installed (package isomd5sum): compatibility not checked");
    }
    let o = bin().arg("verify").arg(&img).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains("media checksum OK"),
        "{text}"
    );

    // One flipped byte inside the root partition: verify fails and says where.
    let root_off = {
        let o = bin()
            .args(["inspect", "--json"])
            .arg(&img)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["partitions"][1]["offset"].as_u64().unwrap()
    };
    let at = root_off + (1 << 20) + 123;
    flip(&img, at);
    let o = bin().arg("verify").arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "verify passed a damaged image");
    assert!(err.contains("media check FAILED"), "{err}");
    assert!(err.contains("GPT partition 2 (root"), "{err}");
    let range = err
        .split("bytes ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap();
    let (a, b) = range.split_once("..").unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(a <= at && at < b, "{at} outside the named range {a}..{b}");
    if have("checkisomd5") {
        let o = Command::new("checkisomd5").arg(&img).output().unwrap();
        assert!(!o.status.success(), "checkisomd5 passed a damaged image");
    }
}

#[test]
fn persistence_partition_lies_after_the_checked_volume() {
    require!(
        have("mkfs.ext4") && have("debugfs"),
        "e2fsprogs not installed"
    );
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("persist.img");
    undercloud_live::fs::ext4::make_persistence(
        &p,
        32 << 20,
        "UCL-MEDIA-PERSIST".get(..16).unwrap(),
        "2c4f7e8a-1b3d-4e5f-8a9b-0c1d2e3f4a5b",
        EPOCH,
    )
    .unwrap();
    let img = image(t.path(), Some(p), true);
    let o = bin()
        .args(["inspect", "--json"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = v["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 3, "{v}");
    assert_eq!(parts[2]["filesystem"], "ext4");
    assert_eq!(parts[2]["label"], "UCL-MEDIA-PERSIS");
    assert_eq!(parts[2]["type_name"], "Linux filesystem");
    let volume = v["volume"]["volume_bytes"].as_u64().unwrap();
    assert!(parts[2]["offset"].as_u64().unwrap() >= volume);
    assert!(v["media_checksum"]["md5"].is_string());
    assert_eq!(v["esp_files"][0]["path"], "EFI/BOOT/BOOTX64.EFI");

    // Writing to the persistence partition leaves the medium "good".
    flip(&img, parts[2]["offset"].as_u64().unwrap() + (8 << 20));
    let o = bin().arg("verify").arg(&img).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    if have("sgdisk") {
        let sgdisk = tool_path("sgdisk").unwrap();
        let o = Command::new(sgdisk).arg("-v").arg(&img).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("No problems found"), "{text}");
    }
    let o = bin().arg("inspect").arg(&img).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("3 persistence"), "{text}");
    assert!(text.contains("media checksum: MD5"), "{text}");
}

fn sha256_of(mut r: impl Read) -> String {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// 4.5 GiB, sparse: marks at the start, around the 4 GiB extent boundary
/// (0xFFFFF800) and at the end, so a misplaced or dropped extent changes
/// the hash. The image keeps the holes (sparse copy), and xorriso extracts
/// sparse, so this costs little disk.
#[test]
fn root_over_4_gib_reads_back_byte_exact_with_xorriso() {
    require!(have("xorriso"), "xorriso not installed");
    let t = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let big = t.path().join("big.img");
    let size: u64 = 4608 << 20;
    {
        let f = File::create(&big).unwrap();
        f.set_len(size).unwrap();
        for (i, at) in [0u64, 0xFFFF_F800 - 4096, 0xFFFF_F800, 1 << 32, size - 4096]
            .into_iter()
            .enumerate()
        {
            let mark: Vec<u8> = (0..4096).map(|j| (j as u8) ^ (i as u8 * 37)).collect();
            f.write_all_at(&mark, at).unwrap();
        }
    }
    let want = sha256_of(File::open(&big).unwrap());
    let esp = t.path().join("efiboot.img");
    small_esp(&esp);
    let img = t.path().join("big.iso");
    let started = std::time::Instant::now();
    write_hybrid(
        &HybridSpec {
            volume_label: VolumeLabel::new("UCL-BIG").unwrap(),
            epoch: EPOCH,
            seed: "big".into(),
            files: vec![
                IsoSource {
                    iso_path: "images/efiboot.img".into(),
                    source: esp,
                },
                IsoSource {
                    iso_path: "LiveOS/squashfs.img".into(),
                    source: big.clone(),
                },
            ],
            esp: "images/efiboot.img".into(),
            root: Some("LiveOS/squashfs.img".into()),
            bios_boot: None,
            mbr_code: None,
            persistence: None,
            implant_md5: false,
        },
        &img,
    )
    .unwrap();
    eprintln!(
        "4.5 GiB image written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    fs::remove_file(&big).unwrap();

    let out = t.path().join("extracted.img");
    let o = Command::new("xorriso")
        .args(["-osirrox", "on:sparse=1m", "-indev"])
        .arg(&img)
        .args(["-extract", "/LiveOS/squashfs.img"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "xorriso -extract: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(fs::metadata(&out).unwrap().len(), size);
    assert_eq!(
        sha256_of(File::open(&out).unwrap()),
        want,
        "extracted bytes differ"
    );
}
