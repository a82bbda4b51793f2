//! `undercloud-live undercloud configure`: find `undercloud.yaml`, check it,
//! and write the services' configuration into a root (`/` at boot).
//!
//! Where the settings come from, first found wins: `--config FILE`; the
//! live medium's ESP (the copy an operator can edit on any OS); the root's
//! `/etc/undercloud/undercloud.yaml`; the built-in defaults. Nothing is
//! written unless the whole file is valid, so a typo leaves the previous
//! boot's configuration in place and the error on the console.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::config::{valid_db_password, Auth, Config, DhcpMode, Tls};
use super::credentials::{self, Credentials, Origin};
use super::dhcp_guard::{self, Dhcp};
use super::dhcp_probe;
use super::render::{self, ApiTls, Facts, Owner, HTTP_ROOT, IMAGES_ROOT, TFTP_ROOT};
use super::tls::{self, Pair};
use crate::medium::Medium;
use crate::system::command::Task;

/// The file's name on the ESP and in `/etc/undercloud`.
pub const FILE_NAME: &str = "undercloud.yaml";
const DB_PASSWORD_FILE: &str = "var/lib/undercloud/db-password";

pub struct Options {
    /// The target root; `/` at boot.
    pub root: PathBuf,
    /// Read this file instead of looking for one.
    pub config: Option<PathBuf>,
    /// Check and print what would be written; write nothing.
    pub dry_run: bool,
}

/// Where a settings file came from, for the log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// (file name, disk)
    Esp(&'static str, PathBuf),
    Root(PathBuf),
    Defaults,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Esp(name, disk) => write!(f, "{name} on the ESP of {}", disk.display()),
            Source::Root(p) => write!(f, "{}", p.display()),
            Source::Defaults => write!(f, "the built-in defaults"),
        }
    }
}

/// Run it; returns the lines to print.
pub fn configure(opts: &Options) -> Result<String> {
    let (source, text) = find_file(FILE_NAME, opts.config.as_deref(), &opts.root)?;
    let cfg = Config::parse(&text, &source.to_string())?;
    let sys = Path::new("/sys/class/net");
    // Only at boot: names on this machine mean nothing for a dry run or
    // another root, and waiting out a host's `eth0` would take minutes.
    if cfg.provisioning.interface == "auto" && !opts.dry_run && opts.root == Path::new("/") {
        wait_for_renames(sys, RENAME_WAIT);
    }
    let interface = resolve_interface(&cfg.provisioning.interface, sys)?;
    // The operator's certificate and key are part of the settings: checked
    // before anything is written, in a dry run too.
    let configured =
        configured_tls(&cfg, &source, &opts.root).with_context(|| source.to_string())?;
    let mut out = format!("undercloud-config: settings from {source}\n");
    if opts.dry_run {
        out.push_str(&dry_run(&cfg, interface, configured));
        return Ok(out);
    }
    let p = &cfg.provisioning;
    let root = &opts.root;
    // The accounts first: a root without them gets no password files.
    let ids = Ids::read(root)?;
    let db_password = db_password(root, &cfg.passwords.database)?;
    let (api, line) = api_access(root, &cfg)?;
    out.push_str(&line);
    let (tls, line) = api_tls(root, &cfg, configured)?;
    out.push_str(&line);
    // Before dnsmasq's file is written, and so before dnsmasq starts (it
    // is ordered after this unit): is another DHCP server on the network?
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dhcp = dhcp_guard::decide(
        p.dhcp,
        &interface,
        p.dhcp_probe_seconds,
        now,
        dhcp_probe::probe,
    );
    out.push_str(&dhcp.console_line(&interface));
    out.push('\n');
    let state = in_root(root, dhcp_guard::STATE_FILE)?;
    match &dhcp {
        Dhcp::Guarded(g) => write_file(&state, g.render().as_bytes(), 0o644, 0, 0)?,
        _ => match fs::remove_file(&state) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", state.display())),
        },
    }
    let facts = Facts {
        interface,
        db_password,
        dhcp,
        api,
        tls,
    };
    for f in render::files(&cfg, &facts) {
        let (uid, gid) = match f.owner {
            Owner::Root => (0, 0),
            Owner::RootIronic => (0, ids.ironic.1),
            Owner::Stack => ids.stack,
        };
        write_file(&in_root(root, f.path)?, f.text.as_bytes(), f.mode, uid, gid)?;
    }
    // Ironic writes its iPXE scripts, boot files, image cache, locks and the
    // agents' deploy logs into these.
    for dir in [
        HTTP_ROOT,
        TFTP_ROOT,
        IMAGES_ROOT,
        "/var/lib/ironic",
        "/var/lib/ironic/lock",
        "/var/log/ironic",
        "/var/log/ironic/deploy",
    ] {
        let d = in_root(root, dir)?;
        fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        chown(&d, ids.ironic.0, ids.ironic.1)?;
    }
    let ipxe = copy_ipxe(root)?;
    set_stack_password(root, &cfg.passwords.stack)?;
    let dhcp = if facts.dhcp.serves() {
        format!("DHCP {}-{}", p.dhcp_start, p.dhcp_end)
    } else {
        "DHCP off".to_string()
    };
    out.push_str(&format!(
        "undercloud-config: provisioning on {} at {}, {dhcp}, images on port {}, {}\n",
        facts.interface, p.address, cfg.image_server.port, ipxe
    ));
    Ok(out)
}

/// What a dry run prints: the probe it would make and every file, with
/// placeholders for secrets.
fn dry_run(cfg: &Config, interface: String, configured: Option<ApiTls>) -> String {
    let p = &cfg.provisioning;
    // No packet leaves in a dry run: say what the probe would do.
    let mut out = dhcp_guard::dry_run_line(p.dhcp, &interface, p.dhcp_probe_seconds);
    out.push('\n');
    let secret = |configured: &str, key: &str| {
        if configured.is_empty() {
            "<made up at first boot>".to_string()
        } else {
            format!("<{key} from undercloud.yaml>")
        }
    };
    let facts = Facts {
        dhcp: match p.dhcp {
            DhcpMode::Auto => Dhcp::Checked {
                seconds: p.dhcp_probe_seconds,
            },
            DhcpMode::Force => Dhcp::Forced,
            DhcpMode::Off => Dhcp::Off,
        },
        interface,
        db_password: secret(&cfg.passwords.database, "passwords.database"),
        api: (cfg.ironic.auth == Auth::HttpBasic).then(|| {
            let c = Credentials {
                username: cfg.ironic.username.clone(),
                password: secret(&cfg.passwords.ironic, "passwords.ironic"),
            };
            (c, format!("{}:<bcrypt hash>\n", cfg.ironic.username))
        }),
        tls: match (&cfg.ironic.tls, configured) {
            (_, Some(mut t)) => {
                t.pair.key_pem = "<the key named by ironic.tls.key>\n".into();
                Some(t)
            }
            (Tls::SelfSigned, None) => Some(ApiTls {
                pair: Pair {
                    cert_pem: "<made at first boot and kept>\n".into(),
                    key_pem: "<made at first boot and kept>\n".into(),
                    leaf: Vec::new(),
                },
                local_host: "127.0.0.1".into(),
            }),
            _ => None,
        },
    };
    for f in render::files(cfg, &facts) {
        out.push_str(&format!("==> {} (mode {:o})\n{}", f.path, f.mode, f.text));
    }
    out
}

/// Who may use the API, and the console line saying so. A password made
/// up now is shown this once: the operator at the console may have no
/// other way to learn it.
fn api_access(root: &Path, cfg: &Config) -> Result<(Option<(Credentials, String)>, String)> {
    let user = &cfg.ironic.username;
    match cfg.ironic.auth {
        Auth::HttpBasic => {
            let (password, origin) = credentials::password(root, &cfg.passwords.ironic)?;
            let c = Credentials {
                username: user.clone(),
                password,
            };
            let line = match origin {
                Origin::Generated => format!(
                    "undercloud-config: Ironic API user {user}, password {} (made up now and shown only this once; it is in ~stack/undercloudrc)\n",
                    c.password
                ),
                Origin::Kept | Origin::Configured => format!(
                    "undercloud-config: Ironic API: HTTP basic auth, user {user} (password in ~stack/undercloudrc)\n"
                ),
            };
            let htpasswd = credentials::htpasswd(&c)?;
            Ok((Some((c, htpasswd)), line))
        }
        Auth::Noauth => Ok((
            None,
            format!("undercloud-config: WARNING: {NOAUTH_WARNING}\n"),
        )),
        Auth::Keystone => Ok((
            None,
            "undercloud-config: Ironic API: Keystone tokens\n".to_string(),
        )),
    }
}

/// With `ironic.tls: {certificate, key}`: the operator's pair, read and
/// checked; it must name the provisioning address (where the nodes and
/// undercloudrc's OS_ENDPOINT call the API).
fn configured_tls(cfg: &Config, source: &Source, root: &Path) -> Result<Option<ApiTls>> {
    let Tls::Files { certificate, key } = &cfg.ironic.tls else {
        return Ok(None);
    };
    let cert_pem = read_tls_file("certificate", certificate, source, root)?;
    let key_pem = read_tls_file("key", key, source, root)?;
    let pair = Pair::parse(&cert_pem, &key_pem)
        .with_context(|| format!("ironic.tls {certificate} and {key}"))?;
    let address = cfg.provisioning.address.addr.to_string();
    if !pair.valid_for(&address) {
        bail!("ironic.tls.certificate {certificate}: does not name {address} (provisioning.address) among its subject alternative names");
    }
    // The undercloud's own tools call 127.0.0.1 when the certificate names
    // it (as the self-signed one does), else the provisioning address.
    let local_host = if pair.valid_for("127.0.0.1") {
        "127.0.0.1".to_string()
    } else {
        address
    };
    Ok(Some(ApiTls { pair, local_host }))
}

/// A PEM file is a few KiB; a chain of a dozen certificates stays far
/// below this.
const TLS_FILE_LIMIT: u64 = crate::io::MIB;

/// `ironic.tls.<name>`'s file: an absolute path in the root, or a file
/// name beside undercloud.yaml (on the ESP when that is where it is).
fn read_tls_file(name: &str, path: &str, source: &Source, root: &Path) -> Result<Vec<u8>> {
    let what = format!("ironic.tls.{name}");
    let beside = |settings: &Path| -> Result<Vec<u8>> {
        let dir = settings.parent().unwrap_or(Path::new("/"));
        read_tls_path(&dir.join(path), &what, path)
    };
    if path.starts_with('/') {
        return read_tls_path(&in_root(root, path)?, &what, path);
    }
    match source {
        Source::Esp(_, disk) => {
            let medium = Medium::open(disk)
                .with_context(|| format!("{what} {path}: opening {}", disk.display()))?;
            medium
                .read_esp_file(path)
                .with_context(|| format!("{what} {path}"))?
                .with_context(|| format!("{what} {path}: not on the ESP of {}", disk.display()))
        }
        Source::File(f) => beside(f),
        // In the root: its links resolved inside it, as every path there.
        Source::Root(_) => read_tls_path(
            &in_root(root, &format!("/etc/undercloud/{path}"))?,
            &what,
            path,
        ),
        Source::Defaults => bail!("{what} {path}: no undercloud.yaml to find it beside"),
    }
}

fn read_tls_path(file: &Path, what: &str, given: &str) -> Result<Vec<u8>> {
    if !file.exists() {
        bail!("{what} {given}: no such file ({})", file.display());
    }
    crate::io::read_bounded(file, TLS_FILE_LIMIT, what)
}

/// What the API serves, and the console line saying so: at every boot,
/// with the certificate's fingerprint, for a client to compare.
fn api_tls(
    root: &Path,
    cfg: &Config,
    configured: Option<ApiTls>,
) -> Result<(Option<ApiTls>, String)> {
    let addr = cfg.provisioning.address.addr;
    let (t, how) = match (&cfg.ironic.tls, configured) {
        (Tls::Off, _) => return Ok((None, String::new())),
        (_, Some(t)) => (
            t,
            "the certificate of ironic.tls in undercloud.yaml".to_string(),
        ),
        (_, None) => {
            let names = tls::Names {
                address: addr,
                hostname: tls::hostname(root),
            };
            let (pair, origin) = tls::self_signed(root, &names)?;
            let when = match origin {
                tls::Origin::Generated => "made now",
                tls::Origin::Kept => "kept",
            };
            let how = format!("a self-signed certificate ({when}, in /{})", tls::KEPT_CERT);
            let local_host = "127.0.0.1".to_string();
            (ApiTls { pair, local_host }, how)
        }
    };
    let line = format!(
        "undercloud-config: Ironic API at https://{addr}:{} with {how}; SHA-256 fingerprint {}; clients trust {} (OS_CACERT in ~stack/undercloudrc)\n",
        super::config::IRONIC_API_PORT,
        t.pair.fingerprint(),
        tls::CERT_FILE
    );
    Ok((Some(t), line))
}

/// What the console and `status` say about `auth: noauth`.
pub const NOAUTH_WARNING: &str = "Ironic's API has no authentication (ironic.auth: noauth in undercloud.yaml): anyone who reaches port 6385 can power-cycle and reimage every enrolled machine";

/// Find one of the operator's files (`undercloud.yaml`, `nodes.yaml`),
/// first found wins: `explicit`; the live medium's ESP (only when `root`
/// is `/`: the medium belongs to the running system); the root's
/// `/etc/undercloud`; none (`Source::Defaults`, empty text).
pub fn find_file(
    name: &'static str,
    explicit: Option<&Path>,
    root: &Path,
) -> Result<(Source, String)> {
    if let Some(path) = explicit {
        let text = crate::io::read_text_bounded(path, SETTINGS_LIMIT, name)?;
        return Ok((Source::File(path.to_path_buf()), text));
    }
    if root == Path::new("/") {
        if let Some(medium) = Medium::discover().context("looking for the live medium")? {
            if let Some(bytes) = medium
                .read_esp_file(name)
                .with_context(|| format!("reading {name} from {}", medium.disk().display()))?
            {
                let text = String::from_utf8(bytes).with_context(|| {
                    format!(
                        "{name} on the ESP of {}: not UTF-8 text",
                        medium.disk().display()
                    )
                })?;
                return Ok((Source::Esp(name, medium.disk().to_path_buf()), text));
            }
        }
    }
    let fallback = in_root(root, &format!("/etc/undercloud/{name}"))?;
    match crate::io::read_text_bounded_opt(&fallback, SETTINGS_LIMIT, name)? {
        Some(text) => Ok((Source::Root(fallback), text)),
        None => Ok((Source::Defaults, String::new())),
    }
}

/// undercloud.yaml and nodes.yaml are hand-written: a rack of a thousand
/// nodes is about 300 KiB of nodes.yaml. 4 MiB leaves room and keeps a
/// `--config /dev/zero` or a runaway file from filling memory.
const SETTINGS_LIMIT: u64 = 4 * crate::io::MIB;

/// How long `auto` waits for the network card to show up with its final
/// name. Generous: on an emulated CPU the virtio card appeared only after
/// 80 s of boot.
const RENAME_WAIT: std::time::Duration = std::time::Duration::from_secs(180);

/// At boot the unit starts once udev has been asked to set devices up, not
/// once it is done (waiting for all of udev, systemd-udev-settle, took
/// minutes on an emulated CPU). `auto` must neither find no interface
/// because its driver has not bound yet, nor pick a kernel name such as
/// `eth0` that is about to become `enp0s2`: wait while there is no wired
/// interface or one still has a kernel name. With `net.ifnames=0` the names
/// stay, and this waits the whole `limit` once.
fn wait_for_renames(sys_class_net: &Path, limit: std::time::Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let wired = wired_interfaces(sys_class_net).unwrap_or_default();
        if !wired.is_empty() && !wired.iter().any(|n| is_kernel_name(n)) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// `eth0`, `eth1`: the names the kernel gives before udev renames.
fn is_kernel_name(name: &str) -> bool {
    name.strip_prefix("eth")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// `auto`: the first wired interface by name. A wired interface has a
/// device behind it (not a bridge, bond or tunnel), ARP type 1 (Ethernet)
/// and no `wireless` folder.
pub fn resolve_interface(wanted: &str, sys_class_net: &Path) -> Result<String> {
    if wanted != "auto" {
        return Ok(wanted.to_string());
    }
    wired_interfaces(sys_class_net)?
        .into_iter()
        .next()
        .with_context(|| {
            "provisioning.interface is auto but this machine has no wired network interface"
                .to_string()
        })
}

/// Wired interfaces, sorted by name.
fn wired_interfaces(sys_class_net: &Path) -> Result<Vec<String>> {
    let mut wired = Vec::new();
    let entries = fs::read_dir(sys_class_net)
        .with_context(|| format!("listing {}", sys_class_net.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", sys_class_net.display()))?;
        let dir = entry.path();
        let ether = fs::read_to_string(dir.join("type")).is_ok_and(|t| t.trim() == "1");
        if ether && dir.join("device").exists() && !dir.join("wireless").exists() {
            wired.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    wired.sort();
    Ok(wired)
}

/// The database password: the configured one, else the one made up on an
/// earlier boot, else a new random one (kept, so a persistent database
/// stays reachable).
fn db_password(root: &Path, configured: &str) -> Result<String> {
    credentials::kept_secret(root, DB_PASSWORD_FILE, configured, valid_db_password)
        .map(|(pw, _)| pw)
}

/// iPXE for PXE firmware, from wherever the distro puts it.
fn copy_ipxe(root: &Path) -> Result<String> {
    // (destination, candidates): Debian's ipxe, Fedora's ipxe-bootimgs-x86.
    let wanted: [(&str, &[&str]); 2] = [
        (
            "undionly.kpxe",
            &[
                "/usr/lib/ipxe/undionly.kpxe",
                "/usr/share/ipxe/undionly.kpxe",
            ],
        ),
        (
            "ipxe.efi",
            &["/usr/lib/ipxe/ipxe.efi", "/usr/share/ipxe/ipxe-x86_64.efi"],
        ),
    ];
    let mut missing = Vec::new();
    for (name, candidates) in wanted {
        match candidates
            .iter()
            .filter_map(|c| in_root(root, c).ok())
            .find(|p| p.is_file())
        {
            Some(src) => {
                let bytes = fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
                let dst = in_root(root, &format!("{TFTP_ROOT}/{name}"))?;
                write_file(&dst, &bytes, 0o644, 0, 0)?;
            }
            None => missing.push(name),
        }
    }
    Ok(if missing.is_empty() {
        "iPXE in place".to_string()
    } else {
        format!("iPXE missing: {} (PXE boot will fail)", missing.join(", "))
    })
}

fn set_stack_password(root: &Path, password: &str) -> Result<()> {
    let root_arg = root.as_os_str();
    let usermod = |flag: &str| {
        Task::new(
            format!("usermod {flag} stack"),
            Command::new("usermod")
                .arg("--root")
                .arg(root_arg)
                .args([flag, "stack"])
                .stdout(Stdio::null()),
        )
        .run()
    };
    if password.is_empty() {
        // Lock (again): a password removed from undercloud.yaml must stop
        // working.
        return usermod("--lock");
    }
    Task::new(
        "chpasswd for the stack user",
        Command::new("chpasswd").arg("--root").arg(root_arg),
    )
    .input(format!("stack:{password}\n"))
    .run()?;
    // A locked account stays locked after chpasswd on some shadow versions;
    // one that was not locked makes usermod complain, which is no failure.
    let unlocked = usermod("--unlock");
    match unlocked {
        Err(e) if crate::interrupt::is_interrupt(&e) => Err(e),
        _ => Ok(()),
    }
}

/// The ids of the accounts the files belong to, from the root's own
/// passwd (not the host's, when configuring another root).
struct Ids {
    ironic: (u32, u32),
    stack: (u32, u32),
}

impl Ids {
    fn read(root: &Path) -> Result<Ids> {
        let file = in_root(root, "/etc/passwd")?;
        let text =
            fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        let find = |user: &str| -> Result<(u32, u32)> {
            passwd_ids(&text, user).with_context(|| {
                format!(
                    "user {user} is missing from {} (is the undercloud element in the image?)",
                    file.display()
                )
            })
        };
        Ok(Ids {
            ironic: find("ironic")?,
            stack: find("stack")?,
        })
    }
}

fn passwd_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == user {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

/// `abs` inside `root`, its symlinks resolved as if `root` were `/` (what
/// openat2's RESOLVE_IN_ROOT does): an absolute link target starts again
/// at `root` and `..` stops there. A root being prepared may hold links
/// meant for the system it becomes (`/etc/ironic -> /srv/...`); followed
/// from outside they would lead to the host's own files.
pub(crate) fn in_root(root: &Path, abs: &str) -> Result<PathBuf> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::path::Component;
    if root == Path::new("/") {
        return Ok(PathBuf::from("/").join(abs.trim_start_matches('/')));
    }
    fn push_front(todo: &mut VecDeque<OsString>, p: &Path) {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push_front(n.to_os_string()),
                Component::ParentDir => todo.push_front("..".into()),
                _ => {}
            }
        }
    }
    let mut todo = VecDeque::new();
    push_front(&mut todo, Path::new(abs));
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        let here: PathBuf = root
            .iter()
            .chain(done.iter().map(|d| d.as_os_str()))
            .collect();
        let candidate = here.join(&c);
        let is_link = fs::symlink_metadata(&candidate).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            done.push(c);
            continue;
        }
        links += 1;
        if links > 40 {
            bail!("{}: too many levels of symbolic links", candidate.display());
        }
        let target = fs::read_link(&candidate)
            .with_context(|| format!("reading the link {}", candidate.display()))?;
        if target.is_absolute() {
            done.clear();
        }
        push_front(&mut todo, &target);
    }
    Ok(root
        .iter()
        .chain(done.iter().map(|d| d.as_os_str()))
        .collect())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .with_context(|| format!("changing the owner of {}", path.display()))
}

/// Write under a temporary name in the same folder, then rename: a service
/// never reads half a file, and a crash leaves the old one.
pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent folder", path.display()))?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        // The umask may have narrowed the mode given at creation.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", tmp.display()))?;
        chown(&tmp, uid, gid)?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn fake_net(dir: &Path, name: &str, kind: &str, device: bool, wireless: bool) {
        let d = dir.join(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("type"), format!("{kind}\n")).unwrap();
        if device {
            fs::create_dir_all(d.join("device")).unwrap();
        }
        if wireless {
            fs::create_dir_all(d.join("wireless")).unwrap();
        }
    }

    #[test]
    fn auto_picks_the_first_wired_interface() {
        let t = tempfile::tempdir().unwrap();
        fake_net(t.path(), "lo", "772", false, false);
        fake_net(t.path(), "wlp3s0", "1", true, true);
        fake_net(t.path(), "virbr0", "1", false, false);
        fake_net(t.path(), "enp5s0", "1", true, false);
        fake_net(t.path(), "enp0s2", "1", true, false);
        assert_eq!(resolve_interface("auto", t.path()).unwrap(), "enp0s2");
        assert_eq!(resolve_interface("eno1", t.path()).unwrap(), "eno1");
        let empty = tempfile::tempdir().unwrap();
        fake_net(empty.path(), "lo", "772", false, false);
        let e = resolve_interface("auto", empty.path()).unwrap_err();
        assert!(
            format!("{e:#}").contains("no wired network interface"),
            "{e:#}"
        );
    }

    #[test]
    fn waits_for_a_wired_interface_with_its_final_name() {
        assert!(is_kernel_name("eth0") && is_kernel_name("eth12"));
        assert!(!is_kernel_name("eth") && !is_kernel_name("enp0s2") && !is_kernel_name("ethx"));
        let t = tempfile::tempdir().unwrap();
        fake_net(t.path(), "enp0s2", "1", true, false);
        let start = std::time::Instant::now();
        wait_for_renames(t.path(), std::time::Duration::from_secs(5));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        fake_net(t.path(), "eth1", "1", true, false);
        let start = std::time::Instant::now();
        wait_for_renames(t.path(), std::time::Duration::from_millis(1200));
        assert!(start.elapsed() >= std::time::Duration::from_millis(1200));
        // No wired interface yet: wait for one too.
        let none = tempfile::tempdir().unwrap();
        fake_net(none.path(), "lo", "772", false, false);
        let start = std::time::Instant::now();
        wait_for_renames(none.path(), std::time::Duration::from_millis(1200));
        assert!(start.elapsed() >= std::time::Duration::from_millis(1200));
    }

    #[test]
    fn passwd_lookup() {
        let p = "root:x:0:0:root:/root:/bin/bash\nironic:x:101:102::/var/lib/ironic:/bin/false\nstack:x:1000:1000::/home/stack:/bin/bash\n";
        assert_eq!(passwd_ids(p, "ironic"), Some((101, 102)));
        assert_eq!(passwd_ids(p, "stack"), Some((1000, 1000)));
        assert_eq!(passwd_ids(p, "nova"), None);
    }

    #[test]
    #[ignore = "needs root: gives files to the services' users (make test runs it)"]
    fn db_password_is_made_once_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let a = db_password(t.path(), "").unwrap();
        assert!(valid_db_password(&a), "{a}");
        let file = t.path().join(DB_PASSWORD_FILE);
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(db_password(t.path(), "").unwrap(), a);
        assert_eq!(
            db_password(t.path(), "configured-1").unwrap(),
            "configured-1"
        );
    }

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("etc/x/conf");
        write_file(
            &p,
            b"one",
            0o640,
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
        .unwrap();
        write_file(
            &p,
            b"two",
            0o640,
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        )
        .unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_bad_file_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("undercloud.yaml");
        fs::write(&cfg, "provisioning:\n  dhcp_start: 10.0.0.1\n").unwrap();
        let e = configure(&Options {
            root: t.path().join("root"),
            config: Some(cfg),
            dry_run: false,
        })
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("undercloud.yaml") && msg.contains("dhcp_start"),
            "{msg}"
        );
        assert!(!t.path().join("root").exists());
    }

    /// A settings file in a fresh folder with `tls` under `ironic:`, and
    /// the files `extra` beside it.
    fn tls_settings(tls: &str, extra: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("undercloud.yaml");
        fs::write(
            &cfg,
            format!("provisioning: {{interface: eth9}}\nironic:\n  tls: {tls}\n"),
        )
        .unwrap();
        for (name, text) in extra {
            fs::write(t.path().join(name), text).unwrap();
        }
        (t, cfg)
    }

    fn configure_err(t: &tempfile::TempDir, cfg: PathBuf) -> String {
        let e = configure(&Options {
            root: t.path().join("root"),
            config: Some(cfg),
            dry_run: false,
        })
        .unwrap_err();
        assert!(!t.path().join("root").exists(), "something was written");
        format!("{e:#}")
    }

    #[test]
    fn a_bad_certificate_or_key_writes_nothing() {
        let names = |ip: [u8; 4]| tls::Names {
            address: ip.into(),
            hostname: None,
        };
        let a = tls::generate(&names([192, 168, 24, 1])).unwrap();
        let b = tls::generate(&names([192, 168, 24, 1])).unwrap();
        let elsewhere = tls::generate(&names([10, 0, 0, 1])).unwrap();
        let files = "{certificate: u.crt, key: u.key}";
        for (cert, key, want) in [
            ("", "", "ironic.tls.certificate u.crt: no such file"),
            ("not pem", a.key_pem.as_str(), "no PEM certificate"),
            (a.cert_pem.as_str(), "not pem", "no PEM private key"),
            (
                a.cert_pem.as_str(),
                b.key_pem.as_str(),
                "not the certificate's",
            ),
            (
                elsewhere.cert_pem.as_str(),
                elsewhere.key_pem.as_str(),
                "does not name 192.168.24.1 (provisioning.address)",
            ),
        ] {
            let extra: Vec<(&str, &str)> = if cert.is_empty() {
                Vec::new()
            } else {
                vec![("u.crt", cert), ("u.key", key)]
            };
            let (t, cfg) = tls_settings(files, &extra);
            let e = configure_err(&t, cfg);
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(e.contains("undercloud.yaml: ironic.tls"), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let (t, cfg) = tls_settings("{certificate: /nowhere/u.crt, key: u.key}", &[]);
        let e = configure_err(&t, cfg);
        assert!(
            e.contains("ironic.tls.certificate /nowhere/u.crt: no such file"),
            "{e}"
        );
    }

    #[test]
    fn a_dry_run_shows_https_and_never_the_key() {
        let pair = tls::generate(&tls::Names {
            address: [192, 168, 24, 1].into(),
            hostname: None,
        })
        .unwrap();
        let (t, cfg) = tls_settings(
            "{certificate: u.crt, key: u.key}",
            &[("u.crt", &pair.cert_pem), ("u.key", &pair.key_pem)],
        );
        let out = configure(&Options {
            root: t.path().join("root"),
            config: Some(cfg),
            dry_run: true,
        })
        .unwrap();
        assert!(out.contains("\nenable_ssl_api = true\n"), "{out}");
        assert!(out.contains("api=https://127.0.0.1:6385\n"), "{out}");
        assert!(out.contains(&pair.cert_pem), "{out}");
        assert!(!out.contains(&pair.key_pem), "{out}");
        assert!(!t.path().join("root").exists());
        let (t, cfg) = tls_settings("self-signed", &[]);
        let out = configure(&Options {
            root: t.path().join("root"),
            config: Some(cfg),
            dry_run: true,
        })
        .unwrap();
        assert!(out.contains("<made at first boot and kept>"), "{out}");
        assert!(!t.path().join("root").exists());
    }

    /// The console line of a self-signed certificate, at every boot, with
    /// the fingerprint (the boot test reads it back).
    #[test]
    #[ignore = "needs root: gives files to the services' users (make test runs it)"]
    fn the_console_shows_the_fingerprint_at_every_boot() {
        let t = tempfile::tempdir().unwrap();
        let cfg = Config::parse("ironic: {tls: self-signed}\n", "t").unwrap();
        let (a, line) = api_tls(t.path(), &cfg, None).unwrap();
        let a = a.unwrap();
        assert_eq!(a.local_host, "127.0.0.1");
        let fp = a.pair.fingerprint();
        assert!(
            line.starts_with("undercloud-config: Ironic API at https://192.168.24.1:6385 with a self-signed certificate (made now, in /var/lib/undercloud/tls/ironic.crt); "),
            "{line}"
        );
        assert!(
            line.contains(&format!("; SHA-256 fingerprint {fp}; ")),
            "{line}"
        );
        assert_eq!(line.lines().count(), 1);
        let (b, line) = api_tls(t.path(), &cfg, None).unwrap();
        assert_eq!(b.unwrap().pair, a.pair);
        assert!(line.contains("(kept, in ") && line.contains(&fp), "{line}");
        let (none, line) = api_tls(t.path(), &Config::default(), None).unwrap();
        assert!(none.is_none() && line.is_empty());
    }
}
