//! End to end: serve the Debian test base over loopback HTTP, build the
//! minimal marker image, check it with independent tools, boot it in QEMU
//! under every firmware (UEFI, UEFI Secure Boot, BIOS) from every medium
//! (CD, USB stick, virtio disk), prove its persistence partition keeps a
//! file across a reboot (the matrix's UEFI-disk cell is the first of those
//! two boots: one boot fewer), check its media checksum; rebuild it after
//! one static file of an element changed (the package layer and the live
//! initrd come from the cache, only that file differs), and build the
//! unchanged spec once more from the cache to prove the bytes are
//! reproducible and the cached stages are the ones a build makes. A second
//! image with an erofs root boots too.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use common::*;

const EPOCH: &str = "1700000000";
const MARKER: &str = "UNDERCLOUD-LIVE-MARKER-OK";

fn build(server: &Server, cache: &Path, out: &Path, work: &Path) -> String {
    build_spec("minimal.yaml", server, cache, out, work)
}

/// One file of the ISO tree, by isoinfo (an independent reader).
fn iso_file(img: &Path, path: &str, out: &Path) {
    let o = Command::new("isoinfo")
        .args(["-R", "-x", path, "-i"])
        .arg(img)
        .output()
        .unwrap();
    assert!(
        o.status.success() && !o.stdout.is_empty(),
        "isoinfo -x {path}"
    );
    std::fs::write(out, o.stdout).unwrap();
}

/// The files two images' live roots differ in (unsquashfs + diff -rq),
/// and whether their initrds are the same bytes.
fn differences(a: &Path, b: &Path, dir: &Path) -> (Vec<String>, bool) {
    let mut roots = Vec::new();
    let mut initrds = Vec::new();
    for (n, img) in [("a", a), ("b", b)] {
        let sq = dir.join(format!("{n}.squashfs"));
        iso_file(img, "/LiveOS/squashfs.img", &sq);
        let root = dir.join(format!("{n}-root"));
        let _ = std::fs::remove_dir_all(&root);
        tool(
            Command::new("unsquashfs")
                .args(["-q", "-no-progress", "-d"])
                .arg(&root)
                .arg(&sq),
        );
        roots.push(root);
        let initrd = dir.join(format!("{n}.initrd"));
        iso_file(img, "/boot/initrd.img", &initrd);
        initrds.push(std::fs::read(&initrd).unwrap());
    }
    let o = Command::new("diff")
        .args(["-rq", "--no-dereference"])
        .args(&roots)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = Vec::new();
    for l in text.lines() {
        // diff cannot compare device nodes and names every pair; they are
        // the same when their type, owner and device numbers are.
        if let Some((x, y)) = l
            .strip_prefix("File ")
            .and_then(|r| r.split_once(" is a character special file while file "))
        {
            use std::os::unix::fs::MetadataExt;
            let y = y.trim_end_matches(" is a character special file");
            let (mx, my) = (std::fs::symlink_metadata(x), std::fs::symlink_metadata(y));
            if let (Ok(mx), Ok(my)) = (mx, my) {
                if mx.rdev() == my.rdev() && mx.mode() == my.mode() && mx.uid() == my.uid() {
                    continue;
                }
            }
        }
        lines.push(l.replace(&*dir.display().to_string(), ""));
    }
    for r in roots {
        let _ = std::fs::remove_dir_all(r);
    }
    (lines, initrds[0] == initrds[1])
}

fn build_spec(spec: &str, server: &Server, cache: &Path, out: &Path, work: &Path) -> String {
    build_with(spec, server, cache, out, work, &[], &[])
}

/// A build with extra arguments and environment; returns its progress
/// output (stderr).
fn build_with(
    spec: &str,
    server: &Server,
    cache: &Path,
    out: &Path,
    work: &Path,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> String {
    let t = Instant::now();
    let spec = repo().join("tests/fixtures/specs").join(spec);
    let o = run(build_command(&spec, server, out, cache, work)
        .args(args)
        .envs(env.iter().copied())
        .env("SOURCE_DATE_EPOCH", EPOCH));
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
    String::from_utf8_lossy(&o.stderr).into_owned()
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
    let entries: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("El Torito boot img"))
        .collect();
    assert_eq!(entries.len(), 2, "want a BIOS and a UEFI entry:\n{report}");
    assert!(
        entries[0].contains("BIOS"),
        "first entry not BIOS:\n{report}"
    );
    assert!(
        entries[1].contains("UEFI"),
        "second entry not UEFI:\n{report}"
    );

    let info = tool(Command::new("isoinfo").arg("-d").arg("-i").arg(img));
    assert!(info.contains("Volume id: UCL-MINIMAL"), "{info}");
    let files = tool(Command::new("isoinfo").args(["-R", "-f", "-i"]).arg(img));
    for want in [
        "/LiveOS/squashfs.img",
        "/boot/vmlinuz",
        "/boot/initrd.img",
        "/EFI/BOOT/BOOTX64.EFI",
        "/boot/grub/grub.cfg",
        "/boot/grub/i386-pc/eltorito.img",
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
    // The spec's esp_files, read by mtools and by our own `medium cat`.
    let note = tool(
        Command::new("mtype")
            .args(["-i"])
            .arg(&esp)
            .arg("::/ucl-test.txt"),
    );
    assert_eq!(note.trim(), "esp-note-from-the-spec");
    let o = run(bin()
        .args(["medium", "cat", "ucl-test.txt", "--device"])
        .arg(img));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "esp-note-from-the-spec"
    );
    let o = run(bin()
        .args(["medium", "cat", "absent.yaml", "--device"])
        .arg(img));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("absent.yaml is not on the ESP"),
        "{err}"
    );

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
    // GRUB's boot_hybrid.img in the MBR, for BIOS from USB and disk.
    assert!(data[..440].iter().any(|&b| b != 0), "no MBR boot code");

    // One grub.cfg for both firmwares, with every menu entry.
    let cfg = tool(
        Command::new("isoinfo")
            .args(["-R", "-x", "/boot/grub/grub.cfg", "-i"])
            .arg(img),
    );
    for want in [
        "(check the medium first)",
        "rd.live.check",
        "(basic graphics)",
        "nomodeset",
        "(serial console)",
        "--label UCL-MINI-PERSIST",
        "rd.live.overlay=LABEL=UCL-MINI-PERSIST:/LiveOS/overlay",
    ] {
        assert!(cfg.contains(want), "grub.cfg lacks {want:?}:\n{cfg}");
    }

    // Our own reader agrees, and finds the persistence partition and the
    // media checksum.
    let o = run(bin().args(["inspect", "--json"]).arg(img));
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["partitions"][2]["filesystem"], "ext4", "{v}");
    assert_eq!(v["partitions"][2]["label"], "UCL-MINI-PERSIST", "{v}");
    assert_eq!(v["el_torito"][0]["platform"], "BIOS", "{v}");
    assert_eq!(v["el_torito"][0]["boot_info_table"], true, "{v}");
    assert!(v["media_checksum"]["md5"].is_string(), "{v}");
    if common::have("checkisomd5") {
        tool(Command::new("checkisomd5").arg(img));
    }
}

/// Boots `img` to the marker; returns the marker line, the whole console
/// and the seconds it took.
fn boot_to_marker(
    img: &Path,
    media: &str,
    firmware: &str,
    writable: bool,
    log: &Path,
) -> (String, String, f64) {
    let t = Instant::now();
    let mut cmd = bin();
    cmd.arg("boot")
        .arg(img)
        .args(["--as", media, "--firmware", firmware, "--expect", MARKER])
        .args(["--timeout", "420", "--memory", "2048", "--log"])
        .arg(log)
        // TCG always: measured here, KVM kills OVMF at once (auto then
        // retries under TCG), but runs SeaBIOS and then GRUB's real-mode
        // disk reads so slowly that a BIOS boot from disk did not reach the
        // kernel in 420 s.
        .args(["--accel", "tcg"])
        .arg("--quiet");
    if writable {
        cmd.arg("--writable");
    }
    let o = run(&mut cmd);
    let console = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        o.status.success(),
        "boot as {media} under {firmware} did not reach the marker; console:\n{console}"
    );
    let line = console
        .lines()
        .find(|l| l.contains(MARKER))
        .unwrap()
        .to_string();
    (line, console, t.elapsed().as_secs_f64())
}

/// One boot of the matrix with the facts the marker reported checked;
/// the marker's line and the seconds it took.
fn boot(img: &Path, media: &str, firmware: &str, writable: bool, log: &Path) -> (String, f64) {
    let (line, console, secs) = boot_to_marker(img, media, firmware, writable, log);
    // Facts the marker unit reported from inside the booted image.
    assert!(
        line.contains("rootfs=overlay"),
        "live root is not the overlay: {line}"
    );
    assert!(
        line.contains("hello=Hello,_world!"),
        "package from package-installs missing: {line}"
    );
    // The tool inside the image found the medium it booted from (a CD, a
    // stick, a disk) and read the spec's file from its ESP.
    assert!(
        line.contains("medium=esp-note-from-the-spec"),
        "undercloud-live medium cat inside the image failed: {line}"
    );
    let fw = if firmware == "bios" { "bios" } else { "uefi" };
    assert!(
        line.contains(&format!("fw={fw}")),
        "{firmware} boot reports another firmware: {line}"
    );
    if firmware == "uefi-secure" {
        assert!(
            console.contains("Secure boot enabled"),
            "the kernel did not report Secure Boot under uefi-secure"
        );
    }
    println!("boot as {media} under {firmware}: marker after {secs:.0} s");
    (line, secs)
}

/// Every firmware x every medium, `UCL_BOOT_JOBS` (default 1) at a time,
/// but UEFI from a disk: that cell is the first persistent boot
/// ([`persistence_and_verify`]), the same boot of a writable copy.
fn boot_matrix(img: &Path, dir: &Path) -> Vec<(String, String, f64)> {
    let jobs: usize = std::env::var("UCL_BOOT_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(1);
    let mut todo = Vec::new();
    for fw in ["uefi", "uefi-secure", "bios"] {
        for media in ["cdrom", "usb", "disk"] {
            if (fw, media) != ("uefi", "disk") {
                todo.push((fw, media));
            }
        }
    }
    let queue = Mutex::new(todo);
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let next = queue.lock().unwrap().pop();
                let Some((fw, media)) = next else { break };
                let log = dir.join(format!("boot-{fw}-{media}.log"));
                let (_, secs) = boot(img, media, fw, false, &log);
                results
                    .lock()
                    .unwrap()
                    .push((fw.to_string(), media.to_string(), secs));
            });
        }
    });
    println!(
        "boot matrix: 8 boots, {jobs} at a time, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    results.into_inner().unwrap()
}

/// Boots a writable copy twice as a disk under UEFI, the matrix's facts
/// checked each time: the file the first boot writes is there on the
/// second (the overlay lives on the persistence partition). The
/// persistence partition lies outside the checked volume, so the medium
/// still verifies afterwards; one flipped byte in the root does not.
fn persistence_and_verify(img: &Path, dir: &Path) {
    let copy: PathBuf = dir.join("persist.iso");
    tool(
        Command::new("cp")
            .arg("--sparse=always")
            .arg(img)
            .arg(&copy),
    );
    let (first, s1) = boot(&copy, "disk", "uefi", true, &dir.join("persist-1.log"));
    assert!(first.contains("persist=new"), "first boot: {first}");
    let (second, s2) = boot(&copy, "disk", "uefi", true, &dir.join("persist-2.log"));
    assert!(
        second.contains("persist=found:"),
        "the file written on the first boot is gone: {second}"
    );
    println!("persistence: boots of {s1:.0} s and {s2:.0} s, file kept");

    let o = run(bin().arg("verify").arg(&copy));
    assert!(o.status.success(), "verify after persistent boots failed");
    let o = run(bin().args(["inspect", "--json"]).arg(&copy));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let root_off = v["partitions"][1]["offset"].as_u64().unwrap();
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&copy)
        .unwrap();
    let at = root_off + 4096 + 17;
    let mut b = [0u8];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut b, at).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[b[0] ^ 0x80], at).unwrap();
    let o = run(bin().arg("verify").arg(&copy));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "verify passed a flipped byte");
    assert!(
        err.contains("media check FAILED") && err.contains("GPT partition 2 (root"),
        "{err}"
    );
    let _ = std::fs::remove_file(&copy);
}

/// A copy of tests/fixtures/elements/marker with one line added to its
/// unit file (a comment): a change to one static file of an element.
fn edited_marker(dir: &Path) -> PathBuf {
    let elements = dir.join("edited-elements");
    let _ = std::fs::remove_dir_all(&elements);
    std::fs::create_dir_all(&elements).unwrap();
    tool(
        Command::new("cp")
            .arg("-a")
            .arg(repo().join("tests/fixtures/elements/marker"))
            .arg(&elements),
    );
    let unit = elements.join("marker/static/etc/systemd/system/undercloud-live-marker.service");
    let mut text = std::fs::read_to_string(&unit).unwrap();
    text.push_str("# edited between two builds (tests/e2e.rs)\n");
    std::fs::write(&unit, text).unwrap();
    elements
}

#[test]
#[ignore = "needs root and QEMU: builds and boots the test image (make test runs it)"]
fn build_check_boot_everywhere_persist_and_rebuild_identically() {
    let base = test_base();
    let server = serve(&base, Mode::Normal);
    let dir = scratch("e2e");
    let cache = dir.join("cache");
    let a = dir.join("a.iso");
    let log = build(&server, &cache, &a, &dir.join("work-a"));
    assert!(
        log.contains("package layer") && log.contains("not in the cache, building it"),
        "the first build did not make its package layer:\n{log}"
    );
    check_layout(&a, &dir);
    let o = run(bin().arg("verify").arg(&a));
    assert!(o.status.success(), "verify of a fresh image failed");
    let times = boot_matrix(&a, &dir);
    for (fw, media, secs) in &times {
        println!("  {fw:<12} {media:<6} {secs:>4.0} s");
    }
    persistence_and_verify(&a, &dir);

    // A rebuild after one static file of an element changed: the package
    // layer and the live initrd come from the cache, the image differs in
    // that file only (its root and initrd compared; not booted again).
    let elements = edited_marker(&dir);
    let c = dir.join("c.iso");
    let t = Instant::now();
    let log = build_with(
        "minimal.yaml",
        &server,
        &cache,
        &c,
        &dir.join("work-c"),
        &["--elements-path".as_ref(), elements.as_os_str()],
        &[],
    );
    let warm = t.elapsed().as_secs_f64();
    for want in ["package layer", "live initrd"] {
        assert!(
            log.lines()
                .any(|l| l.contains(want) && l.contains("from the cache")),
            "the rebuild did not take its {want} from the cache:\n{log}"
        );
    }
    let (changed, same_initrd) = differences(&a, &c, &dir);
    assert_eq!(
        changed,
        ["Files /a-root/etc/systemd/system/undercloud-live-marker.service and /b-root/etc/systemd/system/undercloud-live-marker.service differ"],
        "the rebuilt root differs elsewhere too"
    );
    assert!(
        same_initrd,
        "the cached live initrd is not the one the first build made"
    );
    println!("rebuild after a one-file change: {warm:.0} s");

    // The unchanged spec again, its package layer and initrd from the
    // cache: every byte matches the first build, which made them.
    let before = server.total_hits();
    let b = dir.join("b.iso");
    let log = build(&server, &cache, &b, &dir.join("work-b"));
    assert!(
        log.lines().filter(|l| l.contains("from the cache")).count() >= 2,
        "{log}"
    );
    let after = server.total_hits();
    assert!(
        after - before <= 1,
        "the cached base was downloaded again ({} requests)",
        after - before
    );
    assert_eq!(
        sha256_file(&a),
        sha256_file(&b),
        "two builds with SOURCE_DATE_EPOCH={EPOCH} differ"
    );
}

/// An erofs live root, built with diskimage-builder's own elements from its
/// PyPI release, named as dib's users name them: the boot shows what they
/// did (the user, the units, the modprobe files).
#[test]
#[ignore = "needs root and QEMU: builds and boots the test image (make test runs it)"]
fn erofs_root_boots_with_real_dib_elements() {
    let base = test_base();
    let server = serve(&base, Mode::Normal);
    let dir = scratch("e2e-erofs");
    let img = dir.join("erofs.iso");
    // --no-cache makes dracut run and nothing is stored.
    let cache = dir.join("cache");
    let dib = common::upstream::dib_elements();
    let log = build_with(
        "minimal-erofs.yaml",
        &server,
        &cache,
        &img,
        &dir.join("work"),
        &[
            "--no-cache".as_ref(),
            "--elements-path".as_ref(),
            dib.as_os_str(),
        ],
        &[("DIB_MODPROBE_BLACKLIST", "pcspkr floppy")],
    );
    assert!(log.contains("with dracut (--no-cache)"), "{log}");
    assert!(!cache.join("initrd").exists() && !cache.join("layers").exists());
    let files = tool(Command::new("isoinfo").args(["-R", "-f", "-i"]).arg(&img));
    assert!(
        files.lines().any(|l| l == "/LiveOS/rootfs.img"),
        "no /LiveOS/rootfs.img:\n{files}"
    );
    let o = run(bin().args(["inspect", "--json"]).arg(&img));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["partitions"][1]["filesystem"], "erofs", "{v}");
    let (line, _, secs) = boot_to_marker(&img, "usb", "uefi", false, &dir.join("boot.log"));
    assert!(line.contains("rootfs=overlay"), "{line}");
    for fact in [
        "units=growroot:enabled,ssh-keygen:enabled,dynamic-login:enabled",
        "blacklist=pcspkr,floppy",
        "modprobe-conf=yes",
    ] {
        assert!(line.contains(fact), "{fact} missing: {line}");
    }
    assert!(
        line.split_whitespace().any(|f| f
            .strip_prefix("devuser=")
            .is_some_and(|uid| uid.parse::<u32>().is_ok())),
        "no devuser: {line}"
    );
    println!("erofs root with dib elements: marker after {secs:.0} s");
}
