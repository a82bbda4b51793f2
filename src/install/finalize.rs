//! Turning a copy of the live root into an installed system: fstab by
//! UUID, a fresh machine-id, the config's host name, password, keys,
//! network and time zone, and no live-only configuration left behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::config::{Config, Filesystem, Network};

/// UUIDs of what fstab mounts.
pub struct Mounts {
    pub root: String,
    pub fs: Filesystem,
    /// The ESP's FAT serial ("ABCD-1234").
    pub esp: String,
    pub swap: Option<String>,
    /// The root grows to fill its disk on the first boot (disk images).
    pub grow: bool,
}

pub fn fstab(m: &Mounts) -> String {
    let mut s = String::from(
        "# /etc/fstab: written by undercloud-live install (by UUID, so disks may\n\
         # change names). <fs> <mount point> <type> <options> <dump> <pass>\n",
    );
    // x-systemd.growfs: systemd grows the mounted root to its partition,
    // which systemd-repart has grown to the disk (see `GROW_FILES`).
    let opts = if m.grow {
        "defaults,x-systemd.growfs"
    } else {
        "defaults"
    };
    s += &format!("UUID={}\t/\t{}\t{opts}\t0\t1\n", m.root, m.fs.name());
    // nofail: a firmware partition that cannot be mounted must not stop
    // the boot.
    s += &format!("UUID={}\t/boot/efi\tvfat\tumask=0077,nofail\t0\t2\n", m.esp);
    if let Some(swap) = &m.swap {
        s += &format!("UUID={swap}\tnone\tswap\tsw\t0\t0\n");
    }
    s
}

fn write(root: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let p = root.join(rel);
    if let Some(dir) = p.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Never write through a symlink the image left there: it could point
    // anywhere, the running live system included.
    if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    let tmp = p.with_extension("ucl-new");
    let mut f = fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, &p).with_context(|| format!("writing {}", p.display()))
}

/// Kernel arguments of the live session that an installed system must not
/// get: the live root, dracut's live options, the installer's own, and
/// what the boot loader adds by itself.
pub fn is_live_arg(arg: &str) -> bool {
    let key = arg.split('=').next().unwrap_or(arg);
    matches!(
        key,
        "BOOT_IMAGE" | "initrd" | "root" | "ro" | "rw" | "rootfstype" | "rootflags"
    ) || key.starts_with("rd.live")
        || key.starts_with("undercloud-live.")
        || key == "rd.overlay"
}

/// The installed system's kernel arguments: the live session's minus the
/// live ones, plus the config's.
pub fn kernel_args(live_cmdline: &str, cfg: &Config) -> Vec<String> {
    let mut args: Vec<String> = live_cmdline
        .split_whitespace()
        .filter(|a| !is_live_arg(a))
        .map(str::to_string)
        .collect();
    for a in &cfg.kernel_args {
        if !args.contains(a) {
            args.push(a.clone());
        }
    }
    args
}

/// systemd-networkd files for the config's interfaces.
pub fn networkd(nets: &[Network]) -> Vec<(String, String)> {
    nets.iter()
        .enumerate()
        .map(|(i, n)| {
            let mut s = format!(
                "# written by undercloud-live install\n[Match]\nName={}\n\n[Network]\n",
                n.device.as_deref().unwrap_or("en* eth*")
            );
            match (&n.bootproto.as_deref(), &n.address) {
                (Some("static"), Some(a)) => {
                    s += &format!("Address={a}\n");
                    if let Some(g) = &n.gateway {
                        s += &format!("Gateway={g}\n");
                    }
                }
                _ => s += "DHCP=yes\n",
            }
            for d in &n.dns {
                s += &format!("DNS={d}\n");
            }
            (
                format!("etc/systemd/network/20-undercloud-live-{i}.network"),
                s,
            )
        })
        .collect()
}

/// Files the live session needs and an installed system must not keep: a
/// getty drop-in that logs in without a password.
fn remove_autologin(root: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    let sys = root.join("etc/systemd/system");
    let Ok(entries) = fs::read_dir(&sys) else {
        return Ok(removed);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.contains("getty") && name.ends_with(".d")) {
            continue;
        }
        for f in fs::read_dir(e.path())?.flatten() {
            let text = fs::read_to_string(f.path()).unwrap_or_default();
            if text.contains("--autologin") {
                fs::remove_file(f.path())
                    .with_context(|| format!("removing {}", f.path().display()))?;
                removed.push(format!(
                    "/etc/systemd/system/{name}/{}",
                    f.file_name().to_string_lossy()
                ));
            }
        }
    }
    Ok(removed)
}

/// How a disk image's root grows to fill the disk it is written to, on
/// its first boot, the way systemd-based cloud images do it:
/// systemd-repart (run early at every boot, a no-op once nothing is left
/// to grow) extends the root partition over the free space after it, and
/// the root's `x-systemd.growfs` mount option grows the mounted ext4
/// online; systemd's fstab generator orders the latter after the former.
/// systemd-repart comes with systemd on Debian 12 and Fedora (Debian 13:
/// package systemd-repart), unlike cloud-utils' growpart, and needs no
/// script of ours in the image.
pub const GROW_FILES: &[(&str, &str)] = &[(
    "usr/lib/repart.d/50-undercloud-live-root.conf",
    "# written by undercloud-live: grow the root partition to fill the disk\n\
     [Partition]\nType=root-x86-64\n",
)];

/// Whether the root has systemd-repart (needed for `GROW_FILES`).
pub fn has_repart(root: &Path) -> bool {
    ["usr/bin/systemd-repart", "bin/systemd-repart"]
        .iter()
        .any(|p| root.join(p).is_file())
}

/// Writes everything but the password (which needs the target's own
/// chpasswd); returns what was done, for the log.
pub fn configure(root: &Path, cfg: &Config, m: &Mounts) -> Result<Vec<String>> {
    let mut done = Vec::new();
    write(root, "etc/fstab", &fstab(m), 0o644)?;
    fs::create_dir_all(root.join("boot/efi")).context("creating /boot/efi")?;
    done.push("fstab by UUID".to_string());
    if m.grow {
        if !has_repart(root) {
            bail!("the root has no systemd-repart, which grows a disk image's root on its first boot (Debian 13 and later: package systemd-repart)");
        }
        for (path, text) in GROW_FILES {
            write(root, path, text, 0o644)?;
        }
        done.push(
            "root grows to fill its disk on the first boot (systemd-repart, x-systemd.growfs)"
                .to_string(),
        );
    }

    // An empty machine-id makes systemd generate a new one on the first
    // boot (and commit it once / is writable): no two installs share one.
    write(root, "etc/machine-id", "", 0o444)?;
    let dbus = root.join("var/lib/dbus/machine-id");
    if fs::symlink_metadata(&dbus).is_ok_and(|m| m.is_file()) {
        fs::remove_file(&dbus).context("removing /var/lib/dbus/machine-id")?;
    }
    let _ = fs::remove_file(root.join("var/lib/systemd/random-seed"));
    done.push("machine-id reset".to_string());

    if let Some(h) = &cfg.hostname {
        write(root, "etc/hostname", &format!("{h}\n"), 0o644)?;
        done.push(format!("hostname {h}"));
    }
    if !cfg.ssh_keys.is_empty() {
        let dir = root.join("root/.ssh");
        fs::create_dir_all(&dir).context("creating /root/.ssh")?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        write(
            root,
            "root/.ssh/authorized_keys",
            &(cfg.ssh_keys.join("\n") + "\n"),
            0o600,
        )?;
        done.push(format!("{} ssh key(s) for root", cfg.ssh_keys.len()));
    }
    if let Some(tz) = &cfg.timezone {
        let zone = root.join("usr/share/zoneinfo").join(tz);
        if !zone.is_file() {
            bail!("timezone {tz}: no /usr/share/zoneinfo/{tz} in the root (is tzdata installed?)");
        }
        let lt = root.join("etc/localtime");
        let _ = fs::remove_file(&lt);
        std::os::unix::fs::symlink(format!("/usr/share/zoneinfo/{tz}"), &lt)
            .context("linking /etc/localtime")?;
        write(root, "etc/timezone", &format!("{tz}\n"), 0o644)?;
        done.push(format!("timezone {tz}"));
    }
    for (path, text) in networkd(&cfg.network) {
        write(root, &path, &text, 0o644)?;
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        fs::create_dir_all(&wants)?;
        let link = wants.join("systemd-networkd.service");
        if fs::symlink_metadata(&link).is_err()
            && root
                .join("lib/systemd/system/systemd-networkd.service")
                .exists()
        {
            std::os::unix::fs::symlink("/lib/systemd/system/systemd-networkd.service", &link)
                .context("enabling systemd-networkd")?;
        }
        done.push(format!("network /{path}"));
    }
    for r in remove_autologin(root)? {
        done.push(format!("removed live autologin {r}"));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_arguments_are_dropped() {
        let cfg = Config {
            kernel_args: vec!["quiet".into(), "console=ttyS0,115200n8".into()],
            ..Default::default()
        };
        let a = kernel_args(
            "BOOT_IMAGE=/boot/vmlinuz root=live:CDLABEL=X rd.live.image rd.live.overlay.overlayfs=1 console=ttyS0,115200n8 undercloud-live.install=/dev/vda undercloud-live.install-config=i.yaml panic=-1 ro",
            &cfg,
        );
        assert_eq!(a, vec!["console=ttyS0,115200n8", "panic=-1", "quiet"]);
    }

    #[test]
    fn fstab_by_uuid() {
        let t = fstab(&Mounts {
            root: "r-uuid".into(),
            fs: Filesystem::Xfs,
            esp: "ABCD-1234".into(),
            swap: Some("s-uuid".into()),
            grow: false,
        });
        assert!(t.contains("UUID=r-uuid\t/\txfs"));
        assert!(t.contains("UUID=ABCD-1234\t/boot/efi\tvfat"));
        assert!(t.contains("UUID=s-uuid\tnone\tswap"));
        assert!(!t.contains("/dev/"));
    }

    #[test]
    fn configure_writes_and_cleans() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("etc/systemd/system/serial-getty@ttyS0.service.d")).unwrap();
        fs::write(
            root.join("etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf"),
            "[Service]\nExecStart=\nExecStart=-/sbin/agetty --autologin root %I\n",
        )
        .unwrap();
        fs::write(
            root.join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        // A symlink planted in the image must not be written through.
        let outside = t.path().join("outside");
        std::os::unix::fs::symlink(&outside, root.join("etc/hostname")).unwrap();
        fs::create_dir_all(root.join("usr/share/zoneinfo/Etc")).unwrap();
        fs::write(root.join("usr/share/zoneinfo/Etc/UTC"), "TZif").unwrap();
        let cfg = Config {
            hostname: Some("uc1".into()),
            ssh_keys: vec!["ssh-ed25519 AAAA me".into()],
            timezone: Some("Etc/UTC".into()),
            network: vec![Network::default()],
            ..Default::default()
        };
        let m = Mounts {
            root: "r".into(),
            fs: Filesystem::Ext4,
            esp: "AB-CD".into(),
            swap: None,
            grow: false,
        };
        configure(root, &cfg, &m).unwrap();
        assert_eq!(fs::read_to_string(root.join("etc/machine-id")).unwrap(), "");
        assert_eq!(
            fs::read_to_string(root.join("etc/hostname")).unwrap(),
            "uc1\n"
        );
        assert!(!outside.exists());
        assert!(!root
            .join("etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf")
            .exists());
        let keys = fs::metadata(root.join("root/.ssh/authorized_keys")).unwrap();
        assert_eq!(keys.permissions().mode() & 0o777, 0o600);
        assert!(
            fs::read_to_string(root.join("etc/systemd/network/20-undercloud-live-0.network"))
                .unwrap()
                .contains("DHCP=yes")
        );
        assert_eq!(
            fs::read_link(root.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );

        let bad = Config {
            timezone: Some("Mars/Olympus".into()),
            ..Default::default()
        };
        let e = configure(root, &bad, &m).unwrap_err();
        assert!(format!("{e:#}").contains("Mars/Olympus"), "{e:#}");
    }
}
