//! What to install and how: a YAML file (`install.yaml`) or an anaconda
//! kickstart (the 2013 image shipped one), read into one `Config`.
//!
//! The kickstart front end reuses `crate::kickstart`'s parser (quoting,
//! `%include`, line numbers) and interprets the installer commands it keeps
//! in `Kickstart::commands`: `ignoredisk --only-use`, `clearpart`,
//! `bootloader --append`, `network`, `rootpw`, `sshkey`, `timezone`,
//! `part swap`, `poweroff`/`reboot`/`halt`.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::kickstart::{self, Password};
use crate::spec::ByteSize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    #[default]
    Ext4,
    Xfs,
}

impl Filesystem {
    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Xfs => "xfs",
        }
    }
}

/// What happens once an unattended install is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum After {
    #[default]
    Poweroff,
    Reboot,
    /// Stay in the live session.
    None,
}

/// A network interface of the installed system (systemd-networkd).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Interface name or glob (`en*`); default: every wired interface.
    #[serde(default)]
    pub device: Option<String>,
    /// `dhcp` (default) or `static`.
    #[serde(default)]
    pub bootproto: Option<String>,
    /// Static address with prefix, e.g. 192.0.2.10/24.
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dns: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The disk to install to; the command line's `--target` wins.
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub filesystem: Filesystem,
    /// Swap partition size; none by default.
    #[serde(default)]
    pub swap: Option<ByteSize>,
    /// ESP size (default 256 MiB, at least 64 MiB so it is FAT32).
    #[serde(default)]
    pub esp_size: Option<ByteSize>,
    /// Make the disk boot under legacy BIOS too (default: when the live
    /// root has GRUB's i386-pc modules).
    #[serde(default)]
    pub bios: Option<bool>,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Plain text root password (hashed by chpasswd in the target).
    #[serde(default)]
    pub root_password: Option<String>,
    /// A crypt(3) hash such as `$6$...`.
    #[serde(default)]
    pub root_password_hash: Option<String>,
    /// Lines for /root/.ssh/authorized_keys.
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub network: Vec<Network>,
    /// Added to the installed system's kernel command line.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// Copy the running system with its changes instead of the image's
    /// read-only root.
    #[serde(default)]
    pub keep_live_changes: bool,
    #[serde(default)]
    pub after: After,
    /// Warnings from the kickstart front end (not a YAML key).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Reads `bytes` named `name`: a kickstart when the name ends in `.ks` or
/// `.cfg`, YAML otherwise.
pub fn parse(bytes: &[u8], name: &Path) -> Result<Config> {
    let text = std::str::from_utf8(bytes)
        .with_context(|| format!("{}: not UTF-8 text", name.display()))?;
    let ext = name.extension().and_then(|e| e.to_str()).unwrap_or("");
    let cfg = if matches!(ext, "ks" | "cfg") {
        from_kickstart(text, name)?
    } else if text.trim().is_empty() {
        Config::default()
    } else {
        serde_saphyr::from_str::<Config>(text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", name.display()))?
    };
    cfg.validate()
        .with_context(|| format!("{}: invalid install config", name.display()))?;
    Ok(cfg)
}

pub fn load(path: &Path) -> Result<Config> {
    // An install config is a short hand-written YAML file; 1 MiB is far
    // beyond any real one.
    let bytes = crate::io::read_bounded(path, crate::io::MIB, "install config")?;
    parse(&bytes, path)
}

fn hostname_ok(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
}

impl Config {
    fn validate(&self) -> Result<()> {
        if let Some(h) = &self.hostname {
            if !hostname_ok(h) {
                bail!("hostname {h:?}: use letters, digits, '-' and '.'");
            }
        }
        if self.root_password.is_some() && self.root_password_hash.is_some() {
            bail!("give root_password or root_password_hash, not both");
        }
        for p in self
            .root_password
            .iter()
            .chain(self.root_password_hash.iter())
        {
            if p.contains(['\n', ':']) {
                bail!("the root password may not contain ':' or a line break");
            }
        }
        if let Some(tz) = &self.timezone {
            if tz.contains("..")
                || tz.starts_with('/')
                || !tz
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c))
            {
                bail!("timezone {tz:?} is not a zone name");
            }
        }
        for k in &self.ssh_keys {
            if k.contains('\n') {
                bail!("an ssh key spans lines");
            }
        }
        for a in &self.kernel_args {
            if a.is_empty() || a.contains(char::is_whitespace) || a.contains(['"', '\'', ';']) {
                bail!("kernel argument {a:?}: one word, no quotes or ';'");
            }
        }
        if let Some(s) = self.esp_size {
            if s.0 < 64 << 20 {
                bail!("esp_size: at least 64MiB (FAT32)");
            }
        }
        for n in &self.network {
            for v in [&n.device, &n.address, &n.gateway, &n.bootproto]
                .into_iter()
                .flatten()
                .chain(n.dns.iter())
            {
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_graphic()) {
                    bail!("network: {v:?} is not a plain word");
                }
            }
            match n.bootproto.as_deref() {
                None | Some("dhcp") => {}
                Some("static") => {
                    if n.address.is_none() {
                        bail!("network: bootproto static needs an address");
                    }
                }
                Some(o) => bail!("network: bootproto {o:?} (use dhcp or static)"),
            }
        }
        Ok(())
    }
}

/// A `--name=value` or `--name value` option of a kickstart command.
fn opt(words: &[String], name: &str) -> Option<String> {
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if let Some(v) = w.strip_prefix(&format!("{name}=")) {
            return Some(v.to_string());
        }
        if w == name {
            return it.next().cloned();
        }
    }
    None
}

fn has(words: &[String], name: &str) -> bool {
    words
        .iter()
        .any(|w| w == name || w.starts_with(&format!("{name}=")))
}

/// "255.255.255.0" -> 24.
fn prefix_len(mask: &str) -> Result<u32> {
    let addr: std::net::Ipv4Addr = mask
        .parse()
        .with_context(|| format!("--netmask={mask} is not an IPv4 netmask"))?;
    let bits = u32::from(addr);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        bail!("--netmask={mask} is not a contiguous netmask");
    }
    Ok(bits.leading_ones())
}

fn from_kickstart(text: &str, name: &Path) -> Result<Config> {
    let ks = kickstart::parse_str(text, name)?;
    let mut cfg = Config::default();
    if let Some((_, h)) = &ks.hostname {
        cfg.hostname = Some(h.clone());
    }
    if let Some((_, tz)) = &ks.timezone {
        cfg.timezone = Some(tz.zone.clone());
    }
    if let Some((_, pw)) = &ks.rootpw {
        match &pw.password {
            Some(Password::Plain(p)) => cfg.root_password = Some(p.clone()),
            Some(Password::Crypted(h)) => cfg.root_password_hash = Some(h.clone()),
            None => {}
        }
    }
    let mut only_use: Option<String> = None;
    let mut clearpart = false;
    for (loc, words) in &ks.commands {
        let at = |msg: String| anyhow::anyhow!("{loc}: {msg}");
        let args = &words[1..];
        match words[0].as_str() {
            "ignoredisk" => {
                let disks = opt(args, "--only-use")
                    .ok_or_else(|| at("ignoredisk: only --only-use=DISK is understood".into()))?;
                if disks.contains(',') {
                    return Err(at(format!(
                        "ignoredisk --only-use={disks}: install to one disk"
                    )));
                }
                only_use = Some(disks);
            }
            "clearpart" => {
                if let Some(drives) = opt(args, "--drives") {
                    if drives.contains(',') {
                        return Err(at(format!("clearpart --drives={drives}: one disk")));
                    }
                    only_use.get_or_insert(drives);
                }
                clearpart = true;
            }
            "bootloader" => {
                if let Some(append) = opt(args, "--append") {
                    cfg.kernel_args
                        .extend(append.split_whitespace().map(str::to_string));
                }
            }
            "network" => {
                if opt(args, "--bootproto").is_none() && opt(args, "--device").is_none() {
                    continue; // only --hostname, taken above
                }
                let mut n = Network {
                    device: opt(args, "--device"),
                    bootproto: opt(args, "--bootproto"),
                    gateway: opt(args, "--gateway"),
                    dns: opt(args, "--nameserver")
                        .map(|s| s.split(',').map(str::to_string).collect())
                        .unwrap_or_default(),
                    address: None,
                };
                if let Some(ip) = opt(args, "--ip") {
                    let mask = opt(args, "--netmask")
                        .ok_or_else(|| at("network --ip needs --netmask".into()))?;
                    n.address = Some(format!(
                        "{ip}/{}",
                        prefix_len(&mask).map_err(|e| at(format!("{e:#}")))?
                    ));
                }
                cfg.network.push(n);
            }
            "sshkey" => {
                let user = opt(args, "--username").unwrap_or_else(|| "root".into());
                if user != "root" {
                    cfg.warnings
                        .push(format!("{loc}: sshkey for {user} ignored (only root's)"));
                    continue;
                }
                let key = args
                    .iter()
                    .rfind(|w| !w.starts_with("--") && *w != &user)
                    .ok_or_else(|| at("sshkey needs a key".into()))?;
                cfg.ssh_keys.push(key.clone());
            }
            "part" | "partition" => {
                if args.first().map(String::as_str) == Some("swap") {
                    let size = opt(args, "--size")
                        .ok_or_else(|| at("part swap needs --size (MiB)".into()))?;
                    let mib: u64 = size
                        .parse()
                        .map_err(|_| at(format!("part swap --size={size}: MiB as a number")))?;
                    cfg.swap = Some(ByteSize(mib << 20));
                } else if args.first().map(String::as_str) == Some("/") && has(args, "--fstype") {
                    match opt(args, "--fstype").as_deref() {
                        Some("ext4") => cfg.filesystem = Filesystem::Ext4,
                        Some("xfs") => cfg.filesystem = Filesystem::Xfs,
                        Some(o) => return Err(at(format!("part / --fstype={o}: ext4 or xfs"))),
                        None => {}
                    }
                } else {
                    cfg.warnings.push(format!(
                        "{loc}: {} ignored: the installer lays out ESP, BIOS boot, swap and root itself",
                        words.join(" ")
                    ));
                }
            }
            "poweroff" | "shutdown" | "halt" => cfg.after = After::Poweroff,
            "reboot" => cfg.after = After::Reboot,
            _ => {}
        }
    }
    if only_use.is_some() && !clearpart {
        cfg.warnings.push(format!(
            "{}: no clearpart: the target is wiped all the same",
            name.display()
        ));
    }
    cfg.target = only_use.map(|d| {
        if d.starts_with('/') {
            d
        } else {
            format!("/dev/{d}")
        }
    });
    cfg.warnings.extend(
        ks.warnings
            .iter()
            .filter(|w| {
                // The live-image parser calls installer commands meaningless;
                // here they are the point.
                !w.contains("means nothing for a live image")
                    && !w.contains("network: only --hostname")
            })
            .cloned(),
    );
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_defaults_and_fields() {
        let c = parse(b"", Path::new("install.yaml")).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.after, After::Poweroff);
        let c = parse(
            b"hostname: uc1\nfilesystem: xfs\nswap: 512MiB\nroot_password: secret\nssh_keys: ['ssh-ed25519 AAAA me']\nafter: reboot\nkernel_args: [quiet]\nnetwork:\n  - device: en*\n    bootproto: static\n    address: 192.0.2.5/24\n    gateway: 192.0.2.1\n    dns: [192.0.2.53]\n",
            Path::new("install.yaml"),
        )
        .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("uc1"));
        assert_eq!(c.filesystem, Filesystem::Xfs);
        assert_eq!(c.swap, Some(ByteSize(512 << 20)));
        assert_eq!(c.after, After::Reboot);
        assert_eq!(c.network[0].address.as_deref(), Some("192.0.2.5/24"));
    }

    #[test]
    fn yaml_mistakes_are_named() {
        let e = parse(b"hostnme: x\n", Path::new("i.yaml")).unwrap_err();
        assert!(format!("{e:#}").contains("hostnme"), "{e:#}");
        let e = parse(b"hostname: 'a b'\n", Path::new("i.yaml")).unwrap_err();
        assert!(format!("{e:#}").contains("hostname"), "{e:#}");
        let e = parse(
            b"root_password: a\nroot_password_hash: b\n",
            Path::new("i.yaml"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("not both"), "{e:#}");
        let e = parse(b"timezone: ../../etc/passwd\n", Path::new("i.yaml")).unwrap_err();
        assert!(format!("{e:#}").contains("timezone"), "{e:#}");
        let e = parse(b"esp_size: 8MiB\n", Path::new("i.yaml")).unwrap_err();
        assert!(format!("{e:#}").contains("esp_size"), "{e:#}");
    }

    #[test]
    fn kickstart_2013_style() {
        let ks = "\
ignoredisk --only-use=vdb
clearpart --all --initlabel
bootloader --location=mbr --append=\"console=ttyS0 quiet\"
rootpw --iscrypted $6$salt$hash
network --bootproto=static --device=eth0 --ip=192.0.2.5 --netmask=255.255.255.0 --gateway=192.0.2.1 --nameserver=192.0.2.53 --hostname=undercloud
timezone Etc/UTC --utc
part swap --size=256
part /boot --size=500
sshkey --username=root \"ssh-ed25519 AAAAC3 me@host\"
reboot
";
        let c = parse(ks.as_bytes(), Path::new("install.ks")).unwrap();
        assert_eq!(c.target.as_deref(), Some("/dev/vdb"));
        assert_eq!(c.kernel_args, vec!["console=ttyS0", "quiet"]);
        assert_eq!(c.root_password_hash.as_deref(), Some("$6$salt$hash"));
        assert_eq!(c.hostname.as_deref(), Some("undercloud"));
        assert_eq!(c.timezone.as_deref(), Some("Etc/UTC"));
        assert_eq!(c.swap, Some(ByteSize(256 << 20)));
        assert_eq!(c.after, After::Reboot);
        assert_eq!(c.ssh_keys, vec!["ssh-ed25519 AAAAC3 me@host"]);
        let n = &c.network[0];
        assert_eq!(n.device.as_deref(), Some("eth0"));
        assert_eq!(n.address.as_deref(), Some("192.0.2.5/24"));
        assert_eq!(n.dns, vec!["192.0.2.53"]);
        assert!(
            c.warnings.iter().any(|w| w.contains("part /boot")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn kickstart_mistakes() {
        let e = parse(b"ignoredisk --only-use=vdb,vdc\n", Path::new("a.ks")).unwrap_err();
        assert!(format!("{e:#}").contains("a.ks:1"), "{e:#}");
        let e = parse(
            b"network --bootproto=static --ip=192.0.2.5 --netmask=255.0.255.0\n",
            Path::new("a.ks"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("contiguous"), "{e:#}");
    }
}
