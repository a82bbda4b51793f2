//! The provisioning test bed on its own (tests/common/testbed.rs): libvirtd,
//! sushy-emulator on 127.0.0.1 and node domains whose NIC is a UDP link on
//! 127.0.0.1. Through Redfish: read the System, boot override to Pxe, Reset
//! On; the node's UEFI network boot must send a DHCPDISCOVER from its MAC
//! down the link (the test holds the link's other end as a UdpSocket); then
//! ForceOff. Twice: with the NIC's iPXE option ROM (QEMU's default) and with
//! OVMF's own PXE. And the other end: a plain QEMU with the peer arguments
//! of `UdpLink` reaches the node's port. Needs root and libvirt
//! (scripts/install-deps); the first run makes the sushy-tools venv
//! (scripts/testbed-venv, cached).
//!
//! Prints the timings: venv, define, Reset On -> running, Reset On ->
//! DHCPDISCOVER, ForceOff -> shut off.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::scratch;
use common::testbed::*;

#[test]
fn qemu_conf_gets_root_user_and_group_once() {
    let debian = "# comment\n#user = \"libvirt-qemu\"\n#group = \"libvirt-qemu\"\nsecurity_driver = \"none\"\n";
    let fixed = qemu_conf_as_root(debian).expect("changed");
    assert!(fixed.starts_with(debian), "{fixed}");
    assert!(
        fixed.ends_with("user = \"root\"\ngroup = \"root\"\n"),
        "{fixed}"
    );
    assert_eq!(qemu_conf_as_root(&fixed), None, "idempotent");
    let other = "user = \"libvirt-qemu\"\n  group=\"kvm\"\n";
    assert_eq!(
        qemu_conf_as_root(other).unwrap(),
        "user = \"root\"\ngroup = \"root\"\n"
    );
    // "username" is not "user".
    assert!(qemu_conf_as_root("username = \"x\"\nuser = \"root\"\ngroup = \"root\"\n").is_none());
}

/// A DHCPDISCOVER frame as OVMF sends it (the parts parse_dhcp reads).
fn discover_frame(mac: [u8; 6], dport: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend(mac);
    f.extend([0x08, 0x00]);
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
    ];
    let mut udp = vec![0, 68];
    udp.extend(dport.to_be_bytes());
    udp.extend([0, 0, 0, 0]);
    let mut bootp = vec![0u8; 240];
    bootp[0] = 1;
    bootp[28..34].copy_from_slice(&mac);
    bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
    bootp.extend([53, 1, 1, 93, 2, 0, 7, 60, 9]);
    bootp.extend(b"PXEClient");
    bootp.push(255);
    udp.extend(bootp);
    ip.extend(udp);
    f.extend(ip);
    f
}

#[test]
fn dhcp_frames_are_recognised() {
    let mac = mac_bytes("52:54:00:ab:cd:ef");
    let d = parse_dhcp(&discover_frame(mac, 67)).expect("a DHCPDISCOVER");
    assert_eq!((d.src_mac, d.chaddr, d.message_type), (mac, mac, 1));
    assert_eq!(
        (d.client_arch, d.vendor_class.as_str()),
        (Some(7), "PXEClient")
    );
    assert_eq!(parse_dhcp(&discover_frame(mac, 68)), None, "not to port 67");
    assert_eq!(parse_dhcp(&[0u8; 60]), None);
}

/// What one node's boot took.
struct Timings {
    define: Duration,
    to_running: Duration,
    to_discover: Duration,
    to_off: Duration,
}

/// Defines a node on a fresh UDP link whose far end is a socket of this
/// test, boots it through Redfish (Pxe, On) until its DHCPDISCOVER arrives,
/// then ForceOff.
fn boot_to_discover(sushy: &Sushy, nic_rom: bool) -> (Dhcp, Timings) {
    // Every frame the node sends arrives here as one datagram.
    let sniffer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let link = UdpLink {
        node_port: free_udp_port(),
        peer_port: sniffer.local_addr().unwrap().port(),
    };
    let pid = std::process::id();
    let mac = format!(
        "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
        u8::from(nic_rom),
        (pid >> 16) as u8,
        (pid >> 8) as u8,
        pid as u8
    );
    let name = format!("ucl-testbed-{pid}-{}", if nic_rom { "ipxe" } else { "fw" });
    let dir = scratch(&name);
    let mut cfg = NodeConfig::new(&mac, link);
    cfg.nic_rom = nic_rom;
    let node = Node::define(&name, &dir, &cfg);

    let xml = virsh(&["dumpxml", &name]);
    assert!(xml.contains("<domain type='qemu'"), "TCG domain:\n{xml}");
    assert!(
        xml.contains("<interface type='udp'>") && !xml.contains("type='bridge'"),
        "{xml}"
    );
    assert!(xml.contains(OVMF_CODE), "{xml}");
    assert_eq!(xml.contains("<rom enabled='no'/>"), !nic_rom, "{xml}");

    // The System as Redfish shows it.
    let members = sushy.get("/redfish/v1/Systems");
    let listed = members["Members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["@odata.id"].as_str() == Some(node.system_path().as_str()));
    assert!(listed, "{} not in {members}", node.uuid);
    let sys = sushy.get(&node.system_path());
    assert_eq!(sys["UUID"], node.uuid.as_str(), "{sys}");
    assert_eq!(sys["Name"], name.as_str(), "{sys}");
    assert_eq!(sys["PowerState"], "Off", "{sys}");
    assert_eq!(sys["Boot"]["BootSourceOverrideMode"], "UEFI", "{sys}");

    sushy.set_boot(&node.uuid, "Pxe");
    let sys = sushy.get(&node.system_path());
    assert_eq!(sys["Boot"]["BootSourceOverrideTarget"], "Pxe", "{sys}");

    let t = Instant::now();
    sushy.reset(&node.uuid, "On");
    node.wait_state("running", Duration::from_secs(60));
    let to_running = t.elapsed();
    assert_eq!(sushy.get(&node.system_path())["PowerState"], "On");

    let discover = wait_dhcp_discover(&sniffer, &mac, Duration::from_secs(600));
    let to_discover = t.elapsed();
    let discover = discover.unwrap_or_else(|| {
        panic!(
            "no DHCPDISCOVER from {mac} on 127.0.0.1:{} within 600 s (domstate {}); serial:\n{}",
            link.peer_port,
            node.state(),
            node.serial()
        )
    });
    assert_eq!(discover.chaddr, mac_bytes(&mac));
    assert!(
        discover.vendor_class.starts_with("PXEClient"),
        "{discover:?}"
    );
    // 7: EFI BC, 9: EFI x86-64 (RFC 4578): a UEFI network boot.
    assert!(
        matches!(discover.client_arch, Some(7) | Some(9)),
        "{discover:?}"
    );
    // With the option ROM iPXE boots (user class "iPXE"), without it
    // OVMF's own PXE.
    assert_eq!(discover.user_class == "iPXE", nic_rom, "{discover:?}");

    let t_off = Instant::now();
    sushy.reset(&node.uuid, "ForceOff");
    node.wait_state("shut off", Duration::from_secs(60));
    let to_off = t_off.elapsed();
    assert_eq!(sushy.get(&node.system_path())["PowerState"], "Off");

    let serial = node.serial();
    let tail: Vec<&str> = serial.lines().rev().take(6).collect();
    eprintln!(
        "{name} serial (last lines):\n{}\nDHCPDISCOVER: {discover:?}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    let timings = Timings {
        define: node.define_time,
        to_running,
        to_discover,
        to_off,
    };
    (discover, timings)
}

#[test]
#[ignore = "needs root: libvirt and QEMU (make test runs it)"]
fn node_network_boots_through_redfish_on_loopback() {
    let total = Instant::now();
    let libvirt = Libvirt::ensure();
    let sushy = Sushy::start(free_tcp_port());
    let (_, venv_time) = sushy_venv();
    eprintln!(
        "timings: libvirtd {} | venv {:.1} s",
        if libvirt.started {
            "started"
        } else {
            "already running"
        },
        venv_time.as_secs_f64()
    );
    for nic_rom in [true, false] {
        let (_, t) = boot_to_discover(&sushy, nic_rom);
        eprintln!(
            "timings ({}): define {:.2} s | Reset On -> running {:.1} s | \
             Reset On -> DHCPDISCOVER {:.1} s | ForceOff -> shut off {:.1} s",
            if nic_rom { "iPXE ROM" } else { "OVMF PXE" },
            t.define.as_secs_f64(),
            t.to_running.as_secs_f64(),
            t.to_discover.as_secs_f64(),
            t.to_off.as_secs_f64(),
        );
    }
    eprintln!("timings: total {:.1} s", total.elapsed().as_secs_f64());
}

/// The other end: a plain QEMU (as the undercloud VM will be) with
/// `UdpLink::peer_qemu_args` sends its frames to the node's port, where this
/// test listens in the node's place.
#[test]
#[ignore = "needs root: libvirt and QEMU (make test runs it)"]
fn plain_qemu_peer_reaches_the_node_port() {
    let sniffer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let link = UdpLink {
        node_port: sniffer.local_addr().unwrap().port(),
        peer_port: free_udp_port(),
    };
    let dir = scratch("testbed-peer");
    let vars = dir.join("OVMF_VARS.fd");
    std::fs::copy(OVMF_VARS, &vars).expect("copying the OVMF vars (install ovmf)");
    let mac = "52:54:00:fe:00:01";
    let t = Instant::now();
    let mut qemu = std::process::Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-machine",
            "q35",
            "-m",
            "256",
            "-nographic",
        ])
        .args([
            "-nodefaults",
            "-no-reboot",
            "-serial",
            "null",
            "-monitor",
            "none",
        ])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", vars.display()))
        .args(link.peer_qemu_args("p0", mac))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("starting qemu-system-x86_64 (install qemu-system-x86)");
    let discover = wait_dhcp_discover(&sniffer, mac, Duration::from_secs(600));
    let _ = qemu.kill();
    let _ = qemu.wait();
    let discover = discover.expect("no DHCPDISCOVER from the plain QEMU peer within 600 s");
    assert_eq!(discover.chaddr, mac_bytes(mac));
    eprintln!(
        "timings: plain QEMU peer start -> DHCPDISCOVER {:.1} s ({discover:?})",
        t.elapsed().as_secs_f64()
    );
}
