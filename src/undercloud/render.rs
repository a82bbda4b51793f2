//! The configuration files the undercloud's services read, rendered from a
//! checked `undercloud.yaml`. Pure: the caller decides where they go.

use std::fmt::Write as _;

use super::config::{Auth, Config, Database, HardwareType, Keystone, IRONIC_API_PORT};
use super::credentials::{Credentials, HTPASSWD_FILE};
use super::dhcp_guard::Dhcp;
use super::tls::{self, Pair};

/// Where Ironic stages iPXE scripts, kernels and ramdisks; nginx serves it.
pub const HTTP_ROOT: &str = "/srv/undercloud/httpboot";
/// Deploy images, served under `/images/`.
pub const IMAGES_ROOT: &str = "/srv/undercloud/images";
pub const TFTP_ROOT: &str = "/srv/tftpboot";

/// What `configure` found out on the machine, next to the YAML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The provisioning interface (`auto` resolved).
    pub interface: String,
    pub db_password: String,
    /// Whether dnsmasq serves DHCP, and why (not).
    pub dhcp: Dhcp,
    /// With `auth: http_basic`: the API user and its htpasswd line.
    pub api: Option<(Credentials, String)>,
    /// With `ironic.tls`: what the API serves.
    pub tls: Option<ApiTls>,
}

/// The API's certificate and key, and the host the undercloud's own tools
/// (`status`, `enroll`) call it by: one the certificate names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTls {
    pub pair: Pair,
    pub local_host: String,
}

/// Who owns a written file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    Root,
    /// root, group ironic: Ironic reads it, only root changes it.
    RootIronic,
    Stack,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    /// Absolute path in the target root.
    pub path: &'static str,
    pub text: String,
    pub mode: u32,
    pub owner: Owner,
}

const HEADER: &str = "Written by undercloud-config from undercloud.yaml at every boot: change undercloud.yaml, not this file.";

pub fn files(cfg: &Config, facts: &Facts) -> Vec<File> {
    let mut files = vec![
        File {
            path: "/etc/ironic/ironic.conf",
            text: ironic_conf(cfg, facts),
            // It holds the database password.
            mode: 0o640,
            owner: Owner::RootIronic,
        },
        File {
            path: "/etc/dnsmasq.d/undercloud.conf",
            text: dnsmasq_conf(cfg, facts),
            mode: 0o644,
            owner: Owner::Root,
        },
        File {
            path: "/etc/nginx/conf.d/undercloud.conf",
            text: nginx_conf(cfg),
            mode: 0o644,
            owner: Owner::Root,
        },
        File {
            path: "/etc/systemd/network/10-undercloud-provisioning.network",
            text: network_file(cfg, facts),
            mode: 0o644,
            owner: Owner::Root,
        },
        File {
            path: "/home/stack/undercloudrc",
            text: undercloudrc(cfg, facts),
            // It may hold the API password.
            mode: 0o600,
            owner: Owner::Stack,
        },
        File {
            path: crate::undercloud::ENDPOINTS_FILE,
            text: endpoints(cfg, facts),
            mode: 0o644,
            owner: Owner::Root,
        },
    ];
    if let Some((_, line)) = &facts.api {
        files.push(File {
            path: HTPASSWD_FILE,
            text: line.clone(),
            mode: 0o640,
            owner: Owner::RootIronic,
        });
    }
    if let Some(t) = &facts.tls {
        files.push(File {
            path: tls::CERT_FILE,
            text: t.pair.cert_pem.clone(),
            mode: 0o644,
            owner: Owner::Root,
        });
        files.push(File {
            path: tls::KEY_FILE,
            text: t.pair.key_pem.clone(),
            mode: 0o640,
            owner: Owner::RootIronic,
        });
    }
    files
}

/// `http` or `https`: how Ironic's API is reached.
fn api_scheme(facts: &Facts) -> &'static str {
    if facts.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// A value for an oslo.config ini file: `$` starts a reference to another
/// option there, `$$` is a literal one. Line breaks never get here (the
/// settings are checked for them), and oslo.config strips the spaces
/// around a value, which the checks refuse too.
fn ini(v: &str) -> String {
    v.replace('$', "$$")
}

/// A word for a POSIX shell: single-quoted, with `'` written `'\''`.
pub fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// The interfaces each enabled hardware type needs: every type needs one
/// of each kind enabled, or the conductor refuses to start; enable exactly
/// what the chosen types use.
fn driver_interfaces(
    types: &[HardwareType],
) -> (Vec<&'static str>, Vec<&'static str>, Vec<&'static str>) {
    let has = |t: HardwareType| types.contains(&t);
    let mut management = Vec::new();
    let mut power = Vec::new();
    let mut vendor = Vec::new();
    if has(HardwareType::Ipmi) {
        management.push("ipmitool");
        power.push("ipmitool");
        vendor.push("ipmitool");
    }
    if has(HardwareType::Redfish) {
        management.push("redfish");
        power.push("redfish");
        vendor.push("redfish");
    }
    if has(HardwareType::ManualManagement) {
        management.push("noop");
        power.push("fake");
    }
    vendor.push("no-vendor");
    (management, power, vendor)
}

fn ironic_conf(cfg: &Config, facts: &Facts) -> String {
    let (management, power, vendor) = driver_interfaces(&cfg.ironic.hardware_types);
    let names: Vec<&str> = cfg.ironic.hardware_types.iter().map(|t| t.name()).collect();
    let auth = cfg.ironic.auth.name();
    let ip = cfg.provisioning.address.addr;
    let (deploy_kernel, deploy_ramdisk) = cfg.ironic.deploy_images();
    let mut s = String::new();
    let _ = write!(
        s,
        "# {HEADER}
[DEFAULT]
auth_strategy = {auth}
http_basic_auth_user_file = {HTPASSWD_FILE}
# One process (API and conductor together, `ironic`): no message bus, no
# RPC between services; required with SQLite.
rpc_transport = none
host = localhost
enabled_hardware_types = {types}
enabled_boot_interfaces = ipxe,pxe
enabled_deploy_interfaces = direct,ramdisk
default_deploy_interface = direct
enabled_management_interfaces = {management}
enabled_power_interfaces = {power}
enabled_vendor_interfaces = {vendor}
enabled_console_interfaces = no-console
# Inspection built into Ironic: the agent reports the node's hardware.
enabled_inspect_interfaces = agent,no-inspect
default_inspect_interface = agent
enabled_network_interfaces = noop
enabled_raid_interfaces = agent,no-raid
enabled_rescue_interfaces = agent,no-rescue
enabled_bios_interfaces = no-bios
default_network_interface = noop
use_stderr = true

[agent]
# Images are fetched by the undercloud and served to the nodes from its
# own HTTP server: the nodes sit on the isolated provisioning network.
image_download_source = local
deploy_logs_collect = always
deploy_logs_local_path = /var/log/ironic/deploy

[api]
host_ip = 0.0.0.0
port = {IRONIC_API_PORT}
# One worker: a live undercloud serves one operator.
api_workers = 1
{api_tls}
[conductor]
automated_clean = {clean}
deploy_kernel = {deploy_kernel}
deploy_ramdisk = {deploy_ramdisk}
rescue_kernel = {deploy_kernel}
rescue_ramdisk = {deploy_ramdisk}
file_url_allowed_paths = /var/lib/ironic,{IMAGES_ROOT}

{database}
[deploy]
# Fast track: a node that booted the agent for inspection or cleaning
# keeps it running, powered on, for the next step (Metal3 does the same):
# each skipped ramdisk boot is minutes of a real machine's firmware.
fast_track = {fast_track}
http_root = {HTTP_ROOT}
# Plain HTTP even with ironic.tls: iPXE and the agent fetch boot files and
# images here, and iPXE would have to be built with our certificate to
# check one; images are checked by their checksums instead.
http_url = http://{ip}:{port}
# Cleaning erases partition tables and signatures, not every block.
erase_devices_priority = 0
erase_devices_metadata_priority = 10

[dhcp]
# dnsmasq is configured once for the whole provisioning network.
dhcp_provider = none

[inspector]
# Keep the ports the operator enrolled; add those the agent reports.
add_ports = pxe
keep_ports = present

[pxe]
tftp_root = {TFTP_ROOT}
tftp_master_path = {TFTP_ROOT}/master_images
{agent_trust}# The agent's messages on the first serial port too: nodes are often
# watched through their BMC's serial-over-LAN.
kernel_append_params = nofb nomodeset vga=normal console=tty0 console=ttyS0,115200n8{insecure}

[service_catalog]
# Where the agent on a node reaches Ironic (no Keystone catalog to ask).
endpoint_override = {scheme}://{ip}:{IRONIC_API_PORT}

[oslo_concurrency]
lock_path = /var/lib/ironic/lock
",
        types = names.join(","),
        management = management.join(","),
        power = power.join(","),
        vendor = vendor.join(","),
        port = cfg.image_server.port,
        clean = cfg.ironic.automated_clean,
        fast_track = cfg.ironic.fast_track,
        database = database_section(cfg.database, &facts.db_password),
        scheme = api_scheme(facts),
        api_tls = if facts.tls.is_some() {
            api_tls_section()
        } else {
            String::new()
        },
        agent_trust = if facts.tls.is_some() { AGENT_TRUST } else { "" },
        insecure = if facts.tls.is_some() {
            " ipa-insecure=1"
        } else {
            ""
        },
    );
    if let (Auth::Keystone, Some(k)) = (cfg.ironic.auth, &cfg.ironic.keystone) {
        s.push_str(&keystone_section(k));
    }
    s
}

/// Ironic's own HTTPS server (oslo.service reads `[ssl]`). No `ca_file`
/// there: it would make Ironic ask every client for a certificate.
fn api_tls_section() -> String {
    format!(
        "enable_ssl_api = true

[ssl]
cert_file = {}
key_file = {}
",
        tls::CERT_FILE,
        tls::KEY_FILE
    )
}

/// Why the agent is told not to check the API's certificate.
const AGENT_TRUST: &str = "\
# The agent reaches the API over HTTPS but does not check its certificate
# (ipa-insecure=1, as Bifrost and Metal3 boot it): a PXE-booted ramdisk is
# the image's own, built before this undercloud's certificate existed, and
# Ironic 2025.1 hands the agent a CA file (api_ca_file) only on virtual
# media, not over PXE. The agent still proves itself to Ironic with its
# one-time token, and the link is encrypted.
";

fn keystone_section(k: &Keystone) -> String {
    format!(
        "
[keystone_authtoken]
auth_type = password
www_authenticate_uri = {url}
auth_url = {url}
username = {user}
password = {pw}
project_name = {project}
user_domain_name = Default
project_domain_name = Default
",
        url = ini(&k.auth_url),
        user = ini(&k.username),
        pw = ini(&k.password),
        project = ini(&k.project),
    )
}

/// Ironic's SQLite database: made at build time, carried by the
/// persistence partition when the image has one.
pub const SQLITE_PATH: &str = "/var/lib/ironic/ironic.sqlite";

fn database_section(db: Database, password: &str) -> String {
    match db {
        Database::Sqlite => format!("[database]\nconnection = sqlite:///{SQLITE_PATH}\n"),
        Database::Mariadb => format!(
            "[database]\nconnection = mysql+pymysql://ironic:{password}@localhost/ironic?charset=utf8\n"
        ),
    }
}

fn dnsmasq_conf(cfg: &Config, facts: &Facts) -> String {
    let p = &cfg.provisioning;
    let common = format!(
        "port=0
interface={iface}
bind-dynamic
",
        iface = facts.interface
    );
    let tftp = format!("enable-tftp\ntftp-root={TFTP_ROOT}\n");
    let Some(why) = facts.dhcp.off_reason() else {
        return format!(
            "# {HEADER}
# DHCP and TFTP on the provisioning network only; no DNS.
{common}dhcp-range={start},{end},{mask},12h
{tftp}# PXE firmware gets iPXE over TFTP; iPXE (option 175) gets Ironic's script
# over HTTP. The tag sets do not overlap, so the order does not matter.
dhcp-match=set:ipxe,175
dhcp-match=set:efi,option:client-arch,7
dhcp-match=set:efi,option:client-arch,9
dhcp-boot=tag:ipxe,http://{ip}:{port}/boot.ipxe
dhcp-boot=tag:!ipxe,tag:efi,ipxe.efi
dhcp-boot=tag:!ipxe,tag:!efi,undionly.kpxe
",
            start = p.dhcp_start,
            end = p.dhcp_end,
            mask = p.address.mask(),
            ip = p.address.addr,
            port = cfg.image_server.port,
        );
    };
    format!(
        "# {HEADER}
# TFTP on the provisioning network only; no DNS, and no DHCP: {why}.
# Without a DHCP range dnsmasq serves no DHCP. A node that another DHCP
# server sends here (next-server) still gets iPXE over TFTP.
{common}{tftp}"
    )
}

fn nginx_conf(cfg: &Config) -> String {
    format!(
        "# {HEADER}
server {{
    listen {port};
    root {HTTP_ROOT};
    # Nodes fetch what Ironic names for them; nobody needs a listing.
    autoindex off;
    location /images/ {{
        alias {IMAGES_ROOT}/;
    }}
    location ~ /\\. {{
        deny all;
    }}
}}
",
        port = cfg.image_server.port
    )
}

fn network_file(cfg: &Config, facts: &Facts) -> String {
    let p = &cfg.provisioning;
    format!(
        "# {HEADER}
[Match]
Name={iface}

[Link]
# The provisioning network may be an unplugged switch port at boot: do
# not hold up network-online.target for it.
RequiredForOnline=no

[Network]
Address={addr}
ConfigureWithoutCarrier=yes
DHCP={dhcp}
",
        iface = facts.interface,
        addr = p.address,
        dhcp = if p.dhcp_client { "ipv4" } else { "no" },
    )
}

fn undercloudrc(cfg: &Config, facts: &Facts) -> String {
    let ip = cfg.provisioning.address.addr;
    let mut s = format!(
        "# {HEADER}
# source ~/undercloudrc, then: baremetal driver list; baremetal node list
export OS_ENDPOINT={scheme}://{ip}:{IRONIC_API_PORT}
export OS_BAREMETAL_API_VERSION=latest
",
        scheme = api_scheme(facts)
    );
    if facts.tls.is_some() {
        // The API's certificate, for the client to check the server with.
        let _ = writeln!(s, "export OS_CACERT={}", shell_quote(tls::CERT_FILE));
    }
    match (cfg.ironic.auth, &cfg.ironic.keystone, &facts.api) {
        (Auth::Keystone, Some(k), _) => {
            let _ = write!(
                s,
                "export OS_AUTH_TYPE=password
export OS_AUTH_URL={}
# Set OS_USERNAME, OS_PASSWORD and OS_PROJECT_NAME for your Keystone user.
export OS_USER_DOMAIN_NAME=Default
export OS_PROJECT_DOMAIN_NAME=Default
",
                shell_quote(&k.auth_url)
            );
        }
        (Auth::HttpBasic, _, Some((c, _))) => {
            let _ = write!(
                s,
                "export OS_AUTH_TYPE=http_basic
export OS_USERNAME={}
export OS_PASSWORD={}
",
                shell_quote(&c.username),
                shell_quote(&c.password)
            );
        }
        _ => s.push_str("export OS_AUTH_TYPE=none\n"),
    }
    s
}

/// What `undercloud-live status` checks: read back by status.rs.
fn endpoints(cfg: &Config, facts: &Facts) -> String {
    let (api_host, cacert) = match &facts.tls {
        Some(t) => (
            t.local_host.as_str(),
            format!("cacert={}\n", tls::CERT_FILE),
        ),
        None => ("127.0.0.1", String::new()),
    };
    format!(
        "# {HEADER}
api={scheme}://{api_host}:{IRONIC_API_PORT}
{cacert}image_server=http://127.0.0.1:{port}/
interface={iface}
address={addr}
dhcp={dhcp}
database={db}
auth={auth}
user={user}
",
        scheme = api_scheme(facts),
        auth = cfg.ironic.auth.name(),
        user = cfg.ironic.username,
        dhcp = facts.dhcp.key(),
        db = cfg.database.name(),
        port = cfg.image_server.port,
        iface = facts.interface,
        addr = cfg.provisioning.address,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            interface: "enp0s2".into(),
            db_password: "0123456789abcdef".into(),
            dhcp: Dhcp::Checked { seconds: 5 },
            api: Some((
                Credentials {
                    username: "admin".into(),
                    password: "pw-0123456789".into(),
                },
                "admin:$2b$08$hash\n".into(),
            )),
            tls: None,
        }
    }

    fn file<'a>(files: &'a [File], path: &str) -> &'a File {
        files.iter().find(|f| f.path == path).unwrap()
    }

    #[test]
    fn defaults_give_a_standalone_ironic() {
        let fs = files(&Config::default(), &facts());
        let conf = &file(&fs, "/etc/ironic/ironic.conf").text;
        for line in [
            "auth_strategy = http_basic",
            "http_basic_auth_user_file = /etc/ironic/htpasswd",
            "rpc_transport = none",
            "enabled_hardware_types = ipmi,redfish,manual-management",
            "enabled_management_interfaces = ipmitool,redfish,noop",
            "enabled_power_interfaces = ipmitool,redfish,fake",
            "default_inspect_interface = agent",
            "connection = sqlite:////var/lib/ironic/ironic.sqlite",
            "http_url = http://192.168.24.1:8088",
            "dhcp_provider = none",
            "port = 6385",
            "automated_clean = true",
            "fast_track = true",
            "deploy_kernel = file:///var/lib/ironic/deploy/ipa.kernel",
            "rescue_ramdisk = file:///var/lib/ironic/deploy/ipa.initramfs",
            "image_download_source = local",
            "erase_devices_priority = 0",
            "endpoint_override = http://192.168.24.1:6385",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line:?} missing in\n{conf}"
            );
        }
        assert!(!conf.contains("keystone_authtoken"));
        assert_eq!(file(&fs, "/etc/ironic/ironic.conf").mode, 0o640);
        let rc = &file(&fs, "/home/stack/undercloudrc").text;
        assert!(rc.contains("export OS_ENDPOINT=http://192.168.24.1:6385\n"));
        assert!(rc.contains("export OS_AUTH_TYPE=http_basic\n"));
        assert!(rc.contains("export OS_USERNAME='admin'\n"));
        assert!(rc.contains("export OS_PASSWORD='pw-0123456789'\n"));
        assert_eq!(file(&fs, "/home/stack/undercloudrc").mode, 0o600);
        let h = file(&fs, "/etc/ironic/htpasswd");
        assert_eq!((h.text.as_str(), h.mode), ("admin:$2b$08$hash\n", 0o640));
        assert_eq!(h.owner, Owner::RootIronic);
        let e = &file(&fs, crate::undercloud::ENDPOINTS_FILE).text;
        assert!(e.contains("\nauth=http_basic\nuser=admin\n"), "{e}");
        let net = &file(
            &fs,
            "/etc/systemd/network/10-undercloud-provisioning.network",
        )
        .text;
        assert!(net.contains("Name=enp0s2\n") && net.contains("Address=192.168.24.1/24\n"));
        assert!(net.contains("DHCP=no\n"));
    }

    #[test]
    fn dnsmasq_serves_the_configured_range_on_the_interface() {
        let cfg = Config::parse(
            "provisioning: {address: 10.20.0.1/16, dhcp_start: 10.20.1.1, dhcp_end: 10.20.1.99, dhcp_client: true}\nimage_server: {port: 8090}\n",
            "t",
        )
        .unwrap();
        let fs = files(&cfg, &facts());
        let d = &file(&fs, "/etc/dnsmasq.d/undercloud.conf").text;
        assert!(d.contains("\ninterface=enp0s2\n"));
        assert!(d.contains("\ndhcp-range=10.20.1.1,10.20.1.99,255.255.0.0,12h\n"));
        assert!(d.contains("\nport=0\n"));
        assert!(d.contains("dhcp-boot=tag:ipxe,http://10.20.0.1:8090/boot.ipxe\n"));
        let n = &file(&fs, "/etc/nginx/conf.d/undercloud.conf").text;
        assert!(n.contains("listen 8090;"));
        let net = &file(
            &fs,
            "/etc/systemd/network/10-undercloud-provisioning.network",
        )
        .text;
        assert!(net.contains("DHCP=ipv4\n"));
        let e = &file(&fs, crate::undercloud::ENDPOINTS_FILE).text;
        assert!(e.contains("image_server=http://127.0.0.1:8090/\n"));
    }

    #[test]
    fn dnsmasq_without_dhcp_keeps_tftp() {
        use crate::undercloud::dhcp_guard::{Guard, Reason};
        let guarded = Facts {
            dhcp: Dhcp::Guarded(Guard {
                interface: "enp0s2".into(),
                reason: Reason::OtherServer {
                    server: "10.0.2.2".parse().unwrap(),
                    offered: "10.0.2.15".parse().unwrap(),
                },
                time: 0,
            }),
            ..facts()
        };
        for (facts, why, key) in [
            (
                guarded,
                "another DHCP server (10.0.2.2) answers on enp0s2",
                "guard",
            ),
            (
                Facts {
                    dhcp: Dhcp::Off,
                    ..facts()
                },
                "provisioning.dhcp is off in undercloud.yaml",
                "off",
            ),
        ] {
            let fs = files(&Config::default(), &facts);
            let d = &file(&fs, "/etc/dnsmasq.d/undercloud.conf").text;
            assert!(d.contains(&format!("no DHCP: {why}.\n")), "{d}");
            assert!(!d.lines().any(|l| l.starts_with("dhcp-")), "{d}");
            for line in ["port=0", "interface=enp0s2", "bind-dynamic", "enable-tftp"] {
                assert!(d.lines().any(|l| l == line), "{line} missing in\n{d}");
            }
            assert!(d.contains("tftp-root=/srv/tftpboot\n"), "{d}");
            let e = &file(&fs, crate::undercloud::ENDPOINTS_FILE).text;
            assert!(e.contains(&format!("\ndhcp={key}\n")), "{e}");
        }
        let fs = files(&Config::default(), &facts());
        let e = &file(&fs, crate::undercloud::ENDPOINTS_FILE).text;
        assert!(e.contains("\ndhcp=serve\n"), "{e}");
        let forced = Facts {
            dhcp: Dhcp::Forced,
            ..facts()
        };
        let fs = files(&Config::default(), &forced);
        let d = &file(&fs, "/etc/dnsmasq.d/undercloud.conf").text;
        assert!(d.contains("\ndhcp-range=192.168.24.100,192.168.24.199,255.255.255.0,12h\n"));
    }

    #[test]
    fn mariadb_and_own_deploy_ramdisk() {
        let cfg = Config::parse(
            "database: mariadb\nironic:\n  automated_clean: false\n  fast_track: false\n  deploy_kernel: http://10.0.0.5/k\n  deploy_ramdisk: http://10.0.0.5/r\n",
            "t",
        )
        .unwrap();
        let fs = files(&cfg, &facts());
        let conf = &file(&fs, "/etc/ironic/ironic.conf").text;
        for line in [
            "connection = mysql+pymysql://ironic:0123456789abcdef@localhost/ironic?charset=utf8",
            "automated_clean = false",
            "fast_track = false",
            "deploy_kernel = http://10.0.0.5/k",
            "deploy_ramdisk = http://10.0.0.5/r",
            "rescue_kernel = http://10.0.0.5/k",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line:?} missing in\n{conf}"
            );
        }
        assert!(!conf.contains("sqlite"));
    }

    #[test]
    fn keystone_and_manual_management() {
        let cfg = Config::parse(
            "ironic:\n  auth: keystone\n  hardware_types: [redfish, manual-management]\n  keystone: {auth_url: 'https://ks:5000/v3', username: ironic, password: pw}\n",
            "t",
        )
        .unwrap();
        let fs = files(&cfg, &facts());
        let conf = &file(&fs, "/etc/ironic/ironic.conf").text;
        assert!(conf.contains("auth_strategy = keystone\n"));
        assert!(conf.contains("[keystone_authtoken]\n"));
        assert!(conf.contains("project_name = service\n"));
        assert!(conf.contains("enabled_hardware_types = redfish,manual-management\n"));
        assert!(conf.contains("enabled_power_interfaces = redfish,fake\n"));
        assert!(conf.contains("enabled_vendor_interfaces = redfish,no-vendor\n"));
        let rc = &file(&fs, "/home/stack/undercloudrc").text;
        assert!(
            rc.contains("OS_AUTH_TYPE=password") && rc.contains("OS_AUTH_URL='https://ks:5000/v3'")
        );
    }

    /// Run `sh -c` with `text` sourced, print what `expr` expands to.
    fn sh_eval(text: &str, expr: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let rc = dir.path().join("rc");
        std::fs::write(&rc, text).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(". \"$1\" && printf %s \"{expr}\""))
            .arg("sh")
            .arg(&rc)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Nothing the values held ran: no file appeared.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn hostile_values_stay_values_in_the_shell_file() {
        let pw = "a'b$(touch pwned)`touch x`\\\"; touch y #";
        let f = Facts {
            api: Some((
                Credentials {
                    username: "admin".into(),
                    password: pw.into(),
                },
                String::new(),
            )),
            ..facts()
        };
        let fs = files(&Config::default(), &f);
        let rc = &file(&fs, "/home/stack/undercloudrc").text;
        assert_eq!(sh_eval(rc, "$OS_PASSWORD"), pw);
        let cfg = Config::parse(
            "ironic:\n  auth: keystone\n  keystone: {auth_url: 'https://ks/$(touch${IFS}pwned)', username: u, password: p}\n",
            "t",
        )
        .unwrap();
        let fs = files(&cfg, &facts());
        let rc = &file(&fs, "/home/stack/undercloudrc").text;
        assert_eq!(
            sh_eval(rc, "$OS_AUTH_URL"),
            "https://ks/$(touch${IFS}pwned)"
        );
    }

    #[test]
    fn dollars_are_literal_for_oslo_config() {
        let cfg = Config::parse(
            "ironic:\n  auth: keystone\n  keystone: {auth_url: 'https://ks/v3', username: u, password: 'p$ss${database.connection}'}\n",
            "t",
        )
        .unwrap();
        let fs = files(&cfg, &facts());
        let conf = &file(&fs, "/etc/ironic/ironic.conf").text;
        assert!(
            conf.contains("\npassword = p$$ss$${database.connection}\n"),
            "{conf}"
        );
    }

    #[test]
    fn noauth_has_no_user_file_and_says_so() {
        let cfg = Config::parse("ironic: {auth: noauth}\n", "t").unwrap();
        let f = Facts {
            api: None,
            ..facts()
        };
        let fs = files(&cfg, &f);
        assert!(fs.iter().all(|f| f.path != "/etc/ironic/htpasswd"));
        let conf = &file(&fs, "/etc/ironic/ironic.conf").text;
        assert!(conf.contains("auth_strategy = noauth\n"));
        let rc = &file(&fs, "/home/stack/undercloudrc").text;
        assert!(rc.contains("export OS_AUTH_TYPE=none\n"));
        let e = &file(&fs, crate::undercloud::ENDPOINTS_FILE).text;
        assert!(e.contains("\nauth=noauth\n"), "{e}");
    }

    fn tls_facts() -> Facts {
        let pair = crate::undercloud::tls::generate(&crate::undercloud::tls::Names {
            address: [192, 168, 24, 1].into(),
            hostname: None,
        })
        .unwrap();
        Facts {
            tls: Some(ApiTls {
                pair,
                local_host: "127.0.0.1".into(),
            }),
            ..facts()
        }
    }

    #[test]
    fn tls_serves_https_and_tells_clients_what_to_trust() {
        let f = tls_facts();
        let fs = files(&Config::default(), &f);
        let conf = &file(&fs, "/etc/ironic/ironic.conf").text;
        for line in [
            "enable_ssl_api = true",
            "[ssl]",
            "cert_file = /etc/ironic/tls/ironic.crt",
            "key_file = /etc/ironic/tls/ironic.key",
            "endpoint_override = https://192.168.24.1:6385",
            // The nodes still fetch boot files and images over HTTP.
            "http_url = http://192.168.24.1:8088",
            "kernel_append_params = nofb nomodeset vga=normal console=tty0 console=ttyS0,115200n8 ipa-insecure=1",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "{line:?} missing in\n{conf}"
            );
        }
        assert!(!conf.lines().any(|l| l.starts_with("ca_file")), "{conf}");
        // The [ssl] section is its own, after [api]'s options.
        let api = conf.split("\n[api]\n").nth(1).unwrap();
        assert!(api.starts_with("host_ip = 0.0.0.0\n"), "{api}");
        let cert = file(&fs, "/etc/ironic/tls/ironic.crt");
        assert_eq!(cert.text, f.tls.as_ref().unwrap().pair.cert_pem);
        assert_eq!((cert.mode, cert.owner), (0o644, Owner::Root));
        let key = file(&fs, "/etc/ironic/tls/ironic.key");
        assert_eq!(key.text, f.tls.as_ref().unwrap().pair.key_pem);
        assert_eq!((key.mode, key.owner), (0o640, Owner::RootIronic));
        let rc = &file(&fs, "/home/stack/undercloudrc").text;
        assert!(
            rc.contains("export OS_ENDPOINT=https://192.168.24.1:6385\n"),
            "{rc}"
        );
        assert_eq!(sh_eval(rc, "$OS_CACERT"), "/etc/ironic/tls/ironic.crt");
        assert_eq!(sh_eval(rc, "$OS_ENDPOINT"), "https://192.168.24.1:6385");
        let e = &file(&fs, crate::undercloud::ENDPOINTS_FILE).text;
        let kv = crate::undercloud::parse_endpoints(e);
        assert_eq!(kv["api"], "https://127.0.0.1:6385", "{e}");
        assert_eq!(kv["cacert"], "/etc/ironic/tls/ironic.crt", "{e}");
        // A configured certificate that does not name 127.0.0.1.
        let f = Facts {
            tls: Some(ApiTls {
                local_host: "192.168.24.1".into(),
                ..f.tls.clone().unwrap()
            }),
            ..f
        };
        let fs = files(&Config::default(), &f);
        let e = &file(&fs, crate::undercloud::ENDPOINTS_FILE).text;
        assert!(e.contains("\napi=https://192.168.24.1:6385\n"), "{e}");
    }

    #[test]
    fn without_tls_nothing_changes() {
        let fs = files(&Config::default(), &facts());
        let conf = &file(&fs, "/etc/ironic/ironic.conf").text;
        for absent in ["enable_ssl_api", "[ssl]", "ipa-insecure", "https://"] {
            assert!(!conf.contains(absent), "{absent} in\n{conf}");
        }
        assert!(fs.iter().all(|f| !f.path.starts_with("/etc/ironic/tls/")));
        let rc = &file(&fs, "/home/stack/undercloudrc").text;
        assert!(!rc.contains("OS_CACERT"), "{rc}");
        let e = &file(&fs, crate::undercloud::ENDPOINTS_FILE).text;
        assert!(e.contains("\napi=http://127.0.0.1:6385\n"), "{e}");
        assert!(!e.contains("cacert="), "{e}");
    }
}
