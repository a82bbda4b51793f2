//! The undercloud's deploy ramdisk (kickstart/ipa-ramdisk-debian.yaml, the
//! ipa-ramdisk element), built with `format: ramdisk` from a debootstrap'd
//! Debian trixie root: under its size limit, a newc cpio that the
//! independent `cpio` lists, holding the agent, its unit and the root's
//! own init as `/init`, and the kernel beside it.
//!
//! The agent is booted for real, three times, by tests/undercloud.rs: a
//! node it inspects, cleans and deploys through the undercloud's Ironic
//! (a boot here against a fake Ironic would repeat one of those).
//!
//! The ramdisk is cached under `<cache>/ipa-ramdisk/<key>/`, keyed by the
//! spec's and the element's file contents (the kernel and agent come from
//! the mirror, so the first run needs deb.debian.org). Root only
//! (debootstrap, chroot).

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn ipa_ramdisk_holds_the_agent_under_its_size_limit() {
    let prefix = ipa_ramdisk();
    let kernel = prefix.with_extension("kernel");
    let initramfs = prefix.with_extension("initramfs");
    let size = std::fs::metadata(&initramfs).unwrap().len();
    println!(
        "initramfs: {} MiB ({size} bytes), kernel {} MiB",
        size >> 20,
        std::fs::metadata(&kernel).unwrap().len() >> 20
    );
    assert!(
        size <= 300 << 20,
        "the IPA ramdisk grew past 300 MiB: {size} bytes"
    );
    // An x86 bzImage: the boot protocol's "HdrS" at 0x202.
    let k = std::fs::read(&kernel).unwrap();
    assert_eq!(k.get(0x202..0x206), Some(&b"HdrS"[..]), "not a bzImage");

    // The independent reader: zstd then cpio's own listing.
    let listing = tool(Command::new("sh").arg("-c").arg(format!(
        "zstd -dc '{}' | cpio -it --quiet",
        initramfs.display()
    )));
    for want in [
        "init",
        "usr/bin/ironic-python-agent",
        "etc/systemd/system/ironic-python-agent.service.d/ipa-ramdisk.conf",
        "etc/systemd/network/80-ipa-dhcp.network",
    ] {
        assert!(
            listing.lines().any(|l| l == want),
            "{want} is not in the ramdisk"
        );
    }
    // No kernel or initrd of its own inside: the kernel is beside it.
    assert!(
        !listing.lines().any(|l| l.starts_with("boot/vmlinuz")),
        "a kernel image inside the ramdisk"
    );
}
