//! A sandbox for element code that should only compute something.
//!
//! `elements plan`, `elements show` and `elements apply --dry-run` read
//! their answers from the elements' `environment.d` files, which are shell
//! code: sourcing them on the host, as root, would let a read-only command
//! change the host. Here they run as the same user, but:
//! - in their own user, mount, PID, network, IPC, UTS and cgroup
//!   namespaces: no other process to signal, no network but a loopback
//!   that is down, capabilities only over the sandbox's own objects;
//! - in a fresh root file system (a small tmpfs) that holds, read-only,
//!   only the host's `/usr`, `/etc`, the `/bin`-style links or folders,
//!   the folders the caller names (the elements) and `/dev/{null,zero,
//!   full,random,urandom}`; `/tmp` is a private tmpfs. No `/home`, `/root`,
//!   `/run` (its sockets), `/var`, `/sys` or block device is in it;
//! - with no way to gain privileges (`no_new_privs`), and killed when its
//!   caller dies.
//!
//! This module is the parent's half: which host folders and devices are
//! bound, with which mount flags. The child's half, which enters the
//! namespaces and builds that root between fork and exec, is
//! `process::confine`, beside the rest of the code that runs there.
//!
//! It needs user namespaces (any kernel for root, and for other users
//! unless the distribution turned them off).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use nix::mount::MsFlags;
use nix::sys::statvfs::{statvfs, FsFlags};

use super::process::{self, Confinement, RootEntry};

/// The host's system folders a shell and its tools need.
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// What a confined command sees, worked out before it starts.
#[derive(Clone, Debug)]
pub struct Sandbox {
    plan: Confinement,
}

impl Sandbox {
    /// A sandbox in which `readable` folders (and the system folders) can
    /// be read.
    pub fn new<'a>(readable: impl IntoIterator<Item = &'a Path>) -> Result<Sandbox> {
        let mut entries = Vec::new();
        for s in SYSTEM {
            if let Some(e) = system_entry(Path::new(s))? {
                entries.push(e);
            }
        }
        let mut folders: Vec<PathBuf> = Vec::new();
        for p in readable {
            let real = std::fs::canonicalize(p)
                .with_context(|| format!("{}: resolving for the sandbox", p.display()))?;
            folders.push(real);
        }
        folders.sort();
        folders.dedup();
        for f in folders {
            // Already inside a bound folder (an element under /usr/share):
            // visible, and a mount point cannot be made in a read-only bind.
            let covered = entries.iter().any(|e| match e {
                RootEntry::Bind { path, .. } => f.starts_with(path),
                RootEntry::Link { .. } => false,
            });
            if !covered {
                entries.push(bind(&f)?);
            }
        }
        let devices = DEVICES
            .iter()
            .map(|d| bind(&Path::new("/dev").join(d)))
            .collect::<Result<_>>()?;
        Ok(Sandbox {
            plan: Confinement {
                entries,
                devices,
                uid: nix::unistd::getuid().as_raw(),
                gid: nix::unistd::getgid().as_raw(),
            },
        })
    }

    /// Make `cmd` start inside the sandbox. Its set-up failures end it
    /// with a status of 125 and a line on its stderr (`explain_failure`).
    pub fn confine(&self, cmd: &mut Command) {
        process::confine(cmd, &self.plan);
    }
}

/// The sandbox's own error from a confined command's stderr, if that is
/// why it failed.
pub fn explain_failure(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .find(|l| l.starts_with(process::SETUP_FAILURE_PREFIX))?;
    Some(format!(
        "cannot start the sandbox ({}); it needs user namespaces (root, or kernel.unprivileged_userns_clone=1)",
        line.trim_start_matches(process::SETUP_FAILURE_PREFIX)
    ))
}

fn system_entry(path: &Path) -> Result<Option<RootEntry>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)
            .with_context(|| format!("reading the link {}", path.display()))?;
        return Ok(Some(RootEntry::Link {
            path: path.to_path_buf(),
            target,
        }));
    }
    Ok(Some(bind(path)?))
}

/// A read-only bind of `path`, with the host mount's flags that a user
/// namespace must keep (changing a locked atime or nosuid flag is EPERM).
fn bind(path: &Path) -> Result<RootEntry> {
    let st = statvfs(path).with_context(|| format!("reading the mount of {}", path.display()))?;
    let f = st.flags();
    let mut flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID;
    for (from, to) in [
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(from) {
            flags |= to;
        }
    }
    Ok(RootEntry::Bind {
        path: path.to_path_buf(),
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_in(sandbox: &Sandbox, script: &str) -> std::process::Output {
        let mut cmd = Command::new("/bin/bash");
        cmd.arg("-c").arg(script);
        sandbox.confine(&mut cmd);
        cmd.output().unwrap()
    }

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn only_the_named_folders_are_seen_and_nothing_is_written() {
        let t = tempfile::tempdir().unwrap();
        let el = t.path().join("element");
        let other = t.path().join("other");
        std::fs::create_dir_all(&el).unwrap();
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(el.join("data"), "mine").unwrap();
        std::fs::write(other.join("data"), "not mine").unwrap();
        let s = Sandbox::new([el.as_path()]).unwrap();
        let script = format!(
            "cat {el}/data; echo; [ -e {other}/data ] && echo saw-other; \
             touch {el}/new /etc/ucl-sandbox-test 2>/dev/null && echo wrote; \
             echo x > /dev/null && echo devnull; \
             echo t > /tmp/t && cat /tmp/t; \
             [ -e /root ] || [ -e /home ] || [ -e /run ] || echo no-home; id -u",
            el = el.display(),
            other = other.display()
        );
        let o = run_in(&s, &script);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "mine\ndevnull\nt\nno-home\n0\n");
        assert!(!el.join("new").exists());
        assert!(!Path::new("/etc/ucl-sandbox-test").exists());
    }

    #[test]
    fn no_host_process_or_network_is_reachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let s = Sandbox::new(std::iter::empty()).unwrap();
        let script = format!(
            "kill -0 {} 2>/dev/null && echo signalled; \
             (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo connected; \
             echo $$",
            std::process::id()
        );
        let o = run_in(&s, &script);
        // Its own PID namespace: the shell is process 1.
        assert_eq!(text(&o.stdout), "1\n", "{}", text(&o.stderr));
    }

    #[test]
    fn the_exit_status_is_passed_on() {
        let s = Sandbox::new(std::iter::empty()).unwrap();
        let o = run_in(&s, "echo oops >&2; exit 7");
        assert_eq!(o.status.code(), Some(7));
        assert_eq!(text(&o.stderr), "oops\n");
        assert_eq!(explain_failure(&o.stderr), None);
    }

    #[test]
    fn a_set_up_failure_is_explained() {
        let e =
            explain_failure(b"sandbox: mounting a tmpfs on /sys: EPERM: Operation not permitted\n");
        assert_eq!(
            e.as_deref(),
            Some("cannot start the sandbox (mounting a tmpfs on /sys: EPERM: Operation not permitted); it needs user namespaces (root, or kernel.unprivileged_userns_clone=1)")
        );
    }
}
