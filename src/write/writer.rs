//! Writing one image to several targets at once, and reading it back.
//!
//! One reader decompresses the image once into large aligned chunks taken
//! from a fixed pool; each chunk goes (shared, not copied) to one writer
//! thread per target and to a hasher. Memory is the pool (a few chunks
//! per target), whatever the targets' speeds: a slow stick holds chunks,
//! the pool runs dry and the reader waits. A target that fails drops its
//! queue and the others go on.
//!
//! Each writer: zeroes the first and last MiB (stale partition tables must
//! not survive a failed write), writes everything after the first MiB,
//! syncs, then writes the first MiB and syncs again, so the stick only
//! becomes bootable once all the rest is on it. On any failure, including
//! Ctrl-C, the first MiB is zeroed again.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::libc;
use sha2::{Digest, Sha256};

use super::devices::{dev_id, Disk};
use super::safety::{Kind, Target};
use super::source::{Format, Source};
use crate::interrupt;
use crate::progress::{Bar, Group, Progress};
use crate::system::blockdev;

/// The part of the image written last.
pub const HEAD: usize = 1 << 20;
/// Chunk size: dd's `bs=4M`, the usual advice for sticks. Large enough
/// that the block layer keeps the device's queue full and system calls
/// are few; the kernel splits it to what the device takes.
pub const CHUNK: usize = 4 << 20;
/// Chunks in flight per target (16 MiB a stick): enough for the reader to
/// run ahead of a writer, and for one stick's pause (flash housekeeping)
/// not to stall the others at once.
pub const POOL_PER_TARGET: usize = 4;
/// Buffer alignment for O_DIRECT (covers 4 KiB sectors and pages).
const ALIGN: usize = 64 << 10;

/// A heap buffer whose start is ALIGN-aligned, without unsafe code: a
/// slightly larger Vec and an offset into it.
pub struct AlignedBuf {
    mem: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let mem = vec![0u8; len + ALIGN];
        let off = mem.as_ptr().align_offset(ALIGN);
        AlignedBuf { mem, off, len }
    }
    pub fn as_slice(&self) -> &[u8] {
        &self.mem[self.off..self.off + self.len]
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.mem[self.off..self.off + self.len]
    }
}

/// A piece of the image at `offset`; its buffer goes back to the pool when
/// the last target is done with it.
struct Chunk {
    offset: u64,
    len: usize,
    buf: Option<AlignedBuf>,
    pool: Sender<AlignedBuf>,
}

impl Chunk {
    fn data(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.as_slice()[..self.len])
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            // The reader may be gone already; then the buffer is just freed.
            let _ = self.pool.send(b);
        }
    }
}

#[derive(Clone)]
enum Msg {
    Data(Arc<Chunk>),
    /// The whole image was sent: its length.
    End(u64),
    /// The reader stopped: why.
    Abort(String),
}

/// A value one thread sets and others wait for.
struct Slot<T> {
    value: Mutex<Option<T>>,
    ready: Condvar,
}

impl<T: Clone> Slot<T> {
    fn new() -> Self {
        Slot {
            value: Mutex::new(None),
            ready: Condvar::new(),
        }
    }
    fn set(&self, v: T) {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        *g = Some(v);
        self.ready.notify_all();
    }
    fn get(&self) -> T {
        let mut g = self.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = g.as_ref() {
                return v.clone();
            }
            g = self.ready.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// What happened to one target.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DeviceReport {
    /// As shown to the user ("/dev/sdb", or "by-id-name (/dev/sdb)").
    pub device: String,
    pub ok: bool,
    pub bytes_written: u64,
    pub write_seconds: f64,
    pub verify_seconds: Option<f64>,
    pub verified: bool,
    /// O_DIRECT, or buffered writes (file systems or devices without it).
    pub direct_io: bool,
    pub error: Option<String>,
    /// After a failure: whether the first MiB is now zero (so the target
    /// does not boot a half-written image).
    pub first_mib_zeroed: bool,
    /// Things worth knowing that are not failures (partition table not
    /// re-read).
    pub notes: Vec<String>,
}

/// An opened target.
pub struct Sink {
    shown: String,
    label: String,
    /// The first descriptor: exclusive on a block device (held until the
    /// end, so nothing mounts the stick under us, and the one the kernel
    /// accepts BLKRRPART on while the claim stands), O_DIRECT when the
    /// target allowed it.
    main: File,
    /// Whether writes through `main` bypass the page cache; false after a
    /// refusal at open or at the first write.
    direct: bool,
    /// A second, buffered descriptor when `main` is O_DIRECT: unaligned
    /// tails, and everything after O_DIRECT is given up.
    plain: Option<File>,
    /// Bytes the target can hold (block devices).
    capacity: Option<u64>,
    /// O_DIRECT offset/length granularity.
    align: u64,
    is_block: bool,
    /// Where the bytes go: the device, or a file target's temporary file.
    path: PathBuf,
    /// A file target: the name the temporary file takes once it is
    /// complete and verified.
    publish: Option<PathBuf>,
    /// Buffered mode: ranges whose writeback was started, oldest first.
    pending: VecDeque<(u64, u64)>,
}

/// Open a target for writing. Block devices are opened exclusively
/// (O_EXCL), which the kernel refuses while anything has them mounted or
/// claimed, and which keeps auto-mounters off them until we are done.
pub fn open(target: &Target) -> Result<Sink> {
    let shown = target.shown();
    let (is_block, capacity, align) = match &target.kind {
        Kind::Block(d) => (true, Some(d.size), d.logical_block.max(512)),
        Kind::File { .. } => (false, None, 4096),
    };
    let (path, publish) = where_to_write(target)?;
    let label = target
        .disk()
        .map(|d| d.name.clone())
        .or_else(|| {
            target
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| shown.clone());
    let explain = |e: io::Error| -> anyhow::Error {
        match e.raw_os_error() {
            Some(libc::EBUSY) => anyhow!(
                "{shown}: busy: something holds it open (a mount, RAID, LVM or device-mapper)"
            ),
            Some(libc::EROFS) | Some(libc::EACCES) if is_block => anyhow!("{shown}: read-only"),
            _ => anyhow::Error::new(e).context(format!("{shown}: opening for writing")),
        }
    };
    let (main, direct) = open_first(&path, is_block).map_err(explain)?;
    if let Kind::Block(d) = &target.kind {
        same_device(&main, d, &shown)?;
    }
    let plain = if direct {
        // Not exclusive: our own claim holds the device, and a plain open
        // is allowed alongside it.
        let second = OpenOptions::new().read(true).write(true).open(&path);
        if second.is_err() && !is_block {
            let _ = std::fs::remove_file(&path);
        }
        Some(second.map_err(explain)?)
    } else {
        None
    };
    Ok(Sink {
        shown,
        label,
        main,
        direct,
        plain,
        capacity,
        align,
        is_block,
        path,
        publish,
        pending: VecDeque::new(),
    })
}

/// Where the bytes go, and for a file the name they take when complete.
/// A file is written beside itself and renamed when complete: an old file
/// stays whole until then, and a failure leaves nothing partial.
fn where_to_write(target: &Target) -> Result<(PathBuf, Option<PathBuf>)> {
    match &target.kind {
        Kind::Block(_) => Ok((target.path.clone(), None)),
        Kind::File { exists } => {
            let publish = published_name(&target.path, *exists)?;
            Ok((partial_name(&publish)?, Some(publish)))
        }
    }
}

/// The first descriptor: O_DIRECT where the target allows it (the bool),
/// exclusive on a block device, a new file otherwise.
fn open_first(path: &Path, is_block: bool) -> io::Result<(File, bool)> {
    let opts = |direct: bool| {
        let mut o = OpenOptions::new();
        // create_new: a stale partial file of another run is not ours.
        o.read(true).write(true).create_new(!is_block);
        let mut flags = 0;
        if is_block {
            flags |= libc::O_EXCL;
        }
        if direct {
            flags |= libc::O_DIRECT;
        }
        o.custom_flags(flags);
        o
    };
    match opts(true).open(path) {
        Ok(f) => Ok((f, true)),
        // File systems without O_DIRECT say EINVAL at open (having made
        // the file: open it again without).
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            if !is_block {
                let _ = std::fs::remove_file(path);
            }
            Ok((opts(false).open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// The stick may have been swapped between the checks and now (the
/// question can wait for minutes): make sure the opened device is the one
/// that was checked.
fn same_device(main: &File, d: &Disk, shown: &str) -> Result<()> {
    let meta = main
        .metadata()
        .with_context(|| format!("{shown}: reading the opened device"))?;
    if dev_id(meta.rdev()) != d.dev || blockdev::size(main) != Ok(d.size) {
        bail!("{shown}: changed since it was checked (unplugged or replaced?)");
    }
    Ok(())
}

/// The name a file target ends up with: an existing file's real path, so a
/// symlink to it keeps pointing at the new image.
fn published_name(target: &Path, exists: bool) -> Result<PathBuf> {
    if exists {
        return std::fs::canonicalize(target)
            .with_context(|| format!("{}: resolving", target.display()));
    }
    Ok(target.to_path_buf())
}

/// `.NAME.ucl-partial` beside `publish`: hidden, and on the same file
/// system, so the rename is atomic.
fn partial_name(publish: &Path) -> Result<PathBuf> {
    let name = publish
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file name", publish.display()))?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(".ucl-partial");
    Ok(publish.with_file_name(partial))
}

impl Sink {
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Write `data` at `offset` (a multiple of ALIGN): the aligned part with
    /// O_DIRECT, the rest buffered.
    fn put(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        if self.direct {
            let n = data.len() / self.align as usize * self.align as usize;
            if n > 0 {
                match self.main.write_all_at(&data[..n], offset) {
                    Ok(()) => done = n,
                    // Some devices or file systems accept O_DIRECT at open
                    // and refuse it on write: go on buffered.
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = false,
                    Err(e) => return Err(e),
                }
            }
        }
        if done < data.len() {
            let off = offset + done as u64;
            let rest = &data[done..];
            self.plain().write_all_at(rest, off)?;
            if rest.len() >= HEAD {
                self.pace(off, rest.len() as u64);
            }
        }
        Ok(())
    }

    /// The descriptor for buffered writes.
    fn plain(&self) -> &File {
        self.plain.as_ref().unwrap_or(&self.main)
    }

    /// Buffered writes land in the page cache; without this the bar would
    /// race to 100% and the final sync would then sit for minutes on a
    /// slow stick. Start writeback of each range at once and wait for the
    /// one written two chunks ago, so dirty memory stays bounded and the
    /// bar follows the device.
    fn pace(&mut self, off: u64, len: u64) {
        blockdev::start_writeback(self.plain(), off, len);
        self.pending.push_back((off, len));
        if self.pending.len() > 2 {
            if let Some((o, l)) = self.pending.pop_front() {
                blockdev::wait_writeback(self.plain(), o, l);
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.pending.clear();
        if let Some(p) = &self.plain {
            p.sync_all()?;
        }
        self.main.sync_all()
    }

    /// A file target, complete and verified: take its name (and an old
    /// file's permissions).
    fn publish(&self) -> Result<()> {
        let Some(to) = &self.publish else {
            return Ok(());
        };
        if let Ok(old) = std::fs::metadata(to) {
            std::fs::set_permissions(&self.path, old.permissions())
                .with_context(|| format!("{}: keeping the old file's permissions", self.shown))?;
        }
        std::fs::rename(&self.path, to)
            .with_context(|| format!("{}: renaming the written file into place", self.shown))?;
        // The rename is only durable once the folder is synced.
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// A file target that failed: its partial file goes, the target is
    /// as it was.
    fn discard(&self, notes: &mut Vec<String>) {
        match std::fs::remove_file(&self.path) {
            Ok(()) => notes.push(format!("nothing written: {} is unchanged", self.shown)),
            Err(e) => notes.push(format!(
                "could not remove the partial file {}: {e}",
                self.path.display()
            )),
        }
    }

    /// Zero the first MiB (and, on a block device, the last MiB, where a
    /// backup GPT lives) and make it stick.
    fn wipe(&mut self, tail: bool) -> io::Result<()> {
        let zeros = AlignedBuf::new(HEAD);
        let head = self.capacity.map_or(HEAD as u64, |c| c.min(HEAD as u64));
        self.put(&zeros.as_slice()[..head as usize], 0)?;
        if let (true, Some(cap)) = (tail, self.capacity) {
            if cap >= 2 * HEAD as u64 {
                let start = (cap - HEAD as u64) / self.align * self.align;
                self.put(&zeros.as_slice()[..(cap - start) as usize], start)?;
            }
        }
        self.sync()
    }

    /// Ask the kernel to read the new partition table (on the exclusive
    /// descriptor: the kernel refuses it from any other while the claim is
    /// held); a note for the user when it would not.
    fn reread_partitions(&self) -> Option<String> {
        if !self.is_block {
            return None;
        }
        let last = blockdev::reread_partitions(&self.main).err()?;
        Some(format!(
            "the kernel did not re-read the partition table ({}); unplug and replug the stick",
            last.desc()
        ))
    }
}

/// Write the image to every sink, then read each back. Never fails as a
/// whole: every target gets its own report.
///
/// A plain image going to one target is written by the reader itself, the
/// way dd does it: there is nothing to decompress while the device
/// writes, and a hand-over between threads per chunk only costs (most
/// under load, when a woken thread waits for a CPU). Compressed images,
/// and several targets, get a writer thread per target.
pub fn run(
    source: &Source,
    sinks: Vec<Sink>,
    verify: bool,
    progress: &Progress,
) -> (Vec<DeviceReport>, Option<String>) {
    let group = progress.group();
    let inline = source.format == Format::Raw && sinks.len() == 1;
    let (pool_tx, pool_rx) = mpsc::channel();
    // Inline without a hasher, one buffer is all there is to use (and it
    // stays in the cache, as dd's does).
    let pool = if inline && !verify {
        1
    } else {
        POOL_PER_TARGET * sinks.len().max(1)
    };
    for _ in 0..pool {
        let _ = pool_tx.send(AlignedBuf::new(CHUNK));
    }
    let image_digest: Slot<Option<[u8; 32]>> = Slot::new();
    let mut reports = Vec::new();
    let mut image_sha = None;
    std::thread::scope(|s| {
        // One queue per threaded target, then the hasher's.
        let mut queues: Vec<Option<SyncSender<Msg>>> = Vec::new();
        let mut workers = Vec::new();
        let mut inline_writer = None;
        let mut sinks = sinks;
        if inline {
            if let Some(sink) = sinks.pop() {
                let mut w = Writer::new(sink, source.size, &group);
                w.begin();
                inline_writer = Some(w);
            }
        }
        let threaded = sinks.len();
        for sink in sinks {
            let (tx, rx) = mpsc::sync_channel(pool + 2);
            queues.push(Some(tx));
            let group = &group;
            let digest = &image_digest;
            let size = source.size;
            workers.push(s.spawn(move || {
                let mut w = Writer::new(sink, size, group);
                w.begin();
                for msg in rx {
                    if !w.feed(msg) {
                        break;
                    }
                }
                w.finish(verify, digest)
            }));
        }
        let hasher = verify.then(|| {
            let (tx, rx) = mpsc::sync_channel(pool + 2);
            queues.push(Some(tx));
            let digest = &image_digest;
            s.spawn(move || digest.set(hash_stream(rx)))
        });
        read_image(source, pool_tx, pool_rx, |msg| {
            for q in queues.iter_mut() {
                if let Some(tx) = q {
                    if tx.send(msg.clone()).is_err() {
                        *q = None;
                    }
                }
            }
            match inline_writer.as_mut() {
                Some(w) => w.feed(msg),
                None => queues[..threaded].iter().any(Option::is_some),
            }
        });
        drop(queues);
        if let Some(h) = hasher {
            if h.join().is_err() {
                image_digest.set(None);
            }
        } else {
            image_digest.set(None);
        }
        if let Some(w) = inline_writer {
            reports.push(w.finish(verify, &image_digest));
        }
        for w in workers {
            reports.push(w.join().unwrap_or_else(|_| DeviceReport {
                error: Some("writer thread panicked".into()),
                ..Default::default()
            }));
        }
        image_sha = image_digest.get().map(hex::encode);
    });
    (reports, image_sha)
}

/// The reader: fill chunks from the pool and hand each to `deliver`,
/// which answers whether any target still wants more. Ends with
/// Msg::End, or Msg::Abort when reading fails, is interrupted or nobody
/// is left.
fn read_image(
    source: &Source,
    pool_tx: Sender<AlignedBuf>,
    pool_rx: Receiver<AlignedBuf>,
    mut deliver: impl FnMut(Msg) -> bool,
) {
    let mut reader = match source.reader() {
        Ok(r) => r,
        Err(e) => return stop(&mut deliver, format!("{e:#}")),
    };
    let shown = source.path.display();
    let mut offset: u64 = 0;
    loop {
        let mut buf = loop {
            if interrupt::interrupted() {
                return stop(&mut deliver, "interrupted".into());
            }
            match pool_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(b) => break b,
                Err(RecvTimeoutError::Timeout) => continue,
                // Cannot happen while we hold pool_tx; stop rather than spin.
                Err(RecvTimeoutError::Disconnected) => {
                    return stop(&mut deliver, "internal error: buffer pool closed".into())
                }
            }
        };
        // Every chunk but the last is full, so offsets stay aligned for
        // O_DIRECT.
        let n = match crate::io::read_full(&mut reader, buf.as_mut_slice()) {
            Ok(n) => n,
            Err(e) => return stop(&mut deliver, format!("reading image {shown}: {e}")),
        };
        if let Some(size) = source.size {
            if offset + n as u64 > size {
                return stop(
                    &mut deliver,
                    format!("image {shown} is larger than the {size} bytes it announced"),
                );
            }
        }
        if n == 0 {
            if offset == 0 {
                return stop(&mut deliver, format!("image {shown} holds no data"));
            }
            if let Some(size) = source.size.filter(|&s| s != offset) {
                return stop(
                    &mut deliver,
                    format!("image {shown} ended after {offset} of the {size} bytes it announced"),
                );
            }
            deliver(Msg::End(offset));
            return;
        }
        let chunk = Arc::new(Chunk {
            offset,
            len: n,
            buf: Some(buf),
            pool: pool_tx.clone(),
        });
        offset += n as u64;
        if !deliver(Msg::Data(chunk)) {
            // Every target failed: reading on just to hash is pointless.
            return stop(&mut deliver, "no target left".into());
        }
    }
}

fn stop(deliver: &mut impl FnMut(Msg) -> bool, why: String) {
    deliver(Msg::Abort(why));
}

fn hash_stream(rx: Receiver<Msg>) -> Option<[u8; 32]> {
    let mut h = Sha256::new();
    for msg in rx {
        match msg {
            Msg::Data(c) => h.update(c.data()),
            Msg::End(_) => return Some(h.finalize().into()),
            Msg::Abort(_) => return None,
        }
    }
    None
}

/// One target being written, fed one message at a time by its own thread
/// or by the reader: wipe, chunks (the first MiB kept back), sync, first
/// MiB, sync; then `finish` verifies and reports.
struct Writer {
    sink: Sink,
    head: AlignedBuf,
    head_len: usize,
    bar: Bar,
    report: DeviceReport,
    started: Instant,
    /// For the read-back's bar, drawn with the others.
    group: Group,
    /// None while writing; the image length once all is synced, or the
    /// first error.
    outcome: Option<Result<u64>>,
}

impl Writer {
    fn new(sink: Sink, size: Option<u64>, group: &Group) -> Writer {
        let report = DeviceReport {
            device: sink.shown.clone(),
            direct_io: sink.direct,
            ..Default::default()
        };
        Writer {
            bar: group.bytes(&format!("{} write", sink.label), size),
            sink,
            head: AlignedBuf::new(HEAD),
            head_len: 0,
            report,
            started: Instant::now(),
            group: group.clone(),
            outcome: None,
        }
    }

    fn begin(&mut self) {
        if let Err(e) = self.sink.wipe(true) {
            let shown = &self.sink.shown;
            let e =
                anyhow::Error::new(e).context(format!("{shown}: clearing the old partition table"));
            self.outcome = Some(Err(e));
        }
    }

    /// Take one message; false once this target wants no more (done or
    /// failed).
    fn feed(&mut self, msg: Msg) -> bool {
        if self.outcome.is_some() {
            return false;
        }
        let result = match msg {
            Msg::Data(chunk) => match self.chunk(&chunk) {
                Ok(()) => return true,
                Err(e) => Err(e),
            },
            Msg::End(total) => self.end(total),
            Msg::Abort(why) => Err(anyhow!("{why}")),
        };
        self.outcome = Some(result);
        false
    }

    fn chunk(&mut self, chunk: &Chunk) -> Result<()> {
        let shown = &self.sink.shown;
        let data = chunk.data();
        let end = chunk.offset + data.len() as u64;
        if let Some(cap) = self.sink.capacity {
            if end > cap {
                bail!("{shown}: device full after {cap} bytes (the image is larger)");
            }
        }
        // The first MiB waits in memory until the very end.
        let mut skip = 0;
        if chunk.offset < HEAD as u64 {
            skip = (HEAD - chunk.offset as usize).min(data.len());
            let at = chunk.offset as usize;
            self.head.as_mut_slice()[at..at + skip].copy_from_slice(&data[..skip]);
            self.head_len = self.head_len.max(at + skip);
        }
        if skip < data.len() {
            let at = chunk.offset + skip as u64;
            if let Err(e) = self.sink.put(&data[skip..], at) {
                return Err(full_or(e, &self.sink.shown, chunk.offset));
            }
        }
        self.report.bytes_written = end;
        self.bar.inc(data.len() as u64);
        if interrupt::interrupted() {
            bail!("interrupted");
        }
        Ok(())
    }

    /// Everything but the first MiB is written: sync, then the first MiB.
    fn end(&mut self, total: u64) -> Result<u64> {
        let shown = self.sink.shown.clone();
        self.sink
            .sync()
            .with_context(|| format!("{shown}: syncing"))?;
        if !self.sink.is_block {
            // A file that held something longer before ends where the
            // image does.
            self.sink
                .main
                .set_len(total)
                .with_context(|| format!("{shown}: truncating to the image size"))?;
        }
        if interrupt::interrupted() {
            bail!("interrupted");
        }
        let head_len = self.head_len;
        let head = std::mem::replace(&mut self.head, AlignedBuf::new(0));
        self.sink
            .put(&head.as_slice()[..head_len], 0)
            .map_err(|e| full_or(e, &shown, 0))
            .with_context(|| format!("{shown}: writing the first MiB"))?;
        self.sink
            .sync()
            .with_context(|| format!("{shown}: syncing"))?;
        Ok(total)
    }

    /// Re-read the partition table, verify, and on any failure zero the
    /// first MiB again.
    fn finish(self, verify: bool, image_digest: &Slot<Option<[u8; 32]>>) -> DeviceReport {
        let Writer {
            mut sink,
            bar,
            mut report,
            started,
            outcome,
            group,
            ..
        } = self;
        bar.finish();
        report.write_seconds = started.elapsed().as_secs_f64();
        report.direct_io = report.direct_io && sink.direct;
        let written =
            outcome.unwrap_or_else(|| Err(anyhow!("{}: the image reader stopped", sink.shown)));
        let result = written.and_then(|total| {
            if let Some(note) = sink.reread_partitions() {
                report.notes.push(note);
            }
            if !verify {
                return Ok(());
            }
            let started = Instant::now();
            let mut bar = group.bytes(&format!("{} verify", sink.label), Some(total));
            let read_back = read_back(&sink, total, &mut bar);
            bar.finish();
            report.verify_seconds = Some(started.elapsed().as_secs_f64());
            let read_back = read_back?;
            match image_digest.get() {
                Some(image) if image == read_back => {
                    report.verified = true;
                    Ok(())
                }
                Some(image) => bail!(
                    "{}: verification failed: read back sha256 {}, image {}",
                    sink.shown,
                    hex::encode(read_back),
                    hex::encode(image)
                ),
                None => bail!("{}: no image checksum to verify against", sink.shown),
            }
        });
        let result = result.and_then(|()| sink.publish());
        match result {
            Ok(()) => report.ok = true,
            Err(e) if sink.publish.is_some() => {
                report.error = Some(format!("{e:#}"));
                sink.discard(&mut report.notes);
            }
            Err(e) => {
                report.error = Some(format!("{e:#}"));
                // Whatever went wrong, a stick that is not known good must
                // not boot: zero its first MiB again.
                match sink.wipe(false) {
                    Ok(()) => report.first_mib_zeroed = true,
                    Err(w) => report
                        .notes
                        .push(format!("could not zero the first MiB: {w}")),
                }
            }
        }
        report
    }
}

fn full_or(e: io::Error, shown: &str, offset: u64) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::WriteZero {
        anyhow!("{shown}: device full after {offset} bytes")
    } else {
        anyhow::Error::new(e).context(format!("{shown}: writing at byte {offset}"))
    }
}

/// Read `total` bytes back from the target, bypassing the page cache, and
/// hash them. Reading and hashing overlap: a helper thread reads into a
/// few buffers while this one hashes.
fn read_back(sink: &Sink, total: u64, bar: &mut Bar) -> Result<[u8; 32]> {
    let shown = &sink.shown;
    let (file, direct) = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&sink.path)
    {
        Ok(f) => (f, true),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let f = File::open(&sink.path)
                .with_context(|| format!("{shown}: opening for verification"))?;
            (f, false)
        }
        Err(e) => return Err(e).with_context(|| format!("{shown}: opening for verification")),
    };
    if !direct {
        // The page cache still holds what we wrote; drop it (clean after
        // the sync) so the bytes really come from the device.
        let _ = nix::fcntl::posix_fadvise(
            &file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    let align = sink.align;
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(AlignedBuf, usize)>>(2);
    let (empty_tx, empty_rx) = mpsc::channel::<AlignedBuf>();
    for _ in 0..3 {
        let _ = empty_tx.send(AlignedBuf::new(CHUNK));
    }
    // `move`: when hashing stops early, the channels drop with this
    // closure, which ends the helper before the scope waits for it.
    std::thread::scope(move |s| -> Result<[u8; 32]> {
        let mut hasher = Sha256::new();
        s.spawn(move || {
            let mut off = 0u64;
            while off < total {
                let Ok(mut buf) = empty_rx.recv() else { return };
                // O_DIRECT reads whole sectors; a block device always has
                // the whole last sector, a file just returns short.
                let want = (total - off).div_ceil(align) * align;
                let want = want.min(CHUNK as u64) as usize;
                let r = crate::io::read_full_at(&file, &mut buf.as_mut_slice()[..want], off);
                let failed = r.is_err();
                if full_tx.send(r.map(|n| (buf, n))).is_err() || failed {
                    return;
                }
                off += want as u64;
            }
        });
        let mut off = 0u64;
        while off < total {
            if interrupt::interrupted() {
                bail!("interrupted");
            }
            let (buf, n) = full_rx
                .recv()
                .map_err(|_| anyhow!("{shown}: the read-back stopped"))?
                .with_context(|| format!("{shown}: reading back at byte {off}"))?;
            let useful = ((total - off) as usize).min(n).min(CHUNK);
            if useful == 0 {
                bail!("{shown}: reads back only {off} of {total} bytes");
            }
            hasher.update(&buf.as_slice()[..useful]);
            bar.inc(useful as u64);
            off += useful as u64;
            let _ = empty_tx.send(buf);
        }
        Ok(hasher.finalize().into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [HEAD, CHUNK, 4096] {
            let b = AlignedBuf::new(len);
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.as_slice().len(), len);
        }
    }

    #[test]
    fn chunks_go_back_to_the_pool() {
        let (tx, rx) = mpsc::channel();
        let c = Arc::new(Chunk {
            offset: 0,
            len: 3,
            buf: Some(AlignedBuf::new(4096)),
            pool: tx,
        });
        let c2 = Arc::clone(&c);
        drop(c);
        assert!(rx.try_recv().is_err(), "still shared");
        assert_eq!(c2.data().len(), 3);
        drop(c2);
        assert!(rx.try_recv().is_ok());
    }
}
