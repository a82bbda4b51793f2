//! `undercloud.yaml`: the operator's settings for the undercloud, parsed
//! and checked before anything is written.
//!
//! Every key has a default, so an empty file (or none at all) gives a
//! working undercloud. Unknown keys are errors (a misspelt key silently
//! ignored would leave a default in place the operator thinks they changed).

use std::fmt;
use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::credentials::{valid_password, valid_username};

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub provisioning: Provisioning,
    pub image_server: ImageServer,
    pub ironic: Ironic,
    pub database: Database,
    pub passwords: Passwords,
}

/// Where Ironic keeps its state.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Database {
    /// One file, made at build time: no server to start at boot (as
    /// Metal3's ironic-image runs Ironic). Ironic then runs as one process.
    #[default]
    Sqlite,
    /// The MariaDB server in the image, started only when chosen.
    Mariadb,
}

impl Database {
    pub fn name(self) -> &'static str {
        match self {
            Database::Sqlite => "sqlite",
            Database::Mariadb => "mariadb",
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Provisioning {
    /// An interface name, or `auto` (the first wired interface by name).
    pub interface: String,
    /// The undercloud's address with its prefix length.
    pub address: Cidr,
    pub dhcp_start: Ipv4Addr,
    pub dhcp_end: Ipv4Addr,
    /// Also run a DHCP client on the provisioning interface.
    pub dhcp_client: bool,
    /// Whether to serve DHCP: after checking that no other server answers
    /// (auto), always (force) or never (off).
    pub dhcp: DhcpMode,
    /// How long the check listens for another server's offer.
    pub dhcp_probe_seconds: u32,
}

/// `provisioning.dhcp`.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Serve DHCP unless another server answers a DHCPDISCOVER on the
    /// provisioning interface at boot.
    #[default]
    Auto,
    /// Serve DHCP without checking.
    Force,
    /// Never serve DHCP (TFTP and the rest still run).
    Off,
}

impl DhcpMode {
    pub fn name(self) -> &'static str {
        match self {
            DhcpMode::Auto => "auto",
            DhcpMode::Force => "force",
            DhcpMode::Off => "off",
        }
    }
}

/// dnsmasq, a common DHCP server (home and office routers run it), checks
/// with a ping that an address is free before offering it and answers a
/// new client only after that ping's 3 s; 5 s leaves room for it.
pub const DEFAULT_DHCP_PROBE_SECONDS: u32 = 5;

impl Default for Provisioning {
    fn default() -> Self {
        Provisioning {
            interface: "auto".into(),
            address: Cidr {
                addr: Ipv4Addr::new(192, 168, 24, 1),
                prefix: 24,
            },
            dhcp_start: Ipv4Addr::new(192, 168, 24, 100),
            dhcp_end: Ipv4Addr::new(192, 168, 24, 199),
            dhcp_client: false,
            dhcp: DhcpMode::Auto,
            dhcp_probe_seconds: DEFAULT_DHCP_PROBE_SECONDS,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ImageServer {
    pub port: u16,
}

impl Default for ImageServer {
    fn default() -> Self {
        ImageServer { port: 8088 }
    }
}

/// How Ironic's API checks who is calling (its `auth_strategy`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// A user and password (`ironic.username`, `passwords.ironic`),
    /// checked against an htpasswd file.
    #[default]
    HttpBasic,
    /// Anyone who reaches the port is admin: only when asked for by name.
    Noauth,
    Keystone,
}

impl Auth {
    /// Ironic's name for it, and the endpoints file's.
    pub fn name(self) -> &'static str {
        match self {
            Auth::HttpBasic => "http_basic",
            Auth::Noauth => "noauth",
            Auth::Keystone => "keystone",
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Keystone {
    pub auth_url: String,
    pub username: String,
    pub password: String,
    #[serde(default = "default_project")]
    pub project: String,
}

fn default_project() -> String {
    "service".into()
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Ironic {
    pub auth: Auth,
    /// The API user with `auth: http_basic`.
    pub username: String,
    pub keystone: Option<Keystone>,
    pub hardware_types: Vec<HardwareType>,
    /// Erase the partition tables and filesystem signatures of a node's
    /// disks before it becomes available and after it is torn down.
    pub automated_clean: bool,
    /// Keep a node's agent running from inspection through cleaning to
    /// deployment (Ironic's fast track): one ramdisk boot instead of three.
    pub fast_track: bool,
    /// The ramdisk nodes boot for inspection, cleaning and deployment:
    /// empty for the one built into the image, or an http(s) or file URL.
    pub deploy_kernel: String,
    pub deploy_ramdisk: String,
    /// Whether the API speaks HTTPS, and with which certificate.
    pub tls: Tls,
}

/// `ironic.tls`: `off` (plain HTTP), `self-signed` (made at first boot and
/// kept), or the operator's `{certificate: PATH, key: PATH}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    #[default]
    Off,
    SelfSigned,
    /// An absolute path is in the image; a bare file name is on the ESP
    /// beside undercloud.yaml (where an operator can put it from any OS).
    Files {
        certificate: String,
        key: String,
    },
}

impl Tls {
    pub fn enabled(&self) -> bool {
        *self != Tls::Off
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFiles {
    certificate: String,
    key: String,
}

impl<'de> Deserialize<'de> for Tls {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{self, Unexpected};
        struct Visit;
        impl<'de> de::Visitor<'de> for Visit {
            type Value = Tls;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("off, self-signed, or {certificate: PATH, key: PATH}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Tls, E> {
                match v {
                    "off" => Ok(Tls::Off),
                    "self-signed" => Ok(Tls::SelfSigned),
                    _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
                }
            }
            // Read without a type hint, YAML 1.1's `off` (and `no`, `false`)
            // arrives as false; `on` or `true` does not say which certificate.
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Tls, E> {
                match v {
                    false => Ok(Tls::Off),
                    true => Err(E::invalid_value(Unexpected::Bool(v), &self)),
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Tls, A::Error> {
                let f = TlsFiles::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Tls::Files {
                    certificate: f.certificate,
                    key: f.key,
                })
            }
        }
        d.deserialize_any(Visit)
    }
}

impl Default for Ironic {
    fn default() -> Self {
        Ironic {
            auth: Auth::HttpBasic,
            username: "admin".into(),
            keystone: None,
            hardware_types: vec![
                HardwareType::Ipmi,
                HardwareType::Redfish,
                HardwareType::ManualManagement,
            ],
            automated_clean: true,
            fast_track: true,
            deploy_kernel: String::new(),
            deploy_ramdisk: String::new(),
            tls: Tls::Off,
        }
    }
}

/// The deploy ramdisk the image carries (`make image` builds it from
/// kickstart/ipa-ramdisk-debian.yaml): under `/var/lib/ironic`, one of the
/// folders Ironic allows `file://` URLs from.
pub const BUILTIN_DEPLOY_KERNEL: &str = "/var/lib/ironic/deploy/ipa.kernel";
pub const BUILTIN_DEPLOY_RAMDISK: &str = "/var/lib/ironic/deploy/ipa.initramfs";

impl Ironic {
    /// The deploy kernel and ramdisk as Ironic URLs.
    pub fn deploy_images(&self) -> (String, String) {
        let url = |given: &str, builtin: &str| {
            if given.is_empty() {
                format!("file://{builtin}")
            } else {
                given.to_string()
            }
        };
        (
            url(&self.deploy_kernel, BUILTIN_DEPLOY_KERNEL),
            url(&self.deploy_ramdisk, BUILTIN_DEPLOY_RAMDISK),
        )
    }
}

/// The hardware types the image has the libraries for (pyghmi/ipmitool,
/// sushy); anything else would make the conductor refuse to start.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HardwareType {
    Ipmi,
    Redfish,
    ManualManagement,
}

impl HardwareType {
    pub fn name(self) -> &'static str {
        match self {
            HardwareType::Ipmi => "ipmi",
            HardwareType::Redfish => "redfish",
            HardwareType::ManualManagement => "manual-management",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Passwords {
    /// Empty: made up at first boot and kept.
    pub database: String,
    /// Empty: the stack user's password login stays locked.
    pub stack: String,
    /// The Ironic API user's, with `auth: http_basic`. Empty: made up at
    /// first boot, kept, and shown on the console once.
    pub ironic: String,
}

/// An IPv4 address with a prefix length, written `192.168.24.1/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr> {
        let (a, p) = text.split_once('/').with_context(|| {
            format!("{text:?}: expected ADDRESS/PREFIX such as 192.168.24.1/24")
        })?;
        let addr: Ipv4Addr = a
            .parse()
            .with_context(|| format!("{text:?}: {a:?} is not an IPv4 address"))?;
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .with_context(|| format!("{text:?}: the prefix length must be 8 to 30"))?;
        Ok(Cidr { addr, prefix })
    }

    pub fn mask(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }

    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & u32::from(self.mask()))
    }

    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & u32::from(self.mask()) == u32::from(self.network())
    }

    fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !u32::from(self.mask()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Cidr::parse(&text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl Config {
    /// Parse and check `undercloud.yaml`'s text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        // An empty file or one holding only comments means "all defaults";
        // serde-saphyr reads it as a null document.
        let cfg: Config = if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            Config::default()
        } else {
            serde_saphyr::from_str(text)
                .map_err(|e| anyhow::anyhow!("{origin}: {}", first_line(&e.to_string())))?
        };
        cfg.check().with_context(|| origin.to_string())?;
        Ok(cfg)
    }

    fn check(&self) -> Result<()> {
        let p = &self.provisioning;
        if p.interface != "auto" && !valid_ifname(&p.interface) {
            bail!(
                "provisioning.interface {:?}: not an interface name (1-15 of letters, digits, - _ . :) or auto",
                p.interface
            );
        }
        let net = p.address;
        if net.addr == net.network() || net.addr == net.broadcast() {
            bail!("provisioning.address {net}: the network or broadcast address, not a host");
        }
        for (key, ip) in [("dhcp_start", p.dhcp_start), ("dhcp_end", p.dhcp_end)] {
            if !net.contains(ip) {
                bail!(
                    "provisioning.{key} {ip} is outside {}/{}",
                    net.network(),
                    net.prefix
                );
            }
            if ip == net.addr {
                bail!("provisioning.{key} {ip} is the undercloud's own address");
            }
            if ip == net.network() || ip == net.broadcast() {
                bail!("provisioning.{key} {ip} is the network or broadcast address");
            }
        }
        if u32::from(p.dhcp_start) > u32::from(p.dhcp_end) {
            bail!(
                "provisioning.dhcp_start {} comes after dhcp_end {}",
                p.dhcp_start,
                p.dhcp_end
            );
        }
        let (lo, hi) = (u32::from(p.dhcp_start), u32::from(p.dhcp_end));
        if (lo..=hi).contains(&u32::from(net.addr)) {
            bail!(
                "provisioning.address {} lies inside the DHCP range {}-{}",
                net.addr,
                p.dhcp_start,
                p.dhcp_end
            );
        }
        if !(1..=120).contains(&p.dhcp_probe_seconds) {
            bail!(
                "provisioning.dhcp_probe_seconds {}: 1 to 120",
                p.dhcp_probe_seconds
            );
        }
        if [0, IRONIC_API_PORT, IRONIC_JSON_RPC_PORT].contains(&self.image_server.port) {
            bail!(
                "image_server.port {}: pick another port (6385 is Ironic's API, 8089 its JSON-RPC)",
                self.image_server.port
            );
        }
        self.check_auth()?;
        self.check_tls()?;
        for (key, v) in [
            ("deploy_kernel", &self.ironic.deploy_kernel),
            ("deploy_ramdisk", &self.ironic.deploy_ramdisk),
        ] {
            let scheme_ok = ["http://", "https://", "file:///"]
                .iter()
                .any(|p| v.starts_with(p));
            if !v.is_empty() && (!scheme_ok || v.contains(char::is_whitespace)) {
                bail!("ironic.{key} {v:?}: an http://, https:// or file:/// URL (or empty for the built-in ramdisk)");
            }
        }
        if self.ironic.deploy_kernel.is_empty() != self.ironic.deploy_ramdisk.is_empty() {
            bail!("ironic.deploy_kernel and ironic.deploy_ramdisk: give both or neither");
        }
        if self.ironic.hardware_types.is_empty() {
            bail!("ironic.hardware_types: name at least one (ipmi, redfish, manual-management)");
        }
        if !self.passwords.database.is_empty() && !valid_db_password(&self.passwords.database) {
            bail!("passwords.database: 8-64 of letters, digits, - and _ (it is put in a URL and in SQL)");
        }
        if self.passwords.stack.contains(['\n', '\r', ':']) {
            bail!("passwords.stack: may not hold a line break or ':'");
        }
        Ok(())
    }

    /// The API's authentication settings. Every value here ends up in
    /// ironic.conf (where oslo.config reads `$` as a reference, and a line
    /// break starts a new option) and in a shell file.
    fn check_auth(&self) -> Result<()> {
        let i = &self.ironic;
        if !valid_username(&i.username) {
            bail!(
                "ironic.username {:?}: 1-64 of letters, digits, . _ -",
                i.username
            );
        }
        if !self.passwords.ironic.is_empty() && !valid_password(&self.passwords.ironic) {
            bail!("passwords.ironic: 8-128 printable ASCII characters (spaces only inside)");
        }
        match (i.auth, &i.keystone) {
            (Auth::Keystone, None) => {
                bail!("ironic.auth is keystone but ironic.keystone (auth_url, username, password) is missing")
            }
            (Auth::Keystone, Some(k)) => {
                let url_ok =
                    k.auth_url.starts_with("http://") || k.auth_url.starts_with("https://");
                if !url_ok || !k.auth_url.chars().all(|c| c.is_ascii_graphic()) {
                    bail!(
                        "ironic.keystone.auth_url {:?}: not an http(s) URL",
                        k.auth_url
                    );
                }
                for (key, v) in [
                    ("username", &k.username),
                    ("password", &k.password),
                    ("project", &k.project),
                ] {
                    if v.is_empty() || v.trim() != v || v.chars().any(char::is_control) {
                        bail!("ironic.keystone.{key}: must be one non-empty line, no spaces at either end");
                    }
                }
            }
            (Auth::Noauth | Auth::HttpBasic, _) => {}
        }
        Ok(())
    }

    /// The certificate's and key's paths; the files themselves are read
    /// and checked by `configure` (tls.rs), before anything is written.
    fn check_tls(&self) -> Result<()> {
        let Tls::Files { certificate, key } = &self.ironic.tls else {
            return Ok(());
        };
        for (name, path) in [("certificate", certificate), ("key", key)] {
            if !valid_tls_path(path) {
                bail!("ironic.tls.{name} {path:?}: an absolute path in the image, or a file name on the ESP beside undercloud.yaml");
            }
        }
        Ok(())
    }
}

/// An absolute path without `..` and without spaces or control
/// characters (it is written into the endpoints file), or a bare file
/// name of letters, digits, `.`, `_`, `-` (a file on the ESP).
fn valid_tls_path(p: &str) -> bool {
    let clean = !p.is_empty() && p.len() <= 4096 && p.chars().all(|c| c.is_ascii_graphic());
    let bare = |name: &str| {
        !name.starts_with('.')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    };
    match p.strip_prefix('/') {
        Some(rest) => {
            clean && !rest.is_empty() && !rest.split('/').any(|c| c == ".." || c.is_empty())
        }
        None => clean && p.len() <= 255 && bare(p),
    }
}

pub const IRONIC_API_PORT: u16 = 6385;
/// Ironic's JSON-RPC port: unused while API and conductor share a process,
/// kept free so that splitting them never collides with the image server.
pub const IRONIC_JSON_RPC_PORT: u16 = 8089;

/// The YAML library's message without its source snippet: the key and
/// position are on its first line, and a console or journal shows one line
/// per error.
pub(crate) fn first_line(msg: &str) -> &str {
    let line = msg
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.strip_prefix("error: ").unwrap_or(line)
}

fn valid_ifname(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

pub fn valid_db_password(pw: &str) -> bool {
    (8..=64).contains(&pw.len())
        && pw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_comment_only_files_are_the_defaults() {
        assert_eq!(Config::parse("", "t").unwrap(), Config::default());
        assert_eq!(
            Config::parse("# nothing\n\n", "t").unwrap(),
            Config::default()
        );
        let d = Config::default();
        assert_eq!(d.provisioning.address.to_string(), "192.168.24.1/24");
        assert_eq!(d.image_server.port, 8088);
        assert_eq!(
            d.ironic.hardware_types,
            [
                HardwareType::Ipmi,
                HardwareType::Redfish,
                HardwareType::ManualManagement
            ]
        );
        assert_eq!(d.database, Database::Sqlite);
        assert!(d.ironic.automated_clean);
        assert_eq!(
            d.ironic.deploy_images(),
            (
                "file:///var/lib/ironic/deploy/ipa.kernel".to_string(),
                "file:///var/lib/ironic/deploy/ipa.initramfs".to_string()
            )
        );
    }

    #[test]
    fn database_and_deploy_ramdisk() {
        let c = Config::parse(
            "database: mariadb\nironic:\n  automated_clean: false\n  fast_track: false\n  deploy_kernel: http://10.0.0.5/k\n  deploy_ramdisk: http://10.0.0.5/r\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.database, Database::Mariadb);
        assert!(!c.ironic.automated_clean);
        assert!(!c.ironic.fast_track);
        assert_eq!(c.ironic.deploy_images().1, "http://10.0.0.5/r");
        assert!(err("database: postgres\n").contains("postgres"));
        assert!(
            err("ironic: {deploy_kernel: /boot/vmlinuz, deploy_ramdisk: /boot/initrd}\n")
                .contains("ironic.deploy_kernel \"/boot/vmlinuz\"")
        );
        assert!(err("ironic: {deploy_kernel: http://h/k}\n").contains("both or neither"));
    }

    #[test]
    fn the_shipped_file_is_the_defaults() {
        let text =
            include_str!("../../overlays/undercloud-config/static/etc/undercloud/undercloud.yaml");
        assert_eq!(
            Config::parse(text, "undercloud.yaml").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn partial_files_keep_other_defaults() {
        let c = Config::parse(
            "provisioning:\n  interface: ens4\n  address: 10.1.0.1/16\n  dhcp_start: 10.1.1.0\n  dhcp_end: 10.1.1.50\nimage_server: {port: 8090}\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.provisioning.interface, "ens4");
        assert_eq!(c.provisioning.address.mask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(c.image_server.port, 8090);
        assert_eq!(c.ironic, Ironic::default());
    }

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text, "undercloud.yaml").unwrap_err())
    }

    #[test]
    fn mistakes_name_the_key() {
        assert!(err("provisioning:\n  adress: 1.2.3.4/24\n").contains("adress"));
        assert!(err("provisioning: {address: 192.168.24.1}\n").contains("ADDRESS/PREFIX"));
        assert!(err("provisioning: {address: 192.168.24.1/33}\n").contains("prefix length"));
        assert!(err("provisioning: {address: 192.168.24.0/24}\n").contains("network or broadcast"));
        assert!(err("provisioning: {dhcp_start: 10.0.0.5}\n")
            .contains("dhcp_start 10.0.0.5 is outside 192.168.24.0/24"));
        assert!(
            err("provisioning: {dhcp_start: 192.168.24.150, dhcp_end: 192.168.24.120}\n")
                .contains("comes after")
        );
        assert!(err("provisioning: {dhcp_start: 192.168.24.1}\n").contains("own address"));
        assert!(
            err("provisioning: {address: 192.168.24.150/24}\n").contains("inside the DHCP range")
        );
        assert!(err("provisioning: {interface: \"eth0; rm\"}\n").contains("not an interface name"));
        assert!(err("image_server: {port: 6385}\n").contains("6385"));
        assert!(err("image_server: {port: 70000}\n").contains("line 1 column 22"));
        assert!(err("ironic: {auth: keystone}\n").contains("ironic.keystone"));
        assert!(err("ironic: {auth: ldap}\n").contains("ldap"));
        assert!(err("ironic: {hardware_types: [idrac]}\n").contains("idrac"));
        assert!(err("ironic: {hardware_types: []}\n").contains("at least one"));
        assert!(err("passwords: {database: \"it's\"}\n").contains("passwords.database"));
        assert!(err("passwords: {database: short}\n").contains("passwords.database"));
        assert!(err("provisioning: [1, 2]\n").contains("undercloud.yaml"));
        assert!(err("{{{").starts_with("undercloud.yaml: "));
        let e = err("provisioning:\n  adress: 1.2.3.4/24\n");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.starts_with("undercloud.yaml: line 2 column 3: unknown field `adress`"),
            "{e}"
        );
    }

    #[test]
    fn dhcp_mode() {
        let mode = |text: &str| Config::parse(text, "t").unwrap().provisioning.dhcp;
        assert_eq!(Config::default().provisioning.dhcp, DhcpMode::Auto);
        assert_eq!(Config::default().provisioning.dhcp_probe_seconds, 5);
        assert_eq!(mode("provisioning: {dhcp: auto}\n"), DhcpMode::Auto);
        assert_eq!(mode("provisioning: {dhcp: force}\n"), DhcpMode::Force);
        // YAML 1.1 would read a bare off as false; this parser keeps the word.
        assert_eq!(mode("provisioning: {dhcp: off}\n"), DhcpMode::Off);
        assert_eq!(mode("provisioning:\n  dhcp: \"off\"\n"), DhcpMode::Off);
        let c = Config::parse("provisioning: {dhcp_probe_seconds: 35}\n", "t").unwrap();
        assert_eq!(c.provisioning.dhcp_probe_seconds, 35);
        assert!(err("provisioning: {dhcp: on}\n").contains("line 1"));
        let e = err("provisioning:\n  dhcp: yes\n");
        assert!(e.contains("line 2") && e.contains("auto"), "{e}");
        assert!(err("provisioning: {dhcp: false}\n").contains("undercloud.yaml"));
        assert!(err("provisioning: {dhcp_probe_seconds: 0}\n").contains("dhcp_probe_seconds 0"));
        assert!(err("provisioning: {dhcp_probe_seconds: 121}\n").contains("1 to 120"));
        assert!(err("provisioning: {dhcp_probe_seconds: 2.5}\n").contains("line 1"));
    }

    #[test]
    fn keystone_needs_its_settings() {
        let c = Config::parse(
            "ironic:\n  auth: keystone\n  keystone:\n    auth_url: https://ks:5000/v3\n    username: ironic\n    password: pw\n",
            "t",
        )
        .unwrap();
        let k = c.ironic.keystone.unwrap();
        assert_eq!(k.project, "service");
        assert!(err(
            "ironic:\n  auth: keystone\n  keystone: {auth_url: ks, username: a, password: b}\n"
        )
        .contains("auth_url"));
    }

    #[test]
    fn tls_modes() {
        let tls = |text: &str| Config::parse(text, "t").unwrap().ironic.tls;
        assert_eq!(Config::default().ironic.tls, Tls::Off);
        assert_eq!(tls("ironic: {tls: off}\n"), Tls::Off);
        assert_eq!(tls("ironic: {tls: \"off\"}\n"), Tls::Off);
        assert_eq!(tls("ironic: {tls: false}\n"), Tls::Off);
        assert_eq!(tls("ironic: {tls: self-signed}\n"), Tls::SelfSigned);
        assert_eq!(
            tls("ironic:\n  tls:\n    certificate: undercloud.crt\n    key: /etc/pki/ironic.key\n"),
            Tls::Files {
                certificate: "undercloud.crt".into(),
                key: "/etc/pki/ironic.key".into()
            }
        );
        assert!(tls("ironic: {tls: self-signed}\n").enabled());
        assert!(!Tls::Off.enabled());
    }

    #[test]
    fn tls_mistakes_name_the_key_on_one_line() {
        for (text, want) in [
            ("ironic: {tls: on}\n", "self-signed"),
            ("ironic: {tls: selfsigned}\n", "line 1"),
            ("ironic: {tls: true}\n", "certificate"),
            ("ironic: {tls: 3}\n", "self-signed"),
            ("ironic: {tls: {certificate: a.crt}}\n", "key"),
            (
                "ironic: {tls: {certificate: a.crt, key: a.key, ca: c}}\n",
                "ca",
            ),
            (
                "ironic: {tls: {certificate: \"a b.crt\", key: a.key}}\n",
                "ironic.tls.certificate \"a b.crt\": an absolute path",
            ),
            (
                "ironic: {tls: {certificate: a.crt, key: ../a.key}}\n",
                "ironic.tls.key \"../a.key\"",
            ),
            (
                "ironic: {tls: {certificate: /etc/../x, key: a.key}}\n",
                "ironic.tls.certificate",
            ),
            (
                "ironic: {tls: {certificate: .hidden, key: a.key}}\n",
                "ironic.tls.certificate",
            ),
            (
                "ironic: {tls: {certificate: \"\", key: a.key}}\n",
                "ironic.tls.certificate",
            ),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(e.starts_with("undercloud.yaml: "), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        assert!(valid_tls_path("/etc/ironic/custom.pem"));
        assert!(valid_tls_path("undercloud_2025.key"));
        for bad in ["/", "//x", "/a//b", "sub/dir.crt", "/a/\tb", "/a/b c"] {
            assert!(!valid_tls_path(bad), "{bad:?}");
        }
    }
}
