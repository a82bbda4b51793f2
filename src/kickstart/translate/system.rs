//! The system-settings parts of the kickstart element that livecd-creator's
//! imgcreate applies in `configure()`: keyboard, time zone, groups,
//! firewall, X, root's SSH login, DNF modules.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context, Result};

use super::{sq, write};
use crate::kickstart::{Keyboard, Kickstart, Loc, Timezone};
use crate::spec::Distro;

/// Warnings that depend on the base's distribution, said before the build
/// like the parser's.
pub fn warnings(ks: &Kickstart, distro: Distro) -> Vec<String> {
    let mut w = Vec::new();
    if !distro.facts().packages.has_groups_and_modules() {
        for (loc, m) in &ks.modules {
            w.push(format!(
                "{loc}: module --name={} ignored: {} has no DNF modules",
                m.name,
                distro.name()
            ));
        }
    }
    w
}

/// `/etc/vconsole.conf` (and Debian's `/etc/default/keyboard`); `--switch`
/// options are X's layout-switching options (XKBOPTIONS).
pub(super) fn write_keyboard(kb: &Keyboard, distro: Distro, dir: &Path) -> Result<()> {
    let mut t = String::new();
    if let Some(k) = &kb.keymap {
        t.push_str(&format!("KEYMAP={k}\n"));
    }
    if let Some(x) = kb.xlayouts.first() {
        t.push_str(&format!("XKBLAYOUT={x}\n"));
    }
    if !kb.switch.is_empty() {
        t.push_str(&format!("XKBOPTIONS={}\n", kb.switch.join(",")));
    }
    write(dir, "static/etc/vconsole.conf", &t, 0o644)?;
    if let (Some(f), false) = (distro.facts().config.x_keyboard, kb.xlayouts.is_empty()) {
        write(
            dir,
            &format!("static/{f}"),
            &format!(
                "XKBMODEL=\"pc105\"\nXKBLAYOUT=\"{}\"\nXKBVARIANT=\"\"\nXKBOPTIONS=\"{}\"\nBACKSPACE=\"guess\"\n",
                kb.xlayouts.join(","),
                kb.switch.join(",")
            ),
            0o644,
        )?;
    }
    Ok(())
}

/// `/etc/localtime` -> the zone, `/etc/adjtime`, Debian's `/etc/timezone`.
pub(super) fn write_timezone(tz: &Timezone, distro: Distro, dir: &Path) -> Result<()> {
    let etc = dir.join("static/etc");
    fs::create_dir_all(&etc).with_context(|| format!("creating {}", etc.display()))?;
    symlink(
        format!("../usr/share/zoneinfo/{}", tz.zone),
        etc.join("localtime"),
    )
    .context("creating static/etc/localtime")?;
    if let Some(f) = distro.facts().config.timezone_name {
        write(
            dir,
            &format!("static/{f}"),
            &format!("{}\n", tz.zone),
            0o644,
        )?;
    }
    write(
        dir,
        "static/etc/adjtime",
        &format!("0.0 0 0.0\n0\n{}\n", if tz.utc { "UTC" } else { "LOCAL" }),
        0o644,
    )
}

/// Files for `rootpw --allow-ssh` (what anaconda writes) and `xconfig
/// --defaultdesktop` (what imgcreate writes).
pub(super) fn write_extra_files(ks: &Kickstart, dir: &Path) -> Result<()> {
    if let Some((loc, pw)) = &ks.rootpw {
        if pw.allow_ssh {
            write(
                dir,
                "static/etc/ssh/sshd_config.d/01-permitrootlogin.conf",
                &format!("# rootpw --allow-ssh ({loc})\nPermitRootLogin yes\n"),
                0o644,
            )?;
        }
    }
    if let Some((_, x)) = &ks.xconfig {
        if let Some(d) = &x.default_desktop {
            write(
                dir,
                "static/etc/sysconfig/desktop",
                &format!("DESKTOP={d}\n"),
                0o644,
            )?;
        }
    }
    Ok(())
}

/// The start of the configuration script: checks and groups, before the
/// users that may name the groups.
pub(super) fn config_head(ks: &Kickstart) -> String {
    let mut cfg = String::new();
    if let Some((loc, tz)) = &ks.timezone {
        cfg.push_str(&zone_check(loc, &tz.zone));
    }
    for (loc, g) in &ks.groups {
        cfg.push_str(&format!(
            "# group ({loc})\nif ! getent group {n} >/dev/null; then\n    groupadd{gid} {n}\nfi\n",
            n = sq(&g.name),
            gid = g.gid.map(|g| format!(" -g {g}")).unwrap_or_default()
        ));
    }
    cfg
}

/// A zone the root's tzdata lacks would leave /etc/localtime dangling (the
/// system silently on UTC): an error naming the kickstart line.
fn zone_check(loc: &Loc, zone: &str) -> String {
    let msg = format!(
        "{loc}: timezone {zone}: the root has no /usr/share/zoneinfo/{zone} (not a zone of its tzdata, or tzdata is not installed)"
    );
    format!(
        "# timezone ({loc})\nif [ ! -e {f} ]; then\n    echo {m} >&2\n    exit 1\nfi\n",
        f = sq(&format!("/usr/share/zoneinfo/{zone}")),
        m = sq(&msg)
    )
}

/// After services: firewall, default target, time service, in
/// imgcreate's order.
pub(super) fn config_tail(ks: &Kickstart) -> String {
    let mut cfg = String::new();
    if let Some((loc, fw)) = &ks.firewall {
        let mut args = vec![if fw.enabled {
            "--enabled"
        } else {
            "--disabled"
        }
        .to_string()];
        args.extend(fw.trusts.iter().map(|t| format!("--trust={t}")));
        args.extend(fw.ports.iter().map(|p| format!("--port={p}")));
        args.extend(fw.services.iter().map(|s| format!("--service={s}")));
        let args: Vec<String> = args.iter().map(|a| sq(a)).collect();
        cfg.push_str(&format!(
            "# firewall ({loc})\nif command -v firewall-offline-cmd >/dev/null; then\n    firewall-offline-cmd {}\nelse\n    echo {} >&2\nfi\n",
            args.join(" "),
            sq(&format!("warning: {loc}: firewall: firewalld is not installed (firewall-offline-cmd), ignoring the firewall configuration, as livecd-creator does"))
        ));
    }
    if let Some((loc, x)) = &ks.xconfig {
        if x.startx {
            cfg.push_str(&format!(
                "# xconfig --startxonboot ({loc})\nif [ -d /etc/systemd/system ]; then\n    ln -sfn /lib/systemd/system/graphical.target /etc/systemd/system/default.target\nelse\n    echo {} >&2\nfi\n",
                sq(&format!("warning: {loc}: xconfig --startxonboot: there is no /etc/systemd/system, cannot update default.target"))
            ));
        }
    }
    if let Some((loc, tz)) = &ks.timezone {
        if tz.nontp {
            cfg.push_str(&format!(
                "# timezone --nontp ({loc})\nfor u in chronyd.service chrony.service systemd-timesyncd.service ntpd.service ntp.service ntpsec.service; do\n    if systemctl cat \"$u\" >/dev/null 2>&1; then\n        systemctl disable \"$u\"\n    fi\ndone\n"
            ));
        }
    }
    cfg
}

/// `module` lines: enabled or disabled before the packages are installed,
/// as livecd-creator does (Fedora; Debian gets a warning, see `warnings`).
pub(super) fn prepare_modules(ks: &Kickstart, distro: Distro) -> String {
    if !distro.facts().packages.has_groups_and_modules() {
        return String::new();
    }
    let mut s = String::new();
    for (loc, m) in &ks.modules {
        let spec = match &m.stream {
            Some(st) => format!("{}:{st}", m.name),
            None => m.name.clone(),
        };
        let verb = if m.enable { "enable" } else { "disable" };
        s.push_str(&format!(
            "# module ({loc})\ndnf -y module {verb} {}\n",
            sq(&spec)
        ));
    }
    s
}
