//! A build root prepared for running commands inside it.
//!
//! `Chroot::enter` mounts /proc, /sys, /dev (with /dev/pts) into the root
//! and puts a copy of the host's resolv.conf there (dib's way: a bind of the
//! host's file would let a hook write the build host's DNS settings); the
//! guard unmounts them in reverse order and restores the root's own
//! resolv.conf when
//! it is closed or dropped, so success, error and Ctrl-C (which becomes an
//! error, see `interrupt`) all leave nothing mounted. `isolate_mounts` puts
//! the whole build in a private mount namespace as a second line of defence:
//! even a SIGKILL cannot leave a mount visible on the host.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::system::command::Task;

/// Move this process into a private mount namespace (needs root). Must be
/// called before any thread is started.
pub fn isolate_mounts() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("creating a private mount namespace (are you root?)")?;
    crate::system::process::make_mounts_private().context("making mounts private")?;
    Ok(())
}

/// The check a command that mounts makes once its input has been read and
/// found good: `what` needs root (mounts, device nodes, owners).
pub fn require_root(what: &str) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "{what} needs root: it mounts /proc and /dev in the root and gives files their owners (run it with sudo)"
        );
    }
    Ok(())
}

pub struct Chroot {
    root: PathBuf,
    /// Set for every command, after `base_env`.
    env: Vec<(String, String)>,
    /// Mount points in the order they were mounted.
    mounts: Vec<PathBuf>,
    resolv: Option<ResolvLent>,
}

/// Where the root's own resolv.conf waits while the host's copy stands in.
const RESOLV_SAVED: &str = "resolv.conf.undercloud-live-saved";

/// The host's resolv.conf copied into a root's etc/.
struct ResolvLent {
    /// The root had a resolv.conf (file or symlink), moved to RESOLV_SAVED.
    saved: bool,
}

impl Chroot {
    pub fn enter(root: &Path) -> Result<Chroot> {
        let mut c = Chroot {
            root: root.to_path_buf(),
            env: Vec::new(),
            mounts: Vec::new(),
            resolv: None,
        };
        c.mount_fs("proc", "proc", "proc", MsFlags::empty())?;
        c.mount_fs("sys", "sysfs", "sysfs", MsFlags::MS_RDONLY)?;
        // Recursive: the host's /dev/pts comes along. A new devpts instance
        // would not match the host /dev/ptmx that the bind brings, and apt's
        // and dpkg's pty logging fails with EACCES.
        c.bind("/dev", "dev")?;
        c.lend_resolv_conf()?;
        Ok(c)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An image build's root: Debian's kernel hooks (initramfs-tools and
    /// dracut alike) skip making /boot/initrd.img when `INITRD=No`, as dib
    /// and live-build have them do: the build makes the only initrd it
    /// uses itself, and the package trigger's cost a minute.
    pub fn for_image(mut self) -> Self {
        self.env.push(("INITRD".into(), "No".into()));
        self
    }

    /// A path inside the root, refusing to pass through symlinks: a hostile
    /// or odd base could point `proc` at the host's /etc.
    fn real_dir(&self, rel: &str) -> Result<PathBuf> {
        let mut p = self.root.clone();
        for comp in rel.split('/') {
            p.push(comp);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    bail!("{} in the build root is a symlink", p.display())
                }
                Ok(m) if !m.is_dir() => {
                    bail!("{} in the build root is not a directory", p.display())
                }
                Ok(_) => {}
                Err(_) => {
                    fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?
                }
            }
        }
        Ok(p)
    }

    fn mount_fs(&mut self, rel: &str, source: &str, fstype: &str, flags: MsFlags) -> Result<()> {
        let target = self.real_dir(rel)?;
        let flags = flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some(source), &target, Some(fstype), flags, None::<&str>)
            .with_context(|| format!("mounting {fstype} on {}", target.display()))?;
        self.mounts.push(target);
        Ok(())
    }

    fn bind(&mut self, host: &str, rel: &str) -> Result<()> {
        let target = self.real_dir(rel)?;
        mount(
            Some(host),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {host} on {}", target.display()))?;
        self.mounts.push(target);
        Ok(())
    }

    fn lend_resolv_conf(&mut self) -> Result<()> {
        let etc = self.real_dir("etc")?;
        self.resolv = lend_resolv_conf(&etc, Path::new("/etc/resolv.conf"))?;
        Ok(())
    }

    /// A command that runs `argv` inside the root with a clean environment
    /// plus `env`.
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S], env: &[(String, String)]) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.root).arg("/usr/bin/env").arg("-i");
        for (k, v) in base_env().iter().chain(&self.env).chain(env.iter()) {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.args(argv);
        cmd
    }

    /// Run `argv` inside the root; `what` names it in errors.
    pub fn run<S: AsRef<OsStr>>(
        &self,
        argv: &[S],
        env: &[(String, String)],
        what: &str,
    ) -> Result<()> {
        Task::new(what, &mut self.command(argv, env)).run()
    }

    /// Unmount everything, reporting the first failure.
    pub fn close(mut self) -> Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let mut first_err = None;
        while let Some(m) = self.mounts.pop() {
            // The /dev bind carries the host's submounts (pts, shm, mqueue):
            // detach it as a whole tree.
            let flags = if m.ends_with("dev") {
                MntFlags::MNT_DETACH
            } else {
                MntFlags::empty()
            };
            if let Err(e) = umount2(&m, flags) {
                // A process that outlived its hook can keep a mount busy;
                // detach it so it disappears once that process exits.
                if let Err(e2) = umount2(&m, MntFlags::MNT_DETACH) {
                    first_err.get_or_insert_with(|| {
                        anyhow::anyhow!("unmounting {}: {e} (lazy: {e2})", m.display())
                    });
                }
            }
        }
        if let Some(lent) = self.resolv.take() {
            let etc = self.root.join("etc");
            if let Err(e) = restore_resolv_conf(&etc, lent) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// Copy the host's resolv.conf to `etc`/resolv.conf so that commands in the
/// root can resolve names, moving the root's own aside (whatever it is: a
/// file, or a symlink such as systemd-resolved's, never followed). A copy,
/// not a bind: what a hook writes there stays in the root. `None` when the
/// host has none (offline: nothing to lend).
fn lend_resolv_conf(etc: &Path, host: &Path) -> Result<Option<ResolvLent>> {
    let text = match fs::read(host) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", host.display())),
    };
    let target = etc.join("resolv.conf");
    let saved = etc.join(RESOLV_SAVED);
    if fs::symlink_metadata(&saved).is_ok() {
        bail!(
            "{} exists (left by an interrupted build): move it back to {} or remove it",
            saved.display(),
            target.display()
        );
    }
    let had = fs::symlink_metadata(&target).is_ok();
    if had {
        fs::rename(&target, &saved)
            .with_context(|| format!("moving {} aside", target.display()))?;
    }
    // create_new: never through a symlink that appeared meanwhile.
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&target)?
            .write_all(&text)
    };
    if let Err(e) = write() {
        if had {
            // Put the root's own back rather than leave it aside.
            let _ = fs::remove_file(&target);
            let _ = fs::rename(&saved, &target);
        }
        return Err(e)
            .with_context(|| format!("copying the host's resolv.conf to {}", target.display()));
    }
    Ok(Some(ResolvLent { saved: had }))
}

/// Undo `lend_resolv_conf`, dib's way: a resolv.conf that the build turned
/// into a symlink (a package such as resolvconf or systemd-resolved) is the
/// root's now and stays; otherwise the copy goes and the root's own comes
/// back.
fn restore_resolv_conf(etc: &Path, lent: ResolvLent) -> Result<()> {
    let target = etc.join("resolv.conf");
    let saved = etc.join(RESOLV_SAVED);
    let now_link = fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink());
    if now_link {
        if lent.saved {
            fs::remove_file(&saved).with_context(|| format!("removing {}", saved.display()))?;
        }
        return Ok(());
    }
    match fs::remove_file(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", target.display())),
    }
    if lent.saved {
        fs::rename(&saved, &target).with_context(|| format!("restoring {}", target.display()))?;
    }
    Ok(())
}

/// The environment every command in the root starts from.
pub fn base_env() -> Vec<(String, String)> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("LANG", "C.UTF-8"),
        ("TERM", "dumb"),
        ("DEBIAN_FRONTEND", "noninteractive"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Mount points at or below `dir`, from /proc/self/mountinfo. Used before
/// deleting a work folder: removing a tree with /dev bound inside it would
/// delete the host's device nodes.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(&dir))
        .collect())
}

fn unescape_mountinfo(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Remove a work folder, refusing while anything is mounted inside it.
pub fn remove_tree(dir: &Path) -> Result<()> {
    let busy = mounts_under(dir)?;
    if !busy.is_empty() {
        bail!(
            "not removing {}: {} is still mounted",
            dir.display(),
            busy[0].display()
        );
    }
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host resolv.conf and a root's empty etc/, in a folder that lives
    /// as long as the returned guard.
    fn host_and_root() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host-resolv.conf");
        fs::write(&host, "nameserver 192.0.2.53\n").unwrap();
        let etc = t.path().join("etc");
        fs::create_dir(&etc).unwrap();
        (t, host, etc)
    }

    /// A hook writing the root's resolv.conf writes the root's copy, never
    /// the host's file; afterwards the root's own is back.
    #[test]
    fn resolv_conf_is_a_copy_and_the_roots_own_comes_back() {
        let (_t, host, etc) = host_and_root();
        let target = etc.join("resolv.conf");
        fs::write(&target, "# the root's own\n").unwrap();

        let lent = lend_resolv_conf(&etc, &host).unwrap().unwrap();
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            "nameserver 192.0.2.53\n"
        );
        fs::write(&target, "nameserver 203.0.113.1\n").unwrap(); // a hook
        assert_eq!(
            fs::read_to_string(&host).unwrap(),
            "nameserver 192.0.2.53\n"
        );
        // A second lend while one is out would lose the root's own.
        let e = lend_resolv_conf(&etc, &host).err().unwrap().to_string();
        assert!(e.contains("interrupted build"), "{e}");
        restore_resolv_conf(&etc, lent).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "# the root's own\n");
        assert!(!etc.join(RESOLV_SAVED).exists());
    }

    #[test]
    fn resolv_conf_symlinks_are_moved_never_followed() {
        let (t, host, etc) = host_and_root();
        let target = etc.join("resolv.conf");
        // The root's own is a symlink pointing out of the root at the host.
        std::os::unix::fs::symlink(&host, &target).unwrap();
        let lent = lend_resolv_conf(&etc, &host).unwrap().unwrap();
        assert!(!fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_symlink());
        restore_resolv_conf(&etc, lent).unwrap();
        assert_eq!(fs::read_link(&target).unwrap(), host);

        // A root without one gets the copy and loses it again; one a
        // package made a symlink during the build keeps it (dib's rule).
        fs::remove_file(&target).unwrap();
        let lent = lend_resolv_conf(&etc, &host).unwrap().unwrap();
        fs::remove_file(&target).unwrap();
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &target).unwrap();
        restore_resolv_conf(&etc, lent).unwrap();
        assert!(fs::read_link(&target).is_ok());
        assert!(lend_resolv_conf(&etc, &t.path().join("none"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn mountinfo_unescapes_octal() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/end\\"), "/end\\");
    }
}
