//! Read loops, written once: a read retried when a signal interrupts it
//! (EINTR, `ErrorKind::Interrupted`), and reads that fill a buffer.
//!
//! Not to be confused with our own interrupt error (`interrupt::io_error`,
//! an `ErrorKind::Other`): that one ends the loop, as every other error does.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// One read: what came, at most `buf.len()` bytes, 0 at the end. For a
/// loop that handles each piece as it arrives (a pipe's bytes are passed
/// on at once, not held until a buffer fills).
pub fn read_some<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Reads until `buf` is full or the input ends: the bytes read, fewer than
/// `buf.len()` only at the end. Unlike `read_exact`, a short input is no
/// error, and the caller learns how much came.
pub fn read_full<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match read_some(r, &mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// [`read_full`] at `offset` of a file (positional reads: the file's own
/// position is neither used nor moved).
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Waits up to `wait` for `fd` to have something to read. A signal
/// ends the wait early with `false`, as a timeout does: the caller's loop
/// checks its own deadline (and the interrupt flag) and waits again.
pub fn readable(fd: impl AsFd, wait: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX).max(1);
    match poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    ) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three bytes a read, and EINTR before every other read.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        calls: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 1 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(3).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn trickle(len: u8) -> Trickle {
        Trickle {
            data: (0..len).collect(),
            at: 0,
            calls: 0,
        }
    }

    #[test]
    fn read_some_retries_eintr_and_stops_at_a_short_read() {
        let mut r = trickle(10);
        let mut buf = [0u8; 8];
        assert_eq!(read_some(&mut r, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], &[0, 1, 2]);
    }

    #[test]
    fn read_full_reads_across_short_reads_to_the_end() {
        let mut r = trickle(10);
        let mut buf = [0u8; 8];
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 8);
        assert_eq!(buf, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 2);
        assert_eq!(read_full(&mut r, &mut buf).unwrap(), 0);
    }

    struct Broken;

    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::ConnectionReset.into())
        }
    }

    #[test]
    fn other_errors_end_the_read() {
        let mut r = io::Cursor::new(vec![1u8; 4]).chain(Broken);
        let mut buf = [0u8; 8];
        let e = read_full(&mut r, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        let e = read_some(&mut Broken, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    }

    #[test]
    fn read_full_at_reads_from_the_offset_as_far_as_the_file_goes() {
        let t = tempfile::tempfile().unwrap();
        t.write_all_at(b"0123456789", 0).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(read_full_at(&t, &mut buf, 6).unwrap(), 4);
        assert_eq!(&buf[..4], b"6789");
        assert_eq!(read_full_at(&t, &mut buf, 1).unwrap(), 8);
        assert_eq!(&buf, b"12345678");
    }
}
