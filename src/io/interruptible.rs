//! Readers that stop on Ctrl-C. A signal only raises a flag
//! (`crate::interrupt`), so every long read loop has to look at it; these
//! readers do it for the loop. `Interruptible` checks before each read
//! (local files, decoders); `Pump` reads on a thread of its own (network
//! bodies, whose reads can block for as long as the server likes). Both
//! fail with `interrupt::io_error()`, which ends `read_to_end`, `io::copy`
//! and our own loops (EINTR would have them retry).

use std::io::{self, Read};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;

use super::read_some;
use crate::interrupt::{self, POLL};

/// A reader that fails with `interrupt::io_error()` once a signal arrived: wrapped
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
            flag: interrupt::flag(),
        }
    }
}

impl<R: Read> Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        interrupt::check_io(&self.flag)?;
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
        Self::with_flag(inner, interrupt::flag())
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
            interrupt::check_io(&self.flag)?;
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
        let sent = match read_some(&mut inner, &mut buf) {
            Ok(0) => {
                let _ = tx.send(Ok(Vec::new()));
                return;
            }
            Ok(n) => {
                buf.truncate(n);
                tx.send(Ok(buf))
            }
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
        interrupt::check_io(&self.flag)?;
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
                Err(e) if interrupt::is_io(&e) => return Err(e),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use super::*;

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
        assert!(interrupt::is_io(&e), "{e}");
        assert_eq!(e.to_string(), "interrupted");
        // Not EINTR, which std's loops would retry forever.
        assert_ne!(e.kind(), io::ErrorKind::Interrupted);
        let e = io::copy(&mut r, &mut io::sink()).unwrap_err();
        assert!(interrupt::is_io(&e));
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
        assert!(interrupt::is_io(&e), "{e}");
        assert!(
            t.elapsed() < Duration::from_millis(150) + 2 * POLL,
            "{:?}",
            t.elapsed()
        );
    }
}
