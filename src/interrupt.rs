//! Ctrl-C and SIGTERM handling for long builds.
//!
//! The default action for SIGINT kills the process before `Drop` guards run,
//! which would leave /proc, /sys and /dev mounted inside a build root. We
//! record the signal in a flag instead; child processes are polled and killed
//! when it is set, and the error that follows unwinds through every guard.
//!
//! Since the signal no longer ends the process, every long loop must look
//! at the flag. Loops that read go through one of two readers of
//! `crate::io` rather than check by hand: `Interruptible` (local files,
//! decoders: a check before each read) and `Pump` (network bodies, whose
//! reads can block for as long as the server likes). Waits use `sleep` and
//! `blocking`; external programs run through `system::command::Task`, on
//! `spawn` and `wait` here. All of them fail with the `Interrupted` error,
//! which `is_interrupt` recognises under any context.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The number of the signal that arrived, 0 before any.
static FLAG: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// How often a wait looks at the flag: well inside the one second a
/// signal may take to stop us, and cheap (an atomic load per slice).
pub const POLL: Duration = Duration::from_millis(100);

/// The flag itself, for a reader that looks at it on every read
/// (`io::Interruptible`, `io::Pump`): one atomic load, with `check_io`.
pub fn flag() -> Arc<AtomicUsize> {
    Arc::clone(FLAG.get_or_init(|| Arc::new(AtomicUsize::new(0))))
}

/// Install the SIGINT/SIGTERM handlers (idempotent).
pub fn install() -> Result<()> {
    let flag = flag();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Signal numbers are small and positive.
        let value = usize::try_from(sig).unwrap_or(1);
        signal_hook::flag::register_usize(sig, Arc::clone(&flag), value)
            .context("installing the interrupt handler")?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    FLAG.get().is_some_and(|f| raised(f))
}

/// The signal that interrupted us, if one did (for the exit status).
pub fn signal() -> Option<Signal> {
    let n = FLAG.get()?.load(Ordering::SeqCst);
    Signal::try_from(i32::try_from(n).ok()?).ok()
}

fn raised(flag: &AtomicUsize) -> bool {
    flag.load(Ordering::SeqCst) != 0
}

/// The error of work stopped by a signal. Its own type (not just the text)
/// so that a download does not take it for a failure worth retrying.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// `Interrupted` as an I/O error, for readers. Not `ErrorKind::Interrupted`:
/// that means "try again" (EINTR), and `read_to_end`, `io::copy` and our
/// own read loops would retry it forever.
pub fn io_error() -> io::Error {
    io::Error::other(Interrupted)
}

/// Whether an I/O error is `io_error()`.
pub fn is_io(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Interrupted>())
}

/// Whether `Interrupted` is anywhere in an error's chain (an `io_error()`
/// under contexts included).
pub fn is_interrupt(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.is::<Interrupted>() || c.downcast_ref::<io::Error>().is_some_and(is_io))
}

/// Fail with "interrupted" if a signal arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// `io_error()` if `flag` (from `flag()`) is raised.
pub fn check_io(flag: &AtomicUsize) -> io::Result<()> {
    if raised(flag) {
        return Err(io_error());
    }
    Ok(())
}

/// `thread::sleep` in slices, ending early with `Interrupted` on a signal
/// (a retry's back-off can be 30 s).
pub fn sleep(d: Duration) -> Result<()> {
    sleep_or_stop(d, &flag())
}

fn sleep_or_stop(d: Duration, flag: &AtomicUsize) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        if raised(flag) {
            return Err(Interrupted.into());
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(POLL));
    }
}

/// Run `work` on a thread of its own and wait for its result, giving up
/// with `Interrupted` when a signal arrives. For a call that may block
/// long and cannot be woken (an HTTP request waiting for the answer's
/// headers): the thread is left to finish on its own, and dies with the
/// process.
pub fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    let flag = flag();
    if raised(&flag) {
        return Err(Interrupted.into());
    }
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("blocking".into())
        .spawn(move || {
            // The waiter may have gone (interrupted): nobody to tell.
            let _ = tx.send(work());
        })
        .with_context(|| format!("starting a thread for {what}"))?;
    loop {
        match rx.recv_timeout(POLL) {
            Ok(v) => return Ok(v),
            Err(RecvTimeoutError::Timeout) if raised(&flag) => return Err(Interrupted.into()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => bail!("{what} failed (its thread panicked)"),
        }
    }
}

/// Start a command in its own process group with no standard input, so
/// that on interrupt the whole group (a hook and whatever it started) can be
/// killed, and no grandchild keeps our output pipes open. `what` names the
/// command in errors ("dracut in the build root"). Most callers want
/// `system::command::Task`, which runs a command this way and reports its
/// failures.
pub fn spawn(cmd: &mut Command, what: &str) -> Result<Child> {
    spawn_with_stdin(cmd, what, Stdio::null())
}

/// `spawn`, with a pipe to the command's standard input (`Child::stdin`).
pub fn spawn_fed(cmd: &mut Command, what: &str) -> Result<Child> {
    spawn_with_stdin(cmd, what, Stdio::piped())
}

fn spawn_with_stdin(cmd: &mut Command, what: &str, stdin: Stdio) -> Result<Child> {
    check()?;
    cmd.process_group(0).stdin(stdin);
    cmd.spawn().with_context(|| format!("starting {what}"))
}

/// Wait for a child started by `spawn`, killing its process group if we are
/// interrupted (then the error is `Interrupted`, under "running {what}").
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
            return Err(anyhow::Error::new(Interrupted).context(format!("running {what}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raised_flag() -> Arc<AtomicUsize> {
        Arc::new(AtomicUsize::new(15))
    }

    #[test]
    fn the_error_is_recognised_under_contexts() {
        let e = anyhow::Error::new(io_error()).context("reading x.part");
        assert!(is_interrupt(&e));
        assert_eq!(format!("{e:#}"), "reading x.part: interrupted");
        assert!(is_interrupt(&anyhow::Error::new(Interrupted).context("a")));
        assert!(!is_interrupt(&anyhow::anyhow!("interrupted")));
        assert!(!is_io(&io::Error::from(io::ErrorKind::Interrupted)));
    }

    #[test]
    fn sleep_ends_early_on_a_signal_and_runs_full_otherwise() {
        let t = Instant::now();
        let e = sleep_or_stop(Duration::from_secs(30), &raised_flag()).unwrap_err();
        assert!(is_interrupt(&e));
        assert!(t.elapsed() < POLL);
        let t = Instant::now();
        sleep_or_stop(Duration::from_millis(120), &AtomicUsize::new(0)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(120));
    }
}
