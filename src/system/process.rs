//! How long-running helper processes are started: in a process group of
//! their own, so one signal reaches everything they start, and dying with
//! us, so a killed undercloud-live leaves no QEMU behind.

#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

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
}
