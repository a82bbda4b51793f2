//! Ctrl-C and SIGTERM handling for long builds.
//!
//! The default action for SIGINT kills the process before `Drop` guards run,
//! which would leave /proc, /sys and /dev mounted inside a build root. We
//! record the signal in a flag instead; child processes are polled and killed
//! when it is set, and the error that follows unwinds through every guard.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Install the SIGINT/SIGTERM handlers (idempotent).
pub fn install() -> Result<()> {
    let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(flag))
            .context("installing the interrupt handler")?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
}

/// Fail with "interrupted" if a signal arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Start a command in its own process group with no standard input, so
/// that on interrupt the whole group (a hook and whatever it started) can be
/// killed, and no grandchild keeps our output pipes open.
pub fn spawn(cmd: &mut Command, what: &str) -> Result<Child> {
    check()?;
    cmd.process_group(0).stdin(Stdio::null());
    cmd.spawn().with_context(|| format!("starting {what}"))
}

/// Run a command to completion, killing it if we are interrupted.
/// `what` names the command in errors ("dracut in the build root").
pub fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let child = spawn(cmd, what)?;
    let status = wait(child, what)?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Wait for a child started by `spawn`, killing its process group if we are
/// interrupted.
pub fn wait(mut child: Child, what: &str) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("waiting for {what}"))?
        {
            return Ok(status);
        }
        if interrupted() {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            bail!("interrupted while running {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
