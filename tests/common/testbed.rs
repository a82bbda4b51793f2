//! The provisioning test bed (docs: DESIGN "The provisioning test bed"):
//! libvirtd, sushy-emulator (Redfish BMC, libvirt driver) and node domains,
//! everything on 127.0.0.1 — no bridge, no tap, no other address.
//!
//! ```text
//! let _lv = Libvirt::ensure();                      // libvirtd answers
//! let sushy = Sushy::start(free_tcp_port());         // http://127.0.0.1:PORT
//! let link = UdpLink { node_port, peer_port };       // 127.0.0.1 both ends
//! let node = Node::define("ucl-x", &dir, &NodeConfig::new(mac, link));
//! sushy.set_boot(&node.uuid, "Pxe");
//! sushy.reset(&node.uuid, "On");                     // DHCP down the link
//! // the undercloud QEMU takes `link.peer_qemu_args("prov", mac)`.
//! ```
//!
//! Everything started here is stopped by `Drop` except libvirtd and
//! virtlogd, which stay up for the next test (start sushy-emulator again
//! whenever libvirtd (re)starts: sushy keeps a dead connection and answers
//! 500). Missing tools panic with the Debian package to install.
#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const LIBVIRT_URI: &str = "qemu:///system";
pub const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// UEFI firmware of the nodes: Debian's `ovmf`, 4 MiB build without Secure
/// Boot (the `.secboot`/`.ms` variants need SMM and enrolled keys; the
/// 2 MiB `OVMF_CODE.fd` is the legacy layout). The network boot is the
/// NIC's iPXE option ROM, or OVMF's own PXE (IPv4, then IPv6, then HTTP)
/// with [`NodeConfig::nic_rom`] off.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Only for a node switched to Secure Boot through Redfish (never by us).
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// Panics with a one-line message naming the package when `path` is absent.
fn require(path: &str, package: &str) {
    if !Path::new(path).exists() {
        panic!("{path} not found: install {package} (scripts/install-deps)");
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the test bed keeps its logs and configs between runs (for reading
/// after a failure): `$CARGO_TARGET_TMPDIR/testbed`.
pub fn testbed_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("testbed");
    fs::create_dir_all(&d).unwrap();
    d
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1")
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port free on 127.0.0.1 right now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1")
        .local_addr()
        .unwrap()
        .port()
}

/// `virsh -c qemu:///system ARGS`, its output whatever the exit status.
pub fn virsh_output(args: &[&str]) -> Output {
    Command::new("virsh")
        .arg("-c")
        .arg(LIBVIRT_URI)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("running virsh: {e}: install libvirt-clients (scripts/install-deps)")
        })
}

/// `virsh -c qemu:///system ARGS`: its stdout, trimmed; a failure panics.
pub fn virsh(args: &[&str]) -> String {
    let o = virsh_output(args);
    assert!(
        o.status.success(),
        "virsh {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

// ---------------------------------------------------------------- libvirt

/// libvirtd on `qemu:///system`.
pub struct Libvirt {
    /// This call started libvirtd (an already running one was not touched).
    pub started: bool,
}

impl Libvirt {
    /// libvirtd answering `virsh -c qemu:///system version`. If it does not:
    /// `user = "root"` and `group = "root"` in /etc/libvirt/qemu.conf (else
    /// libvirt cannot open /dev/kvm here, re-probes QEMU on every call and a
    /// define takes a minute), then `virtlogd -d` and `libvirtd -d` (there is
    /// no systemd), and wait until virsh answers. Both daemons outlive the
    /// test, so later tests find them running.
    pub fn ensure() -> Libvirt {
        static ONCE: Mutex<()> = Mutex::new(());
        let _serial = ONCE.lock().unwrap_or_else(|e| e.into_inner());
        require("/usr/bin/virsh", "libvirt-clients");
        require("/usr/sbin/libvirtd", "libvirt-daemon-system");
        require("/usr/sbin/virtlogd", "libvirt-daemon-system");
        require("/usr/bin/qemu-system-x86_64", "qemu-system-x86");
        if virsh_output(&["version"]).status.success() {
            let conf = fs::read_to_string(QEMU_CONF).unwrap_or_default();
            if qemu_conf_as_root(&conf).is_some() {
                eprintln!(
                    "testbed: warning: libvirtd runs without user/group = \"root\" in {QEMU_CONF}: \
                     defines will be slow (stop libvirtd to let the test bed restart it)"
                );
            }
            return Libvirt { started: false };
        }
        let t = Instant::now();
        let conf = fs::read_to_string(QEMU_CONF).unwrap_or_default();
        if let Some(new) = qemu_conf_as_root(&conf) {
            let tmp = format!("{QEMU_CONF}.ucl-tmp-{}", std::process::id());
            fs::write(&tmp, new).unwrap_or_else(|e| panic!("writing {tmp}: {e}"));
            if let Ok(meta) = fs::metadata(QEMU_CONF) {
                fs::set_permissions(&tmp, meta.permissions()).unwrap();
            }
            fs::rename(&tmp, QEMU_CONF).unwrap_or_else(|e| panic!("writing {QEMU_CONF}: {e}"));
            eprintln!("testbed: set user/group = \"root\" in {QEMU_CONF}");
        }
        // An already running daemon makes the second one exit at once (its
        // pid file is locked): no need to look for it first.
        for daemon in ["/usr/sbin/virtlogd", "/usr/sbin/libvirtd"] {
            let status = Command::new(daemon)
                .arg("-d")
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("starting {daemon}: {e}"));
            eprintln!("testbed: {daemon} -d: {status}");
        }
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let o = virsh_output(&["version"]);
            if o.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "libvirtd started but virsh -c {LIBVIRT_URI} version still fails after 180 s: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        eprintln!("testbed: libvirtd up in {:.1} s", t.elapsed().as_secs_f64());
        Libvirt { started: true }
    }
}

/// qemu.conf with `user = "root"` and `group = "root"`, or `None` when it
/// says so already. Other lines are kept; a `user`/`group` line that says
/// something else is replaced, a missing one appended.
pub fn qemu_conf_as_root(text: &str) -> Option<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut changed = false;
    for key in ["user", "group"] {
        let want = format!("{key} = \"root\"");
        let is_key = |l: &str| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        };
        let mut found = false;
        for l in lines.iter_mut().filter(|l| is_key(l)) {
            found = true;
            let value = l.split_once('=').unwrap().1.trim();
            if value != "\"root\"" && value != "\"+0\"" {
                *l = want.clone();
                changed = true;
            }
        }
        if !found {
            lines.push(want);
            changed = true;
        }
    }
    changed.then(|| lines.join("\n") + "\n")
}

// ------------------------------------------------------------------ sushy

/// sushy-emulator (PyPI sushy-tools 2.2.0, pinned with hashes in
/// scripts/testbed-venv) on 127.0.0.1:PORT with the libvirt driver.
/// Killed on drop.
pub struct Sushy {
    pub port: u16,
    pub log: PathBuf,
    child: Child,
    http: reqwest::blocking::Client,
}

/// The venv of scripts/testbed-venv (made once, then cached), and how long
/// getting it took.
pub fn sushy_venv() -> (PathBuf, Duration) {
    static VENV: OnceLock<(PathBuf, Duration)> = OnceLock::new();
    VENV.get_or_init(|| {
        require("/usr/bin/python3", "python3");
        let t = Instant::now();
        let out = Command::new(repo().join("scripts/testbed-venv"))
            .stdin(Stdio::null())
            .output()
            .expect("running scripts/testbed-venv");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "scripts/testbed-venv failed: {}",
            err.trim()
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = PathBuf::from(stdout.lines().last().expect("testbed-venv's folder").trim());
        eprint!("{err}");
        (dir, t.elapsed())
    })
    .clone()
}

impl Sushy {
    /// Starts sushy-emulator on 127.0.0.1:`port` and waits until
    /// `GET /redfish/v1/Systems` answers 200. Call [`Libvirt::ensure`] first.
    pub fn start(port: u16) -> Sushy {
        let (venv, venv_time) = sushy_venv();
        eprintln!(
            "testbed: sushy venv {} ({:.1} s)",
            venv.display(),
            venv_time.as_secs_f64()
        );
        let dir = testbed_dir();
        let conf = dir.join(format!("sushy-{port}.conf"));
        // If Ironic switches the boot mode through Redfish, sushy rewrites the
        // loader from this map: keep it on the firmware the nodes use (its
        // default is the 2 MiB Secure Boot build).
        fs::write(
            &conf,
            format!(
                "SUSHY_EMULATOR_BOOT_LOADER_MAP = {{\n\
                 \x20   'UEFI': {{'x86_64': '{OVMF_CODE}'}},\n\
                 \x20   'Legacy': {{'x86_64': None}},\n\
                 }}\n\
                 SUSHY_EMULATOR_SECURE_BOOT_DISABLED_NVRAM = '{OVMF_VARS}'\n\
                 SUSHY_EMULATOR_SECURE_BOOT_ENABLED_NVRAM = '{OVMF_VARS_MS}'\n"
            ),
        )
        .unwrap();
        let log = dir.join(format!("sushy-{port}.log"));
        let logf = fs::File::create(&log).unwrap();
        let t = Instant::now();
        let child = Command::new(venv.join("bin/sushy-emulator"))
            .arg("--config")
            .arg(&conf)
            .args(["--interface", "127.0.0.1", "--port", &port.to_string()])
            .args(["--libvirt-uri", LIBVIRT_URI])
            .env_remove("SUSHY_EMULATOR_CONFIG")
            .env_remove("SUSHY_EMULATOR_LIBVIRT_URI")
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .unwrap_or_else(|e| panic!("starting sushy-emulator from {}: {e}", venv.display()));
        let http = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let mut sushy = Sushy {
            port,
            log,
            child,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = sushy.child.try_wait() {
                panic!(
                    "sushy-emulator exited ({status}) before answering:\n{}",
                    sushy.log_text()
                );
            }
            if let Ok(r) = sushy.http.get(sushy.url("/redfish/v1/Systems")).send() {
                if r.status() == 200 {
                    break;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "sushy-emulator: GET /redfish/v1/Systems not 200 after 60 s:\n{}",
                    sushy.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "testbed: sushy-emulator on 127.0.0.1:{port} in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        sushy
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> String {
        let mut req = self.http.request(method.clone(), self.url(path));
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let r = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_text()));
        let status = r.status();
        let text = r.text().unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} {path}: {status}: {text}\nsushy log:\n{}",
            self.log_text()
        );
        text
    }

    /// GET `path` (e.g. `/redfish/v1/Systems/UUID`) as JSON; non-2xx panics.
    pub fn get(&self, path: &str) -> Value {
        let text = self.send(reqwest::Method::GET, path, None);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// PATCH `path` with a JSON body; non-2xx panics.
    pub fn patch(&self, path: &str, body: &Value) {
        self.send(reqwest::Method::PATCH, path, Some(body));
    }

    /// POST `path` with a JSON body; non-2xx panics.
    pub fn post(&self, path: &str, body: &Value) {
        self.send(reqwest::Method::POST, path, Some(body));
    }

    /// Boot source override of a system (sushy's libvirt driver makes every
    /// override "Continuous"): `Pxe`, `Hdd`, `Cd`.
    pub fn set_boot(&self, uuid: &str, target: &str) {
        self.patch(
            &format!("/redfish/v1/Systems/{uuid}"),
            &serde_json::json!({"Boot": {
                "BootSourceOverrideTarget": target,
                "BootSourceOverrideEnabled": "Continuous"}}),
        );
    }

    /// `ComputerSystem.Reset` with `On`, `ForceOff`, `ForceRestart`, ...
    pub fn reset(&self, uuid: &str, reset_type: &str) {
        self.post(
            &format!("/redfish/v1/Systems/{uuid}/Actions/ComputerSystem.Reset"),
            &serde_json::json!({ "ResetType": reset_type }),
        );
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------ UDP link

/// A point-to-point Ethernet link over UDP on 127.0.0.1: the node's
/// `<interface type='udp'>` binds `node_port` and sends to `peer_port`;
/// the peer (a plain QEMU: the undercloud VM, or a test's UdpSocket) binds
/// `peer_port` and sends to `node_port`. Each datagram is one raw Ethernet
/// frame. A link joins exactly two ends.
#[derive(Clone, Copy, Debug)]
pub struct UdpLink {
    pub node_port: u16,
    pub peer_port: u16,
}

impl UdpLink {
    /// Two ports free on 127.0.0.1 right now.
    pub fn free() -> UdpLink {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        UdpLink {
            node_port: a.local_addr().unwrap().port(),
            peer_port: b.local_addr().unwrap().port(),
        }
    }

    /// The `-netdev` value for the plain QEMU on the peer end:
    /// `socket,id=ID,udp=127.0.0.1:NODE,localaddr=127.0.0.1:PEER` (what
    /// libvirt itself gives the node's QEMU; QEMU 7.2+ also has the
    /// equivalent `dgram` netdev, see [`UdpLink::peer_netdev_dgram`]).
    pub fn peer_netdev(&self, id: &str) -> String {
        format!(
            "socket,id={id},udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
            self.node_port, self.peer_port
        )
    }

    /// The same as [`UdpLink::peer_netdev`] with QEMU ≥ 7.2's `dgram`.
    pub fn peer_netdev_dgram(&self, id: &str) -> String {
        format!(
            "dgram,id={id},remote.type=inet,remote.host=127.0.0.1,remote.port={},\
             local.type=inet,local.host=127.0.0.1,local.port={}",
            self.node_port, self.peer_port
        )
    }

    /// QEMU arguments for a virtio NIC on the peer end with MAC `mac`:
    /// `-netdev socket,... -device virtio-net-pci,netdev=ID,mac=MAC`.
    pub fn peer_qemu_args(&self, id: &str, mac: &str) -> Vec<String> {
        vec![
            "-netdev".into(),
            self.peer_netdev(id),
            "-device".into(),
            format!("virtio-net-pci,netdev={id},mac={mac}"),
        ]
    }
}

// ------------------------------------------------------------------ node

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF ([`OVMF_CODE`]), NVRAM from [`OVMF_VARS`] in the node's folder.
    Uefi,
    /// SeaBIOS (QEMU's default), its output on the serial file.
    Bios,
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// `52:54:00:xx:xx:xx` (what Ironic's port is enrolled with).
    pub mac: String,
    pub link: UdpLink,
    /// The deploy ramdisk needs about 2.5 GiB. TCG does not allocate it
    /// up front.
    pub memory_mib: u32,
    pub vcpus: u32,
    pub disk_gib: u32,
    pub firmware: Firmware,
    /// QEMU's option ROM on the NIC (libvirt's default): the network boot
    /// is then iPXE's (Debian's ipxe-qemu `efi-virtio.rom`), whose first
    /// DHCPDISCOVER already says user-class "iPXE". `false` adds
    /// `<rom enabled='no'/>`: the firmware's own PXE (OVMF's, no user
    /// class), as on bare metal, which must then be chained to iPXE.
    pub nic_rom: bool,
}

impl NodeConfig {
    /// 2560 MiB, 1 vCPU, 10 GiB empty disk, UEFI, iPXE option ROM.
    pub fn new(mac: &str, link: UdpLink) -> NodeConfig {
        NodeConfig {
            mac: mac.to_string(),
            link,
            memory_mib: 2560,
            vcpus: 1,
            disk_gib: 10,
            firmware: Firmware::Uefi,
            nic_rom: true,
        }
    }
}

/// A libvirt domain standing for a bare-metal node: TCG, network boot
/// first then its empty qcow2 disk, serial console to a file (appended to
/// across power cycles, so every boot of the node is in it), one NIC on a
/// [`UdpLink`]. Destroyed and undefined (with its NVRAM) on drop.
pub struct Node {
    pub name: String,
    /// libvirt's UUID: sushy's System id.
    pub uuid: String,
    pub disk: PathBuf,
    pub serial_log: PathBuf,
    pub nvram: Option<PathBuf>,
    pub config: NodeConfig,
    /// How long `virsh define` took.
    pub define_time: Duration,
}

/// The domain XML of a node (files under `dir`).
pub fn node_xml(name: &str, dir: &Path, cfg: &NodeConfig) -> String {
    let esc = |p: &Path| {
        p.display()
            .to_string()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('\'', "&apos;")
    };
    let disk = dir.join(format!("{name}.qcow2"));
    let serial = dir.join(format!("{name}.serial.log"));
    let firmware = match cfg.firmware {
        Firmware::Uefi => format!(
            "    <loader readonly='yes' secure='no' type='pflash'>{OVMF_CODE}</loader>\n    \
             <nvram template='{OVMF_VARS}'>{}</nvram>\n",
            esc(&dir.join(format!("{name}_VARS.fd")))
        ),
        Firmware::Bios => "    <bios useserial='yes'/>\n".to_string(),
    };
    let rom = if cfg.nic_rom {
        ""
    } else {
        "\n      <rom enabled='no'/>"
    };
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
{firmware}  </os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
      <boot order='2'/>
    </disk>
    <interface type='udp'>
      <mac address='{mac}'/>
      <source address='127.0.0.1' port='{peer}'>
        <local address='127.0.0.1' port='{local}'/>
      </source>
      <model type='virtio'/>{rom}
      <boot order='1'/>
    </interface>
    <serial type='file'>
      <source path='{serial}' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
",
        mem = cfg.memory_mib,
        vcpus = cfg.vcpus,
        disk = esc(&disk),
        mac = cfg.mac,
        peer = cfg.link.peer_port,
        local = cfg.link.node_port,
        serial = esc(&serial),
    )
}

impl Node {
    /// Defines domain `name` (a stale one of that name, left by a killed
    /// run, is removed first) with its disk, NVRAM and serial file in
    /// `dir`. Call [`Libvirt::ensure`] first.
    pub fn define(name: &str, dir: &Path, cfg: &NodeConfig) -> Node {
        require("/usr/bin/qemu-img", "qemu-utils");
        if cfg.firmware == Firmware::Uefi {
            require(OVMF_CODE, "ovmf");
            require(OVMF_VARS, "ovmf");
        }
        fs::create_dir_all(dir).unwrap();
        let dir = fs::canonicalize(dir).unwrap();
        if virsh_output(&["domuuid", name]).status.success() {
            eprintln!("testbed: removing stale domain {name}");
            remove_domain(name);
        }
        let disk = dir.join(format!("{name}.qcow2"));
        let serial_log = dir.join(format!("{name}.serial.log"));
        let nvram = (cfg.firmware == Firmware::Uefi).then(|| dir.join(format!("{name}_VARS.fd")));
        let _ = fs::remove_file(&serial_log);
        if let Some(n) = &nvram {
            let _ = fs::remove_file(n);
        }
        let o = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&disk)
            .arg(format!("{}G", cfg.disk_gib))
            .output()
            .expect("running qemu-img");
        assert!(
            o.status.success(),
            "qemu-img create {}: {}",
            disk.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let xml_path = dir.join(format!("{name}.xml"));
        fs::write(&xml_path, node_xml(name, &dir, cfg)).unwrap();
        let t = Instant::now();
        virsh(&["define", xml_path.to_str().unwrap()]);
        let define_time = t.elapsed();
        let uuid = virsh(&["domuuid", name]);
        eprintln!(
            "testbed: defined {name} ({uuid}) in {:.2} s",
            define_time.as_secs_f64()
        );
        Node {
            name: name.to_string(),
            uuid,
            disk,
            serial_log,
            nvram,
            config: cfg.clone(),
            define_time,
        }
    }

    /// `virsh domstate`: "running", "shut off", ...
    pub fn state(&self) -> String {
        virsh(&["domstate", &self.name])
    }

    /// Waits until `virsh domstate` says `want`; the time it took.
    pub fn wait_state(&self, want: &str, timeout: Duration) -> Duration {
        let t = Instant::now();
        loop {
            let s = self.state();
            if s == want {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < timeout,
                "{}: domstate {s:?}, not {want:?} after {timeout:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the node printed on its serial console so far.
    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.serial_log).unwrap_or_default()).into_owned()
    }

    /// The redfish path of this node's System.
    pub fn system_path(&self) -> String {
        format!("/redfish/v1/Systems/{}", self.uuid)
    }
}

fn remove_domain(name: &str) {
    let _ = virsh_output(&["destroy", name]);
    let o = virsh_output(&["undefine", "--nvram", name]);
    if !o.status.success() {
        // A domain without NVRAM refuses nothing, but older libvirt
        // refuses --nvram for BIOS domains: try again without it.
        let _ = virsh_output(&["undefine", name]);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        remove_domain(&self.name);
        let _ = fs::remove_file(&self.disk);
        if let Some(n) = &self.nvram {
            let _ = fs::remove_file(n);
        }
    }
}

// ------------------------------------------------------------------ DHCP

/// A DHCP client message seen on the link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcp {
    /// Ethernet source address.
    pub src_mac: [u8; 6],
    /// BOOTP client hardware address.
    pub chaddr: [u8; 6],
    /// Option 53: 1 DISCOVER, 3 REQUEST, ...
    pub message_type: u8,
    /// Option 60, e.g. "PXEClient:Arch:00007:UNDI:003000".
    pub vendor_class: String,
    /// Option 93: 0 BIOS, 7 or 9 UEFI x86-64.
    pub client_arch: Option<u16>,
    /// Option 77: "iPXE" from iPXE.
    pub user_class: String,
}

/// Parses one raw Ethernet frame as an IPv4 UDP datagram to port 67 holding
/// a DHCP message; anything else is `None`.
pub fn parse_dhcp(frame: &[u8]) -> Option<Dhcp> {
    if frame.len() < 14 + 20 + 8 + 240 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ip[9] != 17 || ip.len() < ihl + 8 + 240 {
        return None;
    }
    let udp = &ip[ihl..];
    if u16::from_be_bytes([udp[2], udp[3]]) != 67 {
        return None;
    }
    let bootp = &udp[8..];
    if bootp[0] != 1 || bootp[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut d = Dhcp {
        src_mac: frame[6..12].try_into().unwrap(),
        chaddr: bootp[28..34].try_into().unwrap(),
        message_type: 0,
        vendor_class: String::new(),
        client_arch: None,
        user_class: String::new(),
    };
    let mut opts = &bootp[240..];
    while let [code, rest @ ..] = opts {
        match *code {
            0 => opts = rest,
            255 => break,
            _ => {
                let [len, rest @ ..] = rest else { break };
                let len = usize::from(*len);
                if rest.len() < len {
                    break;
                }
                let v = &rest[..len];
                match code {
                    53 if len == 1 => d.message_type = v[0],
                    60 => d.vendor_class = String::from_utf8_lossy(v).into_owned(),
                    93 if len >= 2 => d.client_arch = Some(u16::from_be_bytes([v[0], v[1]])),
                    77 => d.user_class = String::from_utf8_lossy(v).into_owned(),
                    _ => {}
                }
                opts = &rest[len..];
            }
        }
    }
    (d.message_type != 0).then_some(d)
}

/// `52:54:00:12:34:56` as bytes.
pub fn mac_bytes(mac: &str) -> [u8; 6] {
    let v: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad MAC {mac}")))
        .collect();
    v.try_into().unwrap_or_else(|_| panic!("bad MAC {mac}"))
}

/// Reads frames from `sock` (bound to the link's peer port) until a
/// DHCPDISCOVER from `mac` arrives; `None` after `timeout`.
pub fn wait_dhcp_discover(sock: &UdpSocket, mac: &str, timeout: Duration) -> Option<Dhcp> {
    let want = mac_bytes(mac);
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if let Some(d) = parse_dhcp(&buf[..n]) {
            if d.src_mac == want && d.message_type == 1 {
                return Some(d);
            }
        }
    }
    None
}
