//! A parsed kickstart as a generated element, so the element runner is the
//! one mechanism that changes a root.
//!
//! | kickstart | element part | when |
//! | --- | --- | --- |
//! | `repo` | `kickstart-files/{apt,yum}/undercloud-live-kickstart-*` copied by `pre-install.d/05-kickstart-prepare`, removed by `post-install.d/99-kickstart-cleanup` | for the build only |
//! | `%packages --excludedocs` | dpkg path excludes / a dnf drop-in, same hook | before the first package install |
//! | `%packages` | `package-installs.yaml` (names through the package map) | install.d `01` |
//! | `lang`, `keyboard`, `timezone`, `network --hostname` | `static/` | install.d `10` |
//! | `selinux`, `rootpw`, `user`, `services` | `post-install.d/10-kickstart-config` | after packages and hooks of install.d |
//! | `%post` | `post-install.d/90-kickstart-post-NN` | in the root, in file order |
//! | `%post --nochroot` | `post-install.d/outside/90-kickstart-post-NN` | on the host at its place in that order, `INSTALL_ROOT` = the root |

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::{Kickstart, PackageItem, Password, RepoSource};
use crate::distro::PackageManager;
use crate::spec::Distro;

mod system;

pub use system::warnings;

/// The element name the kickstart runs as.
pub const ELEMENT: &str = "kickstart";

/// Package names of the kickstart's distro mapped to the base's: a YAML map
/// from a name (or `@group`) to a name, a list of names, or nothing (`~` or
/// `[]`) to drop it. Names without an entry are used unchanged.
#[derive(Clone, Debug, Default)]
pub struct PackageMap {
    map: BTreeMap<String, Vec<String>>,
    file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl PackageMap {
    pub fn load(file: &Path) -> Result<PackageMap> {
        // A map of package names: hand-written, a few KiB; 4 MiB is room
        // for a generated one.
        let text = crate::io::read_text_bounded(file, 4 * crate::io::MIB, "package map")?;
        let raw: Option<BTreeMap<String, Option<OneOrMany>>> = serde_saphyr::from_str(&text)
            .map_err(|e| {
                anyhow::anyhow!(
                    "package map {}: {}",
                    file.display(),
                    e.to_string()
                        .lines()
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            })?;
        let mut map = BTreeMap::new();
        for (k, v) in raw.unwrap_or_default() {
            let names: Vec<String> = match v {
                None => vec![],
                Some(OneOrMany::One(s)) => s.split_whitespace().map(str::to_string).collect(),
                Some(OneOrMany::Many(l)) => l,
            };
            for n in &names {
                if n.is_empty() || n.starts_with('-') || n.contains(char::is_whitespace) {
                    bail!(
                        "package map {}: {k}: {n:?} is not a package name",
                        file.display()
                    );
                }
            }
            map.insert(k, names);
        }
        Ok(PackageMap {
            map,
            file: Some(file.to_path_buf()),
        })
    }

    fn get(&self, name: &str) -> Option<&Vec<String>> {
        self.map.get(name)
    }
}

/// What the kickstart's `%packages` asks of the base's package manager.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackageList {
    pub install: Vec<String>,
    /// Names the package manager must not pull in (dnf's excludepkgs).
    pub exclude: Vec<String>,
}

/// Expand `%packages` for `distro`: groups and names through the map,
/// exclusions removed (mapped too), `@core` implied unless `--nocore`.
pub fn package_list(ks: &Kickstart, distro: Distro, map: &PackageMap) -> Result<PackageList> {
    let pm = distro.facts().packages;
    let p = &ks.packages;
    let mut wanted: Vec<(Option<&super::Loc>, String)> = Vec::new();
    let mut excluded: BTreeSet<String> = BTreeSet::new();
    if ks.has_packages && !p.nocore {
        // Anaconda installs @core unless told not to; a map may say what
        // it means on another distro (or that it means nothing).
        wanted.push((None, "@core".into()));
    }
    for (loc, item) in &p.items {
        match item {
            PackageItem::Package(n) => wanted.push((Some(loc), n.clone())),
            PackageItem::Group(g) => wanted.push((Some(loc), format!("@{g}"))),
            PackageItem::Exclude(n) => {
                excluded.insert(n.clone());
            }
            PackageItem::ExcludeGroup(g) => {
                excluded.insert(format!("@{g}"));
            }
        }
    }
    let mut excluded_mapped: BTreeSet<String> = BTreeSet::new();
    for e in &excluded {
        excluded_mapped.insert(e.clone());
        if let Some(m) = map.get(e) {
            excluded_mapped.extend(m.iter().cloned());
        }
    }
    let mut out = PackageList::default();
    for (loc, name) in wanted {
        if excluded.contains(&name) {
            continue;
        }
        let names: Vec<String> = match map.get(&name) {
            Some(m) => m.clone(),
            None if name.starts_with('@') => match (pm.has_groups_and_modules(), loc) {
                // dnf knows the distribution's groups.
                (true, _) => vec![name.clone()],
                // The implied @core: the base already is a core system.
                (false, None) => vec![],
                (false, Some(loc)) => bail!(
                    "{loc}: group {name} has no meaning on {}: map it to packages in the package map{}",
                    distro.name(),
                    map.file
                        .as_ref()
                        .map(|f| format!(" ({})", f.display()))
                        .unwrap_or_else(|| " (kickstart_package_map)".into())
                ),
            },
            None => vec![name.clone()],
        };
        for n in names {
            if !excluded_mapped.contains(&n) && !out.install.contains(&n) {
                out.install.push(n);
            }
        }
    }
    // dnf takes the exclusions itself (excludepkgs), so a dependency cannot
    // pull them back in; apt has no such setting.
    if pm == PackageManager::Dnf {
        out.exclude = excluded
            .iter()
            .filter(|e| !e.starts_with('@'))
            .cloned()
            .collect();
    }
    Ok(out)
}

/// livecd-creator's use of `bootloader`: `--append` goes on the live
/// medium's kernel command line (after the spec's), `--timeout` is the
/// boot menu's. The element cannot carry these: the build applies them.
pub fn apply_bootloader(spec: &mut crate::spec::Spec, ks: &Kickstart) {
    if let Some((_, b)) = &ks.bootloader {
        spec.kernel_cmdline.extend(b.append.iter().cloned());
        if let Some(t) = b.timeout {
            spec.boot.timeout = t;
        }
    }
}

/// Single-quote for a POSIX shell.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn write(dir: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", p.display()))?;
    Ok(())
}

/// Write the element for `ks` into `dir` (which must not exist yet).
pub fn generate(
    ks: &Kickstart,
    distro: Distro,
    release: &str,
    map: &PackageMap,
    dir: &Path,
) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write(
        dir,
        "README",
        &format!(
            "Generated by undercloud-live from the kickstart {}.\n",
            ks.file.display()
        ),
        0o644,
    )?;
    let pkgs = package_list(ks, distro, map)?;
    write_packages(&pkgs, dir)?;
    write_prepare(ks, &pkgs, distro, release, dir)?;
    write_plain_files(ks, distro, dir)?;
    write_config_script(ks, dir)?;
    write_posts(ks, dir)
}

fn write_packages(pkgs: &PackageList, dir: &Path) -> Result<()> {
    if !pkgs.install.is_empty() {
        let mut y = String::from("# %packages, as the base's package names\n");
        for n in &pkgs.install {
            // JSON string syntax is valid YAML and quotes anything odd.
            y.push_str(&format!("{}:\n", serde_json::to_string(n)?));
        }
        write(dir, "package-installs.yaml", &y, 0o644)?;
    }

    Ok(())
}

/// What livecd-creator keeps out of the image: kickstart repositories
/// (its package manager's, on the host) and the %packages options. The
/// files go into the root for the build under names of our own and are
/// removed after post-install.d (after the %post scripts).
const BUILD_ONLY_PREFIX: &str = "undercloud-live-kickstart-";

/// Repositories and package-manager settings, before any install, and the
/// hook that takes them out again.
fn write_prepare(
    ks: &Kickstart,
    pkgs: &PackageList,
    distro: Distro,
    release: &str,
    dir: &Path,
) -> Result<()> {
    let mut prepare = String::new();
    let mut cleanup = String::new();
    write_repos(ks, distro, release, dir, &mut prepare, &mut cleanup)?;
    prepare.push_str(&system::prepare_modules(ks, distro));
    let mut dnf_dropin = String::new();
    if ks.packages.excludedocs {
        match distro.facts().packages {
            PackageManager::Apt => {
                write(
                    dir,
                    "kickstart-files/dpkg-excludedocs",
                    "# %packages --excludedocs\npath-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n",
                    0o644,
                )?;
                prepare.push_str("mkdir -p /etc/dpkg/dpkg.cfg.d\ncp \"$files\"/dpkg-excludedocs /etc/dpkg/dpkg.cfg.d/undercloud-live-excludedocs\n");
            }
            PackageManager::Dnf => dnf_dropin.push_str("tsflags=nodocs\n"),
        }
    }
    if !pkgs.exclude.is_empty() {
        dnf_dropin.push_str(&format!("excludepkgs={}\n", pkgs.exclude.join(",")));
    }
    if !dnf_dropin.is_empty() {
        write(
            dir,
            "kickstart-files/dnf.conf",
            &format!("[main]\n{dnf_dropin}"),
            0o644,
        )?;
        prepare.push_str("mkdir -p /etc/dnf/libdnf5.conf.d\ncp \"$files\"/dnf.conf /etc/dnf/libdnf5.conf.d/90-undercloud-live-kickstart.conf\n");
        cleanup.push_str("rm -f /etc/dnf/libdnf5.conf.d/90-undercloud-live-kickstart.conf\n");
    }
    if !prepare.is_empty() {
        write(
            dir,
            "pre-install.d/05-kickstart-prepare",
            &format!("#!/bin/bash\n# Kickstart repo lines and %packages options, before packages are installed.\nset -eu\nfiles=\"$(dirname \"$0\")/../kickstart-files\"\n{prepare}"),
            0o755,
        )?;
    }
    if !cleanup.is_empty() {
        write(
            dir,
            "post-install.d/99-kickstart-cleanup",
            &format!("#!/bin/bash\n# Kickstart repositories and %packages exclusions are for the build only, as with livecd-creator.\nset -eu\n{cleanup}"),
            0o755,
        )?;
    }
    Ok(())
}

/// `repo` lines as source files of the base's package manager, copied in
/// by `prepare` and removed by `cleanup`.
fn write_repos(
    ks: &Kickstart,
    distro: Distro,
    release: &str,
    dir: &Path,
    prepare: &mut String,
    cleanup: &mut String,
) -> Result<()> {
    if ks.repos.is_empty() {
        return Ok(());
    }
    let folder = distro.facts().packages.repo_folder();
    prepare.push_str(&format!("mkdir -p {folder}\n"));
    for (loc, r) in &ks.repos {
        let (rel, text) = repo_file(loc, r, distro, release)?;
        write(dir, &format!("kickstart-files/{rel}"), &text, 0o644)?;
        let name = Path::new(&rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        prepare.push_str(&format!("cp \"$files\"/{rel} {folder}/{name}\n"));
        cleanup.push_str(&format!("rm -f {folder}/{name}\n"));
    }
    Ok(())
}

/// A kickstart `repo` line as the base's package manager's source file:
/// (path under kickstart-files/, content).
fn repo_file(
    loc: &super::Loc,
    r: &super::Repo,
    distro: Distro,
    release: &str,
) -> Result<(String, String)> {
    let file = match distro.facts().packages {
        PackageManager::Dnf => {
            let mut t = format!("# from {loc}\n[{}]\nname={}\n", r.name, r.name);
            match &r.source {
                RepoSource::BaseUrl(u) => t.push_str(&format!("baseurl={u}\n")),
                RepoSource::Mirrorlist(u) => t.push_str(&format!("mirrorlist={u}\n")),
                RepoSource::Metalink(u) => t.push_str(&format!("metalink={u}\n")),
            }
            t.push_str("enabled=1\n");
            if let Some(c) = r.cost {
                t.push_str(&format!("cost={c}\n"));
            }
            if !r.excludepkgs.is_empty() {
                t.push_str(&format!("excludepkgs={}\n", r.excludepkgs.join(",")));
            }
            if !r.includepkgs.is_empty() {
                t.push_str(&format!("includepkgs={}\n", r.includepkgs.join(",")));
            }
            if let Some(p) = &r.proxy {
                t.push_str(&format!("proxy={p}\n"));
            }
            if r.noverifyssl {
                t.push_str("sslverify=0\n");
            }
            (format!("yum/{}.repo", build_only_name(&r.name)), t)
        }
        PackageManager::Apt => {
            // A kickstart URL names an archive; suite and components
            // default to the base's release and `main`, or follow the
            // URL when given apt's way ("URL suite component...").
            let (uri, rest) = match &r.source {
                RepoSource::BaseUrl(u) => split_apt(u),
                // apt's mirror method reads a list of mirrors.
                RepoSource::Mirrorlist(u) => {
                    let (u, rest) = split_apt(u);
                    (format!("mirror+{u}"), rest)
                }
                RepoSource::Metalink(_) => {
                    bail!("{loc}: repo --metalink has no apt equivalent: use --baseurl")
                }
            };
            let rest = rest.unwrap_or_else(|| format!("{release} main"));
            let opts = if r.noverifyssl {
                // apt has no per-source "don't verify TLS" switch in
                // sources.list; the closest is trusting the archive.
                " [trusted=yes]"
            } else {
                ""
            };
            (
                format!("apt/{}.list", build_only_name(&r.name)),
                format!("# from {loc}\ndeb{opts} {uri} {rest}\n"),
            )
        }
    };
    Ok(file)
}

/// Plain configuration files: host name, language, keyboard, time zone.
fn write_plain_files(ks: &Kickstart, distro: Distro, dir: &Path) -> Result<()> {
    if let Some((_, h)) = &ks.hostname {
        write(dir, "static/etc/hostname", &format!("{h}\n"), 0o644)?;
    }
    if let Some((_, lang)) = &ks.lang {
        write(
            dir,
            "static/etc/locale.conf",
            &format!("LANG={lang}\n"),
            0o644,
        )?;
        if let Some(f) = distro.facts().config.locale {
            write(
                dir,
                &format!("static/{f}"),
                &format!("LANG={lang}\n"),
                0o644,
            )?;
        }
    }
    if let Some((_, kb)) = &ks.keyboard {
        system::write_keyboard(kb, distro, dir)?;
    }
    if let Some((_, tz)) = &ks.timezone {
        system::write_timezone(tz, distro, dir)?;
    }
    system::write_extra_files(ks, dir)
}

/// Accounts, SELinux mode, services: after packages and install.d.
fn write_config_script(ks: &Kickstart, dir: &Path) -> Result<()> {
    let mut cfg = system::config_head(ks);
    if let Some((loc, mode)) = &ks.selinux {
        cfg.push_str(&format!(
            "# selinux ({loc})\nif [ -d /etc/selinux ]; then\n    if [ -f /etc/selinux/config ] && grep -q '^SELINUX=' /etc/selinux/config; then\n        sed -i 's/^SELINUX=.*/SELINUX={m}/' /etc/selinux/config\n    else\n        echo 'SELINUX={m}' >> /etc/selinux/config\n    fi\nelse\n    echo 'kickstart: selinux --{m}: this root has no SELinux; nothing to set'\nfi\n",
            m = mode.name()
        ));
    }
    cfg.push_str(&config_accounts(ks));
    for (verb, list) in [
        ("enable", &ks.services_enabled),
        ("disable", &ks.services_disabled),
    ] {
        for s in list.iter() {
            // A kickstart names services of its own distro; one the base
            // lacks is reported, not fatal (as with anaconda).
            cfg.push_str(&format!(
                "systemctl {verb} {s} || echo 'warning: kickstart services: could not {verb} {s}' >&2\n",
                s = sq(s)
            ));
        }
    }
    cfg.push_str(&system::config_tail(ks));
    if !cfg.is_empty() {
        write(
            dir,
            "post-install.d/10-kickstart-config",
            &format!("#!/bin/bash\n# Kickstart configuration commands.\nset -eu\n{cfg}"),
            0o755,
        )?;
    }

    Ok(())
}

/// The root's password and the users, as shell commands.
fn config_accounts(ks: &Kickstart) -> String {
    let mut cfg = String::new();
    if let Some((loc, pw)) = &ks.rootpw {
        cfg.push_str(&format!("# rootpw ({loc})\n"));
        match &pw.password {
            Some(Password::Plain(p)) => cfg.push_str(&format!(
                "printf '%s\\n' {} | chpasswd\n",
                sq(&format!("root:{p}"))
            )),
            Some(Password::Crypted(h)) => cfg.push_str(&format!("usermod -p {} root\n", sq(h))),
            None => {}
        }
        if pw.lock {
            cfg.push_str("passwd -l root\n");
        }
    }
    for (loc, u) in &ks.users {
        cfg.push_str(&format!(
            "# user ({loc})\nif ! id -u {n} >/dev/null 2>&1; then\n    useradd -m",
            n = sq(&u.name)
        ));
        if !u.groups.is_empty() {
            cfg.push_str(&format!(" -G {}", sq(&u.groups.join(","))));
        }
        if let Some(h) = &u.homedir {
            cfg.push_str(&format!(" -d {}", sq(h)));
        }
        if let Some(s) = &u.shell {
            cfg.push_str(&format!(" -s {}", sq(s)));
        }
        if let Some(uid) = u.uid {
            cfg.push_str(&format!(" -u {uid}"));
        }
        if let Some(g) = &u.gecos {
            cfg.push_str(&format!(" -c {}", sq(g)));
        }
        cfg.push_str(&format!(" {}\nfi\n", sq(&u.name)));
        match &u.password {
            Some(Password::Plain(p)) => cfg.push_str(&format!(
                "printf '%s\\n' {} | chpasswd\n",
                sq(&format!("{}:{p}", u.name))
            )),
            Some(Password::Crypted(h)) => {
                cfg.push_str(&format!("usermod -p {} {}\n", sq(h), sq(&u.name)))
            }
            None => {}
        }
        if u.lock {
            cfg.push_str(&format!("passwd -l {}\n", sq(&u.name)));
        }
    }
    cfg
}

/// %post scripts, all in post-install.d numbered in file order, so they
/// run in that order as livecd-creator runs them; a `--nochroot` one is in
/// `post-install.d/outside/`, which the runner runs on the build host at
/// its place in the order.
fn write_posts(ks: &Kickstart, dir: &Path) -> Result<()> {
    // Equal widths: run-parts order is by name after the leading number.
    let width = ks.posts.len().to_string().len().max(2);
    for (i, post) in ks.posts.iter().enumerate() {
        let n = format!("{:0width$}", i + 1);
        let phase = if post.nochroot {
            "post-install.d/outside"
        } else {
            "post-install.d"
        };
        let interp = post.interpreter.as_deref().unwrap_or("/bin/sh");
        if interp.contains(char::is_whitespace) || !interp.starts_with('/') {
            bail!(
                "{}: %post --interpreter={interp:?} must be an absolute path",
                post.loc
            );
        }
        // A dotted name: run-parts skips it, the wrapper runs it.
        write(
            dir,
            &format!("{phase}/kickstart-post-{n}.script"),
            &format!("#!{interp}\n{}", post.body),
            0o755,
        )?;
        let mut w = format!(
            "#!/bin/bash\n# %post from {loc}\nscript=\"$(dirname \"$0\")/kickstart-post-{n}.script\"\n",
            loc = post.loc
        );
        if post.nochroot {
            // livecd-creator's names for the root and the medium's tree.
            // Files put in LIVE_ROOT are not (yet) added to the medium.
            w.push_str("export INSTALL_ROOT=\"$TARGET_ROOT\"\nexport LIVE_ROOT=\"$TMP_HOOKS_PATH/kickstart-live-root\"\nmkdir -p \"$LIVE_ROOT\"\n");
        }
        match &post.log {
            Some(log) => w.push_str(&format!(
                "mkdir -p \"$(dirname {l})\"\n\"$script\" 2>&1 | tee -a {l}\nrc=${{PIPESTATUS[0]}}\n",
                l = sq(log)
            )),
            None => w.push_str("rc=0\n\"$script\" || rc=$?\n"),
        }
        let what = sq(&format!("kickstart %post at {}", post.loc));
        if post.erroronfail {
            w.push_str(&format!(
                "if [ \"$rc\" -ne 0 ]; then\n    echo {what}\" failed (exit $rc)\" >&2\n    exit \"$rc\"\nfi\n"
            ));
        } else {
            w.push_str(&format!(
                "if [ \"$rc\" -ne 0 ]; then\n    echo 'warning: '{what}\" failed (exit $rc); going on (no --erroronfail)\" >&2\nfi\n"
            ));
        }
        w.push_str("exit 0\n");
        write(dir, &format!("{phase}/90-kickstart-post-{n}"), &w, 0o755)?;
    }
    Ok(())
}

/// A repo's file name: ours (so the cleanup never removes a base's file of
/// the same name), and without ':' (which apt's sources.list.d ignores).
fn build_only_name(repo: &str) -> String {
    format!("{BUILD_ONLY_PREFIX}{}", repo.replace(':', "_"))
}

/// `"URL suite comp..."` -> (URL, Some("suite comp...")); a bare URL -> (URL, None).
fn split_apt(u: &str) -> (String, Option<String>) {
    let mut parts = u.split_whitespace();
    let uri = parts.next().unwrap_or("").to_string();
    let rest: Vec<&str> = parts.collect();
    (
        uri,
        if rest.is_empty() {
            None
        } else {
            Some(rest.join(" "))
        },
    )
}
