//! The block-device system calls the writer and the installer make: the
//! partition table re-read, the device's size, and writeback control. One
//! module holds them (and their `unsafe`), so each ioctl is declared once
//! and its retry rule is the same for every caller.

#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::errno::Errno;
use nix::libc;

// From <linux/fs.h>: BLKRRPART is _IO(0x12, 95), BLKGETSIZE64 is
// _IOR(0x12, 114, size_t).
nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Asks the kernel to read the partition table again, so the partitions
/// appear at once. udev or a probing tool may hold a partition open for a
/// moment after a write: EBUSY is retried with a growing pause (about 5 s
/// in all). A device without partition support (a loop device without
/// partscan) has nothing to re-read: that is success. The kernel refuses
/// the call from any descriptor but the one holding an exclusive claim.
pub fn reread_partitions(dev: &impl AsFd) -> Result<(), Errno> {
    let fd = dev.as_fd().as_raw_fd();
    let mut last = Errno::EBUSY;
    for attempt in 0..10 {
        // SAFETY: BLKRRPART takes no argument; fd is open for the call.
        match unsafe { blkrrpart(fd) } {
            Ok(_) | Err(Errno::EINVAL) => return Ok(()),
            Err(Errno::EBUSY) => {
                last = Errno::EBUSY;
                std::thread::sleep(Duration::from_millis(100 * (attempt + 1)));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The device's size in bytes (BLKGETSIZE64).
pub fn size(dev: &impl AsFd) -> Result<u64, Errno> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer we pass, which
    // lives across the call.
    unsafe { blkgetsize64(dev.as_fd().as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// Starts writeback of a byte range of a file's page cache, not waiting.
pub fn start_writeback(file: &impl AsFd, off: u64, len: u64) {
    sync_range(file, off, len, libc::SYNC_FILE_RANGE_WRITE);
}

/// Writes a range back and waits until it is on the device.
pub fn wait_writeback(file: &impl AsFd, off: u64, len: u64) {
    sync_range(
        file,
        off,
        len,
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER,
    );
}

/// Best effort: the final fsync is what guarantees the data, this only
/// keeps dirty memory bounded and progress honest.
fn sync_range(file: &impl AsFd, off: u64, len: u64, flags: libc::c_uint) {
    let (Ok(off), Ok(len)) = (i64::try_from(off), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the
    // descriptor is borrowed for the call.
    unsafe {
        libc::sync_file_range(file.as_fd().as_raw_fd(), off, len, flags);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_no_block_device() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        assert_eq!(size(&f), Err(Errno::ENOTTY));
        assert_eq!(reread_partitions(&f), Err(Errno::ENOTTY));
        // Writeback control works on any file.
        start_writeback(&f, 0, 4096);
        wait_writeback(&f, 0, 4096);
    }
}
