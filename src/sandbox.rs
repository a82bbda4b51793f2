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
//! It needs user namespaces (any kernel for root, and for other users
//! unless the distribution turned them off).

// fork, pre_exec and close_range: entering the namespaces happens between
// fork and exec, where std offers no safe interface.
#![allow(unsafe_code)]

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::statvfs::{statvfs, FsFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, fork, pivot_root, ForkResult};

/// The exit status the sandbox's own set-up failures end with (the
/// message is on stderr), as `env` and `chroot` use 125.
pub const SETUP_FAILED: i32 = 125;

/// Where the new root is built before it becomes `/`: a mount point that
/// exists on every Linux system and that no element lives under (the
/// folders bound into the sandbox are read through their host paths while
/// it is built, so this must not hide any of them).
const STAGE: &str = "/sys";

/// The host's system folders a shell and its tools need.
const SYSTEM: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// One thing to put into the sandbox's root.
#[derive(Clone, Debug)]
enum Entry {
    /// A read-only bind of a host folder (or device) at the same path,
    /// keeping the host mount's flags that a user namespace may not drop.
    Bind { path: PathBuf, flags: MsFlags },
    /// A symbolic link as on the host (`/bin -> usr/bin`).
    Link { path: PathBuf, target: PathBuf },
}

/// What a confined command sees, worked out before it starts.
#[derive(Clone, Debug)]
pub struct Sandbox {
    entries: Vec<Entry>,
    devices: Vec<Entry>,
    uid: u32,
    gid: u32,
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
                Entry::Bind { path, .. } => f.starts_with(path),
                Entry::Link { .. } => false,
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
            entries,
            devices,
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        })
    }

    /// Make `cmd` start inside the sandbox. Its set-up failures end it
    /// with `SETUP_FAILED` and a line on its stderr.
    pub fn confine(&self, cmd: &mut Command) {
        let me = self.clone();
        // SAFETY: the closure runs in the forked child before exec. It only
        // makes system calls and small allocations (glibc's allocator is
        // safe to use after fork), and never returns into the parent's
        // state: it either returns Ok to exec or ends the child.
        unsafe {
            cmd.pre_exec(move || {
                if let Err((what, e)) = me.enter() {
                    let msg = format!("sandbox: {what}: {}\n", e.desc());
                    let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
                    libc::_exit(SETUP_FAILED);
                }
                Ok(())
            });
        }
    }

    /// In the child: the namespaces, then a PID 1 that builds the root.
    fn enter(&self) -> Result<(), (String, Errno)> {
        let ns = CloneFlags::CLONE_NEWUSER
            | CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWCGROUP;
        unshare(ns).map_err(|e| ("user namespaces are not available".to_string(), e))?;
        self.map_ids()?;
        // The new PID namespace holds the next child, not us: fork, and
        // this process only waits and passes its status on.
        // SAFETY: single-threaded (a child of fork); the parent branch
        // ends with _exit and touches nothing shared.
        match unsafe { fork() }.map_err(|e| ("fork".to_string(), e))? {
            ForkResult::Parent { child } => {
                // Among our descriptors is the one std's spawn reads until
                // every copy is closed to learn that exec worked: keeping
                // it open while we wait would hold our caller in spawn.
                // SAFETY: close_range takes plain integers.
                unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
                wait_and_exit(child)
            }
            ForkResult::Child => {}
        }
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
            .map_err(|e| ("dying with the caller".to_string(), e))?;
        self.build_root()?;
        nix::sys::prctl::set_no_new_privs().map_err(|e| ("no_new_privs".to_string(), e))?;
        Ok(())
    }

    /// Root inside is this user outside: files read as they would be.
    fn map_ids(&self) -> Result<(), (String, Errno)> {
        let write = |file: &str, text: String| {
            std::fs::write(file, text).map_err(|e| {
                (
                    format!("writing {file}"),
                    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                )
            })
        };
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("0 {} 1", self.uid))?;
        write("/proc/self/gid_map", format!("0 {} 1", self.gid))
    }

    fn build_root(&self) -> Result<(), (String, Errno)> {
        let err = |what: &str, p: &Path| {
            let what = format!("{what} {}", p.display());
            move |e| (what, e)
        };
        let stage = Path::new(STAGE);
        crate::chroot::make_mounts_private().map_err(err("making private", Path::new("/")))?;
        tmpfs(stage, "size=16m,mode=0755")?;
        // /tmp before the binds: an element folder under the host's /tmp
        // is then bound on top of the private /tmp, not hidden by it.
        let tmp = stage.join("tmp");
        mkdir(&tmp)?;
        tmpfs(&tmp, "size=64m,mode=1777")?;
        for e in &self.entries {
            place(stage, e)?;
        }
        let dev = stage.join("dev");
        mkdir(&dev)?;
        for d in &self.devices {
            place(stage, d)?;
        }
        for (name, to) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            let _ = symlink(to, dev.join(name));
        }
        let proc = stage.join("proc");
        mkdir(&proc)?;
        // Best effort: the kernel refuses a new /proc where the host's is
        // partly hidden (inside some containers); a shell does without.
        let _ = mount(
            Some("proc"),
            &proc,
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        );
        chdir(stage).map_err(err("entering", stage))?;
        pivot_root(".", ".").map_err(err("pivot_root to", stage))?;
        umount2(".", MntFlags::MNT_DETACH).map_err(err("detaching the old root", stage))?;
        chdir("/").map_err(err("entering", Path::new("/")))?;
        // The root's own tmpfs read-only too: nothing outside /tmp takes
        // writes.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_BIND
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(err("making read-only", Path::new("/")))
    }
}

/// The sandbox's own error from a confined command's stderr, if that is
/// why it failed.
pub fn explain_failure(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().find(|l| l.starts_with("sandbox: "))?;
    Some(format!(
        "cannot start the sandbox ({}); it needs user namespaces (root, or kernel.unprivileged_userns_clone=1)",
        line.trim_start_matches("sandbox: ")
    ))
}

fn system_entry(path: &Path) -> Result<Option<Entry>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path)
            .with_context(|| format!("reading the link {}", path.display()))?;
        return Ok(Some(Entry::Link {
            path: path.to_path_buf(),
            target,
        }));
    }
    Ok(Some(bind(path)?))
}

/// A read-only bind of `path`, with the host mount's flags that a user
/// namespace must keep (changing a locked atime or nosuid flag is EPERM).
fn bind(path: &Path) -> Result<Entry> {
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
    Ok(Entry::Bind {
        path: path.to_path_buf(),
        flags,
    })
}

fn inside(stage: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    stage.join(rel)
}

/// Put one entry into the root being built at `stage`.
fn place(stage: &Path, e: &Entry) -> Result<(), (String, Errno)> {
    match e {
        Entry::Link { path, target } => {
            let at = inside(stage, path);
            symlink(target, &at).map_err(|e| io_errno(format!("linking {}", path.display()), e))
        }
        Entry::Bind { path, flags } => {
            let at = inside(stage, path);
            if path.is_dir() {
                mkdir(&at)?;
            } else {
                if let Some(parent) = at.parent() {
                    mkdir(parent)?;
                }
                std::fs::File::create(&at)
                    .map_err(|e| io_errno(format!("making {}", at.display()), e))?;
            }
            let fail = |what: &str| {
                let what = format!("{what} {}", path.display());
                move |e| (what, e)
            };
            mount(
                Some(path),
                &at,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(fail("binding"))?;
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | *flags;
            mount(None::<&str>, &at, None::<&str>, remount, None::<&str>)
                .map_err(fail("making read-only"))
        }
    }
}

fn tmpfs(at: &Path, options: &str) -> Result<(), (String, Errno)> {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options),
    )
    .map_err(|e| (format!("mounting a tmpfs on {}", at.display()), e))
}

fn mkdir(p: &Path) -> Result<(), (String, Errno)> {
    std::fs::create_dir_all(p).map_err(|e| io_errno(format!("making {}", p.display()), e))
}

fn io_errno(what: String, e: std::io::Error) -> (String, Errno) {
    (what, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// The waiting parent of the sandbox's PID 1: its exit status becomes ours.
fn wait_and_exit(child: nix::unistd::Pid) -> ! {
    let code = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => break code,
            Ok(WaitStatus::Signaled(_, sig, _)) => break 128 + sig as i32,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => break SETUP_FAILED,
        }
    };
    // SAFETY: ends this forked process without running the parent's
    // destructors or atexit handlers.
    unsafe { libc::_exit(code) }
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
