//! The live initrd, reused from the cache when dracut would make the same
//! one again.
//!
//! dracut's output (with `--reproducible` and one SOURCE_DATE_EPOCH) is a
//! function of its command line, the kernel and its modules, the installed
//! packages' files, dracut's own configuration and modules, and the few
//! /etc files its modules copy. The key holds: the command line and the
//! epoch, the kernel image, the package database (Debian's dpkg status,
//! Fedora's rpmdb: any package version changed means a new key), dracut's
//! configuration and module trees, and the /etc and /usr/lib files below.
//! Not in it: a file a hook put under /usr outside those folders that a
//! dracut module happens to copy (rare; `--no-cache` rebuilds).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::customise::InRoot;
use crate::boot;
use crate::cache::{Key, Kind, Store};

const FORMAT: &str = "live-initrd v1";

/// Single files in the root whose content dracut may copy or read.
const FILES: &[&str] = &[
    "etc/dracut.conf",
    "etc/os-release",
    "usr/lib/os-release",
    "etc/passwd",
    "etc/group",
    "etc/nsswitch.conf",
    "etc/ld.so.conf",
    "etc/vconsole.conf",
    "etc/locale.conf",
    "etc/default/locale",
    "etc/sysctl.conf",
    "etc/fstab",
    "etc/crypttab",
    "etc/hostname",
    "etc/hosts",
    "etc/machine-id",
    "etc/localtime",
    "etc/kernel/cmdline",
    "etc/multipath.conf",
    "etc/selinux/config",
    "etc/systemd/system.conf",
    "etc/systemd/journald.conf",
    "var/lib/dpkg/status",
    "var/lib/rpm/rpmdb.sqlite",
    "usr/lib/sysimage/rpm/rpmdb.sqlite",
];

/// Folders in the root, every file under them.
const TREES: &[&str] = &[
    "etc/dracut.conf.d",
    "usr/lib/dracut",
    "etc/modprobe.d",
    "usr/lib/modprobe.d",
    "etc/modules-load.d",
    "etc/udev",
    "usr/lib/udev/rules.d",
    "etc/ld.so.conf.d",
    "etc/sysctl.d",
    "etc/cmdline.d",
    "etc/lvm",
    "etc/mdadm",
    "etc/systemd/system.conf.d",
    "etc/systemd/journald.conf.d",
];

/// The key for the live initrd of `r`'s root.
fn key(r: &InRoot, argv: &[String]) -> Result<Key> {
    let root = r.chroot.root();
    let mut k = Key::new(FORMAT);
    k.str("argv", &argv.join("\0"));
    // Without SOURCE_DATE_EPOCH the epoch is the build's own time, and
    // nothing promises the same bytes: an initrd made earlier serves. With
    // it, the initrd's times are part of what is promised.
    let epoch = match std::env::var_os("SOURCE_DATE_EPOCH") {
        Some(_) => r.plan.epoch.to_string(),
        None => "unset".into(),
    };
    k.str("SOURCE_DATE_EPOCH", &epoch);
    k.str("kernel version", &r.kernel.version);
    k.file("kernel", &r.kernel.path)?;
    // The package database covers the kernel package's modules; depmod's
    // index and the folders DKMS and hooks add modules to cover the rest.
    for base in ["usr/lib/modules", "lib/modules"] {
        let dir = root.join(base).join(&r.kernel.version);
        for f in [
            "modules.dep",
            "modules.alias",
            "modules.builtin",
            "modules.order",
        ] {
            k.file(&format!("{base}/{f}"), &dir.join(f))?;
        }
        for t in ["updates", "extra", "kernel/extra"] {
            k.tree(&format!("{base}/{t}"), &dir.join(t))?;
        }
    }
    for f in FILES {
        k.file(f, &root.join(f))?;
    }
    for t in TREES {
        k.tree(t, &root.join(t))?;
    }
    Ok(k)
}

/// Makes (or takes from the cache) the live initrd at `out`.
pub fn live(r: &InRoot, extra_drivers: &[&str], out: &Path) -> Result<()> {
    let t = Instant::now();
    let kver = &r.kernel.version;
    let argv = boot::initrd_argv(kver, extra_drivers);
    let name = &r.plan.loaded.spec.name;
    // The store and this root's key, unless --no-cache.
    let cache = match r.plan.use_cache {
        true => Some((Store::new(&r.plan.cache_dir), key(r, &argv)?)),
        false => None,
    };
    if let Some((s, k)) = &cache {
        if let Some(entry) = s.get(Kind::Initrd, name, k) {
            std::fs::copy(&entry, out)
                .with_context(|| format!("copying {} to {}", entry.display(), out.display()))?;
            r.progress.step(format!(
                "live initrd {} for kernel {kver}: from the cache, {} ({:.1} s)",
                k.short(),
                entry.display(),
                t.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
    }
    let why = match &cache {
        Some((s, k)) => format!(
            " (key {} not in the cache{})",
            k.short(),
            s.explain_miss(Kind::Initrd, name, k)
                .map(|w| format!("; {w}"))
                .unwrap_or_default()
        ),
        None => " (--no-cache)".into(),
    };
    r.progress.step(format!(
        "building the live initrd for kernel {kver} with dracut{why}"
    ));
    boot::build_initrd(r.chroot, kver, r.plan.epoch, extra_drivers, out)?;
    r.progress.step(format!(
        "initrd built in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    if let Some((s, k)) = &cache {
        if let Err(e) = s.put(Kind::Initrd, name, k, |tmp| {
            std::fs::copy(out, tmp)
                .map(drop)
                .with_context(|| format!("copying {} to {}", out.display(), tmp.display()))
        }) {
            eprintln!("warning: the live initrd was not cached: {e:#}");
        }
    }
    Ok(())
}

/// Fedora's kernel package runs `kernel-install add`, whose dracut plugin
/// makes an initramfs the image never uses. A link to /dev/null of the
/// plugin's name in /etc/kernel/install.d disables it (kernel-install(8));
/// a marker beside it says the link is ours, so `release` removes only
/// what `hold` made. Only distributions whose kernel package does this
/// (`Facts::kernel_install_runs_dracut`) get the link.
const KERNEL_INSTALL_DRACUT: &str = "etc/kernel/install.d/50-dracut.install";
const HELD_MARKER: &str = "etc/kernel/install.d/.undercloud-live-held";

pub fn hold_kernel_install(root: &Path, distro: crate::spec::Distro) -> Result<()> {
    if !distro.facts().kernel_install_runs_dracut {
        return Ok(());
    }
    let link = crate::elements::tree::resolve_in_root(root, Path::new(KERNEL_INSTALL_DRACUT))?;
    if std::fs::symlink_metadata(&link).is_ok() {
        return Ok(()); // the base's own choice: left as it is
    }
    let dir = link.parent().context("kernel-install folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::os::unix::fs::symlink("/dev/null", &link)
        .with_context(|| format!("creating {}", link.display()))?;
    let marker = crate::elements::tree::resolve_in_root(root, Path::new(HELD_MARKER))?;
    std::fs::write(&marker, b"").with_context(|| format!("creating {}", marker.display()))?;
    Ok(())
}

pub fn release_kernel_install(root: &Path) -> Result<()> {
    let marker = crate::elements::tree::resolve_in_root(root, Path::new(HELD_MARKER))?;
    if std::fs::symlink_metadata(&marker).is_err() {
        return Ok(());
    }
    let link = crate::elements::tree::resolve_in_root(root, Path::new(KERNEL_INSTALL_DRACUT))?;
    if std::fs::read_link(&link).is_ok_and(|t| t == Path::new("/dev/null")) {
        std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Distro;

    #[test]
    fn kernel_install_dracut_is_held_on_fedora_only_and_released() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        hold_kernel_install(root, Distro::Debian).unwrap();
        assert!(!root.join("etc/kernel").exists());
        hold_kernel_install(root, Distro::Fedora).unwrap();
        let link = root.join(KERNEL_INSTALL_DRACUT);
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/dev/null"));
        release_kernel_install(root).unwrap();
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert!(!root.join(HELD_MARKER).exists());
        // A base's own override stays, before and after.
        std::fs::write(&link, "#!/bin/sh\n").unwrap();
        hold_kernel_install(root, Distro::Fedora).unwrap();
        release_kernel_install(root).unwrap();
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "#!/bin/sh\n");
    }
}
