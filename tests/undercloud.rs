//! The undercloud end to end: it boots, answers, and provisions a machine,
//! on this machine alone, from nothing.
//!
//! * The undercloud test image (tests/fixtures/specs/undercloud.yaml: the
//!   shipped `live` + `undercloud` elements and kickstart on Debian trixie,
//!   debootstrapped from the mirror; the deploy ramdisk through
//!   extra_files; a persistence partition; the test's undercloud.yaml and
//!   nodes.yaml on the ESP; cached by its inputs; Ironic's byte code
//!   valid for its source in the root) boots in QEMU. Its first
//!   NIC is a UDP link on 127.0.0.1, the provisioning network, where it
//!   serves DHCP after finding no other DHCP server; its second is QEMU's
//!   user-mode network with Ironic's API forwarded to the host.
//! * The API asks for a password by default: the first boot's console shows
//!   the one it made up, once; without it (or with a wrong one) the API
//!   answers 401, with it every call below works, and after the power cut
//!   the same password still works and is not shown again.
//! * Boot checks: the console's status report (SQLite: no MariaDB), the
//!   API and its three drivers, the ESP's nodes.yaml enrolled at boot and
//!   validating for boot with no driver_info (the carried deploy ramdisk is
//!   Ironic's default), the node listed by the status report.
//! * The node is a libvirt domain (TCG, UEFI, network boot first, an empty
//!   10 GiB disk, serial console to a file) on the other end of the link,
//!   powered through sushy-tools' Redfish emulator on 127.0.0.1 (10.0.2.2
//!   from inside QEMU). Through Ironic's API: enrol it (Redfish + its MAC),
//!   manage, inspect (the agent reports its disk and MAC), provide
//!   (cleaning), deploy a disk image built by our own `format: disk` with
//!   the marker element, given by a URL only the undercloud reaches (a file
//!   server on the host's 127.0.0.1): the conductor fetches it and serves it
//!   to the node. The node boots its own disk to the marker. Fast track (on
//!   by default): the node booted the ramdisk once for all three steps,
//!   counted on its serial console.
//! * A node enrolled just before a power cut, second boot: that node and
//!   the deployed one (still `active`) are there, the ESP's node is left
//!   alone.
//! * That second boot with `ironic: {tls: self-signed}` added to the ESP's
//!   undercloud.yaml: the console shows the made-up certificate's SHA-256
//!   fingerprint, the API presents that certificate (taken from the
//!   handshake and compared), answers HTTPS with the password (trusting
//!   exactly that certificate) and not plain HTTP; the in-image status
//!   report and enrolment work over HTTPS.
//!
//! Prints the time of each phase and of the whole. Root, libvirt (started
//! by the test bed if not running), the Debian mirror for the first builds.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::testbed::{free_tcp_port, Libvirt, Node, NodeConfig, Sushy, UdpLink};
use common::ucvm::{
    console_fingerprint, console_password, esp_offset, put_esp_file, server_cert, tail,
    wait_port_free, Api, Vm, VmOptions,
};
use common::*;
use serde_json::json;

const NODE_MAC: &str = "52:54:00:6b:00:01";
const MARKER: &str = "UNDERCLOUD-LIVE-MARKER-OK";
/// The image server port of the ESP's undercloud.yaml; the image's built-in
/// default is 8088.
const ESP_IMAGE_PORT: &str = "8090";

struct Phases(Vec<(&'static str, f64)>);

impl Phases {
    fn add(&mut self, name: &'static str, secs: f64) {
        println!("phase {name}: {secs:.0} s");
        self.0.push((name, secs));
    }
}

/// The ESP's undercloud.yaml, read back by an independent FAT reader
/// (mtools) from the ESP partition's bytes.
fn check_esp(img: &std::path::Path, dir: &std::path::Path) {
    let (off, len) = esp_offset(img);
    let esp_img = dir.join("esp.img");
    let status = Command::new("dd")
        .arg(format!("if={}", img.display()))
        .arg(format!("of={}", esp_img.display()))
        .args(["bs=512", "status=none"])
        .arg(format!("skip={}", off / 512))
        .arg(format!("count={}", len / 512))
        .status()
        .unwrap();
    assert!(status.success());
    for (file, want) in [
        ("::/undercloud.yaml", format!("port: {ESP_IMAGE_PORT}")),
        ("::/nodes.yaml", "ucl-esp-node".to_string()),
    ] {
        let o = Command::new("mtype")
            .arg("-i")
            .arg(&esp_img)
            .arg(file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && text.contains(&want),
            "{file} is not on the ESP: {text} {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let _ = std::fs::remove_file(&esp_img);
}

/// Ironic's byte code in the live root is valid for its source: a `.pyc`
/// records its `.py`'s time and size, and Python recompiles every module
/// whose `.pyc` disagrees, at every start (under TCG that was 280 s before
/// the API answered). Read with unsquashfs from the image's root.
fn check_bytecode(img: &std::path::Path, dir: &std::path::Path) {
    let sq = dir.join("root.squashfs");
    tool(
        Command::new("xorriso")
            .args(["-osirrox", "on", "-indev"])
            .arg(img)
            .args(["-extract", "/LiveOS/squashfs.img"])
            .arg(&sq),
    );
    let pkg = "usr/lib/python3/dist-packages/ironic";
    let list = tool(
        Command::new("unsquashfs")
            .args(["-lln", "-UTC"])
            .arg(&sq)
            .arg(pkg),
    );
    // "mode uid/gid size yyyy-mm-dd hh:mm squashfs-root/PATH"
    let entry = |suffix: &str| -> (u64, String) {
        let line = list
            .lines()
            .find(|l| l.contains(&format!("/{pkg}/")) && l.ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} under {pkg}:\n{list}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        (f[2].parse().unwrap(), format!("{} {}", f[3], f[4]))
    };
    let (py_size, py_time) = entry("/ironic/version.py");
    let pyc_path = list
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .find(|p| p.contains("/ironic/__pycache__/version.cpython-") && p.ends_with(".pyc"))
        .unwrap_or_else(|| panic!("no byte code for ironic/version.py:\n{list}"))
        .trim_start_matches("squashfs-root/")
        .to_string();
    let pyc = Command::new("unsquashfs")
        .arg("-cat")
        .arg(&sq)
        .arg(&pyc_path)
        .output()
        .unwrap()
        .stdout;
    assert!(pyc.len() >= 16, "{pyc_path} is {} bytes", pyc.len());
    let word = |at: usize| u32::from_le_bytes(pyc[at..at + 4].try_into().unwrap());
    assert_eq!(word(4), 0, "{pyc_path} is not timestamp-checked byte code");
    let recorded = tool(
        Command::new("date")
            .env("TZ", "UTC")
            .arg(format!("--date=@{}", word(8)))
            .arg("+%Y-%m-%d %H:%M"),
    );
    assert_eq!(
        (recorded.trim(), u64::from(word(12))),
        (py_time.as_str(), py_size),
        "{pyc_path} records another time or size than its source has in the image: Python would recompile it"
    );
    let _ = std::fs::remove_file(&sq);
}

/// The ESP's undercloud.yaml with `ironic: {tls: self-signed}` added,
/// the rest kept: the next boot serves the API over HTTPS.
fn esp_with_tls(img: &std::path::Path, dir: &std::path::Path) {
    let text =
        std::fs::read_to_string(repo().join("tests/fixtures/specs/undercloud-esp.yaml")).unwrap();
    assert!(
        !text.contains("\nironic:"),
        "the test's undercloud.yaml has ironic: already"
    );
    let file = dir.join("undercloud-tls.yaml");
    std::fs::write(&file, format!("{text}ironic:\n  tls: self-signed\n")).unwrap();
    let (off, _) = esp_offset(img);
    put_esp_file(img, off, &file, "::/undercloud.yaml");
}

/// A boot with `ironic.tls: self-signed`: the console shows the made-up
/// certificate's fingerprint, the API presents that certificate and
/// answers HTTPS with the password, plain HTTP gets no answer, and the
/// in-image status report checked the API over HTTPS. Returns the API
/// client trusting exactly that certificate.
fn check_tls(vm: &Vm, password: &str) -> Api {
    let console = vm.console();
    let fp = console_fingerprint(&console).unwrap_or_else(|| {
        panic!(
            "no certificate fingerprint on the console:\n{}",
            vm.console_tail()
        )
    });
    assert!(
        console.contains("with a self-signed certificate (made now"),
        "the certificate was not made at this boot:\n{}",
        vm.console_tail()
    );
    let der = server_cert(vm.api_port).expect("no TLS handshake on the API port");
    assert_eq!(
        undercloud_live::undercloud::tls::fingerprint(&der),
        fp,
        "the API presents another certificate than the console shows"
    );
    let api = Api::with_tls(vm.api_port, "admin", password, &der);
    api.call(reqwest::Method::GET, "/v1/nodes", None, 200);
    Api::with_tls(vm.api_port, "admin", "not-the-password", &der).call(
        reqwest::Method::GET,
        "/v1/nodes",
        None,
        401,
    );
    assert!(
        Api::with_auth(vm.api_port, "admin", password)
            .get("/v1")
            .is_none(),
        "the API answered plain HTTP with TLS on"
    );
    // `status` in the image trusted the API's certificate.
    assert!(
        console.contains("https://127.0.0.1:6385/v1 (200)"),
        "the status report did not reach the API over HTTPS:\n{}",
        vm.console_tail()
    );
    api
}

/// What the first boot must show before any node is touched.
fn check_boot(vm: &Vm, api: &Api) {
    let console = vm.console();
    for unit in [
        "undercloud-db.service",
        "ironic.service",
        "undercloud-nodes.service",
        "dnsmasq.service",
        "nginx.service",
    ] {
        assert!(
            console
                .lines()
                .any(|l| l.contains(unit) && l.contains("active (")),
            "{unit} not active in the status report:\n{}",
            vm.console_tail()
        );
    }
    // SQLite: MariaDB is installed but not started, nor checked.
    assert!(
        !console.lines().any(|l| l.contains("mariadb.service")),
        "the status report checks MariaDB on an SQLite undercloud:\n{}",
        vm.console_tail()
    );
    assert!(
        console.contains(&format!("http://127.0.0.1:{ESP_IMAGE_PORT}/")),
        "the image did not use the ESP's undercloud.yaml:\n{}",
        vm.console_tail()
    );
    assert!(
        console.contains("no other DHCP server answered on")
            && console.contains("DHCP 192.168.24.100-192.168.24.199"),
        "the undercloud does not serve DHCP on the link:\n{}",
        vm.console_tail()
    );
    let v1 = api.call(reqwest::Method::GET, "/v1", None, 200);
    assert_eq!(v1["id"], "v1", "{v1}");
    let drivers = api.call(reqwest::Method::GET, "/v1/drivers", None, 200);
    let names: Vec<&str> = drivers["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    for d in ["ipmi", "redfish", "manual-management"] {
        assert!(names.contains(&d), "drivers: {names:?}");
    }
    // nodes.yaml from the ESP, enrolled at boot, with its port.
    assert!(
        console.contains("undercloud-nodes: enrolled ucl-esp-node ("),
        "the ESP's nodes.yaml was not enrolled:\n{}",
        vm.console_tail()
    );
    let n = api.call(reqwest::Method::GET, "/v1/nodes/ucl-esp-node", None, 200);
    assert_eq!(n["driver"], "manual-management");
    let ports = api.call(reqwest::Method::GET, "/v1/ports?fields=address", None, 200);
    assert!(ports.to_string().contains("52:54:00:00:00:99"), "{ports}");
    // Ironic's conductor defaults give every node the image's deploy
    // ramdisk: the boot interface validates with nothing in driver_info.
    let v = api.call(
        reqwest::Method::GET,
        "/v1/nodes/ucl-esp-node/validate",
        None,
        200,
    );
    assert_eq!(v["boot"]["result"], true, "boot interface: {v}");
    assert!(
        console
            .lines()
            .any(|l| l.contains("ucl-esp-node") && l.contains("enroll")),
        "no node in the status report:\n{}",
        vm.console_tail()
    );
}

#[test]
#[ignore = "needs root, libvirt and QEMU: builds the undercloud and deploys a node (make test runs it)"]
fn undercloud_boots_and_deploys_a_node_through_redfish() {
    let t_all = Instant::now();
    let mut phases = Phases(Vec::new());
    let dir = scratch("undercloud");

    // What gets deployed, served from the host (10.0.2.2 in QEMU).
    let disk = deploy_disk_image();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(&disk, images.join("marker.qcow2")).unwrap();
    let sha = sha256_file(&images.join("marker.qcow2"));
    let files = serve(&images, Mode::Normal);

    let img = dir.join("undercloud.img");
    copy_sparse(&undercloud_image(), &img);
    let size = std::fs::metadata(&img).unwrap().len();
    check_esp(&img, &dir);
    check_bytecode(&img, &dir);

    let _libvirt = Libvirt::ensure();
    let sushy = Sushy::start(free_tcp_port());
    let link = UdpLink::free();
    let node = Node::define(
        "ucl-undercloud-node-0",
        &dir.join("node"),
        &NodeConfig::new(NODE_MAC, link),
    );

    let boot = |log: &std::path::Path| {
        Vm::start(&VmOptions {
            image: &img,
            log,
            memory_mib: 3072,
            link: Some((link.peer_port, link.node_port)),
            timeout: Duration::from_secs(3600),
        })
    };
    let t = Instant::now();
    let mut vm = boot(&dir.join("boot-1.log"));
    let api_at = vm.wait_ready(t, Duration::from_secs(1200));
    phases.add("first boot to API", api_at);
    phases.add("first boot to ready", t.elapsed().as_secs_f64());
    // The default undercloud.yaml asks for HTTP basic auth: the made-up
    // password is on the console once; without it the API refuses.
    let password = console_password(&vm.console()).unwrap_or_else(|| {
        panic!(
            "no API password on the first boot's console:\n{}",
            vm.console_tail()
        )
    });
    let anonymous = Api::new(vm.api_port);
    for path in ["/v1/nodes", "/v1/drivers"] {
        anonymous.call(reqwest::Method::GET, path, None, 401);
    }
    Api::with_auth(vm.api_port, "admin", "not-the-password").call(
        reqwest::Method::GET,
        "/v1/nodes",
        None,
        401,
    );
    let api = Api::with_auth(vm.api_port, "admin", &password);
    check_boot(&vm, &api);

    let context = || {
        format!(
            "--- undercloud console:\n{}\n--- node serial:\n{}\n--- sushy:\n{}",
            vm.console_tail(),
            tail(&node.serial(), 40),
            tail(&sushy.log_text(), 20)
        )
    };

    // Enrol: Redfish through sushy and the MAC.
    let t = Instant::now();
    let n = api.call(
        reqwest::Method::POST,
        "/v1/nodes",
        Some(&json!({
            "name": "node-0",
            "driver": "redfish",
            "driver_info": {
                "redfish_address": format!("http://10.0.2.2:{}", sushy.port),
                "redfish_system_id": node.system_path(),
            },
            "properties": {"cpu_arch": "x86_64"},
        })),
        201,
    );
    let uuid = n["uuid"].as_str().unwrap().to_string();
    api.call(
        reqwest::Method::POST,
        "/v1/ports",
        Some(&json!({"node_uuid": uuid, "address": NODE_MAC, "pxe_enabled": true})),
        201,
    );
    api.provision(&uuid, "manage");
    api.wait_provision(&uuid, "manageable", Duration::from_secs(300), &context);
    phases.add("enrol to manageable", t.elapsed().as_secs_f64());

    // Inspection: the agent boots and reports the node's hardware.
    let t = Instant::now();
    api.provision(&uuid, "inspect");
    api.wait_provision(&uuid, "manageable", Duration::from_secs(1500), &context);
    phases.add("inspection", t.elapsed().as_secs_f64());
    let inv = api.call(
        reqwest::Method::GET,
        &format!("/v1/nodes/{uuid}/inventory"),
        None,
        200,
    );
    assert!(
        inv.to_string().contains(NODE_MAC),
        "the inventory has no interface with the node's MAC: {inv}"
    );
    let disks = inv["inventory"]["disks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        disks.iter().any(|d| d["size"].as_u64() == Some(10 << 30)),
        "the inventory has no 10 GiB disk: {disks:?}"
    );

    // Cleaning (metadata erase) on the way to available.
    let t = Instant::now();
    api.provision(&uuid, "provide");
    api.wait_provision(&uuid, "available", Duration::from_secs(1500), &context);
    phases.add("cleaning to available", t.elapsed().as_secs_f64());

    // Deploy our disk image by a URL only the undercloud reaches.
    let t = Instant::now();
    let url = format!("http://10.0.2.2:{}/marker.qcow2", files.port);
    api.call(
        reqwest::Method::PATCH,
        &format!("/v1/nodes/{uuid}"),
        Some(&json!([
            {"op": "add", "path": "/instance_info/image_source", "value": url},
            {"op": "add", "path": "/instance_info/image_checksum", "value": sha},
        ])),
        200,
    );
    api.provision(&uuid, "active");
    api.wait_provision(&uuid, "active", Duration::from_secs(2400), &context);
    phases.add("deploy to active", t.elapsed().as_secs_f64());

    // The node boots its own disk to the marker.
    let t = Instant::now();
    while !node.serial().contains(MARKER) {
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "the deployed node did not reach the marker:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    phases.add("reboot to marker", t.elapsed().as_secs_f64());
    // Fast track (on by default): the agent booted once, for inspection,
    // and served cleaning and deployment without a reboot. Each boot of
    // the ramdisk prints the kernel's command line with Ironic's ipa-
    // parameters on the serial console, which keeps every boot.
    let ramdisk_boots = node
        .serial()
        .lines()
        .filter(|l| l.contains("Command line:") && l.contains("ipa-"))
        .count();
    assert_eq!(
        ramdisk_boots,
        1,
        "the node booted the deploy ramdisk {ramdisk_boots} times, not once (fast track):\n{}",
        context()
    );

    // A node enrolled just before a power cut must be there after it: the
    // API answered, so the database has committed it.
    api.call(
        reqwest::Method::POST,
        "/v1/nodes",
        Some(&json!({
            "name": "ucl-last-node",
            "driver": "ipmi",
            "driver_info": {"ipmi_address": "192.0.2.10", "ipmi_username": "admin"}
        })),
        201,
    );
    // Power cut: nothing gets a chance to flush what it had not committed.
    let port = vm.api_port;
    drop(vm);
    // QEMU dies with its parent, but not at once: the next boot must not
    // open the image while it still runs.
    wait_port_free(port);
    // The operator turns TLS on for the next boot, on the ESP.
    esp_with_tls(&img, &dir);
    let t = Instant::now();
    let mut vm = boot(&dir.join("boot-2.log"));
    let api_at = vm.wait_ready(t, Duration::from_secs(900));
    phases.add("second boot to API", api_at);
    // The password was kept on the persistence partition, and not shown
    // again.
    assert!(
        !vm.console().contains(&password),
        "the second boot showed the API password again"
    );
    let api = check_tls(&vm, &password);
    let n = api.call(reqwest::Method::GET, "/v1/nodes/node-0", None, 200);
    assert_eq!(n["uuid"], uuid.as_str());
    assert_eq!(n["provision_state"], "active", "{n}");
    let n = api.call(reqwest::Method::GET, "/v1/nodes/ucl-last-node", None, 200);
    assert_eq!(n["driver_info"]["ipmi_address"], "192.0.2.10", "{n}");
    assert!(
        vm.console()
            .contains("undercloud-nodes: ucl-esp-node is already enrolled"),
        "the second boot did not leave the ESP's node alone:\n{}",
        vm.console_tail()
    );
    drop(vm);
    drop(node);

    let list: Vec<String> = phases
        .0
        .iter()
        .map(|(n, s)| format!("{n} {s:.0} s"))
        .collect();
    println!(
        "undercloud (image {} MiB): {}; whole test {:.0} s",
        size >> 20,
        list.join(", "),
        t_all.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&img);
}
