//! The undercloud element set without building anything: what each distro
//! gets (the Fedora image cannot be built here, its mirrors being out of
//! reach), the Fedora virtualenv's requirements, the kickstart's
//! translation for Debian, and `undercloud configure` on a fake root.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

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
#[ignore = "needs root: configure gives files to the services' users (make test runs it)"]
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
    assert!(root.join("etc/undercloud/endpoints").is_file());

    // HTTP basic auth by default: a password made up, shown once, kept;
    // Ironic's htpasswd entry checks it; the stack user's rc file has it.
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let api_pw = std::fs::read_to_string(root.join("var/lib/undercloud/ironic-password"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(api_pw.len(), 32);
    assert!(
        out.contains(&format!(
            "Ironic API user admin, password {api_pw} (made up now"
        )),
        "{out}"
    );
    let htpasswd = std::fs::read_to_string(root.join("etc/ironic/htpasswd")).unwrap();
    let hash = htpasswd.trim().strip_prefix("admin:").unwrap();
    assert!(bcrypt::verify(&api_pw, hash).unwrap());
    assert!(conf.contains("auth_strategy = http_basic\n"), "{conf}");
    let rc = std::fs::read_to_string(root.join("home/stack/undercloudrc")).unwrap();
    assert!(
        rc.contains(&format!("export OS_PASSWORD='{api_pw}'\n")),
        "{rc}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("home/stack/undercloudrc"), 0o600);
    assert_eq!(mode("etc/ironic/htpasswd"), 0o640);
    assert_eq!(mode("var/lib/undercloud/ironic-password"), 0o600);
    let o = run(bin()
        .args(["undercloud", "configure", "--config"])
        .arg(&good)
        .arg("--root")
        .arg(&root));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains(&api_pw), "shown again: {out}");
    assert!(out.contains("HTTP basic auth, user admin"), "{out}");
    assert_eq!(
        std::fs::read_to_string(root.join("var/lib/undercloud/ironic-password"))
            .unwrap()
            .trim(),
        api_pw
    );
}

/// `configure --root` never leaves the root: an absolute symlink inside it
/// (`/etc/ironic -> /some/host/dir`) is resolved inside the root, and a root
/// without Ironic's accounts gets no password file.
#[test]
#[ignore = "needs root: configure gives files to the services' users (make test runs it)"]
fn configure_stays_inside_its_root() {
    let dir = scratch("undercloud-configure-root");
    let good = dir.join("undercloud.yaml");
    std::fs::write(
        &good,
        "provisioning: {interface: ens9, address: 10.9.0.1/24, dhcp_start: 10.9.0.50, dhcp_end: 10.9.0.60, dhcp: force}\n",
    )
    .unwrap();
    let outside = dir.join("host-etc-ironic");
    std::fs::create_dir_all(&outside).unwrap();
    let root = dir.join("root");
    common::configure_root(&root);
    std::os::unix::fs::symlink(&outside, root.join("etc/ironic")).unwrap();
    std::fs::create_dir_all(root.join("home")).unwrap();
    std::os::unix::fs::symlink("/../../../..", root.join("home/stack")).unwrap();
    let o = run(bin()
        .args(["undercloud", "configure", "--config"])
        .arg(&good)
        .arg("--root")
        .arg(&root));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "configure wrote through the link to the host"
    );
    let inside = root.join(outside.strip_prefix("/").unwrap());
    assert!(inside.join("ironic.conf").is_file());
    assert!(inside.join("htpasswd").is_file());
    // home/stack -> / (clamped at the root): the rc file lands in the root's /.
    assert!(root.join("undercloudrc").is_file());
    assert!(!std::path::Path::new("/undercloudrc").exists());

    let bare = dir.join("bare");
    std::fs::create_dir_all(bare.join("etc")).unwrap();
    std::fs::write(bare.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    let o = run(bin()
        .args(["undercloud", "configure", "--config"])
        .arg(&good)
        .arg("--root")
        .arg(&bare));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("user ironic is missing"), "{err}");
    assert!(!bare.join("var").exists(), "a password file was written");

    // A dry run with `interface: auto` answers at once, whatever this
    // machine's interfaces are called (it waited minutes for an `eth0`).
    let auto = dir.join("auto.yaml");
    std::fs::write(&auto, "provisioning: {dhcp: force}\n").unwrap();
    let t = std::time::Instant::now();
    let _ = run(bin()
        .args(["undercloud", "configure", "--dry-run", "--config"])
        .arg(&auto));
    assert!(
        t.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        t.elapsed()
    );
}

/// Values from undercloud.yaml that would become code or configuration
/// elsewhere are refused, each in one line.
#[test]
fn configure_refuses_hostile_values() {
    let dir = scratch("undercloud-configure-hostile");
    for (name, yaml, want) in [
        (
            "newline-url",
            "ironic:\n  auth: keystone\n  keystone: {auth_url: \"https://ks/\\n[database]\\nconnection = sqlite:////tmp/evil.db\", username: u, password: p}\n",
            "ironic.keystone.auth_url",
        ),
        (
            "user",
            "ironic: {username: \"admin:x\"}\n",
            "ironic.username",
        ),
        (
            "api-password",
            "passwords: {ironic: \"line\\nbreak-long\"}\n",
            "passwords.ironic",
        ),
        (
            "keystone-password",
            "ironic:\n  auth: keystone\n  keystone: {auth_url: \"https://ks/\", username: u, password: \" spaced\"}\n",
            "ironic.keystone.password",
        ),
        ("json-rpc-port", "image_server: {port: 8089}\n", "8089"),
    ] {
        let f = dir.join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        let o = run(bin()
            .args(["undercloud", "configure", "--dry-run", "--config"])
            .arg(&f));
        assert!(!o.status.success(), "{name} accepted");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
    }
}

/// The operator's files are read with a bound and only when they are
/// regular files: `/dev/zero` or a FIFO is one line, at once.
#[test]
fn configure_and_enroll_refuse_special_files() {
    let dir = scratch("undercloud-special-files");
    let fifo = dir.join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (args, path) in [
        (
            &["undercloud", "configure", "--dry-run", "--config"][..],
            "/dev/zero",
        ),
        (
            &["undercloud", "configure", "--dry-run", "--config"][..],
            fifo.to_str().unwrap(),
        ),
        (
            &["undercloud", "enroll", "--check", "--nodes"][..],
            "/dev/zero",
        ),
    ] {
        let t = std::time::Instant::now();
        let o = run(bin().args(args).arg(path));
        assert!(!o.status.success(), "{args:?} {path}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("not a regular file"), "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }
}
