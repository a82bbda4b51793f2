//! `undercloud-live install`.
//!
//! On the host, over loop devices (fast): bad targets are refused before a
//! byte is written (not a block device, the live medium itself, too small,
//! mounted), and a late failure leaves the target without a partition
//! table.
//!
//! In QEMU (slow): the install test image boots as a CD with a blank
//! virtio disk, installs itself to it unattended (config from its ESP) and
//! powers off; the disk alone then boots under UEFI and under BIOS to the
//! marker, and the installed system's fstab uses UUIDs, its kernel command
//! line has no live arguments and its machine-id differs from the live
//! session's.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use common::*;

const MIB: u64 = 1 << 20;
const MARKER: &str = "UNDERCLOUD-LIVE-MARKER-OK";

/// A loop device over a file, detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(file: &Path, size: u64) -> Loop {
        let f = fs::File::create(file).unwrap();
        f.set_len(size).unwrap();
        let o = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output()
            .expect("losetup (the install tests need root)");
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Loop {
            dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A root with what the installer checks for before touching the disk
/// (os-release, a kernel, shim and grub), but no dracut or chroot tools.
fn fake_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for (p, text) in [
        ("etc/os-release", "ID=debian\n"),
        ("boot/vmlinuz-6.1.0-test", "kernel"),
        ("usr/lib/modules/6.1.0-test/modules.dep", ""),
        ("usr/lib/shim/shimx64.efi.signed", "shim"),
        ("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed", "grub"),
    ] {
        let f = root.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, text).unwrap();
    }
    root
}

fn install(args: &[&str], root: &Path, log: &Path) -> Output {
    run(bin()
        .arg("install")
        .args(args)
        .arg("--yes")
        .arg("--source")
        .arg(root)
        .arg("--log")
        .arg(log))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a recognisable first MiB so "nothing was written" can be checked.
fn stamp(dev: &str) -> Vec<u8> {
    let f = fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(dev)
        .unwrap();
    let data: Vec<u8> = (0..MIB).map(|i| (i * 7 % 251) as u8).collect();
    f.write_all_at(&data, 0).unwrap();
    f.sync_all().unwrap();
    data
}

fn first_mib(dev: &str) -> Vec<u8> {
    let mut b = vec![0u8; MIB as usize];
    fs::File::open(dev)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    b
}

#[test]
#[ignore = "needs root and QEMU: loop devices, builds and installs the test image (make test runs it)"]
fn bad_targets_are_refused_and_a_failure_wipes_the_table() {
    let dir = scratch("install-host");
    let root = fake_root(&dir);
    let log = dir.join("install.log");

    let o = install(&["--target", "/etc/passwd"], &root, &log);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("/etc/passwd: not a block device"),
        "{}",
        stderr(&o)
    );

    // The live medium itself: a disk with an ESP, named as the medium.
    let medium = Loop::new(&dir.join("medium.img"), 64 * MIB);
    let ok = Command::new("sgdisk")
        .args(["-n", "1:2048:+32M", "-t", "1:ef00"])
        .arg(&medium.dev)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let before = first_mib(&medium.dev);
    let o = install(
        &["--target", &medium.dev, "--live-medium", &medium.dev],
        &root,
        &log,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains(&format!(
            "{}: is the live medium this system runs from",
            medium.dev
        )),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        first_mib(&medium.dev),
        before,
        "the live medium was written to"
    );

    // Too small: the ESP and the root's room alone are over 512 MiB.
    let small = Loop::new(&dir.join("small.img"), 64 * MIB);
    let data = stamp(&small.dev);
    let o = install(&["--target", &small.dev], &root, &log);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "{}: too small: 64.0 MiB for an install that needs",
            small.dev
        )),
        "{err}"
    );
    assert_eq!(
        first_mib(&small.dev),
        data,
        "a refused target was written to"
    );

    // Mounted: a file system on the whole disk, mounted.
    let busy = Loop::new(&dir.join("busy.img"), 64 * MIB);
    assert!(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&busy.dev)
        .status()
        .unwrap()
        .success());
    let mnt = dir.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    assert!(Command::new("mount")
        .arg(&busy.dev)
        .arg(&mnt)
        .status()
        .unwrap()
        .success());
    let o = install(&["--target", &busy.dev], &root, &log);
    let _ = Command::new("umount").arg(&mnt).status();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}: in use: {} is mounted at", busy.dev, busy.dev)),
        "{err}"
    );

    // A failure late in the install (after partitioning, file systems and
    // the copy): the old partition table is gone and no new one is there.
    let disk_file = dir.join("disk.img");
    let disk = Loop::new(&disk_file, 640 * MIB);
    assert!(Command::new("sgdisk")
        .args(["-n", "1:2048:+100M", "-t", "1:ef00"])
        .arg(&disk.dev)
        .output()
        .unwrap()
        .status
        .success());
    let cfg = dir.join("late-failure.yaml");
    fs::write(&cfg, "hostname: late\ntimezone: Mars/Olympus\n").unwrap();
    let o = install(
        &["--target", &disk.dev, "--config", cfg.to_str().unwrap()],
        &root,
        &log,
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("Mars/Olympus"), "{err}");
    assert!(
        err.contains("copying"),
        "the failure did not come after the copy:\n{err}"
    );
    let head = first_mib(&disk.dev);
    assert!(
        head[..34 * 512].iter().all(|&b| b == 0),
        "MBR or primary GPT left"
    );
    let mut tail = vec![0u8; 33 * 512];
    fs::File::open(&disk.dev)
        .unwrap()
        .read_exact_at(&mut tail, 640 * MIB - 33 * 512)
        .unwrap();
    assert!(tail.iter().all(|&b| b == 0), "backup GPT left");
    let p = Command::new("sgdisk")
        .arg("-p")
        .arg(&disk_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&p.stdout);
    assert!(!text.contains("EF00"), "a partition survived:\n{text}");
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("wiped the partition table"), "{logged}");
    // Its loop devices and mounts are gone.
    let l = Command::new("losetup")
        .arg("-j")
        .arg(&disk_file)
        .output()
        .unwrap();
    let attached = String::from_utf8_lossy(&l.stdout);
    assert_eq!(
        attached.lines().count(),
        1,
        "loop devices left behind:\n{attached}"
    );
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains("undercloud-live-install-"), "{mounts}");
}

/// Reads a file of the ext4 root on `disk` (partition at `offset`) with
/// debugfs, through a read-only loop device: no mount.
fn read_ext4(disk: &Path, offset: u64, size: u64, path: &str) -> String {
    let o = Command::new("losetup")
        .args(["--find", "--show", "--read-only", "--offset"])
        .arg(offset.to_string())
        .arg("--sizelimit")
        .arg(size.to_string())
        .arg(disk)
        .output()
        .unwrap();
    assert!(o.status.success());
    let dev = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(&dev)
        .output()
        .unwrap();
    let _ = Command::new("losetup").arg("-d").arg(&dev).status();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn boot(
    img: &Path,
    media: &str,
    firmware: &str,
    disks: &[&Path],
    expect: Option<&str>,
    log: &Path,
) -> (bool, String, f64) {
    let t = Instant::now();
    let mut cmd = bin();
    cmd.arg("boot")
        .arg(img)
        .args(["--as", media, "--firmware", firmware, "--accel", "tcg"])
        .args([
            "--timeout",
            "900",
            "--memory",
            "2048",
            "--cpus",
            "2",
            "--quiet",
            "--log",
        ])
        .arg(log);
    for d in disks {
        cmd.arg("--disk").arg(d);
    }
    if let Some(e) = expect {
        cmd.args(["--expect", e]);
    }
    let o = run(&mut cmd);
    // Firmware and GRUB write bytes that are not UTF-8.
    let console = String::from_utf8_lossy(&fs::read(log).unwrap_or_default()).into_owned();
    (o.status.success(), console, t.elapsed().as_secs_f64())
}

fn facts(console: &str) -> String {
    console
        .lines()
        .find(|l| l.contains("UCL-FACTS"))
        .unwrap_or_else(|| panic!("no UCL-FACTS line on the console:\n{console}"))
        .to_string()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or("")
}

#[test]
#[ignore = "needs root and QEMU: loop devices, builds and installs the test image (make test runs it)"]
fn unattended_install_boots_under_uefi_and_bios() {
    let base = test_base();
    let server = serve(&base, Mode::Normal);
    let dir = scratch("install-qemu");
    let img = dir.join("install.iso");
    let t = Instant::now();
    let o = run(build_command(
        &repo().join("tests/fixtures/specs/install.yaml"),
        &server,
        &img,
        &cache_root(),
        &dir.join("work"),
    )
    .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(o.status.success(), "build of the install image failed");
    println!("build: {:.0} s", t.elapsed().as_secs_f64());

    // The live session: installs to the blank disk, then powers off.
    let disk = dir.join("disk.img");
    fs::File::create(&disk).unwrap().set_len(4 << 30).unwrap();
    let (ok, live, secs) = boot(&img, "cdrom", "uefi", &[&disk], None, &dir.join("live.log"));
    assert!(ok, "the live session did not power off; console:\n{live}");
    assert!(
        live.contains("undercloud-live install: done (/dev/vda)"),
        "no successful install on the console:\n{live}"
    );
    println!("live boot + unattended install + power off: {secs:.0} s");
    let live_facts = facts(&live);

    // The disk: a valid GPT with ESP, BIOS boot and root.
    let v = Command::new("sgdisk")
        .arg("-v")
        .arg(&disk)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains("No problems found"));
    let o = run(bin().args(["inspect", "--json"]).arg(&disk));
    assert!(o.status.success());
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let parts = j["partitions"].as_array().unwrap();
    let types: Vec<String> = parts
        .iter()
        .map(|p| p["type_guid"].as_str().unwrap_or("").to_ascii_uppercase())
        .collect();
    assert_eq!(types[0], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", "{j}");
    assert_eq!(types[1], "21686148-6449-6E6F-744E-656564454649", "{j}");
    let root = parts.last().unwrap();
    let (off, len) = (
        root["offset"].as_u64().unwrap(),
        root["bytes"].as_u64().unwrap(),
    );

    let fstab = read_ext4(&disk, off, len, "/etc/fstab");
    let lines: Vec<&str> = fstab
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert!(lines.len() >= 2, "fstab:\n{fstab}");
    assert!(
        lines.iter().all(|l| l.starts_with("UUID=")),
        "fstab not by UUID:\n{fstab}"
    );
    assert!(lines.iter().any(|l| l.contains("\t/\text4")), "{fstab}");
    assert!(
        lines.iter().any(|l| l.contains("\tswap\t")),
        "the config's swap is missing:\n{fstab}"
    );
    assert_eq!(
        read_ext4(&disk, off, len, "/etc/hostname"),
        "installed-uc\n"
    );
    let shadow = read_ext4(&disk, off, len, "/etc/shadow");
    assert!(
        shadow.starts_with("root:$"),
        "root password not set: {}",
        shadow.lines().next().unwrap_or("")
    );
    let keys = read_ext4(&disk, off, len, "/root/.ssh/authorized_keys");
    assert!(keys.contains("test@undercloud-live"), "{keys}");
    let ilog = read_ext4(&disk, off, len, "/var/log/undercloud-live-install.log");
    println!("install log (in the installed system):\n{ilog}");

    // The disk alone, under UEFI and under BIOS (both at once: each boot
    // gets its own snapshot of the disk), to the marker.
    let results: Vec<(&str, (bool, String, f64))> = std::thread::scope(|s| {
        let jobs: Vec<_> = ["uefi", "bios"]
            .into_iter()
            .map(|fw| {
                let (disk, log) = (&disk, dir.join(format!("disk-{fw}.log")));
                s.spawn(move || (fw, boot(disk, "disk", fw, &[], Some(MARKER), &log)))
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    for (fw, (ok, console, secs)) in results {
        assert!(
            ok,
            "the installed disk did not boot under {fw}; console:\n{console}"
        );
        let marker = console.lines().find(|l| l.contains(MARKER)).unwrap();
        assert!(marker.contains(&format!("fw={fw}")), "{marker}");
        assert!(marker.contains("rootfs=ext4"), "{marker}");
        let f = facts(&console);
        let cmdline = f.split("cmdline=").nth(1).unwrap_or("");
        assert!(
            !cmdline.contains("rd.live") && !cmdline.contains("root=live:"),
            "live arguments left: {f}"
        );
        assert!(
            !cmdline.contains("undercloud-live.install"),
            "installer arguments left: {f}"
        );
        assert!(cmdline.contains("root=UUID="), "{f}");
        let id = field(&f, "machine-id=");
        assert_eq!(id.len(), 32, "{f}");
        assert_ne!(
            id,
            field(&live_facts, "machine-id="),
            "the installed system kept the live machine-id"
        );
        println!("installed disk under {fw}: marker after {secs:.0} s");
    }
}
