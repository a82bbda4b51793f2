//! The undercloud's deploy ramdisk (kickstart/ipa-ramdisk-debian.yaml, the
//! ipa-ramdisk element): built with `format: ramdisk` from a debootstrap'd
//! Debian trixie root, booted by direct kernel boot under TCG with a
//! user-mode NIC, it must find a fake Ironic API on the host (10.0.2.2 from
//! inside QEMU), look its node up by MAC and heartbeat to it.
//!
//! The ramdisk is cached under `<cache>/ipa-ramdisk/<key>/`, keyed by the
//! spec's and the element's file contents (and the kernel and agent come
//! from the mirror, so the first run needs deb.debian.org), so a second run
//! boots without building. Root only (debootstrap, chroot).

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const NODE_UUID: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
/// Ironic hands the agent a token of at least 32 characters at its first
/// lookup; every heartbeat must carry it back.
const AGENT_TOKEN: &str = "ucl-test-agent-token-0123456789abcdefghijklmnop";

/// What the fake Ironic saw.
#[derive(Debug)]
enum Event {
    Lookup(String),
    Heartbeat(serde_json::Value),
}

/// Answers what ironic-python-agent 10.2 asks of Ironic (its
/// ironic_api_client.py): version discovery on `/` (it reads
/// `default_version.version`), `GET /v1/lookup?addresses=MAC,...` (it needs
/// `node.uuid` and `config.heartbeat_timeout`; Ironic also hands out the
/// agent token there) and `POST /v1/heartbeat/<uuid>` (202).
fn fake_ironic(events: mpsc::Sender<Event>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let events = events.clone();
            std::thread::spawn(move || {
                let Ok(req) = read_request(&stream) else {
                    return;
                };
                let version = serde_json::json!({
                    "id": "v1", "status": "CURRENT", "min_version": "1.1",
                    "version": "1.96", "links": []
                });
                let path = req.target.split('?').next().unwrap_or("/");
                let api_version = req
                    .headers
                    .iter()
                    .find(|(k, _)| k == "x-openstack-ironic-api-version")
                    .map(|(_, v)| v.as_str())
                    .unwrap_or("-");
                eprintln!(
                    "fake ironic: {} {} (API version {api_version})",
                    req.method, req.target
                );
                match (req.method.as_str(), path) {
                    ("GET", "/") => respond(
                        &stream,
                        "200 OK",
                        &serde_json::json!({
                            "name": "OpenStack Ironic API",
                            "description": "fake Ironic of tests/ipa_ramdisk.rs",
                            "versions": [version.clone()],
                            "default_version": version,
                        }),
                    ),
                    ("GET", "/v1" | "/v1/") => respond(
                        &stream,
                        "200 OK",
                        &serde_json::json!({"id": "v1", "version": version}),
                    ),
                    ("GET", "/v1/lookup") => {
                        let addresses = req
                            .target
                            .split_once("addresses=")
                            .map(|(_, a)| a.split('&').next().unwrap_or_default())
                            .unwrap_or_default()
                            .replace("%3A", ":")
                            .replace("%3a", ":")
                            .replace("%2C", ",")
                            .replace("%2c", ",");
                        let _ = events.send(Event::Lookup(addresses));
                        respond(
                            &stream,
                            "200 OK",
                            &serde_json::json!({
                                "node": {
                                    "uuid": NODE_UUID,
                                    "properties": {},
                                    "instance_info": {},
                                    "driver_internal_info": {},
                                },
                                "config": {
                                    "heartbeat_timeout": 30,
                                    "agent_token": AGENT_TOKEN,
                                    "agent_token_required": true,
                                },
                            }),
                        );
                    }
                    ("POST", p) if p == format!("/v1/heartbeat/{NODE_UUID}") => {
                        let body =
                            serde_json::from_slice(&req.body).unwrap_or(serde_json::Value::Null);
                        let _ = events.send(Event::Heartbeat(body));
                        respond(&stream, "202 Accepted", &serde_json::Value::Null);
                    }
                    _ => respond(
                        &stream,
                        "404 Not Found",
                        &serde_json::json!({"error_message": "not in the fake"}),
                    ),
                }
            });
        }
    });
    port
}

/// The bytes of file data in the ramdisk's cpio (`inspect --json`).
fn ramdisk_bytes(initramfs: &Path) -> u64 {
    let o = bin()
        .args(["inspect", "--json"])
        .arg(initramfs)
        .output()
        .expect("running undercloud-live inspect");
    assert!(o.status.success(), "inspect {} failed", initramfs.display());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect --json");
    v["ramdisk"]["bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ramdisk.bytes in inspect --json: {v}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn ipa_ramdisk_boots_to_lookup_and_heartbeat() {
    let t_all = Instant::now();
    let prefix = ipa_ramdisk();
    let kernel = prefix.with_extension("kernel");
    let initramfs = prefix.with_extension("initramfs");
    let size = std::fs::metadata(&initramfs).unwrap().len();
    println!("initramfs: {} MiB ({size} bytes)", size >> 20);
    assert!(
        size <= 300 << 20,
        "the IPA ramdisk grew past 300 MiB: {size} bytes"
    );

    let (tx, rx) = mpsc::channel();
    let port = fake_ironic(tx);
    let dir = scratch("ipa-ramdisk-boot");
    let log = dir.join("console.log");
    // The kernel unpacks the initramfs into a tmpfs that may fill half of
    // the RAM, so the RAM must be twice the unpacked root, plus what the
    // agent and systemd need (`boot`'s 4 x compressed + 512 MiB is too
    // little for a root that zstd packs to 37 %: the root fills its tmpfs
    // and the boot falls over). Rounded up to 64 MiB.
    let unpacked = ramdisk_bytes(&initramfs);
    let memory = (2 * unpacked.div_ceil(1 << 20) + 512).div_ceil(64) * 64;
    let append = format!(
        "ipa-api-url=http://10.0.2.2:{port} ipa-insecure=1 \
         systemd.journald.forward_to_console=1"
    );
    let t_boot = Instant::now();
    let mut child = bin()
        .arg("boot")
        .arg(&kernel)
        .args(["--append", &append])
        .args(["--forward", &format!("{}:9999", free_port())])
        .args(["--memory", &memory.to_string()])
        .args(["--accel", "tcg", "--timeout", "1200", "--quiet", "--log"])
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting undercloud-live boot");

    let deadline = t_boot + Duration::from_secs(1200);
    let (mut lookup, mut heartbeat) = (None, None);
    while heartbeat.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_secs(5))) {
            Ok(Event::Lookup(addresses)) => {
                let secs = t_boot.elapsed().as_secs_f64();
                println!("boot -> lookup: {secs:.0} s (addresses {addresses})");
                assert!(
                    addresses.to_ascii_lowercase().contains("52:54:00:"),
                    "the lookup names no QEMU NIC: {addresses:?}"
                );
                lookup.get_or_insert(secs);
            }
            Ok(Event::Heartbeat(body)) => {
                let secs = t_boot.elapsed().as_secs_f64();
                println!("boot -> heartbeat: {secs:.0} s: {body}");
                assert!(lookup.is_some(), "a heartbeat before any lookup");
                assert_eq!(
                    body["agent_token"], AGENT_TOKEN,
                    "the heartbeat does not carry the token from the lookup"
                );
                let url = body["callback_url"].as_str().unwrap_or_default();
                assert!(
                    url.starts_with("http") && url.contains("10.0.2."),
                    "callback_url: {url:?}"
                );
                assert_eq!(body["agent_version"], "10.2.0", "{body}");
                heartbeat = Some(secs);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(status) = child.try_wait().unwrap() {
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                    let console = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!(
                        "boot ended ({status}) before a heartbeat (lookup: {lookup:?});\n\
                         {err}\nconsole:\n{console}"
                    );
                }
                if Instant::now() >= deadline {
                    let _ = Command::new("kill")
                        .args(["-TERM", &child.id().to_string()])
                        .status();
                    let _ = child.wait();
                    let console = std::fs::read_to_string(&log).unwrap_or_default();
                    panic!("no heartbeat in 1200 s (lookup: {lookup:?}); console:\n{console}");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => unreachable!("the fake API ended"),
        }
    }
    // `boot` ends QEMU on SIGTERM.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    println!(
        "boot -> lookup {:.0} s, boot -> heartbeat {:.0} s (TCG, {memory} MiB); whole test {:.0} s",
        lookup.unwrap(),
        heartbeat.unwrap(),
        t_all.elapsed().as_secs_f64()
    );
}
