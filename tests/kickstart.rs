//! A Fedora-style kickstart (with %include, %packages exclusions and
//! %post --nochroot) built into an image on the Debian test base, with the
//! test's package-name map, then booted once as a CD.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Instant;

use common::*;

const MARKER: &str = "UNDERCLOUD-LIVE-MARKER-KICKSTART";

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
#[ignore = "needs root and QEMU: builds and boots the kickstart image (make test runs it)"]
fn kickstart_image_builds_and_boots() {
    let base = test_base();
    let server = serve(&base, Mode::Normal);
    let dir = scratch("kickstart");
    let img = dir.join("kickstart.iso");
    let work = dir.join("work");
    let t = Instant::now();
    let o = run(build_command(
        &repo().join("tests/fixtures/specs/kickstart.yaml"),
        &server,
        &img,
        &cache_root(),
        &work,
    )
    .env("SOURCE_DATE_EPOCH", "1700000000")
    .arg("--keep-workdir"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "build failed:\n{stderr}");
    println!("kickstart build: {:.0} s", t.elapsed().as_secs_f64());
    assert!(mounts_under(&work).is_empty());

    // Installer commands: one warning each, naming file and line.
    for cmd in ["zerombr", "clearpart", "auth", "shutdown"] {
        let n = stderr
            .lines()
            .filter(|l| l.starts_with("warning: ") && l.contains(&format!(": {cmd} ignored")))
            .count();
        assert_eq!(n, 1, "{cmd}:\n{stderr}");
    }
    // What livecd-creator reads from bootloader and part is said.
    assert!(
        stderr.contains("live-base.ks:13: bootloader --location ignored: the build makes the live medium's boot loader"),
        "{stderr}"
    );
    assert!(
        stderr.contains("live-base.ks:12: part / --size=5120 --fstype=ext4 not used"),
        "{stderr}"
    );

    // The root the image was made from.
    let root = work.join("root");
    assert_eq!(read(&root, "etc/hostname"), "ucl-kickstart\n");
    assert_eq!(read(&root, "etc/locale.conf"), "LANG=en_US.UTF-8\n");
    assert_eq!(read(&root, "etc/timezone"), "Europe/Berlin\n");
    assert_eq!(
        std::fs::read_link(root.join("etc/localtime")).unwrap(),
        Path::new("../usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(read(&root, "etc/ucl-nochroot"), "nochroot saw the root\n");
    // %post sections ran in file order, in and out of the root interleaved
    // (tests/fixtures/kickstart/post-order.ks).
    assert_eq!(
        read(&root, "etc/ucl-post-order"),
        "1 in the root\n2 on the host\n3 in the root\n4 on the host\n5 in the root\n"
    );
    // The %post that wrote /etc/resolv.conf wrote the root's copy: neither
    // the build host's file nor the image keeps it.
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!host_resolv.contains("ucl-kickstart-post"), "{host_resolv}");
    let root_resolv = std::fs::read_to_string(root.join("etc/resolv.conf")).unwrap_or_default();
    assert!(!root_resolv.contains("ucl-kickstart-post"), "{root_resolv}");
    assert!(read(&root, "etc/passwd").contains("stack:x:"));
    assert!(read(&root, "etc/group")
        .lines()
        .any(|l| l.starts_with("sudo:") && l.ends_with("stack")));
    let shadow = read(&root, "etc/shadow");
    let root_hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("root:"))
        .and_then(|l| l.split(':').next())
        .unwrap();
    assert!(
        root_hash.starts_with('$'),
        "root password not set: {root_hash:?}"
    );
    // The repo line was a build-time package source only (livecd-creator's
    // are its package manager's): nothing of it stays in the image.
    let sources: Vec<String> = std::fs::read_dir(root.join("etc/apt/sources.list.d"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !sources
            .iter()
            .any(|n| n.contains("ucl-debian") || n.starts_with("undercloud-live-kickstart")),
        "{sources:?}"
    );

    // %packages: the group's hello, not the excluded figlet; --excludedocs.
    assert!(root.join("usr/bin/hello").exists());
    assert!(
        !root.join("usr/bin/figlet").exists(),
        "excluded figlet installed"
    );
    assert!(root.join("usr/share/doc/hello/copyright").exists());
    assert!(
        !root.join("usr/share/doc/hello/NEWS.gz").exists(),
        "docs installed"
    );
    // The failing %post without --erroronfail: logged, build went on.
    assert!(read(&root, "var/log/ks-post.log").contains("a failing %post"));
    assert!(!root.join("tmp/in_target.d").exists());

    // The build log has every hook's output with its element and phase.
    let log = read(&dir, "kickstart.iso.log");
    assert!(
        log.contains(
            "[kickstart post-install.d/90-kickstart-post-03] warning: kickstart %post at "
        ) && log.contains("failed (exit 1); going on"),
        "{log}"
    );
    assert!(log.contains("[marker install.d/50-marker]") || log.contains("marker/50-marker"));
    // The --nochroot ones ran as outside steps of post-install.d; firewall
    // was applied as imgcreate applies it (firewalld is not in the base).
    assert!(
        log.contains("kickstart/90-kickstart-post-01 (on the build host)"),
        "{log}"
    );
    assert!(
        log.contains("live-base.ks:9: firewall: firewalld is not installed"),
        "{log}"
    );
    std::fs::remove_dir_all(&work).unwrap();

    // Boot it: the marker unit prints the word the kickstart's %post wrote.
    let t = Instant::now();
    let console = dir.join("boot.log");
    let o = run(bin()
        .arg("boot")
        .arg(&img)
        .args(["--as", "cdrom", "--firmware", "uefi", "--expect", MARKER])
        .args(["--timeout", "420", "--memory", "2048", "--log"])
        .arg(&console)
        .arg("--quiet"));
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    assert!(o.status.success(), "no marker; console:\n{text}");
    let line = text.lines().find(|l| l.contains(MARKER)).unwrap();
    assert!(line.contains("hello=Hello,_world!"), "{line}");
    println!(
        "kickstart boot: marker after {:.0} s",
        t.elapsed().as_secs_f64()
    );
}
