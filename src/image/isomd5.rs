//! The media checksum, in the format of isomd5sum's implantisomd5 /
//! checkisomd5 (what dracut's `rd.live.check` runs), written and checked by
//! our own code.
//!
//! The format, as those tools define it:
//! * The text lives in the primary volume descriptor's 512-byte application
//!   use field (byte 883), blank-padded:
//!   `ISO MD5SUM = <32 hex>;SKIPSECTORS = 15;RHLISOSTATUS=0;FRAGMENT SUMS =
//!   <60 chars>;FRAGMENT COUNT = 20;THIS IS NOT THE SAME AS RUNNING MD5SUM
//!   ON THIS ISO!!`
//! * The MD5 runs over the volume (volume space size x 2048 bytes) except
//!   its last SKIPSECTORS sectors, with the application use field read as
//!   blanks. The data is taken in 32 KiB reads from the start.
//! * Fragment sums: the checked length is cut into COUNT + 1 parts. After the
//!   first read that *starts* in part k (k = 1..=COUNT), the running MD5 is
//!   finalised on a copy; of its first 60 / COUNT bytes, each contributes
//!   one hex digit: the first character of the byte printed with `%x`
//!   (the high nibble, or the only digit for a byte below 16).
//!
//! The fragment sums let a check stop early and, for `verify`, tell *where*
//! the medium differs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{mpsc, Condvar, Mutex};

use anyhow::{bail, Context, Result};
use md5::{Digest, Md5};

use super::iso9660::{APPLICATION_USE, APPLICATION_USE_LEN};
use super::layout::{PVD_LBA, SECTOR};

pub const SKIP_SECTORS: u64 = 15;
pub const FRAGMENT_COUNT: u64 = 20;
const FRAGMENT_SUM_LEN: usize = 60;
/// The read size both tools use; fragment boundaries depend on it.
const CHUNK: u64 = 32 * 1024;
/// What we read at once: whole 32 KiB chunks, fewer system calls.
const READ: u64 = 32 * CHUNK;
/// Buffers read ahead of the hash.
const READ_AHEAD: usize = 2;

/// What the application use field says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Embedded {
    pub md5: String,
    pub skip_sectors: u64,
    pub fragment_sums: String,
    pub fragment_count: u64,
}

/// The primary volume descriptor's byte offset and the volume's size.
pub fn find_pvd(file: &File, path: &Path) -> Result<(u64, u64, Vec<u8>)> {
    for n in PVD_LBA..PVD_LBA + 64 {
        let mut d = vec![0u8; SECTOR as usize];
        file.read_exact_at(&mut d, n * SECTOR)
            .with_context(|| format!("reading volume descriptors of {}", path.display()))?;
        if &d[1..6] != b"CD001" {
            bail!(
                "{} has no ISO9660 volume (no CD001 at sector {n})",
                path.display()
            );
        }
        match d[0] {
            1 => {
                // The big-endian half of the both-endian field, as checkisomd5 reads it.
                let sectors = u32::from_be_bytes([d[84], d[85], d[86], d[87]]);
                return Ok((n * SECTOR, u64::from(sectors) * SECTOR, d));
            }
            255 => break,
            _ => {}
        }
    }
    bail!(
        "{} has no ISO9660 primary volume descriptor",
        path.display()
    )
}

/// Reads the embedded checksum, if there is one.
pub fn read_embedded(pvd: &[u8]) -> Option<Embedded> {
    let field = &pvd[APPLICATION_USE..APPLICATION_USE + APPLICATION_USE_LEN];
    let text = String::from_utf8_lossy(field);
    let mut md5 = None;
    let mut skip = None;
    let mut sums = String::new();
    let mut count = FRAGMENT_COUNT;
    for part in text.split(';') {
        let part = part.trim_start();
        if let Some(v) = part.strip_prefix("ISO MD5SUM = ") {
            let v: String = v.chars().take(32).collect();
            if v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()) {
                md5 = Some(v.to_ascii_lowercase());
            }
        } else if let Some(v) = part.strip_prefix("SKIPSECTORS = ") {
            skip = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("FRAGMENT SUMS = ") {
            sums = v.trim().to_string();
        } else if let Some(v) = part.strip_prefix("FRAGMENT COUNT = ") {
            count = v.trim().parse().unwrap_or(0);
        }
    }
    Some(Embedded {
        md5: md5?,
        skip_sectors: skip?,
        fragment_sums: sums,
        fragment_count: count,
    })
}

/// The running computation shared by implant and check.
struct Summer {
    total: u64,
    count: u64,
    app_start: u64,
    hash: Md5,
    previous: u64,
    /// Fragment digits computed so far, and where each checkpoint ended.
    sums: String,
    checkpoints: Vec<u64>,
}

impl Summer {
    fn new(total: u64, count: u64, pvd_offset: u64) -> Summer {
        Summer {
            total,
            count,
            app_start: pvd_offset + APPLICATION_USE as u64,
            hash: Md5::new(),
            previous: 0,
            sums: String::new(),
            checkpoints: Vec::new(),
        }
    }

    /// One 32 KiB read at `offset`.
    fn chunk(&mut self, offset: u64, data: &mut [u8]) {
        let end = offset + data.len() as u64;
        let app_end = self.app_start + APPLICATION_USE_LEN as u64;
        if offset < app_end && end > self.app_start {
            let a = self.app_start.max(offset) - offset;
            let b = app_end.min(end) - offset;
            data[a as usize..b as usize].fill(b' ');
        }
        self.hash.update(&*data);
        if self.count == 0 {
            return;
        }
        let current = offset * (self.count + 1) / self.total;
        if current != self.previous {
            let digest = self.hash.clone().finalize();
            let per = FRAGMENT_SUM_LEN / self.count as usize;
            for b in digest.iter().take(per) {
                let hex = format!("{b:x}");
                self.sums.push(hex.chars().next().unwrap_or('0'));
            }
            self.checkpoints.push(end);
            self.previous = current;
        }
    }

    /// Hashes the volume from its start. Reads are large (fewer system
    /// calls) but fed to `chunk` 32 KiB at a time, so fragment boundaries
    /// are those of isomd5sum. With `follow`, the image is still being
    /// written (see `read_window`).
    fn run(
        &mut self,
        file: &File,
        path: &Path,
        follow: Option<&Follow>,
        mut stop: impl FnMut(&Summer) -> bool,
    ) -> Result<()> {
        let total = self.total;
        // A reader thread fills the next buffers while this one hashes:
        // MD5 is the slow part and cannot be split, so the reads (and any
        // wait for the writer) should never stand in its way.
        std::thread::scope(|scope| {
            let (full_tx, full_rx) = mpsc::sync_channel::<Result<(u64, Vec<u8>)>>(READ_AHEAD);
            let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
            for _ in 0..=READ_AHEAD {
                // Cannot fail: the receiver is right here.
                let _ = empty_tx.send(vec![0u8; READ as usize]);
            }
            scope.spawn(move || {
                let mut offset = 0u64;
                while offset < total {
                    // Either channel closed: the hasher stopped early.
                    let Ok(mut buf) = empty_rx.recv() else { return };
                    let n = (total - offset).min(READ);
                    buf.resize(n as usize, 0);
                    let read = read_window(file, path, follow, offset, &mut buf);
                    let failed = read.is_err();
                    if full_tx.send(read.map(|()| (offset, buf))).is_err() || failed {
                        return;
                    }
                    offset += n;
                }
            });
            for filled in full_rx {
                let (mut offset, mut buf) = filled?;
                for piece in buf.chunks_mut(CHUNK as usize) {
                    let before = self.checkpoints.len();
                    let len = piece.len() as u64;
                    self.chunk(offset, piece);
                    offset += len;
                    if self.checkpoints.len() != before && stop(self) {
                        return Ok(());
                    }
                }
                let _ = empty_tx.send(buf);
            }
            Ok(())
        })
    }
}

/// A volume being written, for a checksum computed alongside: how far the
/// writer got, and which byte ranges are copies of which files.
pub struct Follow<'a> {
    pub ready: &'a Ready,
    /// Sorted by offset, not overlapping.
    pub extents: Vec<Extent>,
    /// The extent file open now (reads go front to back, so one at a time).
    pub open: Mutex<Option<(usize, File)>>,
}

impl<'a> Follow<'a> {
    pub fn new(ready: &'a Ready, extents: Vec<Extent>) -> Follow<'a> {
        Follow {
            ready,
            extents,
            open: Mutex::new(None),
        }
    }

    fn read_extent(&self, i: usize, buf: &mut [u8], at: u64) -> Result<()> {
        let e = &self.extents[i];
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let file = match &mut *open {
            Some((j, file)) if *j == i => file,
            slot => {
                let file = File::open(&e.path).with_context(|| {
                    format!("reading {} for the media checksum", e.path.display())
                })?;
                &mut slot.insert((i, file)).1
            }
        };
        file.read_exact_at(buf, at)
            .with_context(|| format!("reading {} for the media checksum", e.path.display()))
    }
}

/// Bytes `offset..offset + len` of the volume are the first `len` bytes of
/// the file at `path`, copied unchanged.
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub path: std::path::PathBuf,
}

/// Fills `buf` with the volume's bytes at `offset`. While the volume is
/// being written (`follow`), a range that is a copy of a file is read from
/// that file, at once: it is still in the page cache, where the copy's
/// destination may not be (a reflink or an in-kernel copy leaves nothing
/// cached), and the checksum need not trail the copy. Anything else is read
/// from the volume once the writer has made it final.
fn read_window(
    file: &File,
    path: &Path,
    follow: Option<&Follow>,
    offset: u64,
    buf: &mut [u8],
) -> Result<()> {
    let end = offset + buf.len() as u64;
    let extents = follow.map_or(&[][..], |f| &f.extents[..]);
    let mut pos = offset;
    while pos < end {
        let i = extents.partition_point(|e| e.offset + e.len <= pos);
        let (stop, source) = match extents.get(i) {
            Some(e) if e.offset <= pos => ((e.offset + e.len).min(end), Some(e)),
            Some(e) => (e.offset.min(end), None),
            None => (end, None),
        };
        let piece = &mut buf[(pos - offset) as usize..(stop - offset) as usize];
        match (source, follow) {
            (Some(e), Some(f)) => f.read_extent(i, piece, pos - e.offset)?,
            _ => {
                if let Some(f) = follow {
                    if !f.ready.wait_for(stop) {
                        bail!(
                            "{}: the image was not finished, so it has no media checksum",
                            path.display()
                        );
                    }
                }
                file.read_exact_at(piece, pos)
                    .with_context(|| format!("reading {} at byte {pos}", path.display()))?
            }
        }
        pos = stop;
    }
    Ok(())
}

/// How far the image being written is final: lets the checksum follow the
/// writer (on another CPU) instead of reading everything again afterwards.
/// The writer only ever raises it, and must end with `finish` or `abandon`.
pub struct Ready {
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Ready {
    /// Bytes below `offset` are final already.
    pub fn new(offset: u64) -> Ready {
        Ready {
            state: Mutex::new((offset, false)),
            changed: Condvar::new(),
        }
    }

    /// Bytes below `offset` are final now.
    pub fn advance(&self, offset: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if offset > s.0 {
            s.0 = offset;
            self.changed.notify_all();
        }
    }

    /// Every byte is final.
    pub fn finish(&self) {
        self.advance(u64::MAX);
    }

    /// The writer failed: whoever waits gives up.
    pub fn abandon(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = true;
        self.changed.notify_all();
    }

    /// Waits until bytes below `end` are final; false if abandoned.
    fn wait_for(&self, end: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while s.0 < end && !s.1 {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.0 >= end
    }
}

/// What `implant` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Implanted {
    pub md5: String,
    pub fragment_sums: String,
}

/// Computes and writes the checksum into the volume held by `file`.
pub fn implant(file: &File, path: &Path) -> Result<Implanted> {
    let sum = sum_volume(file, path, None)?;
    write_sum(file, path, sum)
}

/// The checksum of the volume in `file`, not yet written into it. With
/// `follow`, it is computed while the volume is being written: the volume
/// descriptors must be final before this starts, file data may follow.
pub fn sum_volume(file: &File, path: &Path, follow: Option<&Follow>) -> Result<Sum> {
    let (pvd_offset, volume, _) = find_pvd(file, path)?;
    if volume <= SKIP_SECTORS * SECTOR {
        bail!(
            "{}: the ISO volume is too small for a media checksum",
            path.display()
        );
    }
    let total = volume - SKIP_SECTORS * SECTOR;
    let mut s = Summer::new(total, FRAGMENT_COUNT, pvd_offset);
    s.run(file, path, follow, |_| false)?;
    Ok(Sum {
        pvd_offset,
        md5: hex::encode(s.hash.clone().finalize()),
        fragment_sums: s.sums,
    })
}

/// A computed checksum and where it goes.
#[derive(Clone, Debug)]
pub struct Sum {
    pvd_offset: u64,
    md5: String,
    fragment_sums: String,
}

/// Writes a checksum from `sum_volume` into the volume's descriptor (the
/// field the checksum reads as blanks, so writing it changes no sum).
pub fn write_sum(file: &File, path: &Path, sum: Sum) -> Result<Implanted> {
    let text = format!(
        "ISO MD5SUM = {};SKIPSECTORS = {SKIP_SECTORS};RHLISOSTATUS=0;FRAGMENT SUMS = {};FRAGMENT COUNT = {FRAGMENT_COUNT};THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!",
        sum.md5, sum.fragment_sums
    );
    let mut field = vec![b' '; APPLICATION_USE_LEN];
    field[..text.len()].copy_from_slice(text.as_bytes());
    file.write_all_at(&field, sum.pvd_offset + APPLICATION_USE as u64)
        .with_context(|| format!("writing the media checksum to {}", path.display()))?;
    Ok(Implanted {
        md5: sum.md5,
        fragment_sums: sum.fragment_sums,
    })
}

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    Good {
        md5: String,
        checked_bytes: u64,
    },
    /// The first part found to differ: bytes `start..end`, the 1-based
    /// fragment number (`None`: the part after the last fragment sum, which
    /// only the whole MD5 covers).
    Bad {
        start: u64,
        end: u64,
        fragment: Option<u64>,
        parts: u64,
    },
}

/// Recomputes the checksum of an image file or device, stopping at the
/// first fragment that differs.
pub fn check(path: &Path) -> Result<Check> {
    let file = crate::io::open_image(path, "image")?;
    let (pvd_offset, volume, pvd) = find_pvd(&file, path)?;
    let Some(e) = read_embedded(&pvd) else {
        bail!(
            "{} carries no media checksum (ISO MD5SUM) in its volume descriptor",
            path.display()
        );
    };
    let skip = e.skip_sectors * SECTOR;
    if volume <= skip {
        bail!(
            "{}: the ISO volume is smaller than its unchecked tail",
            path.display()
        );
    }
    let total = volume - skip;
    let count = if e.fragment_count > 0
        && FRAGMENT_SUM_LEN as u64 % e.fragment_count == 0
        && e.fragment_sums.len() == FRAGMENT_SUM_LEN
    {
        e.fragment_count
    } else {
        0
    };
    let mut s = Summer::new(total, count, pvd_offset);
    let expected = e.fragment_sums.clone();
    let mut bad_fragment: Option<usize> = None;
    s.run(&file, path, None, |s| {
        let upto = s.sums.len();
        if s.sums[..upto] != expected[..upto] {
            bad_fragment = Some(s.checkpoints.len());
            true
        } else {
            false
        }
    })?;
    let parts = count + 1;
    if let Some(k) = bad_fragment {
        let start = if k >= 2 { s.checkpoints[k - 2] } else { 0 };
        return Ok(Check::Bad {
            start,
            end: s.checkpoints[k - 1],
            fragment: Some(k as u64),
            parts,
        });
    }
    let md5 = hex::encode(s.hash.finalize());
    if md5 != e.md5 {
        return Ok(Check::Bad {
            start: s.checkpoints.last().copied().unwrap_or(0),
            end: total,
            fragment: None,
            parts,
        });
    }
    Ok(Check::Good {
        md5,
        checked_bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake "volume": a PVD at sector 16 saying `sectors`, blank
    /// application use, pseudo-random data elsewhere.
    fn volume(path: &Path, sectors: u32) {
        let mut data = vec![0u8; sectors as usize * SECTOR as usize];
        let mut x = 0x1234_5678_9abc_def0u64;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let pvd = &mut data[16 * SECTOR as usize..17 * SECTOR as usize];
        pvd[0] = 1;
        pvd[1..6].copy_from_slice(b"CD001");
        pvd[80..84].copy_from_slice(&sectors.to_le_bytes());
        pvd[84..88].copy_from_slice(&sectors.to_be_bytes());
        pvd[APPLICATION_USE..APPLICATION_USE + APPLICATION_USE_LEN].fill(b' ');
        let term = &mut data[17 * SECTOR as usize..18 * SECTOR as usize];
        term[0] = 255;
        term[1..6].copy_from_slice(b"CD001");
        std::fs::write(path, data).unwrap();
    }

    #[test]
    fn implant_then_check_then_find_a_flipped_byte() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("v.iso");
        volume(&p, 1000);
        let f = File::options().read(true).write(true).open(&p).unwrap();
        let imp = implant(&f, &p).unwrap();
        assert_eq!(imp.fragment_sums.len(), 60);
        let (_, _, pvd) = find_pvd(&f, &p).unwrap();
        let e = read_embedded(&pvd).unwrap();
        assert_eq!(
            (e.md5.as_str(), e.skip_sectors, e.fragment_count),
            (imp.md5.as_str(), 15, 20)
        );
        assert!(matches!(check(&p).unwrap(), Check::Good { .. }));

        // A byte in the middle: the fragment holding it is named.
        let at = 500 * SECTOR + 7;
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x20], at).unwrap();
        match check(&p).unwrap() {
            Check::Bad {
                start,
                end,
                fragment,
                parts,
            } => {
                assert!(start <= at && at < end, "{start}..{end} misses {at}");
                assert!(fragment.is_some());
                assert_eq!(parts, 21);
            }
            good => panic!("flipped byte not found: {good:?}"),
        }
        f.write_all_at(&b, at).unwrap();
        // In the unchecked tail: still good.
        f.write_all_at(&[1], 999 * SECTOR).unwrap();
        assert!(matches!(check(&p).unwrap(), Check::Good { .. }));
    }

    /// A 1000-sector volume in `t`, open for writing, and its sum.
    fn summed_volume(t: &tempfile::TempDir) -> (std::path::PathBuf, File, Sum) {
        let p = t.path().join("v.iso");
        volume(&p, 1000);
        let f = File::options().read(true).write(true).open(&p).unwrap();
        let whole = sum_volume(&f, &p, None).unwrap();
        (p, f, whole)
    }

    #[test]
    fn a_sum_that_follows_the_writer_is_the_sum_of_the_result() {
        let t = tempfile::tempdir().unwrap();
        let (p, f, whole) = summed_volume(&t);

        // Blank the data after the descriptors, then write it back in
        // pieces, slowly, while the sum runs: a sum that read ahead of
        // `ready` would hash zeros and differ.
        let data = std::fs::read(&p).unwrap();
        let start = 18 * SECTOR;
        f.write_all_at(&vec![0u8; data.len() - start as usize], start)
            .unwrap();
        let ready = Ready::new(start);
        let follow = Follow::new(&ready, Vec::new());
        let followed = std::thread::scope(|s| {
            let h = s.spawn(|| sum_volume(&f, &p, Some(&follow)));
            for (i, piece) in data[start as usize..].chunks(100_000).enumerate() {
                std::thread::sleep(std::time::Duration::from_millis(2));
                let at = start + (i * 100_000) as u64;
                f.write_all_at(piece, at).unwrap();
                ready.advance(at + piece.len() as u64);
            }
            h.join().unwrap().unwrap()
        });
        assert_eq!(
            (&followed.md5, &followed.fragment_sums),
            (&whole.md5, &whole.fragment_sums)
        );

        // A writer that fails: the sum gives up instead of waiting forever.
        let ready = Ready::new(start);
        ready.abandon();
        let follow = Follow::new(&ready, Vec::new());
        let e = format!("{:#}", sum_volume(&f, &p, Some(&follow)).unwrap_err());
        assert!(e.contains("not finished"), "{e}");
    }

    #[test]
    fn ranges_copied_from_files_are_hashed_from_those_files_without_waiting() {
        let t = tempfile::tempdir().unwrap();
        let (p, f, whole) = summed_volume(&t);

        // Two "files" inside the volume, saved aside, then blanked in the
        // volume: the writer never gets to them (nor to anything after
        // the first), yet the sum is right, read from the files.
        let data = std::fs::read(&p).unwrap();
        let (a, a_len) = (40 * SECTOR, 10 * SECTOR + 100);
        let (b, b_len) = (60 * SECTOR, 940 * SECTOR - 60 * SECTOR);
        let save = |name: &str, at: u64, len: u64| {
            let q = t.path().join(name);
            std::fs::write(&q, &data[at as usize..(at + len) as usize]).unwrap();
            Extent {
                offset: at,
                len,
                path: q,
            }
        };
        let extents = vec![save("a", a, a_len), save("b", b, b_len)];
        f.write_all_at(&vec![0u8; (a_len) as usize], a).unwrap();
        f.write_all_at(&vec![0u8; (b_len) as usize], b).unwrap();
        let ready = Ready::new(a);
        let follow = Follow::new(&ready, extents);
        let followed = std::thread::scope(|s| {
            let h = s.spawn(|| sum_volume(&f, &p, Some(&follow)));
            // Only the gaps between and after the files are made final.
            std::thread::sleep(std::time::Duration::from_millis(20));
            ready.finish();
            h.join().unwrap().unwrap()
        });
        assert_eq!(followed.md5, whole.md5);
        assert_eq!(followed.fragment_sums, whole.fragment_sums);

        // A file shorter than its range: an error naming it.
        let short = t.path().join("short");
        std::fs::write(&short, b"tiny").unwrap();
        let ready = Ready::new(u64::MAX);
        let follow = Follow::new(
            &ready,
            vec![Extent {
                offset: a,
                len: a_len,
                path: short.clone(),
            }],
        );
        let e = format!("{:#}", sum_volume(&f, &p, Some(&follow)).unwrap_err());
        assert!(e.contains(&format!("reading {}", short.display())), "{e}");
    }

    #[test]
    fn no_checksum_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("v.iso");
        volume(&p, 100);
        let e = format!("{:#}", check(&p).unwrap_err());
        assert!(e.contains("no media checksum"), "{e}");
    }
}
