//! Ctrl-C and SIGTERM handling for long builds.
//!
//! The default action for SIGINT kills the process before `Drop` guards run,
//! which would leave /proc, /sys and /dev mounted inside a build root. We
//! record the signal in a flag instead; child processes are polled and killed
//! when it is set, and the error that follows unwinds through every guard.
//!
//! Since the signal no longer ends the process, every long loop must look
//! at the flag. Loops that read go through one of two readers here rather
//! than check by hand: `Interruptible` (local files, decoders: a check
//! before each read) and `Pump` (network bodies, whose reads can block for
//! as long as the server likes). Waits use `sleep` and `blocking`. All of
//! them fail with the `Interrupted` error, which `is_interrupt` recognises
//! under any context.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The number of the signal that arrived, 0 before any.
static FLAG: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// How often a wait looks at the flag: well inside the one second a
/// signal may take to stop us, and cheap (an atomic load per slice).
const POLL: Duration = Duration::from_millis(100);

fn flag() -> Arc<AtomicUsize> {
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

fn check_io(flag: &AtomicUsize) -> io::Result<()> {
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

/// A reader that fails with `io_error()` once a signal arrived: wrapped
/// around a file or a decoder, every read of a long loop checks the flag
/// (one atomic load) without the loop knowing.
pub struct Interruptible<R> {
    inner: R,
    flag: Arc<AtomicUsize>,
}

impl<R> Interruptible<R> {
    pub fn new(inner: R) -> Self {
        Interruptible {
            inner,
            flag: flag(),
        }
    }
}

impl<R: Read> Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check_io(&self.flag)?;
        self.inner.read(buf)
    }
}

/// A reader whose reads happen on a thread of its own, for network bodies.
///
/// A checked read is not enough there: a read from a stalled server blocks
/// for as long as the HTTP client's stall timeout (a minute), and a
/// signal cannot cut it short (the handler only sets the flag, and
/// reqwest's blocking reads wait on a channel that EINTR does not end).
/// Shortening the client's timeout instead would fail slow but healthy
/// mirrors. So the worker blocks, and the caller waits for its chunks in
/// `POLL` slices, looking at the flag between them; on a signal the
/// worker is abandoned (it ends at its next read, or with the process).
/// A few chunks of read-ahead also let the transfer overlap the caller's
/// work on the previous chunk.
pub struct Pump {
    /// Chunks in order; an empty one marks the end of the stream.
    chunks: Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
    state: PumpState,
    flag: Arc<AtomicUsize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PumpState {
    Reading,
    Ended,
    /// An error was returned: later reads fail too rather than look like
    /// the end of a stream that was cut.
    Failed,
}

/// Chunk size and how many may wait: memory stays under a MiB.
const PUMP_CHUNK: usize = 1 << 17;
const PUMP_AHEAD: usize = 4;

impl Pump {
    pub fn new<R: Read + Send + 'static>(inner: R) -> io::Result<Pump> {
        Self::with_flag(inner, flag())
    }

    fn with_flag<R: Read + Send + 'static>(inner: R, flag: Arc<AtomicUsize>) -> io::Result<Pump> {
        let (tx, rx) = mpsc::sync_channel(PUMP_AHEAD);
        std::thread::Builder::new()
            .name("pump".into())
            .spawn(move || pump(inner, &tx))?;
        Ok(Pump {
            chunks: rx,
            current: Vec::new(),
            at: 0,
            state: PumpState::Reading,
            flag,
        })
    }

    /// The next chunk from the worker, empty at the end of the stream.
    fn next_chunk(&mut self) -> io::Result<Vec<u8>> {
        loop {
            check_io(&self.flag)?;
            match self.chunks.recv_timeout(POLL) {
                Ok(chunk) => return chunk,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(io::Error::other("the reading thread stopped"))
                }
            }
        }
    }
}

/// The worker: read until the end, an error, or the reader being dropped.
fn pump<R: Read>(mut inner: R, tx: &SyncSender<io::Result<Vec<u8>>>) {
    loop {
        let mut buf = vec![0u8; PUMP_CHUNK];
        let sent = match inner.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Ok(Vec::new()));
                return;
            }
            Ok(n) => {
                buf.truncate(n);
                tx.send(Ok(buf))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

impl Read for Pump {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        check_io(&self.flag)?;
        if buf.is_empty() {
            return Ok(0);
        }
        while self.at == self.current.len() {
            match self.state {
                PumpState::Reading => {}
                PumpState::Ended => return Ok(0),
                PumpState::Failed => return Err(io::Error::other("an earlier read failed")),
            }
            match self.next_chunk() {
                Ok(chunk) if chunk.is_empty() => self.state = PumpState::Ended,
                Ok(chunk) => (self.current, self.at) = (chunk, 0),
                // Not final: the flag is only looked at, the stream is intact.
                Err(e) if is_io(&e) => return Err(e),
                Err(e) => {
                    self.state = PumpState::Failed;
                    return Err(e);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
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

    /// A reader that blocks until its sender says something (never, here):
    /// a server that sent its headers and then nothing.
    struct Stalled(Receiver<()>);

    impl Read for Stalled {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            Ok(0)
        }
    }

    #[test]
    fn interruptible_reads_until_the_flag_is_raised() {
        let flag = Arc::new(AtomicUsize::new(0));
        let mut r = Interruptible {
            inner: io::repeat(7),
            flag: Arc::clone(&flag),
        };
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf).unwrap(), 4);
        flag.store(2, Ordering::SeqCst);
        let e = r.read(&mut buf).unwrap_err();
        assert!(is_io(&e), "{e}");
        assert_eq!(e.to_string(), "interrupted");
        // Not EINTR, which std's loops would retry forever.
        assert_ne!(e.kind(), io::ErrorKind::Interrupted);
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(is_io(&e));
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
    fn pump_passes_bytes_and_errors_through() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        Pump::with_flag(io::Cursor::new(data.clone()), Arc::new(AtomicUsize::new(0)))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);

        let failing = io::Cursor::new(vec![1u8; 10]).chain(FailOnce);
        let mut p = Pump::with_flag(failing, Arc::new(AtomicUsize::new(0))).unwrap();
        let mut out = Vec::new();
        let e = p.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.to_string(), "connection reset");
        assert_eq!(out, vec![1u8; 10]);
        assert!(p.read(&mut [0u8; 4]).is_err(), "a cut stream has no end");
    }

    struct FailOnce;

    impl Read for FailOnce {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset",
            ))
        }
    }

    #[test]
    fn pump_stops_waiting_on_a_stalled_reader_when_the_flag_is_raised() {
        let (_never, rx) = mpsc::channel();
        let flag = Arc::new(AtomicUsize::new(0));
        let mut p = Pump::with_flag(Stalled(rx), Arc::clone(&flag)).unwrap();
        let raiser = Arc::clone(&flag);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            raiser.store(15, Ordering::SeqCst);
        });
        let t = Instant::now();
        let e = p.read(&mut [0u8; 16]).unwrap_err();
        assert!(is_io(&e), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(150) + 2 * POLL,
            "{:?}",
            t.elapsed()
        );
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
