//! `undercloud-live write` and `devices` against real block devices: loop
//! devices over sparse files (the tests run as root). Every loop device is
//! detached and every mount undone by a guard, even when a test fails.
//!
//! Backing files live in /dev/shm when it exists, so the tests move memory
//! rather than the shared disk.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, have};

const MIB: u64 = 1 << 20;

/// A folder for one test's files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        };
        let d = base.join(format!("ucl-write-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A loop device over a sparse file; detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(backing: &Path, size: u64, flags: &[&str]) -> Loop {
        let f = File::create(backing).unwrap();
        f.set_len(size).unwrap();
        drop(f);
        Loop::over(backing, flags)
    }

    fn over(backing: &Path, flags: &[&str]) -> Loop {
        let out = Command::new("losetup")
            .args(flags)
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .expect("running losetup (the write tests need root)");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Loop { dev }
    }

    fn name(&self) -> String {
        self.dev.display().to_string()
    }

    fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let f = File::open(&self.dev).unwrap();
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).unwrap();
        buf
    }

    fn fill(&self, offset: u64, len: usize, byte: u8) {
        let f = fs::OpenOptions::new().write(true).open(&self.dev).unwrap();
        f.write_all_at(&vec![byte; len], offset).unwrap();
        f.sync_all().unwrap();
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A mount, undone on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(dev: &Path, at: &Path) -> Mounted {
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .arg(dev)
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mounting {}", dev.display());
        Mounted(at.to_path_buf())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Swap on a device, off again on drop. None where swapon is not
/// possible (no swap support, or a container that forbids it).
struct SwapOn(PathBuf);

impl SwapOn {
    fn new(dev: &Path) -> Option<SwapOn> {
        let out = Command::new("swapon").arg(dev).output().ok()?;
        if !out.status.success() {
            eprintln!(
                "swapon {}: {}; swap case skipped",
                dev.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(SwapOn(dev.to_path_buf()))
    }
}

impl Drop for SwapOn {
    fn drop(&mut self) {
        let _ = Command::new("swapoff").arg(&self.0).status();
    }
}

/// Deterministic bytes that do not compress (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Bytes that compress a good deal but not to nothing: noise blocks
/// between repeated text.
fn mixed(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut i = 0u64;
    while out.len() < len {
        if i % 4 == 0 {
            out.extend_from_slice(&noise(4096, i));
        } else {
            for _ in 0..64 {
                out.extend_from_slice(format!("block {i:016} of the image.......\n").as_bytes());
            }
        }
        i += 1;
    }
    out.truncate(len);
    out
}

fn write_cmd(args: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.arg("write").args(args).stdin(Stdio::null());
    let out = cmd.output().expect("running undercloud-live");
    eprintln!(
        "$ write {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("JSON summary on stdout")
}

fn device<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == name)
        .unwrap_or_else(|| panic!("{name} not in the summary: {report}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
#[ignore = "needs root: writes to loop devices (make test runs it)"]
fn writes_and_verifies_an_unaligned_image() {
    let dir = Scratch::new("plain");
    // Not a multiple of the sector size: the tail goes through the
    // buffered path.
    let data = noise((40 * MIB + 1234) as usize, 7);
    let img = dir.path("image.iso");
    fs::write(&img, &data).unwrap();
    // Partition scanning on, as on a real stick: the partition table is
    // re-read at the end.
    let lo = Loop::new(&dir.path("stick"), 64 * MIB, &["-P"]);
    // Old contents at both ends, as a used stick has.
    lo.fill(0, MIB as usize, 0xAA);
    lo.fill(63 * MIB, MIB as usize, 0xBB);
    let t = Instant::now();
    let out = write_cmd(&[s(&img), &lo.name(), "--yes", "--allow-fixed", "--json"]);
    eprintln!("write+verify took {:?}", t.elapsed());
    assert!(out.status.success());
    let report = json(&out);
    let d = device(&report, &lo.name());
    assert_eq!(d["ok"], true);
    assert_eq!(d["verified"], true);
    assert_eq!(d["bytes_written"], data.len() as u64);
    assert_eq!(d["direct_io"], true, "loop devices take O_DIRECT");
    assert_eq!(d["notes"], serde_json::json!([]), "partition table re-read");
    assert_eq!(lo.read(0, data.len()), data);
    // The old backup-GPT area at the end is cleared.
    assert!(lo.read(63 * MIB, MIB as usize).iter().all(|&b| b == 0));
    // The image's digest is the one sha256sum computes.
    let sha = Command::new("sha256sum").arg(&img).output().unwrap();
    let sha = String::from_utf8_lossy(&sha.stdout);
    assert_eq!(
        report["sha256"].as_str().unwrap(),
        sha.split_whitespace().next().unwrap()
    );
}

#[test]
#[ignore = "needs root: writes to loop devices (make test runs it)"]
fn compressed_images_are_streamed_and_verified() {
    assert!(have("xz") && have("zstd"), "xz and zstd are needed");
    let dir = Scratch::new("compressed");
    let data = mixed((24 * MIB + 777) as usize);
    let raw = dir.path("image.raw");
    fs::write(&raw, &data).unwrap();
    // Several xz blocks (threaded decoding) and a zstd frame with its size.
    let ok = Command::new("xz")
        .args(["-0", "-T2", "--block-size=4MiB", "-k"])
        .arg(&raw)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let ok = Command::new("zstd")
        .args(["-q", "-1", "-k"])
        .arg(&raw)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let a = Loop::new(&dir.path("a"), 32 * MIB, &[]);
    let b = Loop::new(&dir.path("b"), 32 * MIB, &[]);
    for (img, lo) in [("image.raw.xz", &a), ("image.raw.zst", &b)] {
        let img = dir.path(img);
        let out = write_cmd(&[s(&img), &lo.name(), "--yes", "--allow-fixed", "--json"]);
        assert!(out.status.success());
        let report = json(&out);
        // The size came from the xz index / zstd frame header.
        assert_eq!(report["size"], data.len() as u64, "{report}");
        assert_eq!(device(&report, &lo.name())["verified"], true);
        assert_eq!(lo.read(0, data.len()), data);
    }
    // A device too small for the announced size is refused before writing.
    let small = Loop::new(&dir.path("small"), 16 * MIB, &[]);
    small.fill(0, 4096, 0xCC);
    let out = write_cmd(&[
        s(&dir.path("image.raw.xz")),
        &small.name(),
        "--yes",
        "--allow-fixed",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: too small: 16.0 MiB for a 24.0 MiB image",
            small.name()
        )),
        "{err}"
    );
    assert_eq!(small.read(0, 4096), vec![0xCC; 4096], "nothing written");
}

#[test]
#[ignore = "needs root: writes to loop devices (make test runs it)"]
fn one_failing_device_does_not_stop_the_others() {
    let dir = Scratch::new("fanout");
    // gzip: the size is unknown until the end, so the small stick fills up
    // while the others are being written.
    let data = noise((48 * MIB) as usize, 11);
    let raw = dir.path("image.img");
    fs::write(&raw, &data).unwrap();
    let ok = Command::new("gzip")
        .args(["-1", "-k"])
        .arg(&raw)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let gz = dir.path("image.img.gz");
    let good = Loop::new(&dir.path("good"), 64 * MIB, &[]);
    let small = Loop::new(&dir.path("small"), 32 * MIB, &[]);
    small.fill(0, MIB as usize, 0xAA);
    let out = write_cmd(&[
        s(&gz),
        &good.name(),
        &small.name(),
        "--yes",
        "--allow-fixed",
        "--json",
    ]);
    assert!(!out.status.success());
    let report = json(&out);
    let g = device(&report, &good.name());
    assert_eq!(
        (g["ok"].clone(), g["verified"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(good.read(0, data.len()), data);
    let f = device(&report, &small.name());
    assert_eq!(f["ok"], false);
    let why = f["error"].as_str().unwrap();
    assert_eq!(
        why,
        format!(
            "{}: device full after {} bytes (the image is larger)",
            small.name(),
            32 * MIB
        )
    );
    assert_eq!(f["first_mib_zeroed"], true);
    assert!(small.read(0, MIB as usize).iter().all(|&b| b == 0));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("error: 1 of 2 targets failed: {}", small.name())),
        "{err}"
    );

    // A read-only device and a too-small one are skipped up front; the
    // good one is still written.
    let ro = Loop::new(&dir.path("ro"), 64 * MIB, &["-r"]);
    let tiny = Loop::new(&dir.path("tiny"), 8 * MIB, &[]);
    tiny.fill(0, 4096, 0xCC);
    let good2 = Loop::new(&dir.path("good2"), 64 * MIB, &[]);
    let out = write_cmd(&[
        s(&raw),
        &ro.name(),
        &good2.name(),
        &tiny.name(),
        "--yes",
        "--allow-fixed",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{}  FAILED: read-only", ro.name())),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{}  FAILED: too small: 8.0 MiB for a 48.0 MiB image",
            tiny.name()
        )),
        "{text}"
    );
    assert!(text.contains(&format!("{}  ok", good2.name())), "{text}");
    assert_eq!(good2.read(0, data.len()), data);
    assert_eq!(tiny.read(0, 4096), vec![0xCC; 4096], "skipped, not written");
    let err = stderr(&out);
    assert!(err.contains("skipped (reported as failed)"), "{err}");
    assert!(err.contains("error: 2 of 3 targets failed"), "{err}");
}

#[test]
#[ignore = "needs root: writes to loop devices (make test runs it)"]
fn busy_devices_are_refused() {
    assert!(
        have("mkfs.ext4") && have("sgdisk") && have("mkswap"),
        "mkfs.ext4, mkswap and sgdisk are needed"
    );
    let dir = Scratch::new("busy");
    let img = dir.path("image.iso");
    fs::write(&img, noise(MIB as usize, 3)).unwrap();

    // A file system on the whole device, mounted.
    let whole = Loop::new(&dir.path("whole"), 32 * MIB, &[]);
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&whole.dev)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mnt = dir.path("mnt-whole");
    let m1 = Mounted::new(&whole.dev, &mnt);
    let out = write_cmd(&[s(&img), &whole.name(), "--yes", "--allow-fixed"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: in use: {} is mounted at {}",
            whole.name(),
            whole.name(),
            mnt.display()
        )),
        "{err}"
    );
    drop(m1);

    // The whole device as swap.
    let swap = Loop::new(&dir.path("swap"), 32 * MIB, &[]);
    let ok = Command::new("mkswap")
        .arg(&swap.dev)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
    if let Some(_on) = SwapOn::new(&swap.dev) {
        let out = write_cmd(&[s(&img), &swap.name(), "--yes", "--allow-fixed"]);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{}: in use: {} is in use as swap ({})",
                swap.name(),
                swap.name(),
                swap.name()
            )),
            "{err}"
        );
    }

    // A mounted partition (partition scanning on, GPT with one partition).
    let parted = Loop::new(&dir.path("parted"), 32 * MIB, &["-P"]);
    let ok = Command::new("sgdisk")
        .args(["-n", "1:2048:0"])
        .arg(&parted.dev)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
    let _ = Command::new("blockdev")
        .arg("--rereadpt")
        .arg(&parted.dev)
        .status();
    let part = PathBuf::from(format!("{}p1", parted.name()));
    let t = Instant::now();
    while !part.exists() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !part.exists() {
        // Some kernels (this project's development VMs) are built without
        // any partition table support; sysfs then shows no partitions and
        // the unit tests over a fake sysfs carry this case.
        eprintln!(
            "no {} appeared: kernel without GPT support, partition case skipped",
            part.display()
        );
        return;
    }
    let ok = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&part)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let mnt = dir.path("mnt-part");
    let m2 = Mounted::new(&part, &mnt);
    let out = write_cmd(&[s(&img), &parted.name(), "--yes", "--allow-fixed"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: in use: {} is mounted at {}",
            parted.name(),
            part.display(),
            mnt.display()
        )),
        "{err}"
    );
    // Naming the partition instead of the disk is refused too.
    let out = write_cmd(&[s(&img), s(&part), "--yes", "--allow-fixed"]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: is a partition of {}; name the whole disk",
            part.display(),
            parted.name()
        )),
        "{err}"
    );
    drop(m2);
}

#[test]
#[ignore = "needs root: writes to loop devices (make test runs it)"]
fn refusals_name_the_device() {
    let dir = Scratch::new("refusals");
    let img = dir.path("image.iso");
    fs::write(&img, noise(2 * MIB as usize, 5)).unwrap();
    let lo = Loop::new(&dir.path("stick"), 8 * MIB, &[]);
    lo.fill(0, 4096, 0xCC);
    let plain = dir.path("plain-file");
    fs::write(&plain, b"keep me").unwrap();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![s(&plain).into(), "--yes".into()],
            format!("{}: not a block device (pass --to-file", plain.display()),
        ),
        (
            vec![lo.name(), "--yes".into()],
            format!(
                "{}: not a removable or USB disk (loop); pass --allow-fixed",
                lo.name()
            ),
        ),
        (
            // No terminal and no --yes: nobody to ask, so no.
            vec![lo.name(), "--allow-fixed".into()],
            "refusing to write without confirmation: no terminal to ask on (pass --yes)".into(),
        ),
        (
            vec![lo.name(), lo.name(), "--yes".into(), "--allow-fixed".into()],
            format!(
                "{}: the same device as {}, named twice",
                lo.name(),
                lo.name()
            ),
        ),
        (
            vec!["/dev/null".into(), "--yes".into()],
            "/dev/null: not a block device".into(),
        ),
        (
            vec![s(&dir.path("missing")).into(), "--yes".into()],
            format!(
                "{}: cannot use it as a target",
                dir.path("missing").display()
            ),
        ),
        (
            vec![s(&img).into(), "--yes".into(), "--to-file".into()],
            format!("{}: is the image itself", img.display()),
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec![s(&img).to_string()];
        all.extend(args);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = write_cmd(&refs);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    }
    assert_eq!(lo.read(0, 4096), vec![0xCC; 4096], "nothing was written");
    assert_eq!(fs::read(&plain).unwrap(), b"keep me");

    // A loop device over the image itself.
    let over = Loop::over(&img, &[]);
    let out = write_cmd(&[s(&img), &over.name(), "--yes", "--allow-fixed"]);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: is a loop device over the image", over.name())),
        "{err}"
    );
}

#[test]
fn to_file_writes_regular_files() {
    let dir = Scratch::new("tofile");
    let data = noise((3 * MIB + 100) as usize, 9);
    let img = dir.path("image.iso");
    fs::write(&img, &data).unwrap();
    let new = dir.path("copy.iso");
    let old = dir.path("old.iso");
    fs::write(&old, vec![0x55u8; 8 * MIB as usize]).unwrap();
    let out = write_cmd(&[s(&img), s(&new), s(&old), "--yes", "--to-file", "--json"]);
    assert!(out.status.success());
    let report = json(&out);
    for f in [&new, &old] {
        assert_eq!(device(&report, s(f))["verified"], true);
        // A longer file that was there before now ends where the image does.
        assert_eq!(fs::read(f).unwrap(), data, "{}", f.display());
    }
    // A link to a file: the file gets the image, the link stays a link.
    let real = dir.path("real.iso");
    fs::write(&real, b"old").unwrap();
    let link = dir.path("link.iso");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = write_cmd(&[s(&img), s(&link), "--yes", "--to-file"]);
    assert!(out.status.success());
    assert!(fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(fs::read(&real).unwrap(), data);
    // Written under a temporary name, renamed when verified: nothing else.
    let mut names: Vec<String> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["copy.iso", "image.iso", "link.iso", "old.iso", "real.iso"]
    );
}

/// A tmpfs of `size`, unmounted on drop.
fn small_fs(dir: &Scratch, size: &str) -> Mounted {
    let at = dir.path("small");
    fs::create_dir(&at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(&at)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a tmpfs on {}", at.display());
    Mounted(at)
}

#[test]
#[ignore = "needs root: writes to loop devices (make test runs it)"]
fn to_file_on_a_full_disk_loses_nothing() {
    let dir = Scratch::new("tofile-full");
    let data = noise((8 * MIB) as usize, 3);
    let img = dir.path("image.iso");
    fs::write(&img, &data).unwrap();
    let small = small_fs(&dir, "6m");
    // The size is known: refused before a byte is written.
    let new = small.0.join("new.iso");
    let out = write_cmd(&[s(&img), s(&new), "--yes", "--to-file"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: not enough room: a 8.0 MiB image, 6.0 MiB free on {}",
            new.display(),
            small.0.display()
        )),
        "{err}"
    );
    assert_eq!(fs::read_dir(&small.0).unwrap().count(), 0, "nothing made");
    // gzip: the size is unknown until the end, so the disk fills mid-way;
    // the old file is as it was and no partial file is left.
    let ok = Command::new("gzip")
        .args(["-1", "-k"])
        .arg(&img)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let old = small.0.join("old.iso");
    fs::write(&old, vec![0x5Au8; MIB as usize]).unwrap();
    let out = write_cmd(&[
        s(&dir.path("image.iso.gz")),
        s(&old),
        "--yes",
        "--to-file",
        "--json",
    ]);
    assert!(!out.status.success());
    let report = json(&out);
    let f = device(&report, s(&old));
    assert!(
        f["error"].as_str().unwrap().contains("full after"),
        "{report}"
    );
    assert_eq!(
        f["notes"][0],
        format!("nothing written: {} is unchanged", old.display())
    );
    assert_eq!(fs::read(&old).unwrap(), vec![0x5Au8; MIB as usize]);
    let names: Vec<_> = fs::read_dir(&small.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["old.iso"]);
}

#[test]
#[ignore = "needs root: writes to loop devices (make test runs it)"]
fn devices_lists_loop_devices_with_all() {
    let dir = Scratch::new("devices");
    let lo = Loop::new(&dir.path("stick"), 24 * MIB, &[]);
    let list = |all: bool| -> serde_json::Value {
        let mut cmd = bin();
        cmd.args(["devices", "--json"]);
        if all {
            cmd.arg("--all");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let all = list(true);
    let mine = all
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == lo.name().as_str())
        .unwrap_or_else(|| panic!("{} missing from {all}", lo.name()));
    assert_eq!(mine["size"], 24 * MIB);
    assert_eq!(mine["transport"], "loop");
    assert_eq!(mine["candidate"], false);
    assert_eq!(
        mine["backing_file"].as_str().unwrap(),
        dir.path("stick").display().to_string()
    );
    // The disk under / is marked, when / is on a disk at all.
    let system: Vec<_> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["system"] == true)
        .collect();
    assert!(system.len() <= 2, "{all}");
    // Without --all: loop devices are not candidates.
    let some = list(false);
    assert!(!some.to_string().contains(&lo.name()), "{some}");
    // The table names it too.
    let out = bin().args(["devices", "--all"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&lo.name()) && l.contains("24.0 MiB")),
        "{table}"
    );
}

#[test]
#[ignore = "needs root: writes to loop devices (make test runs it)"]
fn sigint_mid_write_leaves_the_first_mib_zero() {
    let dir = Scratch::new("sigint");
    // Large and sparse: slow enough to interrupt, cheap to make.
    let size = 8 << 30;
    let img = dir.path("big.img");
    {
        let mut f = File::create(&img).unwrap();
        f.write_all(&noise(MIB as usize, 1)).unwrap();
        f.seek(SeekFrom::Start(MIB + 4096)).unwrap();
        f.write_all(b"MARKER-AFTER-THE-FIRST-MIB").unwrap();
        f.set_len(size).unwrap();
    }
    let lo = Loop::new(&dir.path("stick"), size, &[]);
    lo.fill(0, MIB as usize, 0xAA);
    let mut child = bin()
        .args(["write", s(&img), &lo.name(), "--yes", "--allow-fixed"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Plain progress lines (stderr is not a terminal): wait for the first
    // percentage, then interrupt.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        match lines.next() {
            Some(Ok(l)) => {
                let progress = l.contains(" write: ") && l.ends_with('%');
                seen.push(l);
                if progress {
                    break;
                }
            }
            _ => panic!("no progress before the end:\n{}", seen.join("\n")),
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t = Instant::now();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let err = rest.join("\n");
    eprintln!("{}\n{err}\n{stdout}", seen.join("\n"));
    assert!(!status.success());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        err.contains(&format!(
            "error: interrupted; the first MiB of {} is zeroed, so a half-written stick does not boot",
            lo.name()
        )),
        "{err}"
    );
    assert!(
        stdout.contains("FAILED: interrupted (first MiB zeroed"),
        "{stdout}"
    );
    assert!(
        lo.read(0, MIB as usize).iter().all(|&b| b == 0),
        "first MiB not zero"
    );
    // It did stop mid-write: data after the first MiB is there.
    assert_eq!(lo.read(MIB + 4096, 26), b"MARKER-AFTER-THE-FIRST-MIB");
}
