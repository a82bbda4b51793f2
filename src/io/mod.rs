//! Reading, the way every stage does it: files a user names, opened
//! safely (here); the pieces read loops are made of (`read`: a read
//! retried on EINTR, reads that fill a buffer); and the readers stacked
//! under them (`interruptible`: reads that stop on Ctrl-C; `xz`: xz
//! decoding on every CPU; `count`: a progress bar fed by the bytes read).
//!
//! A user names a file on the command line or in a configuration file. A
//! plain `File::open` of a FIFO blocks until some writer appears (forever,
//! for a command run unattended), and reading a character device such as
//! `/dev/zero` never ends. Files here are opened without blocking, checked
//! by `fstat` on the open handle (no window between the check and the
//! open), and refused with a one-line error naming what they are.

use std::fs::{File, FileType, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};

pub mod count;
pub mod interruptible;
pub mod read;
pub mod xz;

pub use count::Counting;
pub use interruptible::{Interruptible, Pump};
pub use read::{read_full, read_full_at, read_some, readable};

/// One mebibyte, for the size limits callers pass.
pub const MIB: u64 = 1 << 20;

/// What a file type is, in words for an error message.
pub fn kind(t: FileType) -> &'static str {
    if t.is_file() {
        "a regular file"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Opens `path` read-only, refusing anything but a regular file (and a
/// block device when `allow_block` is set). `what` names the file in
/// errors ("kickstart", "image").
fn open_checked(path: &Path, what: &str, allow_block: bool) -> Result<File> {
    let shown = path.display();
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
    // writer before we could look at what the path is.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .with_context(|| format!("opening {what} {shown}"))?;
    let t = file
        .metadata()
        .with_context(|| format!("reading {what} {shown}"))?
        .file_type();
    if !(t.is_file() || (allow_block && t.is_block_device())) {
        let wanted = if allow_block {
            "a regular file or a block device"
        } else {
            "a regular file"
        };
        bail!("{what} {shown} is {}, not {wanted}", kind(t));
    }
    // Back to blocking reads: a block device (or a file on a slow network
    // file system) may legitimately answer EAGAIN otherwise.
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty()))
        .with_context(|| format!("opening {what} {shown}"))?;
    Ok(file)
}

/// Opens a file that must be a regular file.
pub fn open_regular(path: &Path, what: &str) -> Result<File> {
    open_checked(path, what, false)
}

/// Opens a disk image that may also be a whole block device (a USB stick).
pub fn open_image(path: &Path, what: &str) -> Result<File> {
    open_checked(path, what, true)
}

/// The bytes of a regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    let file = open_regular(path, what)?;
    let shown = path.display();
    let mut bytes = Vec::new();
    // take(limit + 1): a file that grows after any size check is still
    // caught, and never read past the limit.
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} {shown}"))?;
    if bytes.len() as u64 > limit {
        bail!(
            "{what} {shown} is larger than the {} limit for such files",
            human(limit)
        );
    }
    Ok(bytes)
}

/// The UTF-8 text of a regular file of at most `limit` bytes.
pub fn read_text_bounded(path: &Path, limit: u64, what: &str) -> Result<String> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{what} {} is not UTF-8 text", path.display()))
}

/// Like [`read_text_bounded`], but `None` when nothing is at `path` (an
/// optional file such as an element's `element-deps`).
pub fn read_text_bounded_opt(path: &Path, limit: u64, what: &str) -> Result<Option<String>> {
    // metadata follows symbolic links, as opening does: a dangling link is
    // absent too.
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        _ => read_text_bounded(path, limit, what).map(Some),
    }
}

fn human(bytes: u64) -> String {
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes}-byte")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_fifo_device_and_directory_without_blocking() {
        let t = tempfile::tempdir().unwrap();
        let fifo = t.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        for (p, is) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/zero"), "a character device"),
            (t.path(), "a directory"),
        ] {
            let e = format!("{:#}", read_text_bounded(p, MIB, "kickstart").unwrap_err());
            assert!(e.contains(is), "{e}");
            assert!(!e.contains('\n'), "{e}");
            let e = format!("{:#}", open_image(p, "image").unwrap_err());
            assert!(e.contains(is), "{e}");
        }
    }

    #[test]
    fn limit_is_enforced_and_named() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("big.ks");
        std::fs::write(&p, vec![b'#'; 2048]).unwrap();
        assert_eq!(
            read_text_bounded(&p, 2048, "kickstart").unwrap().len(),
            2048
        );
        let e = format!(
            "{:#}",
            read_text_bounded(&p, 1024, "kickstart").unwrap_err()
        );
        assert!(e.contains("1 KiB limit"), "{e}");
        assert!(read_text_bounded_opt(&t.path().join("none"), 1, "x")
            .unwrap()
            .is_none());
        let fifo = t.path().join("pipe");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_text_bounded_opt(&fifo, MIB, "x").is_err());
    }
}
