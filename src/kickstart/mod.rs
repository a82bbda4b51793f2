//! Kickstart files (livecd-creator's input), parsed into a typed
//! [`Kickstart`] and translated (`translate`) into a generated element
//! that the element runner applies like any other.
//!
//! Syntax handled: commands with shell-like quoting and `#` comments, a
//! trailing `\` continuing a command line, `%include` (relative to the
//! including file), and the sections `%packages` and `%post`, each closed by
//! `%end`. Commands that mean nothing for a live image (`part`,
//! `bootloader`, ...) and sections we do not run (`%pre`, ...) each get one
//! warning. Errors name `file:line`.

mod commands;
pub mod translate;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where something was written: `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyboard {
    /// Console keymap (`--vckeymap`, or the old positional layout).
    pub keymap: Option<String>,
    /// X layouts (`--xlayouts`).
    pub xlayouts: Vec<String>,
    /// X layout switching options (`--switch`, e.g. grp:alt_shift_toggle).
    pub switch: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timezone {
    pub zone: String,
    pub utc: bool,
    /// `--nontp`: no network time service (anaconda's meaning).
    pub nontp: bool,
}

/// `group` (pykickstart's GroupData).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub gid: Option<u32>,
}

/// What livecd-creator takes from `bootloader`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bootloader {
    /// `--append`: added to the live medium's kernel command line.
    pub append: Vec<String>,
    /// `--timeout`: the boot menu's, in seconds.
    pub timeout: Option<u32>,
}

/// `firewall`, as imgcreate hands it to firewall-offline-cmd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firewall {
    pub enabled: bool,
    pub trusts: Vec<String>,
    pub ports: Vec<String>,
    pub services: Vec<String>,
}

/// `xconfig`, as imgcreate applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XConfig {
    pub startx: bool,
    pub default_desktop: Option<String>,
}

/// `module --name= [--stream=] [--disable]`: a DNF module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub stream: Option<String>,
    pub enable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selinux {
    Enforcing,
    Permissive,
    Disabled,
}

impl Selinux {
    pub fn name(self) -> &'static str {
        match self {
            Selinux::Enforcing => "enforcing",
            Selinux::Permissive => "permissive",
            Selinux::Disabled => "disabled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Password {
    Plain(String),
    Crypted(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootPw {
    pub password: Option<Password>,
    pub lock: bool,
    /// `--allow-ssh`: root may log in over SSH with the password.
    pub allow_ssh: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    pub password: Option<Password>,
    pub homedir: Option<String>,
    pub shell: Option<String>,
    pub uid: Option<u32>,
    pub gecos: Option<String>,
    pub lock: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoSource {
    BaseUrl(String),
    Mirrorlist(String),
    Metalink(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    pub name: String,
    pub source: RepoSource,
    pub cost: Option<u32>,
    pub excludepkgs: Vec<String>,
    pub includepkgs: Vec<String>,
    pub proxy: Option<String>,
    pub noverifyssl: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackageItem {
    Package(String),
    /// `@group` (or `@^environment`), without the `@`.
    Group(String),
    Exclude(String),
    ExcludeGroup(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packages {
    pub excludedocs: bool,
    pub nocore: bool,
    pub items: Vec<(Loc, PackageItem)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Post {
    pub loc: Loc,
    pub nochroot: bool,
    pub interpreter: Option<String>,
    pub erroronfail: bool,
    pub log: Option<String>,
    pub body: String,
}

/// A parsed kickstart, with `%include`s resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kickstart {
    pub file: PathBuf,
    pub lang: Option<(Loc, String)>,
    pub keyboard: Option<(Loc, Keyboard)>,
    pub timezone: Option<(Loc, Timezone)>,
    pub selinux: Option<(Loc, Selinux)>,
    pub rootpw: Option<(Loc, RootPw)>,
    pub users: Vec<(Loc, User)>,
    pub groups: Vec<(Loc, Group)>,
    pub bootloader: Option<(Loc, Bootloader)>,
    pub firewall: Option<(Loc, Firewall)>,
    pub xconfig: Option<(Loc, XConfig)>,
    pub modules: Vec<(Loc, Module)>,
    pub services_enabled: Vec<String>,
    pub services_disabled: Vec<String>,
    pub hostname: Option<(Loc, String)>,
    pub repos: Vec<(Loc, Repo)>,
    pub packages: Packages,
    /// Whether any `%packages` section was seen.
    pub has_packages: bool,
    pub posts: Vec<Post>,
    /// `file:line: ...` for everything accepted but not acted on.
    pub warnings: Vec<String>,
    /// Every command with its words as written (quotes removed), in order:
    /// the installer reads the disk commands a live image ignores.
    pub commands: Vec<(Loc, Vec<String>)>,
}

/// Commands that configure an installer or a disk, which a live image has
/// no use for: accepted with a warning so existing kickstarts work.
const NO_MEANING: &[&str] = &[
    "auth",
    "authconfig",
    "authselect",
    "autopart",
    "autostep",
    "btrfs",
    "cdrom",
    "clearpart",
    "cmdline",
    "device",
    "deviceprobe",
    "dmraid",
    "driverdisk",
    "eula",
    "fcoe",
    "firstboot",
    "graphical",
    "halt",
    "harddrive",
    "ignoredisk",
    "install",
    "interactive",
    "iscsi",
    "iscsiname",
    "key",
    "liveimg",
    "logging",
    "logvol",
    "mediacheck",
    "monitor",
    "mouse",
    "multipath",
    "nfs",
    "nvdimm",
    "ostreecontainer",
    "ostreesetup",
    "poweroff",
    "raid",
    "realm",
    "reboot",
    "reqpart",
    "rescue",
    "shutdown",
    "skipx",
    "snapshot",
    "sshkey",
    "sshpw",
    "text",
    "timesource",
    "updates",
    "upgrade",
    "url",
    "vnc",
    "volgroup",
    "zerombr",
    "zfcp",
    "zipl",
];

/// Sections whose bodies are skipped with a warning.
const SKIPPED_SECTIONS: &[&str] = &[
    "%pre",
    "%pre-install",
    "%onerror",
    "%traceback",
    "%addon",
    "%anaconda",
];

const MAX_INCLUDE_DEPTH: usize = 16;

/// Largest kickstart file (each include counted on its own). Kickstarts are
/// hand-written text, %post scripts included; Fedora's biggest flattened
/// spins are a few hundred KiB, so 4 MiB leaves room without letting a
/// mistaken `%include` of a disk image or `/dev/zero` eat memory.
const MAX_KICKSTART_BYTES: u64 = 4 * crate::io::MIB;

/// Parse `file` and everything it includes.
pub fn parse_file(file: &Path) -> Result<Kickstart> {
    let mut ks = Kickstart {
        file: file.to_path_buf(),
        ..Default::default()
    };
    let mut stack = Vec::new();
    Parser { ks: &mut ks }.file(file, None, &mut stack)?;
    Ok(ks)
}

/// Parse kickstart text as if read from `name` (includes are resolved
/// against `name`'s folder).
pub fn parse_str(text: &str, name: &Path) -> Result<Kickstart> {
    let mut ks = Kickstart {
        file: name.to_path_buf(),
        ..Default::default()
    };
    let mut stack = vec![name.to_path_buf()];
    Parser { ks: &mut ks }.text(text, name, &mut stack)?;
    Ok(ks)
}

struct Parser<'a> {
    ks: &'a mut Kickstart,
}

/// The section a line belongs to.
enum Section {
    Top,
    /// Opened at this line (named when it is not closed).
    Packages(Loc),
    Post(Post),
    Skipped {
        name: String,
        start: Loc,
    },
}

impl Parser<'_> {
    fn file(&mut self, file: &Path, from: Option<&Loc>, stack: &mut Vec<PathBuf>) -> Result<()> {
        let text = crate::io::read_text_bounded(file, MAX_KICKSTART_BYTES, "kickstart")
            .with_context(|| match from {
                Some(l) => format!("{l}: %include {}", file.display()),
                None => format!("reading kickstart {}", file.display()),
            })?;
        let canon = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
        if stack.contains(&canon) {
            bail!(
                "{}: %include {} includes itself (through {})",
                from.map(|l| l.to_string()).unwrap_or_default(),
                file.display(),
                stack
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
        }
        if stack.len() >= MAX_INCLUDE_DEPTH {
            bail!(
                "{}: %include nested deeper than {MAX_INCLUDE_DEPTH}",
                from.map(|l| l.to_string()).unwrap_or_default()
            );
        }
        stack.push(canon);
        let r = self.text(&text, file, stack);
        stack.pop();
        r
    }

    fn text(&mut self, text: &str, file: &Path, stack: &mut Vec<PathBuf>) -> Result<()> {
        let mut section = Section::Top;
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let loc = Loc {
                file: file.to_path_buf(),
                line: i + 1,
            };
            let raw = lines[i];
            i += 1;
            match &mut section {
                Section::Post(post) => {
                    if is_end(raw) {
                        let Section::Post(post) = std::mem::replace(&mut section, Section::Top)
                        else {
                            unreachable!()
                        };
                        self.ks.posts.push(post);
                    } else {
                        post.body.push_str(raw);
                        post.body.push('\n');
                    }
                    continue;
                }
                Section::Skipped { .. } => {
                    if is_end(raw) {
                        section = Section::Top;
                    }
                    continue;
                }
                _ => {}
            }
            // Command-like line: join continuations, then tokenize.
            let mut line = raw.to_string();
            while line.ends_with('\\') && !line.ends_with("\\\\") && i < lines.len() {
                line.pop();
                line.push(' ');
                line.push_str(lines[i]);
                i += 1;
            }
            let words = split_words(&line).with_context(|| format!("{loc}"))?;
            let Some(first) = words.first() else {
                continue;
            };
            if first == "%include" || first == "%ksappend" {
                let [_, target] = words.as_slice() else {
                    bail!("{loc}: {first} takes one file name");
                };
                let dir = file.parent().unwrap_or(Path::new("."));
                let path = dir.join(target);
                self.file(&path, Some(&loc), stack)?;
                continue;
            }
            match section {
                Section::Packages(_) => {
                    if is_end(&line) {
                        section = Section::Top;
                        continue;
                    }
                    if first.starts_with('%') {
                        bail!(
                            "{loc}: {} inside %packages (close it with %end first)",
                            keyword(first)
                        );
                    }
                    for w in &words {
                        self.package_item(&loc, w)?;
                    }
                }
                Section::Top => section = self.top_line(&loc, &words)?,
                Section::Post(_) | Section::Skipped { .. } => unreachable!(),
            }
        }
        match section {
            Section::Top => Ok(()),
            Section::Packages(start) => bail!("{start}: %packages is not closed with %end"),
            Section::Post(p) => bail!("{}: %post is not closed with %end", p.loc),
            Section::Skipped { name, start } => {
                bail!("{start}: {name} is not closed with %end")
            }
        }
    }

    /// A line outside any section: a section header or a command. Returns
    /// the section the next line is in.
    fn top_line(&mut self, loc: &Loc, words: &[String]) -> Result<Section> {
        let first = &words[0];
        if first == "%end" {
            bail!("{loc}: %end without a section to close");
        }
        if first == "%packages" {
            self.packages_header(loc, &words[1..])?;
            return Ok(Section::Packages(loc.clone()));
        }
        if first == "%post" {
            return Ok(Section::Post(self.post_header(loc, &words[1..])?));
        }
        if SKIPPED_SECTIONS.contains(&first.as_str()) {
            self.warn(
                loc,
                format!("{first} section skipped: a live image build has no installer to run it"),
            );
            return Ok(Section::Skipped {
                name: first.clone(),
                start: loc.clone(),
            });
        }
        if first.starts_with('%') {
            bail!("{loc}: unknown section {}", keyword(first));
        }
        self.command(loc, words)
            .with_context(|| format!("{loc}: {}", keyword(first)))?;
        Ok(Section::Top)
    }

    fn warn(&mut self, loc: &Loc, msg: String) {
        self.ks.warnings.push(format!("{loc}: {msg}"));
    }

    fn packages_header(&mut self, loc: &Loc, args: &[String]) -> Result<()> {
        self.ks.has_packages = true;
        for a in args {
            let (name, _) = split_opt(a);
            match name {
                "--excludedocs" => self.ks.packages.excludedocs = true,
                "--nocore" => self.ks.packages.nocore = true,
                // Installer tuning with no effect on what gets installed.
                "--instLangs" | "--inst-langs" | "--ignoremissing" | "--default" | "--multilib"
                | "--retries" | "--timeout" | "--excludeWeakdeps" | "--exclude-weakdeps"
                | "--ignorebroken" | "--resolvedeps" | "--nobase" => {
                    self.warn(loc, format!("%packages {name} has no effect here"))
                }
                other => bail!("{loc}: %packages: unknown option {}", keyword(other)),
            }
        }
        Ok(())
    }

    fn package_item(&mut self, loc: &Loc, w: &str) -> Result<()> {
        let item = if let Some(rest) = w.strip_prefix("-@") {
            PackageItem::ExcludeGroup(rest.to_string())
        } else if let Some(rest) = w.strip_prefix('-') {
            PackageItem::Exclude(rest.to_string())
        } else if let Some(rest) = w.strip_prefix('@') {
            PackageItem::Group(rest.to_string())
        } else {
            PackageItem::Package(w.to_string())
        };
        let name = match &item {
            PackageItem::Package(n)
            | PackageItem::Group(n)
            | PackageItem::Exclude(n)
            | PackageItem::ExcludeGroup(n) => n,
        };
        if name.is_empty() {
            bail!("{loc}: %packages: {w:?} names nothing");
        }
        // Group options (`@group --optional`) and the like are rare and
        // would silently change meaning if taken as package names.
        if name.starts_with('-') {
            bail!("{loc}: %packages: {w:?}: options after a name are not supported");
        }
        self.ks.packages.items.push((loc.clone(), item));
        Ok(())
    }

    fn post_header(&mut self, loc: &Loc, args: &[String]) -> Result<Post> {
        let mut post = Post {
            loc: loc.clone(),
            nochroot: false,
            interpreter: None,
            erroronfail: false,
            log: None,
            body: String::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (name, value) = split_opt(a);
            let mut value = || -> Result<String> {
                match value {
                    Some(v) => Ok(v.to_string()),
                    None => it
                        .next()
                        .cloned()
                        .with_context(|| format!("{loc}: %post {name} needs a value")),
                }
            };
            match name {
                "--nochroot" => post.nochroot = true,
                "--erroronfail" => post.erroronfail = true,
                "--interpreter" => post.interpreter = Some(value()?),
                "--log" | "--logfile" => post.log = Some(value()?),
                other => bail!("{loc}: %post: unknown option {}", keyword(other)),
            }
        }
        Ok(post)
    }

    fn command(&mut self, loc: &Loc, words: &[String]) -> Result<()> {
        let cmd = words[0].as_str();
        let args = Args::parse(&words[1..])?;
        self.ks.commands.push((loc.clone(), words.to_vec()));
        match cmd {
            "lang" => self.lang(loc, &args)?,
            "keyboard" => self.keyboard(loc, &args)?,
            "timezone" => self.timezone(loc, &args)?,
            "rootpw" => self.rootpw(loc, &args)?,
            "group" => self.group(loc, &args)?,
            "bootloader" => self.bootloader(loc, &args)?,
            "firewall" => self.firewall(loc, &args)?,
            "xconfig" => self.xconfig(loc, &args)?,
            "module" => self.module(loc, &args)?,
            "part" | "partition" => self.part(loc, cmd, &args)?,
            "selinux" => {
                args.only(&["--enforcing", "--permissive", "--disabled"])?;
                let mode = if args.flag("--disabled") {
                    Selinux::Disabled
                } else if args.flag("--permissive") {
                    Selinux::Permissive
                } else {
                    Selinux::Enforcing
                };
                self.ks.selinux = Some((loc.clone(), mode));
            }
            "user" => self.user(loc, &args)?,
            "services" => self.services(&args)?,
            "network" => self.network(loc, &args)?,
            "repo" => self.repo(loc, &args)?,
            c if NO_MEANING.contains(&c) => {
                self.warn(
                    loc,
                    format!("{c} ignored: it means nothing for a live image"),
                );
            }
            other => bail!("unknown kickstart command {}", quoted_keyword(other)),
        }
        Ok(())
    }
}

/// A word of a line for an error message: quoted when it looks like a
/// kickstart keyword, else withheld. `%include` can name any file (say
/// /etc/shadow, whose lines are one word each); its content must not reach
/// a terminal or a CI log through an "unknown command" error, and file:line
/// already says where to look.
fn keyword(w: &str) -> String {
    let plain = w.strip_prefix("--").or(w.strip_prefix('%')).unwrap_or(w);
    if !plain.is_empty()
        && w.len() <= 24
        && plain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        w.to_string()
    } else {
        "(text not shown: not a kickstart keyword)".to_string()
    }
}

/// [`keyword`] in quotes when shown.
fn quoted_keyword(w: &str) -> String {
    let k = keyword(w);
    if k == w {
        format!("{w:?}")
    } else {
        k
    }
}

fn is_end(line: &str) -> bool {
    let t = line.trim();
    t == "%end" || t.starts_with("%end ") || t.starts_with("%end\t") || t.starts_with("%end#")
}

/// `--name=value` -> (`--name`, Some(`value`)).
fn split_opt(a: &str) -> (&str, Option<&str>) {
    match a.split_once('=') {
        Some((k, v)) if k.starts_with("--") => (k, Some(v)),
        _ => (a, None),
    }
}

/// Values end up in configuration files and shell commands: refuse
/// newlines and quotes rather than escape them everywhere.
fn check_value(v: &str) -> Result<()> {
    if v.is_empty() || v.contains(['\n', '\r', '"', '\'', '\\', '`', '$']) {
        bail!("{v:?}: empty, or has a quote, backslash, '$' or newline");
    }
    Ok(())
}

fn check_name(v: &str) -> Result<()> {
    if v.is_empty()
        || v.starts_with('-')
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("{v:?} is not a user or group name");
    }
    Ok(())
}

/// A command's options and positional words.
struct Args {
    opts: Vec<(String, Option<String>)>,
    positional: Vec<String>,
}

/// Options that never take a value (so `--utc Europe/Berlin` keeps the
/// zone positional).
const FLAGS: &[&str] = &[
    "--utc",
    "--isUtc",
    "--nontp",
    "--enforcing",
    "--permissive",
    "--disabled",
    "--iscrypted",
    "--plaintext",
    "--lock",
    "--allow-ssh",
    "--noverifyssl",
    "--startxonboot",
    "--enable",
    "--enabled",
    "--disable",
    "--ssh",
    "--smtp",
    "--http",
    "--ftp",
    "--telnet",
    "--use-system-defaults",
    "--grow",
    "--asprimary",
    "--noformat",
    "--encrypted",
    "--recommended",
    "--hibernation",
    "--install",
    "--activate",
    "--onboot",
    "--noipv4",
    "--noipv6",
    "--nodefroute",
    "--nodns",
    "--no-activate",
];

impl Args {
    fn parse(words: &[String]) -> Result<Args> {
        let mut a = Args {
            opts: Vec::new(),
            positional: Vec::new(),
        };
        let mut i = 0;
        while i < words.len() {
            let w = &words[i];
            i += 1;
            if w.starts_with("--") {
                let (k, v) = split_opt(w);
                let v = match v {
                    Some(v) => Some(v.to_string()),
                    // `--name value`: take the next word unless the option
                    // is a known flag or the next word is an option.
                    None if !FLAGS.contains(&k)
                        && i < words.len()
                        && !words[i].starts_with("--") =>
                    {
                        i += 1;
                        Some(words[i - 1].clone())
                    }
                    None => None,
                };
                a.opts.push((k.to_string(), v));
            } else {
                a.positional.push(w.clone());
            }
        }
        Ok(a)
    }

    fn only(&self, allowed: &[&str]) -> Result<()> {
        for (k, _) in &self.opts {
            if !allowed.contains(&k.as_str()) {
                bail!("unknown option {k}");
            }
        }
        Ok(())
    }

    fn has(&self, k: &str) -> bool {
        self.opts.iter().any(|(o, _)| o == k)
    }

    fn flag(&self, k: &str) -> bool {
        self.has(k)
    }

    fn value(&self, k: &str) -> Option<String> {
        self.opts
            .iter()
            .rev()
            .find(|(o, _)| o == k)
            .and_then(|(_, v)| v.clone())
    }

    fn list(&self, k: &str) -> Vec<String> {
        self.value(k)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every value of a repeatable option, comma lists split
    /// (`--trust=eth0 --trust=eth1`, `--port=22:tcp,80:tcp`).
    fn all(&self, k: &str) -> Vec<String> {
        self.opts
            .iter()
            .filter(|(o, _)| o == k)
            .filter_map(|(_, v)| v.as_deref())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The options given other than `used`, once each, as written.
    fn others(&self, used: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (k, _) in &self.opts {
            if !used.contains(&k.as_str()) && !out.contains(k) {
                out.push(k.clone());
            }
        }
        out
    }

    fn one_positional(&self, what: &str) -> Result<String> {
        match self.positional.as_slice() {
            [one] => Ok(one.clone()),
            [] => bail!("needs {what}"),
            _ => bail!("takes one value ({what})"),
        }
    }
}

/// Split a command line like a shell would (what pykickstart does with
/// shlex): whitespace separates words, quotes group, a `#` starting a word
/// begins a comment, a backslash escapes outside single quotes.
pub fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '#' if !in_word => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => bail!("unclosed single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => bail!("unclosed double quote"),
                        },
                        Some(c) => cur.push(c),
                        None => bail!("unclosed double quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests;
