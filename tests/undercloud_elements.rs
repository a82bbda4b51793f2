//! The undercloud element set without building anything: what each distro
//! gets (the Fedora image cannot be built here, its mirrors being out of
//! reach), the Fedora virtualenv's requirements, the kickstart's
//! translation for Debian, and `undercloud configure` on a fake root.

mod common;

use std::collections::BTreeSet;

use common::*;

fn plan(distro: &str, release: &str, extra: &[&str]) -> serde_json::Value {
    let o = run(bin()
        .args(["elements", "plan", "-e", "live", "-e", "undercloud"])
        .args(["--distro", distro, "--release", release, "--json"])
        .arg("--elements-path")
        .arg(repo().join("overlays"))
        .args(extra));
    assert!(o.status.success(), "elements plan for {distro} failed");
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Packages installed in install.d, and the hooks of every phase.
fn packages_and_hooks(v: &serde_json::Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut pkgs = BTreeSet::new();
    let mut hooks = BTreeSet::new();
    for phase in v["phases"].as_array().unwrap() {
        for step in phase["steps"].as_array().unwrap() {
            if step["kind"] == "install" && phase["phase"] == "install.d" {
                for p in step["packages"].as_array().unwrap() {
                    pkgs.insert(p.as_str().unwrap().to_string());
                }
            }
            if let Some(n) = step["name"].as_str() {
                hooks.insert(format!("{}/{n}", phase["phase"].as_str().unwrap()));
            }
        }
    }
    (pkgs, hooks)
}

#[test]
fn fedora_gets_fedora_packages_and_ironic_from_pypi() {
    let v = plan("fedora", "45", &[]);
    let (pkgs, hooks) = packages_and_hooks(&v);
    for p in [
        "mariadb-server",
        "mariadb",
        "dnsmasq",
        "ipxe-bootimgs-x86",
        "nginx",
        "ipmitool",
        "sudo",
        "systemd-networkd",
        "python3.13",
        "qemu-img",
        "kernel",
    ] {
        assert!(pkgs.contains(p), "fedora: {p} missing from {pkgs:?}");
    }
    // pkg-map drops Debian's packaged Ironic on Fedora.
    for p in [
        "ironic-api",
        "ironic-conductor",
        "ironic-client",
        "python3-ironicclient",
        "python3-sushy",
        "ipxe",
        "ipxe-images",
        "networkd",
        "mariadb-client",
    ] {
        assert!(!pkgs.contains(p), "fedora: {p} should not be installed");
    }
    assert!(hooks.contains("install.d/65-ironic-venv"), "{hooks:?}");
    // The venv comes before the units are enabled.
    let order: Vec<String> = v["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "install.d")
        .unwrap()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert!(pos("65-ironic-venv") < pos("70-ironic-enable"));

    // What the venv installs: Ironic pinned, and the libraries of the two
    // hardware types and the database driver.
    let req =
        std::fs::read_to_string(repo().join("overlays/undercloud-fedora/ironic-requirements.txt"))
            .unwrap();
    let names: Vec<&str> = req
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(names.iter().any(|l| l.starts_with("ironic==")), "{names:?}");
    for lib in ["sushy", "pyghmi", "PyMySQL", "python-ironicclient"] {
        assert!(
            names.iter().any(|l| l.starts_with(lib)),
            "{lib} missing: {names:?}"
        );
    }
}

#[test]
fn debian_gets_its_packaged_ironic() {
    // The shipped Debian image's release (kickstart/undercloud-live-debian.yaml).
    let v = plan("debian", "trixie", &[]);
    let (pkgs, hooks) = packages_and_hooks(&v);
    for p in [
        "ironic-api",
        "ironic-conductor",
        "python3-ironicclient",
        "python3-sushy",
        "python3-pyghmi",
        "python3-pymysql",
        "ipmitool",
        "mariadb-server",
        "mariadb-client",
        "dnsmasq",
        "ipxe",
        "nginx",
        "sudo",
        "linux-image-amd64",
        "dracut-live",
        // Its own package from Debian 13 on (part of systemd before).
        "systemd-repart",
    ] {
        assert!(pkgs.contains(p), "debian: {p} missing from {pkgs:?}");
    }
    for p in [
        "python3.13",
        "ipxe-bootimgs-x86",
        "systemd-networkd",
        "qemu-img",
    ] {
        assert!(!pkgs.contains(p), "debian: {p} should not be installed");
    }
    for h in [
        "pre-install.d/05-undercloud-debconf",
        "post-install.d/05-undercloud-debian",
        "install.d/70-undercloud-config",
        "finalise.d/90-undercloud-no-wait-online",
    ] {
        assert!(hooks.contains(h), "{h} missing: {hooks:?}");
    }
}

#[test]
fn bookworm_gets_systemd_repart_from_systemd() {
    let (pkgs, _) = packages_and_hooks(&plan("debian", "bookworm", &[]));
    assert!(pkgs.contains("ironic-api"), "{pkgs:?}");
    assert!(
        !pkgs.contains("systemd-repart"),
        "bookworm has no systemd-repart package: {pkgs:?}"
    );
}

#[test]
fn the_kickstart_translates_for_debian() {
    let v = plan(
        "debian",
        "trixie",
        &[
            "--kickstart",
            repo()
                .join("kickstart/undercloud-live.ks")
                .to_str()
                .unwrap(),
            "--kickstart-package-map",
            repo()
                .join("kickstart/undercloud-live-debian-map.yaml")
                .to_str()
                .unwrap(),
        ],
    );
    let text = v.to_string();
    let (pkgs, hooks) = packages_and_hooks(&v);
    for p in ["mariadb-client", "ipxe", "qemu-utils", "nginx", "dnsmasq"] {
        assert!(
            pkgs.contains(p),
            "kickstart on debian: {p} missing from {pkgs:?}"
        );
    }
    for p in [
        "mariadb",
        "ipxe-bootimgs-x86",
        "qemu-img",
        "python3.13",
        "systemd-networkd",
    ] {
        assert!(!pkgs.contains(p), "kickstart on debian: {p} not mapped");
    }
    assert!(
        hooks
            .iter()
            .any(|h| h.starts_with("post-install.d/90-kickstart-post")),
        "{hooks:?}"
    );
    assert!(
        v["elements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "kickstart"),
        "{text}"
    );
}

#[test]
fn configure_checks_the_file_and_prints_the_result() {
    let dir = scratch("undercloud-configure");
    let good = dir.join("undercloud.yaml");
    // dhcp: force: configuring a root here must not probe this machine's
    // network (tests/dhcp_guard.rs tests the probe, in namespaces of its own).
    std::fs::write(
        &good,
        "provisioning: {interface: ens9, address: 10.9.0.1/24, dhcp_start: 10.9.0.50, dhcp_end: 10.9.0.60, dhcp: force}\ndatabase: mariadb\n",
    )
    .unwrap();
    let o = run(bin()
        .args(["undercloud", "configure", "--dry-run", "--config"])
        .arg(&good));
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("==> /etc/ironic/ironic.conf"), "{out}");
    assert!(
        out.contains("dhcp-range=10.9.0.50,10.9.0.60,255.255.255.0,12h"),
        "{out}"
    );
    assert!(out.contains("interface=ens9"), "{out}");
    assert!(
        out.contains("export OS_ENDPOINT=http://10.9.0.1:6385"),
        "{out}"
    );

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "provisioning:\n  adress: 10.9.0.1/24\n").unwrap();
    let o = run(bin()
        .args(["undercloud", "configure", "--config"])
        .arg(&bad)
        .arg("--root")
        .arg(dir.join("root")));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("bad.yaml") && err.contains("adress"), "{err}");
    assert!(!dir.join("root").exists(), "a bad file must write nothing");

    // A real write into a fake root with the two accounts.
    let root = dir.join("root2");
    common::configure_root(&root);
    let o = run(bin()
        .args(["undercloud", "configure", "--config"])
        .arg(&good)
        .arg("--root")
        .arg(&root));
    assert!(o.status.success());
    let conf = std::fs::read_to_string(root.join("etc/ironic/ironic.conf")).unwrap();
    let pw = std::fs::read_to_string(root.join("var/lib/undercloud/db-password")).unwrap();
    assert!(conf.contains(&format!(
        "mysql+pymysql://ironic:{}@localhost/ironic",
        pw.trim()
    )));
    assert_eq!(
        std::fs::read(root.join("srv/tftpboot/undionly.kpxe")).unwrap(),
        b"kpxe"
    );
    assert!(root.join("home/stack/undercloudrc").is_file());
    assert!(root.join("etc/undercloud/endpoints").is_file());
}
