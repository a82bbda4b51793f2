//! The DHCP guard against a real DHCP server: two network namespaces made
//! for the test, joined by a veth pair created inside them (nothing appears
//! in the machine's own namespace, no real interface is touched), a real
//! dnsmasq serving DHCP in one, and in the other the probe and
//! `undercloud configure`. The client side is set up as at boot: its
//! interface down and without an address, reverse-path filtering loose
//! (`rp_filter=2`, systemd's default).
//!
//! Needs root, iproute2 and dnsmasq (scripts/install-deps); a missing one
//! fails the tests.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use undercloud_live::undercloud::dhcp_probe::{self, Outcome, ProbeOptions};

const PROBE: Duration = Duration::from_secs(5);

fn require() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "tests/dhcp_guard.rs makes network namespaces: run it as root"
    );
    let missing: Vec<&str> = ["ip", "dnsmasq"].into_iter().filter(|t| !have(t)).collect();
    // scripts/install-deps installs them: a missing one is a broken set-up,
    // not a reason to pass.
    assert!(
        missing.is_empty(),
        "{} not installed (run scripts/install-deps: iproute2, dnsmasq-base)",
        missing.join(", ")
    );
}

fn sh(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn ip(args: &[&str]) -> Output {
    sh(Command::new("ip").args(args))
}

/// Two namespaces, `srv` and `cli`, and a veth pair between them; removed
/// (with the dnsmasq in `srv`) when dropped, a failed assertion included.
struct Net {
    srv: String,
    cli: String,
    /// The server's end, in `srv`, 10.231.N.1/24.
    srv_if: String,
    /// The probing end, in `cli`: no address, down.
    cli_if: String,
    server_ip: Ipv4Addr,
    dir: PathBuf,
    dnsmasq: Option<Child>,
}

impl Net {
    fn new(name: &str) -> Net {
        require();
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let net = Net {
            srv: format!("ucl-dhcp-{pid}-{n}-srv"),
            cli: format!("ucl-dhcp-{pid}-{n}-cli"),
            srv_if: "ucl-srv".into(),
            cli_if: "ucl-cli".into(),
            server_ip: Ipv4Addr::new(10, 231, n as u8, 1),
            dir: scratch(&format!("dhcp-guard-{name}")),
            dnsmasq: None,
        };
        // From here on, Drop cleans up whatever was made.
        ip(&["netns", "add", &net.srv]);
        ip(&["netns", "add", &net.cli]);
        ip(&[
            "link",
            "add",
            &net.srv_if,
            "netns",
            &net.srv,
            "type",
            "veth",
            "peer",
            "name",
            &net.cli_if,
            "netns",
            &net.cli,
        ]);
        let addr = format!("{}/24", net.server_ip);
        ip(&["-n", &net.srv, "addr", "add", &addr, "dev", &net.srv_if]);
        ip(&["-n", &net.srv, "link", "set", "lo", "up"]);
        ip(&["-n", &net.srv, "link", "set", &net.srv_if, "up"]);
        sh(Command::new("ip")
            .args(["netns", "exec", &net.cli, "sh", "-c"])
            .arg(format!(
                "for c in all default {}; do echo 2 > /proc/sys/net/ipv4/conf/$c/rp_filter; done",
                net.cli_if
            )));
        net
    }

    fn net(&self) -> String {
        let o = self.server_ip.octets();
        format!("{}.{}.{}", o[0], o[1], o[2])
    }

    fn log(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// A dnsmasq as a router or office server runs it: DHCP only, its
    /// default ping check before offering included.
    fn start_dnsmasq(&mut self) {
        let net = self.net();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.srv,
                "dnsmasq",
                "--keep-in-foreground",
            ])
            .args([
                "--conf-file=/dev/null",
                "--port=0",
                "--bind-interfaces",
                "--pid-file=",
            ])
            .arg(format!("--interface={}", self.srv_if))
            .arg(format!("--dhcp-range={net}.100,{net}.150,255.255.255.0,1h"))
            .arg(format!(
                "--dhcp-leasefile={}",
                self.dir.join("leases").display()
            ))
            .arg("--log-dhcp")
            .arg(format!("--log-facility={}", self.log().display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting dnsmasq");
        self.dnsmasq = Some(child);
        // Up once its DHCP socket is bound.
        let t0 = Instant::now();
        loop {
            let udp = ip(&["netns", "exec", &self.srv, "cat", "/proc/net/udp"]);
            if String::from_utf8_lossy(&udp.stdout).contains(":0043 ") {
                return;
            }
            if let Some(st) = self.dnsmasq.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "dnsmasq exited ({st}): {}",
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "dnsmasq did not bind udp 67"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// DHCPDISCOVERs the server has seen.
    fn discovers(&self) -> usize {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .matches("DHCPDISCOVER(")
            .count()
    }

    /// Run `f` in a thread that entered the client namespace.
    fn in_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = std::fs::File::open(Path::new("/run/netns").join(&self.cli)).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap()
    }

    fn probe(&self) -> (Outcome, Duration) {
        let iface = self.cli_if.clone();
        self.in_client(move || {
            let t0 = Instant::now();
            let out = dhcp_probe::probe(&ProbeOptions {
                interface: &iface,
                timeout: PROBE,
                link_wait: Duration::from_secs(5),
            })
            .expect("probe");
            (out, t0.elapsed())
        })
    }

    fn client_link_flags(&self) -> String {
        let o = ip(&["-n", &self.cli, "-o", "link", "show", &self.cli_if]);
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let start = text.find('<').unwrap();
        let end = text.find('>').unwrap();
        text[start + 1..end].to_string()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop_dnsmasq();
        for ns in [&self.srv, &self.cli] {
            // Deleting a namespace deletes the veth end in it.
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[test]
#[ignore = "needs root: makes network namespaces (make test runs it)"]
fn the_probe_hears_a_real_dnsmasq_and_then_nothing() {
    let mut net = Net::new("probe");
    net.start_dnsmasq();
    assert!(!net.client_link_flags().split(',').any(|f| f == "UP"));

    let (out, took) = net.probe();
    eprintln!("with dnsmasq: {out:?} after {took:.2?}");
    let Outcome::Answered(offer) = out else {
        panic!("dnsmasq serves DHCP but the probe reported {out:?}");
    };
    assert_eq!(offer.server, net.server_ip);
    assert_eq!(offer.source, net.server_ip);
    let o = offer.offered.octets();
    assert!(
        offer
            .offered
            .to_string()
            .starts_with(&format!("{}.", net.net()))
            && (100..=150).contains(&o[3]),
        "{offer:?}"
    );
    assert!(took < PROBE, "{took:?}");
    assert!(net.discovers() >= 1);
    // The probe brought the interface up and set it down again.
    let flags = net.client_link_flags();
    assert!(!flags.split(',').any(|f| f == "UP"), "{flags}");

    net.stop_dnsmasq();
    let (out, took) = net.probe();
    eprintln!("without dnsmasq: {out:?} after {took:.2?}");
    assert_eq!(out, Outcome::Silent);
    assert!(
        took >= PROBE && took < PROBE + Duration::from_secs(2),
        "{took:?}"
    );
}

#[test]
#[ignore = "needs root: makes network namespaces (make test runs it)"]
fn the_probe_reports_no_link_and_a_missing_interface() {
    let net = Net::new("nolink");
    // The server's end down: the client's has no carrier.
    ip(&["-n", &net.srv, "link", "set", &net.srv_if, "down"]);
    let iface = net.cli_if.clone();
    let (out, took) = net.in_client(move || {
        let t0 = Instant::now();
        let out = dhcp_probe::probe(&ProbeOptions {
            interface: &iface,
            timeout: PROBE,
            link_wait: Duration::from_secs(1),
        })
        .unwrap();
        (out, t0.elapsed())
    });
    assert_eq!(out, Outcome::NoLink);
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!net.client_link_flags().split(',').any(|f| f == "UP"));
    let e = net.in_client(|| {
        dhcp_probe::probe(&ProbeOptions {
            interface: "ucl-nonesuch",
            timeout: PROBE,
            link_wait: Duration::from_secs(1),
        })
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
    });
    assert_eq!(
        e.unwrap_err(),
        "no network interface ucl-nonesuch on this machine"
    );
}

/// `undercloud configure` run in the client namespace, as at boot.
fn configure(net: &Net, root: &Path, mode: &str, extra: &[&str]) -> (String, Duration) {
    let cfg = net.dir.join(format!("undercloud-{mode}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "provisioning: {{interface: {}, address: 192.168.24.1/24, dhcp: {mode}}}\n",
            net.cli_if
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let o = run(Command::new("ip")
        .args(["netns", "exec", &net.cli])
        .arg(env!("CARGO_BIN_EXE_undercloud-live"))
        .args(["undercloud", "configure", "--config"])
        .arg(&cfg)
        .arg("--root")
        .arg(root)
        .args(extra));
    let took = t0.elapsed();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "configure failed:\n{out}");
    eprintln!("configure dhcp: {mode} {extra:?} ({took:.2?}):\n{out}");
    (out, took)
}

#[test]
#[ignore = "needs root: makes network namespaces (make test runs it)"]
fn configure_serves_no_dhcp_where_another_server_answers() {
    let mut net = Net::new("configure");
    let root = net.dir.join("root");
    configure_root(&root);
    let dnsmasq_conf = root.join("etc/dnsmasq.d/undercloud.conf");
    let state = root.join("run/undercloud-live/dhcp-guard");
    let endpoints = root.join("etc/undercloud/endpoints");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    net.start_dnsmasq();

    // auto, with a server on the network: no DHCP, and say so.
    let (out, _) = configure(&net, &root, "auto", &[]);
    let iface = net.cli_if.clone();
    let server = net.server_ip;
    let line = format!(
        "undercloud-config: another DHCP server ({server}) answers on {iface}: not serving DHCP there (TFTP and the rest run); set provisioning.dhcp: force in undercloud.yaml to serve anyway\n"
    );
    assert!(out.contains(&line), "{out}");
    assert!(out.contains(", DHCP off, "), "{out}");
    let conf = read(&dnsmasq_conf);
    assert!(!conf.contains("dhcp-range"), "{conf}");
    assert!(conf.contains("\nenable-tftp\n") && conf.contains(&format!("\ninterface={iface}\n")));
    let st = read(&state);
    assert!(st.contains(&format!("\nserver={server}\n")), "{st}");
    assert!(
        st.contains(&format!("\ninterface={iface}\n")) && st.contains("\ntime="),
        "{st}"
    );
    assert!(read(&endpoints).contains("\ndhcp=guard\n"));

    // force and a dry run send nothing. dnsmasq logs a DISCOVER when it
    // answers it, up to its 3 s ping check later: let the probe's settle.
    std::thread::sleep(Duration::from_millis(3500));
    let seen = net.discovers();
    assert!(seen >= 1);
    let (out, _) = configure(&net, &root, "force", &[]);
    assert!(
        out.contains(&format!(
            "warning: provisioning.dhcp is force: serving DHCP on {iface} without checking"
        )),
        "{out}"
    );
    assert!(read(&dnsmasq_conf).contains("\ndhcp-range=192.168.24.100,192.168.24.199,"));
    assert!(!state.exists(), "force leaves no guard state");
    let (out, took) = configure(&net, &root, "auto", &["--dry-run"]);
    assert!(out.contains(&format!("would probe {iface}")), "{out}");
    assert!(out.contains("nothing is sent in a dry run"), "{out}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        net.discovers(),
        seen,
        "force or --dry-run sent a DHCPDISCOVER"
    );

    // The server gone: auto serves again.
    configure(&net, &root, "auto", &[]);
    net.stop_dnsmasq();
    let (out, took) = configure(&net, &root, "auto", &[]);
    assert!(
        out.contains(&format!(
            "no other DHCP server answered on {iface} within 5 s: serving DHCP there"
        )),
        "{out}"
    );
    assert!(took >= PROBE, "{took:?}");
    assert!(read(&dnsmasq_conf).contains("\ndhcp-range=192.168.24.100,192.168.24.199,"));
    assert!(!state.exists());
    assert!(read(&endpoints).contains("\ndhcp=serve\n"));

    // off: no DHCP, no probe.
    let (out, took) = configure(&net, &root, "off", &[]);
    assert!(
        out.contains("provisioning.dhcp is off: not serving DHCP"),
        "{out}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!read(&dnsmasq_conf).contains("dhcp-range"));
    assert!(read(&endpoints).contains("\ndhcp=off\n"));
}

/// The file written when DHCP is kept off is one dnsmasq takes: it serves
/// TFTP on the interface and binds no DHCP port.
#[test]
#[ignore = "needs root: makes network namespaces (make test runs it)"]
fn dnsmasq_serves_tftp_only_from_the_dhcp_off_file() {
    use undercloud_live::undercloud::config::Config;
    use undercloud_live::undercloud::dhcp_guard::{Dhcp, Guard, Reason};
    use undercloud_live::undercloud::render::{self, Facts};

    let mut net = Net::new("tftp-only");
    let facts = Facts {
        interface: net.srv_if.clone(),
        db_password: "x".repeat(16),
        dhcp: Dhcp::Guarded(Guard {
            interface: net.srv_if.clone(),
            reason: Reason::OtherServer {
                server: Ipv4Addr::new(10, 0, 2, 2),
                offered: Ipv4Addr::new(10, 0, 2, 15),
            },
            time: 0,
        }),
        api: None,
        tls: None,
    };
    let text = render::files(&Config::default(), &facts)
        .into_iter()
        .find(|f| f.path == "/etc/dnsmasq.d/undercloud.conf")
        .unwrap()
        .text;
    let tftp = net.dir.join("tftpboot");
    std::fs::create_dir_all(&tftp).unwrap();
    let conf = net.dir.join("undercloud.conf");
    std::fs::write(
        &conf,
        text.replace(
            "tftp-root=/srv/tftpboot",
            &format!("tftp-root={}", tftp.display()),
        ),
    )
    .unwrap();
    ip(&[
        "-n",
        &net.srv,
        "addr",
        "add",
        "192.168.24.1/24",
        "dev",
        &net.srv_if,
    ]);
    let child = Command::new("ip")
        .args(["netns", "exec", &net.srv, "dnsmasq", "--keep-in-foreground"])
        .arg(format!("--conf-file={}", conf.display()))
        .arg("--pid-file=")
        .arg(format!("--log-facility={}", net.log().display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("starting dnsmasq");
    net.dnsmasq = Some(child);
    let t0 = Instant::now();
    let udp = loop {
        let udp = String::from_utf8_lossy(
            &ip(&["netns", "exec", &net.srv, "cat", "/proc/net/udp"]).stdout,
        )
        .into_owned();
        // 192.168.24.1:69, as /proc/net/udp writes it.
        if udp.contains("0118A8C0:0045 ") {
            break udp;
        }
        if let Some(st) = net.dnsmasq.as_mut().unwrap().try_wait().unwrap() {
            panic!(
                "dnsmasq refused the file ({st}):\n{text}\n{}",
                std::fs::read_to_string(net.log()).unwrap_or_default()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "dnsmasq serves no TFTP on 192.168.24.1:69:\n{udp}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!udp.contains(":0043 "), "dnsmasq bound udp 67:\n{udp}");
}

/// The probe must run before our own dnsmasq serves: undercloud-config is
/// a oneshot (started = its command has exited) ordered before dnsmasq,
/// and dnsmasq's drop-in orders itself after it and requires it.
#[test]
fn undercloud_config_runs_before_dnsmasq() {
    let unit = std::fs::read_to_string(
        repo()
            .join("overlays/undercloud-config/static/etc/systemd/system/undercloud-config.service"),
    )
    .unwrap();
    let values = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    assert_eq!(values(&unit, "Type"), ["oneshot"]);
    assert!(values(&unit, "Before").contains(&"dnsmasq.service".to_string()));
    assert_eq!(
        values(&unit, "ExecStart"),
        ["/usr/bin/undercloud-live", "undercloud", "configure"]
    );
    let dropin =
        std::fs::read_to_string(repo().join(
            "overlays/dnsmasq-pxe/static/etc/systemd/system/dnsmasq.service.d/undercloud.conf",
        ))
        .unwrap();
    for key in ["After", "Requires"] {
        assert!(
            values(&dropin, key).contains(&"undercloud-config.service".to_string()),
            "dnsmasq's drop-in lacks {key}=undercloud-config.service"
        );
    }
}
