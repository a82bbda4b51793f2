//! The undercloud end to end on the Debian path: build tests/specs/undercloud.yaml
//! (the shipped `live` + `undercloud` elements on Debian trixie, debootstrapped
//! from the mirror and cached in the user's cache, a persistence partition, a
//! test undercloud.yaml on the ESP), boot it in
//! QEMU with the guest's Ironic API forwarded to the host, and from the
//! host: `GET /v1`, `GET /v1/drivers` lists `ipmi` and `redfish`, enrol a
//! node, cut the power, boot again and find the node still there.
//!
//! Prints the build time, the image size and the boot-to-API times.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The last line `undercloud-live status --wait` prints on the console.
const READY: &str = "undercloud-live status: ready";
const NOT_READY: &str = "undercloud-live status: NOT ready";
/// The image server port the test's undercloud.yaml (on the ESP) sets;
/// the image's built-in default is 8088.
const ESP_IMAGE_PORT: &str = "8090";
const API_VERSION: &str = "1.31";

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

fn get(port: u16, path: &str) -> Option<(u16, serde_json::Value)> {
    let r = client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .header("X-OpenStack-Ironic-API-Version", API_VERSION)
        .send()
        .ok()?;
    let code = r.status().as_u16();
    let body = r.text().ok()?;
    Some((
        code,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    ))
}

/// A running VM: QEMU under `undercloud-live boot`, killed (power cut)
/// when dropped.
struct Vm {
    child: Child,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(img: &Path, port: u16, log: &Path) -> Vm {
    let child = bin()
        .arg("boot")
        .arg(img)
        .args(["--as", "disk", "--firmware", "uefi", "--accel", "tcg"])
        .args(["--memory", "3072", "--timeout", "1500", "--writable"])
        .arg("--forward")
        .arg(format!("{port}:6385"))
        .arg("--log")
        .arg(log)
        .arg("--quiet")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting undercloud-live boot");
    Vm { child }
}

/// Wait for the in-image status report; meanwhile poll the API from the
/// host and return when it first answered (seconds since `t0`).
fn wait_ready(vm: &mut Vm, port: u16, log: &Path, t0: Instant, limit: Duration) -> f64 {
    let mut api_at = None;
    loop {
        let console = std::fs::read_to_string(log).unwrap_or_default();
        if api_at.is_none() && matches!(get(port, "/v1"), Some((200, _))) {
            api_at = Some(t0.elapsed().as_secs_f64());
        }
        if console.contains(READY) {
            return api_at.unwrap_or_else(|| t0.elapsed().as_secs_f64());
        }
        if console.contains(NOT_READY) {
            panic!("the image reports the undercloud is not ready; console:\n{console}");
        }
        if let Ok(Some(st)) = vm.child.try_wait() {
            let mut err = String::new();
            if let Some(e) = vm.child.stderr.take() {
                for l in BufReader::new(e).lines().map_while(Result::ok) {
                    err.push_str(&l);
                    err.push('\n');
                }
            }
            panic!("the VM stopped ({st}) before the undercloud was ready:\n{err}\nconsole:\n{console}");
        }
        if t0.elapsed() > limit {
            panic!("no status report within {limit:?}; console:\n{console}");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Wait until nothing listens on 127.0.0.1:`port` (QEMU has exited).
fn wait_port_free(port: u16) {
    let t = Instant::now();
    while TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "port {port} still taken after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn console_tail(log: &Path) -> String {
    let c = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = c.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[test]
fn undercloud_boots_serves_ironic_and_keeps_nodes() {
    let dir = scratch("undercloud");
    let img = dir.join("undercloud.iso");
    let work = dir.join("work");

    // The spec's own base (debootstrap of trixie), not the bookworm test
    // base: the user's cache keeps the debootstrap tarball across runs.
    let t = Instant::now();
    let o = run(bin()
        .arg("build")
        .arg(repo().join("tests/specs/undercloud.yaml"))
        .arg("--output")
        .arg(&img)
        .arg("--cache-dir")
        .arg(cache_root())
        .arg("--workdir")
        .arg(&work));
    assert!(
        o.status.success(),
        "build failed (needs root and the Debian mirror)"
    );
    let build_secs = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&img).unwrap().len();
    println!(
        "undercloud build: {build_secs:.0} s, image {} MiB",
        size >> 20
    );

    // The ESP carries the operator's undercloud.yaml, read back by an
    // independent FAT reader (mtools) from the ESP partition's bytes.
    let o = run(bin().args(["inspect", "--json"]).arg(&img));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let esp = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type_name"] == "EFI System")
        .expect("an EFI System partition");
    let (off, len) = (
        esp["offset"].as_u64().unwrap(),
        esp["bytes"].as_u64().unwrap(),
    );
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
    let o = Command::new("mtype")
        .args(["-i"])
        .arg(&esp_img)
        .arg("::/undercloud.yaml")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && text.contains(&format!("port: {ESP_IMAGE_PORT}")),
        "undercloud.yaml is not on the ESP: {text} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_file(&esp_img);

    let port = free_port();
    let log1 = dir.join("boot-1.log");
    let t0 = Instant::now();
    let mut vm = start(&img, port, &log1);
    let api1 = wait_ready(&mut vm, port, &log1, t0, Duration::from_secs(900));
    let ready1 = t0.elapsed().as_secs_f64();
    let console = std::fs::read_to_string(&log1).unwrap();
    // The status table the image printed: every service and endpoint up,
    // and the image server on the port from the ESP's undercloud.yaml.
    for unit in [
        "mariadb.service",
        "undercloud-db.service",
        "ironic-api.service",
        "ironic-conductor.service",
        "dnsmasq.service",
        "nginx.service",
    ] {
        assert!(
            console
                .lines()
                .any(|l| l.contains(unit) && l.contains("active (")),
            "{unit} not active in the status report:\n{}",
            console_tail(&log1)
        );
    }
    assert!(
        console.contains(&format!("http://127.0.0.1:{ESP_IMAGE_PORT}/")),
        "the image did not use the ESP's undercloud.yaml:\n{}",
        console_tail(&log1)
    );

    let (code, v1) = get(port, "/v1").expect("GET /v1");
    assert_eq!(code, 200, "{v1}");
    assert_eq!(v1["id"], "v1", "{v1}");
    let (code, drivers) = get(port, "/v1/drivers").expect("GET /v1/drivers");
    assert_eq!(code, 200, "{drivers}");
    let names: Vec<&str> = drivers["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    assert!(
        names.contains(&"ipmi") && names.contains(&"redfish"),
        "drivers: {names:?}"
    );

    // Enrol a node. The API answers only after the conductor has stored it.
    let r = client()
        .post(format!("http://127.0.0.1:{port}/v1/nodes"))
        .header("X-OpenStack-Ironic-API-Version", API_VERSION)
        .header("Content-Type", "application/json")
        .body(
            serde_json::json!({
                "name": "ucl-test-node",
                "driver": "ipmi",
                "driver_info": {"ipmi_address": "192.0.2.10", "ipmi_username": "admin"}
            })
            .to_string(),
        )
        .send()
        .expect("POST /v1/nodes");
    let code = r.status().as_u16();
    let body = r.text().unwrap_or_default();
    assert_eq!(code, 201, "POST /v1/nodes: {body}");
    let (code, node) = get(port, "/v1/nodes/ucl-test-node").unwrap();
    assert_eq!(code, 200, "{node}");
    let uuid = node["uuid"].as_str().unwrap().to_string();

    // Power cut: nothing gets a chance to flush what it had not committed.
    drop(vm);
    // QEMU dies with its parent, but not at once: the next boot must not
    // open the image (or the port) while it still runs.
    wait_port_free(port);

    let log2 = dir.join("boot-2.log");
    let t0 = Instant::now();
    let mut vm = start(&img, port, &log2);
    let api2 = wait_ready(&mut vm, port, &log2, t0, Duration::from_secs(900));
    let ready2 = t0.elapsed().as_secs_f64();
    let (code, node) = get(port, "/v1/nodes/ucl-test-node").expect("GET the node after reboot");
    assert_eq!(code, 200, "the node is gone after a reboot: {node}");
    assert_eq!(node["uuid"], uuid.as_str());
    assert_eq!(node["driver"], "ipmi");
    assert_eq!(node["driver_info"]["ipmi_address"], "192.0.2.10");
    drop(vm);

    println!(
        "undercloud: build {build_secs:.0} s, image {} MiB; boot 1 (first boot): API after {api1:.0} s, all ready after {ready1:.0} s; \
         boot 2 (persistent): API after {api2:.0} s, all ready after {ready2:.0} s; node kept across the power cut",
        size >> 20
    );
    let _ = std::fs::remove_file(&img);
}
