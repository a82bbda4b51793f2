//! How child processes are set up between fork and exec: helpers in a
//! process group of their own and dying with us, so one signal reaches
//! everything they start and a killed undercloud-live leaves no QEMU
//! behind (`own_group_dying_with_us`); element code shut into the sandbox
//! that `system::sandbox` plans (`confine`).
//!
//! This file and `blockdev.rs` are the only ones with `unsafe` code (see
//! docs/design.md). Code that runs between fork and exec has no safe
//! interface in std (`pre_exec` is unsafe: the child is a copy of a
//! process that may have other threads), so all of it lives here, where
//! one reading can check it. No function here runs a caller's closure in
//! the child: each interprets plain data only (a parent's PID; paths,
//! mount flags and ids), so their safe signatures hide no unsafety.

#![allow(unsafe_code)]

use std::io;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::libc;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, fork, pivot_root, ForkResult, Pid};

/// Sets `cmd` up to run in its own process group and to be SIGKILLed when
/// this process dies, even by SIGKILL.
pub fn own_group_dying_with_us(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (setpgid, prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // We may have died between fork and prctl: then the parent is
            // already someone else and the death signal will never come.
            if nix::unistd::getppid().as_raw() as u32 != parent {
                return Err(io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}

/// The exit status a confined child's own set-up failures end with, as
/// `env` and `chroot` use 125.
const SETUP_FAILED: i32 = 125;

/// How the line a confined child's set-up failure writes on its stderr
/// starts (`sandbox: <what>: <errno>`), for `system::sandbox` to find it.
pub const SETUP_FAILURE_PREFIX: &str = "sandbox: ";

/// Where the new root is built before it becomes `/`: a mount point that
/// exists on every Linux system and that no element lives under (the
/// folders bound into the sandbox are read through their host paths while
/// it is built, so this must not hide any of them).
const STAGE: &str = "/sys";

/// One thing to put into a confined child's root.
#[derive(Clone, Debug)]
pub enum RootEntry {
    /// A read-only bind of a host folder (or device) at the same path;
    /// `flags` are those of the remount that makes it read-only.
    Bind { path: PathBuf, flags: MsFlags },
    /// A symbolic link as on the host (`/bin -> usr/bin`).
    Link { path: PathBuf, target: PathBuf },
}

/// What a confined child's world is made of: plain data, worked out by the
/// parent (`system::sandbox`) and only read in the child.
#[derive(Clone, Debug)]
pub struct Confinement {
    /// Placed in order at the root of a fresh tmpfs.
    pub entries: Vec<RootEntry>,
    /// Placed in the new root's `/dev`.
    pub devices: Vec<RootEntry>,
    /// The ids outside that root inside is mapped to.
    pub uid: u32,
    pub gid: u32,
}

/// Make `cmd` start in new user, mount, PID, network, IPC, UTS and cgroup
/// namespaces, in a root built from `plan`, with no way to gain privileges
/// and killed when its caller dies. Its set-up failures end it with
/// `SETUP_FAILED` and a `SETUP_FAILURE_PREFIX` line on its stderr.
pub fn confine(cmd: &mut Command, plan: &Confinement) {
    let plan = plan.clone();
    // SAFETY: the closure runs in the forked child before exec. It only
    // reads `plan`, makes system calls and small allocations (glibc's
    // allocator is safe to use after fork), and never returns into the
    // parent's state: it either returns Ok to exec or ends the child.
    unsafe {
        cmd.pre_exec(move || {
            if let Err((what, e)) = enter(&plan) {
                let msg = format!("{SETUP_FAILURE_PREFIX}{what}: {}\n", e.desc());
                let _ = nix::unistd::write(std::io::stderr(), msg.as_bytes());
                libc::_exit(SETUP_FAILED);
            }
            Ok(())
        });
    }
}

/// In the child: the namespaces, then a PID 1 that builds the root.
fn enter(plan: &Confinement) -> Result<(), (String, Errno)> {
    let ns = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWCGROUP;
    unshare(ns).map_err(|e| ("user namespaces are not available".to_string(), e))?;
    map_ids(plan)?;
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
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(|e| ("dying with the caller".to_string(), e))?;
    build_root(plan)?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| ("no_new_privs".to_string(), e))?;
    Ok(())
}

/// Root inside is this user outside: files read as they would be.
fn map_ids(plan: &Confinement) -> Result<(), (String, Errno)> {
    let write = |file: &str, text: String| {
        std::fs::write(file, text).map_err(|e| io_errno(format!("writing {file}"), e))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("0 {} 1", plan.uid))?;
    write("/proc/self/gid_map", format!("0 {} 1", plan.gid))
}

fn build_root(plan: &Confinement) -> Result<(), (String, Errno)> {
    let stage = Path::new(STAGE);
    make_mounts_private().map_err(failed("making private", Path::new("/")))?;
    tmpfs(stage, "size=16m,mode=0755")?;
    // /tmp before the binds: an element folder under the host's /tmp
    // is then bound on top of the private /tmp, not hidden by it.
    let tmp = stage.join("tmp");
    mkdir(&tmp)?;
    tmpfs(&tmp, "size=64m,mode=1777")?;
    for e in &plan.entries {
        place(stage, e)?;
    }
    let dev = stage.join("dev");
    mkdir(&dev)?;
    for d in &plan.devices {
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
    chdir(stage).map_err(failed("entering", stage))?;
    pivot_root(".", ".").map_err(failed("pivot_root to", stage))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(failed("detaching the old root", stage))?;
    chdir("/").map_err(failed("entering", Path::new("/")))?;
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
    .map_err(failed("making read-only", Path::new("/")))
}

fn inside(stage: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix("/").unwrap_or(path);
    stage.join(rel)
}

/// Put one entry into the root being built at `stage`.
fn place(stage: &Path, e: &RootEntry) -> Result<(), (String, Errno)> {
    match e {
        RootEntry::Link { path, target } => {
            let at = inside(stage, path);
            symlink(target, &at).map_err(|e| io_errno(format!("linking {}", path.display()), e))
        }
        RootEntry::Bind { path, flags } => {
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
            mount(
                Some(path),
                &at,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(failed("binding", path))?;
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | *flags;
            mount(None::<&str>, &at, None::<&str>, remount, None::<&str>)
                .map_err(failed("making read-only", path))
        }
    }
}

/// The error of a failed step `what` on `path`, as set-up failures carry it.
fn failed(what: &str, path: &Path) -> impl FnOnce(Errno) -> (String, Errno) {
    let what = format!("{what} {}", path.display());
    move |e| (what, e)
}

fn tmpfs(at: &Path, options: &str) -> Result<(), (String, Errno)> {
    mount(
        Some("tmpfs"),
        at,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options),
    )
    .map_err(failed("mounting a tmpfs on", at))
}

fn mkdir(p: &Path) -> Result<(), (String, Errno)> {
    std::fs::create_dir_all(p).map_err(|e| io_errno(format!("making {}", p.display()), e))
}

fn io_errno(what: String, e: std::io::Error) -> (String, Errno) {
    (what, Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// The waiting parent of the sandbox's PID 1: its exit status becomes ours.
fn wait_and_exit(child: Pid) -> ! {
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

/// In a new mount namespace: stop mount events propagating to and from
/// the host. Without MS_PRIVATE our mounts would still propagate back
/// through shared subtrees (systemd makes / shared), and the host's would
/// reach us.
pub fn make_mounts_private() -> nix::Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_leads_its_own_group() {
        let mut cmd = Command::new("sh");
        // /proc/PID/stat's fifth field is the process group ("(sh)" holds
        // no space).
        cmd.args(["-c", "test \"$(cut -d' ' -f5 /proc/$$/stat)\" = $$"]);
        own_group_dying_with_us(&mut cmd);
        assert!(cmd.status().unwrap().success());
    }

    #[test]
    fn a_confined_childs_set_up_failure_ends_it_with_its_own_status_and_line() {
        // Set-up fails before exec, so the root needs nothing else; the
        // missing folder makes the bind fail after the namespaces were
        // entered and PID 1 was forked.
        let entries = vec![RootEntry::Bind {
            path: PathBuf::from("/nonexistent-ucl-confine-test"),
            flags: MsFlags::MS_RDONLY,
        }];
        let plan = Confinement {
            entries,
            devices: Vec::new(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "echo ran"]);
        confine(&mut cmd, &plan);
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(SETUP_FAILED));
        assert!(o.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "sandbox: binding /nonexistent-ucl-confine-test: No such file or directory\n"
        );
    }
}
