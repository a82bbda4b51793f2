//! `make image`'s default base is the build host's distribution family
//! (scripts/host-base), read from a root's os-release: real os-release
//! texts of each family, and the cases that fall back to Fedora.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

fn host_base(os_release: Option<&str>, name: &str) -> (String, String) {
    let root = scratch(&format!("host-base-{name}"));
    if let Some(text) = os_release {
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/os-release"), text).unwrap();
    }
    let o = Command::new(repo().join("scripts/host-base"))
        .arg(&root)
        .output()
        .expect("running scripts/host-base");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let (base, why) = out.split_once(' ').expect("base and reason");
    (base.to_string(), why.to_string())
}

#[test]
fn debian_and_ubuntu_hosts_build_debian() {
    let (b, why) = host_base(
        Some("PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"13\"\nID=debian\n"),
        "debian",
    );
    assert_eq!(b, "debian");
    assert_eq!(
        why,
        "Debian: the build host is Debian GNU/Linux 13 (trixie); BASE=fedora for Fedora"
    );
    let (b, _) = host_base(
        Some("PRETTY_NAME=\"Ubuntu 24.04.1 LTS\"\nNAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\n"),
        "ubuntu",
    );
    assert_eq!(b, "debian");
}

#[test]
fn fedora_and_rhel_like_hosts_build_fedora() {
    let (b, why) = host_base(
        Some("NAME=\"Fedora Linux\"\nVERSION_ID=43\nID=fedora\nPRETTY_NAME=\"Fedora Linux 43 (Workstation Edition)\"\n"),
        "fedora",
    );
    assert_eq!(b, "fedora");
    assert!(
        why.contains("Fedora Linux 43") && why.contains("BASE=debian"),
        "{why}"
    );
    for (name, text) in [
        ("centos", "NAME=\"CentOS Stream\"\nID=\"centos\"\nID_LIKE=\"rhel fedora\"\nPRETTY_NAME=\"CentOS Stream 10 (Coughlan)\"\n"),
        ("rocky", "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nPRETTY_NAME=\"Rocky Linux 9.5 (Blue Onyx)\"\n"),
        ("rhel", "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\n"),
    ] {
        assert_eq!(host_base(Some(text), name).0, "fedora", "{name}");
    }
}

#[test]
fn unknown_hosts_build_fedora_and_say_why() {
    let (b, why) = host_base(
        Some("NAME=\"Arch Linux\"\nPRETTY_NAME=\"Arch Linux\"\nID=arch\n"),
        "arch",
    );
    assert_eq!(b, "fedora");
    assert!(
        why.contains("Arch Linux") && why.contains("neither"),
        "{why}"
    );
    let (b, why) = host_base(None, "none");
    assert_eq!(b, "fedora");
    assert!(why.contains("unknown distribution"), "{why}");
}
