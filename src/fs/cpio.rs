//! The `ramdisk` output: the whole customised root packed as one newc cpio
//! archive, compressed, which the kernel unpacks into its rootfs (tmpfs)
//! before running the root's own `/init` (systemd). The same idea as
//! mkosi's `Format=cpio` and diskimage-builder's ramdisk output, written
//! in-process: the tree is walked once, sorted, and every entry streamed
//! straight into the compressor and the output file (no staging copy, file
//! contents read in chunks).
//!
//! The archive follows what the kernel's unpacker (init/initramfs.c) and
//! its own generator (usr/gen_init_cpio.c) do:
//!
//! * newc ("070701") headers, 110 bytes, then the name and its NUL padded
//!   to 4 bytes, then the data padded to 4 bytes; a `TRAILER!!!` entry,
//!   then zeros to a multiple of 512 bytes as gen_init_cpio and GNU cpio
//!   write (the kernel skips zero padding between archives; compressed, the
//!   padding costs nothing).
//! * Names relative to the root ("etc/fstab"), the root itself as ".";
//!   sorted by bytes, so parents precede children (`find . | LC_ALL=C sort`
//!   order). The kernel refuses names and symlink targets longer than
//!   PATH_MAX, so such a path is an error here rather than a file missing
//!   at boot.
//! * Reproducible: inode numbers are assigned 1, 2, ... in archive order,
//!   the filesystem's device number is 0, directory link counts are
//!   computed from the archive (2 + subdirectories) and a file's link
//!   count is the number of its names in the archive, so nothing of the
//!   host filesystem leaks in; mtimes are clamped to SOURCE_DATE_EPOCH.
//!   Owners (numeric), modes and device numbers are the root's.
//! * Hard links, the newc way: every name of a regular file carries the
//!   same inode number and link count, and the data goes with the *last*
//!   name, the others having size 0, as gen_init_cpio ("data goes on last
//!   link") and GNU cpio do. The kernel links each later name to the first
//!   one it saw (`maybe_link`: same ino/major/minor/file type, nlink >= 2)
//!   and opens it without O_TRUNC, so it would also accept the data on the
//!   first name; GNU `cpio -i` defers zero-sized links until it sees the
//!   one with data, so the last name is what both read correctly. The
//!   kernel links only regular files: hard-linked symlinks or device nodes
//!   are archived as independent entries.
//! * Device nodes and FIFOs are kept: the kernel creates them with mknod,
//!   and a root made by debootstrap has a few static nodes in /dev that
//!   matter before devtmpfs is mounted. Sockets are skipped: a socket file
//!   is only a name left behind by a process that listened during the
//!   build; nothing answers on it after boot, and services refuse or
//!   replace stale ones (tar skips them too).
//! * Extended attributes (file capabilities, SELinux labels, ACLs) cannot
//!   be carried: newc has no place for them and the kernel's unpacker sets
//!   none. A root that needs them (e.g. ping's cap_net_raw) must set them
//!   at boot, or use the `hybrid` output.
//! * Other filesystems mounted below the root are not entered: the mount
//!   point's directory entry is kept, its contents are not (`find -xdev`,
//!   which dib and mkosi use for /proc, /sys and /dev).
//!
//! Compression: the kernel must decompress it, so zstd frames without long
//! windows (levels up to 19) or xz with CRC32 checks (the kernel's xz
//! decoder has no CRC64 or SHA-256). Both run multithreaded, and both give
//! the same bytes for any number of threads (libzstd for nbWorkers >= 1,
//! liblzma's block encoder for a fixed block size), so the output does not
//! depend on the machine's CPU count.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::interrupt;
use crate::io::read_full;

/// The default zstd level. Measured with `pack` on the Debian 12 test base
/// root (scripts/make-test-base: debootstrap minbase + kernel, dracut,
/// grub, shim; 14 446 entries, 616 MiB of cpio), 2 vCPUs (KVM), libzstd
/// 1.5.7 with 2 workers, tree in the page cache. CPU is user + system time
/// of the whole process (other work shared the machine, so wall times
/// varied; on the idle machine level 3 took 1.3 s wall, level 9 4.6 s,
/// no compression 0.6 s):
///
/// | level | CPU    | output    |
/// | ----- | ------ | --------- |
/// | 1     | 1.6 s  | 191.8 MiB |
/// | 2     | 1.8 s  | 178.7 MiB |
/// | 3     | 2.5 s  | 168.0 MiB |
/// | 4     | 3.0 s  | 166.7 MiB |
/// | 5     | 4.6 s  | 161.9 MiB |
/// | 6     | 6.0 s  | 155.6 MiB |
/// | 7     | 7.1 s  | 154.3 MiB |
/// | 8     | 9.3 s  | 151.8 MiB |
/// | 9     | 9.0 s  | 140.2 MiB |
/// | 10    | 14.5 s | 139.5 MiB |
/// | 11    | 17.9 s | 139.1 MiB |
/// | 15    | 87 s   | 138.0 MiB |
/// | 19    | 297 s  | 123.4 MiB |
/// | xz -6 | 303 s  | 116.1 MiB |
///
/// Level 9 is the knee: 17 % smaller than level 3 (28 MiB) for 6.5 s
/// more CPU (3.3 s of wall on two CPUs), where every level past it up to
/// 15 gains 1 % for 1.6 to 10 times the time, and 19 another 12 % for 33
/// times. A ramdisk is built once and booted many times (Ironic boots its
/// deploy ramdisk for inspection, cleaning and every deployment, over the
/// provisioning network), and it sits in memory compressed while the
/// kernel unpacks it, so the smaller file is worth seconds of the build.
/// Decompression speed barely depends on the level, and level 9's window
/// (4 MiB) is small for the kernel's decompressor. `--level 19`
/// or xz for builds that ship widely.
pub const DEFAULT_ZSTD_LEVEL: i32 = 9;

/// The most the kernel's unpacker takes in one name or symlink target,
/// with its NUL (init/initramfs.c: PATH_MAX).
const PATH_MAX: usize = 4096;

/// newc header length: magic + 13 eight-digit hex fields.
const HEADER: usize = 110;

const TRAILER: &[u8] = b"TRAILER!!!";

/// Read chunk for file contents.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd frames, levels 1..=19 (20..=22 use windows up to 128 MiB
    /// that the kernel would have to allocate while unpacking).
    Zstd { level: i32 },
    /// xz with CRC32 checks, presets 0..=9.
    Xz { level: u32 },
    /// The plain cpio archive.
    None,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

impl Compression {
    /// "zstd", "xz" or "none".
    pub fn name(&self) -> &'static str {
        match self {
            Compression::Zstd { .. } => "zstd",
            Compression::Xz { .. } => "xz",
            Compression::None => "none",
        }
    }

    /// From a command line's `--compression NAME [--level N]`; without a
    /// level, zstd's is DEFAULT_ZSTD_LEVEL and xz's is 6 (xz's own).
    pub fn parse(name: &str, level: Option<i64>) -> Result<Compression> {
        let c = match (name, level) {
            ("zstd", None) => Compression::default(),
            ("zstd", Some(l)) => Compression::Zstd {
                level: i32::try_from(l).map_err(|_| anyhow!("zstd level {l} is out of range"))?,
            },
            ("xz", None) => Compression::Xz { level: 6 },
            ("xz", Some(l)) => Compression::Xz {
                level: u32::try_from(l).map_err(|_| anyhow!("xz level {l} is out of range"))?,
            },
            ("none", None) => Compression::None,
            ("none", Some(_)) => bail!("--level needs a compression (zstd or xz)"),
            (other, _) => bail!("unknown ramdisk compression {other:?} (zstd, xz or none)"),
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        match *self {
            Compression::Zstd { level } if !(1..=19).contains(&level) => bail!(
                "zstd level {level} is outside 1..=19 (levels above 19 need windows up to \
                 128 MiB that the kernel allocates while unpacking)"
            ),
            Compression::Xz { level } if level > 9 => {
                bail!("xz level {level} is outside 0..=9")
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PackOptions {
    /// SOURCE_DATE_EPOCH: mtimes later than this are set to it.
    pub epoch: Option<u64>,
    pub compression: Compression,
    /// The most compressed bytes `out` may take; packing stops with an
    /// error naming the limit as soon as the output passes it.
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackReport {
    /// Archive entries, the root "." included, the trailer not.
    pub entries: u64,
    /// Bytes of the cpio archive before compression.
    pub uncompressed: u64,
    /// Bytes written to `out`.
    pub compressed: u64,
}

impl fmt::Display for PackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let pct = if self.uncompressed == 0 {
            100.0
        } else {
            self.compressed as f64 * 100.0 / self.uncompressed as f64
        };
        write!(
            f,
            "ramdisk: {} entries, {:.1} MiB of cpio packed into {:.1} MiB ({:.0} %)",
            self.entries,
            mib(self.uncompressed),
            mib(self.compressed),
            pct
        )
    }
}

/// One file of the tree, from its lstat.
struct Node {
    /// Relative path bytes; "." for the root.
    name: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    rdev: u64,
    dev: u64,
    ino: u64,
    nlink: u64,
}

impl Node {
    fn new(name: Vec<u8>, m: &fs::Metadata) -> Node {
        Node {
            name,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            mtime: m.mtime(),
            size: m.size(),
            rdev: m.rdev(),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
        }
    }

    fn kind(&self) -> u32 {
        self.mode & S_IFMT
    }
}

const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}

/// Every entry below `root` (sockets left out, other filesystems not
/// entered), the root first, the rest sorted by path bytes.
fn walk(root: &Path) -> Result<Vec<Node>> {
    let top = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    if !top.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut nodes = vec![Node::new(b".".to_vec(), &top)];
    let mut stack: Vec<Vec<u8>> = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        interrupt::check()?;
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(os(&rel))
        };
        let entries = fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        for e in entries {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            // lstat (fstatat with AT_SYMLINK_NOFOLLOW): links are not followed.
            let m = e
                .metadata()
                .with_context(|| format!("reading {}", e.path().display()))?;
            if m.file_type().is_socket() {
                continue;
            }
            let mut name = rel.clone();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(e.file_name().as_bytes());
            if m.is_dir() && m.dev() == top.dev() {
                stack.push(name.clone());
            }
            nodes.push(Node::new(name, &m));
        }
    }
    nodes[1..].sort_unstable_by(|a, b| a.name.cmp(&b.name));
    Ok(nodes)
}

/// The parent's name in the archive ("." for top-level entries).
fn parent(name: &[u8]) -> &[u8] {
    match name.iter().rposition(|&b| b == b'/') {
        Some(i) => &name[..i],
        None => b".",
    }
}

/// The newc stream: counts bytes so headers and data stay 4-aligned.
struct Newc<W: Write> {
    w: W,
    pos: u64,
}

impl<W: Write> Newc<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        self.w.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    fn pad(&mut self, to: u64) -> io::Result<()> {
        let n = (to - self.pos % to) % to;
        self.write(&[0u8; 512][..n as usize])
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        ino: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        size: u32,
        rdev: (u32, u32),
        name: &[u8],
    ) -> io::Result<()> {
        let namesize = name.len() as u32 + 1;
        let mut h = [0u8; HEADER];
        h[..6].copy_from_slice(b"070701");
        let fields = [
            ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdev.0, rdev.1, namesize, 0,
        ];
        for (i, v) in fields.iter().enumerate() {
            // Lower-case hex, as GNU cpio writes it.
            let hex = format!("{v:08x}");
            h[6 + 8 * i..14 + 8 * i].copy_from_slice(hex.as_bytes());
        }
        self.write(&h)?;
        self.write(name)?;
        self.write(&[0])?;
        self.pad(4)
    }
}

/// The compressed output file, counting what reaches it.
struct Counted {
    file: File,
    bytes: u64,
    limit: Option<u64>,
}

/// The io error a `Counted` returns past its limit (told apart from disk
/// errors when the error comes back through the compressor).
#[derive(Debug)]
struct OverLimit;

impl fmt::Display for OverLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the output passed its size limit")
    }
}

impl std::error::Error for OverLimit {}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self
            .limit
            .is_some_and(|l| self.bytes + buf.len() as u64 > l)
        {
            self.bytes += buf.len() as u64;
            return Err(io::Error::other(OverLimit));
        }
        let n = self.file.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Compressor {
    Zstd(zstd::stream::write::Encoder<'static, Counted>),
    Xz(liblzma::write::XzEncoder<Counted>),
    Plain(Counted),
}

impl Compressor {
    fn new(out: Counted, c: Compression, threads: u32) -> Result<Compressor> {
        let threads = threads.max(1);
        Ok(match c {
            Compression::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(out, level)
                    .context("starting the zstd encoder")?;
                // As the zstd command writes: a content checksum the
                // kernel's decompressor verifies.
                e.include_checksum(true)
                    .context("starting the zstd encoder")?;
                // nbWorkers >= 1 even on one CPU: libzstd's output is the
                // same for every worker count >= 1, and differs from the
                // single-threaded (0) mode's.
                e.multithread(threads)
                    .context("starting the zstd encoder")?;
                Compressor::Zstd(e)
            }
            Compression::Xz { level } => {
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .threads(threads)
                    .preset(level)
                    // The kernel's xz decoder checks CRC32 only.
                    .check(liblzma::stream::Check::Crc32)
                    .encoder()
                    .map_err(|e| anyhow!("starting the xz encoder: {e}"))?;
                Compressor::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
            Compression::None => Compressor::Plain(out),
        })
    }

    fn finish(self) -> io::Result<Counted> {
        match self {
            Compressor::Zstd(e) => e.finish(),
            Compressor::Xz(e) => e.finish(),
            Compressor::Plain(mut c) => {
                c.flush()?;
                Ok(c)
            }
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Xz(e) => e.write(buf),
            Compressor::Plain(c) => c.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(e) => e.flush(),
            Compressor::Xz(e) => e.flush(),
            Compressor::Plain(c) => c.flush(),
        }
    }
}

/// Packs the tree under `root` into `out` (created or truncated), as
/// described in the module documentation.
pub fn pack(root: &Path, out: &Path, opts: &PackOptions) -> Result<PackReport> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    pack_with(root, out, opts, u32::try_from(threads).unwrap_or(1))
}

fn pack_with(root: &Path, out: &Path, opts: &PackOptions, threads: u32) -> Result<PackReport> {
    opts.compression.check()?;
    let shown = out.display();
    let nodes = walk(root)?;

    let (subdirs, names) = link_counts(&nodes);

    let file = File::create(out).with_context(|| format!("creating {shown}"))?;
    let counted = Counted {
        file,
        bytes: 0,
        limit: opts.limit,
    };
    let mut newc = Newc {
        w: BufWriter::with_capacity(
            256 << 10,
            Compressor::new(counted, opts.compression, threads)?,
        ),
        pos: 0,
    };
    let over = |e: &io::Error| {
        e.get_ref()
            .is_some_and(|inner| inner.downcast_ref::<OverLimit>().is_some())
    };
    let too_big = |limit: u64| {
        anyhow!(
            "the ramdisk is larger than its limit of {limit} bytes ({:.1} MiB) compressed with {}",
            limit as f64 / (1u64 << 20) as f64,
            opts.compression.name()
        )
    };
    // A write error: the limit (through the compressor) or the disk.
    let wr = |e: io::Error| -> anyhow::Error {
        match opts.limit {
            Some(l) if over(&e) => too_big(l),
            _ => anyhow::Error::new(e).context(format!("writing {shown}")),
        }
    };

    let mut inodes: HashMap<(u64, u64), u32> = HashMap::new();
    let mut next_ino = 0u32;
    let mut buf = vec![0u8; CHUNK];
    for (i, n) in nodes.iter().enumerate() {
        interrupt::check()?;
        let path = || -> PathBuf {
            if i == 0 {
                root.to_path_buf()
            } else {
                root.join(os(&n.name))
            }
        };
        if n.name.len() + 1 > PATH_MAX {
            bail!(
                "{}: the name is longer than the {} bytes the kernel unpacks",
                path().display(),
                PATH_MAX - 1
            );
        }
        let link = (n.kind() == S_IFREG && n.nlink > 1)
            .then(|| names.get(&(n.dev, n.ino)).copied())
            .flatten();
        let ino = match link {
            Some(_) => *inodes.entry((n.dev, n.ino)).or_insert_with(|| {
                next_ino += 1;
                next_ino
            }),
            None => {
                next_ino += 1;
                next_ino
            }
        };
        let nlink = match (n.kind(), link) {
            (S_IFDIR, _) => 2 + subdirs.get(n.name.as_slice()).copied().unwrap_or(0),
            (_, Some((count, _))) => count,
            _ => 1,
        };
        let mtime = match opts.epoch {
            Some(e) => n.mtime.min(i64::try_from(e).unwrap_or(i64::MAX)),
            None => n.mtime,
        };
        // newc has 32 bits for a time: earlier than 1970 or after 2106 is
        // clamped (deterministically) to the range.
        let mtime = mtime.clamp(0, i64::from(u32::MAX)) as u32;
        let rdev = match n.kind() {
            0o020_000 | 0o060_000 => (
                nix::sys::stat::major(n.rdev) as u32,
                nix::sys::stat::minor(n.rdev) as u32,
            ),
            _ => (0, 0),
        };
        let symlink = if n.kind() == S_IFLNK {
            Some(link_target(&path())?)
        } else {
            None
        };
        let size = match (&symlink, link) {
            (Some(t), _) => t.len() as u64,
            (None, Some((_, last))) if last != i => 0,
            _ if n.kind() == S_IFREG => n.size,
            _ => 0,
        };
        let size32 = u32::try_from(size).map_err(|_| {
            anyhow!(
                "{} is {size} bytes: a newc cpio holds files up to 4 GiB - 1",
                path().display()
            )
        })?;
        newc.header(
            ino, n.mode, n.uid, n.gid, nlink, mtime, size32, rdev, &n.name,
        )
        .map_err(wr)?;
        if let Some(t) = &symlink {
            newc.write(t).map_err(wr)?;
        } else if size > 0 {
            copy_data(&mut newc, &path(), size, &mut buf, &wr)?;
        }
        newc.pad(4).map_err(wr)?;
    }
    newc.header(0, 0, 0, 0, 1, 0, 0, (0, 0), TRAILER)
        .map_err(wr)?;
    newc.pad(512).map_err(wr)?;
    let uncompressed = newc.pos;
    let compressor = newc.w.into_inner().map_err(|e| wr(e.into_error()))?;
    let counted = compressor.finish().map_err(wr)?;
    if let Some(l) = opts.limit {
        if counted.bytes > l {
            return Err(too_big(l));
        }
    }
    Ok(PackReport {
        entries: nodes.len() as u64,
        uncompressed,
        compressed: counted.bytes,
    })
}

/// Link counts from the archive itself: directories 2 + their
/// subdirectories (by parent name), regular files with several names the
/// number of their names and the index of the last, which carries the data.
#[allow(clippy::type_complexity)]
fn link_counts(nodes: &[Node]) -> (HashMap<&[u8], u32>, HashMap<(u64, u64), (u32, usize)>) {
    let mut subdirs: HashMap<&[u8], u32> = HashMap::new();
    let mut names: HashMap<(u64, u64), (u32, usize)> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        match n.kind() {
            S_IFDIR if i > 0 => *subdirs.entry(parent(&n.name)).or_default() += 1,
            S_IFREG if n.nlink > 1 => {
                let e = names.entry((n.dev, n.ino)).or_insert((0, i));
                e.0 += 1;
                e.1 = i; // the last name, which carries the data
            }
            _ => {}
        }
    }
    (subdirs, names)
}

/// A symlink's target, refused when the kernel could not unpack it.
fn link_target(path: &Path) -> Result<Vec<u8>> {
    let target = fs::read_link(path).with_context(|| format!("reading {}", path.display()))?;
    let target = target.into_os_string().into_vec();
    if target.len() + 1 > PATH_MAX {
        bail!(
            "{}: the link target is longer than the {} bytes the kernel unpacks",
            path.display(),
            PATH_MAX - 1
        );
    }
    Ok(target)
}

/// `size` bytes of the file at `path` into the archive, in `buf`-sized
/// pieces; `wr` names a write error (the limit, or the disk).
fn copy_data<W: Write>(
    newc: &mut Newc<W>,
    path: &Path,
    size: u64,
    buf: &mut [u8],
    wr: &dyn Fn(io::Error) -> anyhow::Error,
) -> Result<()> {
    let mut f = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut left = size;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        let got = f
            .read(&mut buf[..want])
            .with_context(|| format!("reading {}", path.display()))?;
        if got == 0 {
            bail!("{} shrank while it was being packed", path.display());
        }
        newc.write(&buf[..got]).map_err(wr)?;
        left -= got as u64;
    }
    Ok(())
}

// ------------------------------------------------------------------ reading

/// What `inspect` says of a ramdisk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// "zstd", "xz", "gzip" or "none".
    pub compression: &'static str,
    /// Entries, trailers not counted (of every archive, when several
    /// are concatenated).
    pub entries: u64,
    /// Sum of the entries' data (file contents and symlink targets).
    pub bytes: u64,
    /// An `init` entry that is not a directory (what the kernel runs).
    pub has_init: bool,
}

fn is_newc(b: &[u8]) -> bool {
    b.starts_with(b"070701") || b.starts_with(b"070702")
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];
const XZ_MAGIC: [u8; 6] = [0xFD, b'7', b'z', b'X', b'Z', 0];
const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];

/// A decoder for `kind` ("zstd", "xz", "gzip", "cpio") over `input`.
fn decoder<'a, R: io::BufRead + 'a>(kind: &str, input: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match kind {
        "zstd" => {
            let mut d = zstd::stream::read::Decoder::with_buffer(input)?;
            d.window_log_max(31)?;
            Box::new(d)
        }
        "xz" => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(input)),
        "gzip" => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        _ => Box::new(input),
    })
}

/// "zstd", "xz", "gzip" or "cpio" when `head` (the first bytes of a
/// file; 256 KiB is enough to decide for any of them) starts like a newc
/// cpio archive, compressed or not; `None` otherwise. A compressed head is
/// decompressed far enough to see the cpio magic; when it is too short to
/// tell, its compression's name is the answer.
pub fn sniff(head: &[u8]) -> Option<&'static str> {
    if is_newc(head) {
        return Some("cpio");
    }
    let kind = if head.starts_with(&ZSTD_MAGIC) {
        "zstd"
    } else if head.starts_with(&XZ_MAGIC) {
        "xz"
    } else if head.starts_with(&GZIP_MAGIC) {
        "gzip"
    } else {
        return None;
    };
    let Ok(mut d) = decoder(kind, head) else {
        return Some(kind);
    };
    let mut first = [0u8; 6];
    match read_full(&mut d, &mut first) {
        Ok(6) => is_newc(&first).then_some(kind),
        Ok(_) => None,        // the whole stream, and shorter than a magic
        Err(_) => Some(kind), // a truncated head (or damage): cannot tell
    }
}

fn hex_field(h: &[u8], i: usize) -> Option<u32> {
    let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).ok()?;
    u32::from_str_radix(s, 16).ok()
}

/// Reads the (compressed) newc archive at `path` to its trailer.
pub fn summarize(path: &Path) -> Result<Summary> {
    let shown = path.display();
    let mut file = File::open(path).with_context(|| format!("opening {shown}"))?;
    let mut head = Vec::new();
    (&mut file)
        .take(256 << 10)
        .read_to_end(&mut head)
        .with_context(|| format!("reading {shown}"))?;
    let kind = sniff(&head).ok_or_else(|| {
        anyhow!("{shown} is not a newc cpio archive (plain, or compressed with zstd, xz or gzip)")
    })?;
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading {shown}"))?;
    let input = BufReader::with_capacity(1 << 20, file);
    let mut r: Box<dyn Read> = if kind == "xz" {
        // The multithreaded decoder (xz -T0 files are multi-block).
        Box::new(crate::io::xz::XzStreams::new(input)?)
    } else {
        decoder(kind, input).with_context(|| format!("reading {shown}"))?
    };
    let mut s = Summary {
        compression: if kind == "cpio" { "none" } else { kind },
        entries: 0,
        bytes: 0,
        has_init: false,
    };
    let mut pos = 0u64;
    let mut h = [0u8; HEADER];
    let mut name = vec![0u8; PATH_MAX + 4];
    let mut have_header = false;
    loop {
        interrupt::check()?;
        if !have_header {
            read_exact(&mut r, &mut h, &shown, pos)?;
        }
        have_header = false;
        if !is_newc(&h) {
            bail!("{shown}: no newc cpio header at byte {pos} of the archive (damaged?)");
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            *v = hex_field(&h, i)
                .ok_or_else(|| anyhow!("{shown}: damaged cpio header at byte {pos}"))?;
        }
        let (mode, size, namesize) = (f[1], u64::from(f[6]), f[11] as usize);
        if namesize == 0 || namesize > PATH_MAX {
            bail!("{shown}: damaged cpio header at byte {pos} (name of {namesize} bytes)");
        }
        let padded = (HEADER + namesize).div_ceil(4) * 4 - HEADER;
        read_exact(&mut r, &mut name[..padded], &shown, pos)?;
        if name[namesize - 1] != 0 {
            bail!("{shown}: damaged cpio header at byte {pos} (name without its NUL)");
        }
        let n = &name[..namesize - 1];
        pos += (HEADER + padded) as u64;
        if n == TRAILER {
            // Zero padding, then the end, or another archive (the kernel
            // unpacks concatenated archives into the same rootfs). Reading
            // to the end also makes the decompressor check the stream's
            // own checksum, which damage in file data only shows there.
            let mut word = [0u8; 4];
            loop {
                let got =
                    read_full(&mut r, &mut word).with_context(|| format!("reading {shown}"))?;
                match got {
                    0 => return Ok(s),
                    4 if word == [0; 4] => pos += 4,
                    4 => break,
                    _ => bail!("{shown}: {got} stray bytes at the end, after byte {pos}"),
                }
            }
            h[..4].copy_from_slice(&word);
            read_exact(&mut r, &mut h[4..], &shown, pos)?;
            have_header = true;
            continue;
        }
        s.entries += 1;
        s.bytes += size;
        if matches!(n, b"init" | b"./init" | b"/init") && mode & S_IFMT != S_IFDIR {
            s.has_init = true;
        }
        let skip = size.div_ceil(4) * 4;
        let copied = io::copy(&mut (&mut r).take(skip), &mut io::sink())
            .with_context(|| format!("reading {shown}"))?;
        if copied != skip {
            bail!(
                "{shown} is truncated: the archive ends inside the data of {}",
                String::from_utf8_lossy(n)
            );
        }
        pos += skip;
    }
}

fn read_exact(
    r: &mut dyn Read,
    buf: &mut [u8],
    shown: &std::path::Display,
    pos: u64,
) -> Result<()> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            anyhow!(
                "{shown} is truncated: the archive ends at byte {pos}, before its TRAILER!!! entry"
            )
        } else {
            anyhow::Error::new(e).context(format!("reading {shown}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::collections::BTreeMap;
    use std::os::unix::fs::{lchown, symlink, PermissionsExt};
    use std::process::{Command, Stdio};

    const EPOCH: u64 = 1_700_000_000;
    const OLD: i64 = 1_600_000_000;
    const FUTURE: i64 = 2_000_000_000;

    fn set_mtime(p: &Path, t: i64) {
        let ts = TimeSpec::new(t, 0);
        utimensat(
            nix::fcntl::AT_FDCWD,
            p,
            &ts,
            &ts,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    fn file(root: &Path, rel: &str, data: &[u8], mode: u32) -> PathBuf {
        let p = root.join(rel);
        fs::write(&p, data).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Bytes that compress, but not to nothing.
    fn data(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 {
                    (x % 251) as u8
                } else {
                    b'a' + (i % 26) as u8
                }
            })
            .collect()
    }

    /// A small root with every kind of entry the packer handles. Returns
    /// whether a device node could be made (not in every container).
    fn tree(root: &Path) -> bool {
        for d in [
            "etc",
            "home/user",
            "usr/bin",
            "usr/lib/systemd",
            "run",
            "tmp",
            "dev",
            "a",
            "proc",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
        file(
            root,
            "usr/lib/systemd/systemd",
            b"#!/bin/sh\necho fake\n",
            0o755,
        );
        symlink("usr/lib/systemd/systemd", root.join("init")).unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("/nonexistent/target", root.join("etc/dangling")).unwrap();
        file(root, "etc/hostname", b"ramdisk\n", 0o644);
        let shadow = file(root, "etc/shadow", b"root::19000::::::\n", 0o640);
        lchown(&shadow, Some(0), Some(42)).unwrap();
        file(root, "etc/empty", b"", 0o600);
        let odd = root.join(OsStr::from_bytes(b"etc/odd\xffname with space"));
        fs::write(&odd, b"odd").unwrap();
        let notes = file(root, "home/user/notes", b"hello", 0o600);
        lchown(&notes, Some(1000), Some(1000)).unwrap();
        lchown(root.join("home/user"), Some(1000), Some(1000)).unwrap();
        fs::set_permissions(root.join("home/user"), fs::Permissions::from_mode(0o700)).unwrap();
        file(root, "usr/bin/suid", b"\x7fELF", 0o4755);
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
        // Three names of one file, data of an unaligned length.
        file(root, "usr/bin/a", &data(5001, 1), 0o755);
        fs::hard_link(root.join("usr/bin/a"), root.join("usr/bin/b")).unwrap();
        fs::hard_link(root.join("usr/bin/a"), root.join("usr/lib/c")).unwrap();
        // More than one read chunk.
        file(root, "usr/lib/big", &data(CHUNK + CHUNK / 2 + 3, 2), 0o644);
        // "a-c" sorts before "a/b": full-path byte order, as find | sort.
        file(root, "a-c", b"dash", 0o644);
        file(root, "a/b", b"slash", 0o644);
        nix::unistd::mkfifo(
            &root.join("run/fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o620),
        )
        .unwrap();
        fs::set_permissions(root.join("run/fifo"), fs::Permissions::from_mode(0o620)).unwrap();
        drop(std::os::unix::net::UnixListener::bind(root.join("run/sock")).unwrap());
        let dev = nix::sys::stat::mknod(
            &root.join("dev/null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .is_ok();
        if dev {
            fs::set_permissions(root.join("dev/null"), fs::Permissions::from_mode(0o666)).unwrap();
        }
        // Times: all old, one file after the epoch; directories last.
        let mut all = vec![root.to_path_buf()];
        let mut i = 0;
        while i < all.len() {
            if fs::symlink_metadata(&all[i]).unwrap().is_dir() {
                for e in fs::read_dir(&all[i]).unwrap() {
                    all.push(e.unwrap().path());
                }
            }
            i += 1;
        }
        for (n, p) in all.iter().enumerate().rev() {
            set_mtime(p, OLD + n as i64);
        }
        set_mtime(&root.join("etc/hostname"), FUTURE);
        dev
    }

    fn opts(compression: Compression) -> PackOptions {
        PackOptions {
            epoch: Some(EPOCH),
            compression,
            limit: None,
        }
    }

    fn run(cmd: &mut Command) -> Vec<u8> {
        let out = cmd.stderr(Stdio::inherit()).output().unwrap();
        assert!(out.status.success(), "{cmd:?} failed");
        out.stdout
    }

    /// The plain cpio, by the distro's decompressor.
    fn decompress(archive: &Path, c: Compression) -> Vec<u8> {
        match c {
            Compression::Zstd { .. } => run(Command::new("zstd").arg("-dcq").arg(archive)),
            Compression::Xz { .. } => run(Command::new("xz").arg("-dc").arg(archive)),
            Compression::None => fs::read(archive).unwrap(),
        }
    }

    /// Everything below `root` but sockets, by relative path bytes.
    fn listing(root: &Path) -> BTreeMap<Vec<u8>, fs::Metadata> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let e = e.unwrap();
                let m = e.metadata().unwrap();
                if m.file_type().is_socket() {
                    continue;
                }
                if m.is_dir() {
                    stack.push(e.path());
                }
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec();
                out.insert(rel, m);
            }
        }
        out
    }

    /// Extracts with GNU cpio and compares every entry with the source.
    fn check_with_cpio(src: &Path, cpio: &[u8], work: &Path) {
        let plain = work.join("plain.cpio");
        fs::write(&plain, cpio).unwrap();
        // The order: the root, then path bytes.
        let names = run(Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(File::open(&plain).unwrap()));
        let names: Vec<&[u8]> = names
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let want = listing(src);
        let mut expected: Vec<&[u8]> = vec![b"."];
        expected.extend(want.keys().map(Vec::as_slice));
        assert_eq!(names, expected);

        let out = work.join("x");
        fs::create_dir(&out).unwrap();
        run(Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(&out)
            .stdin(File::open(&plain).unwrap()));
        let got = listing(&out);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        for (rel, s) in &want {
            let g = &got[rel];
            let shown = String::from_utf8_lossy(rel);
            assert_eq!(g.mode(), s.mode(), "mode of {shown}");
            assert_eq!((g.uid(), g.gid()), (s.uid(), s.gid()), "owner of {shown}");
            let (sp, gp) = (
                src.join(OsStr::from_bytes(rel)),
                out.join(OsStr::from_bytes(rel)),
            );
            if s.file_type().is_symlink() {
                assert_eq!(
                    fs::read_link(&gp).unwrap(),
                    fs::read_link(&sp).unwrap(),
                    "{shown}"
                );
            } else if s.is_file() {
                assert_eq!(
                    fs::read(&gp).unwrap(),
                    fs::read(&sp).unwrap(),
                    "content of {shown}"
                );
                assert_eq!(g.mtime(), s.mtime().min(EPOCH as i64), "mtime of {shown}");
                assert_eq!(g.nlink(), s.nlink(), "links of {shown}");
            } else if s.file_type().is_char_device() {
                assert_eq!(g.rdev(), s.rdev(), "device of {shown}");
            }
        }
        let ino = |p: &str| got[p.as_bytes()].ino();
        assert_eq!(ino("usr/bin/a"), ino("usr/bin/b"));
        assert_eq!(ino("usr/bin/a"), ino("usr/lib/c"));
        assert_ne!(ino("usr/bin/a"), ino("usr/lib/big"));
    }

    #[test]
    #[ignore = "needs root: the fixture tree has device nodes and other owners (make test runs it)"]
    fn gnu_cpio_extracts_what_was_packed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        tree(&root);
        for (n, c) in [
            Compression::default(),
            Compression::Xz { level: 1 },
            Compression::None,
        ]
        .into_iter()
        .enumerate()
        {
            let work = t.path().join(format!("w{n}"));
            fs::create_dir(&work).unwrap();
            let out = work.join("ramdisk");
            let r = pack(&root, &out, &opts(c)).unwrap();
            let cpio = decompress(&out, c);
            assert_eq!(r.uncompressed, cpio.len() as u64);
            assert_eq!(r.compressed, fs::metadata(&out).unwrap().len());
            assert_eq!(cpio.len() % 512, 0);
            assert!(cpio.windows(10).any(|w| w == TRAILER));
            check_with_cpio(&root, &cpio, &work);

            // inspect's view agrees.
            let head = fs::read(&out).unwrap();
            let kind = match c {
                Compression::None => "cpio",
                other => other.name(),
            };
            assert_eq!(sniff(&head), Some(kind));
            let s = summarize(&out).unwrap();
            let want = listing(&root);
            let mut seen = std::collections::HashSet::new();
            let bytes: u64 = want
                .iter()
                .map(|(rel, m)| {
                    if m.file_type().is_symlink() {
                        fs::read_link(root.join(OsStr::from_bytes(rel)))
                            .unwrap()
                            .as_os_str()
                            .len() as u64
                    } else if m.is_file() && seen.insert(m.ino()) {
                        m.len()
                    } else {
                        0
                    }
                })
                .sum();
            assert_eq!(
                s,
                Summary {
                    compression: if kind == "cpio" { "none" } else { kind },
                    entries: want.len() as u64 + 1,
                    bytes,
                    has_init: true,
                }
            );
            assert_eq!(s.entries, r.entries);
            assert!(r
                .to_string()
                .starts_with(&format!("ramdisk: {} entries", r.entries)));
        }
    }

    #[test]
    #[ignore = "needs root: the fixture tree has device nodes and other owners (make test runs it)"]
    fn same_tree_same_bytes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        tree(&root);
        let pack_to = |root: &Path, name: &str| {
            let out = t.path().join(name);
            pack(root, &out, &opts(Compression::default())).unwrap();
            fs::read(out).unwrap()
        };
        let first = pack_to(&root, "1");
        assert_eq!(pack_to(&root, "2"), first);
        // A time after the epoch is clamped: changing it changes nothing.
        set_mtime(&root.join("etc/hostname"), FUTURE + 1000);
        assert_eq!(pack_to(&root, "3"), first);
        // Another copy of the tree (other inode numbers, same times).
        let copy = t.path().join("copy");
        run(Command::new("cp").arg("-a").arg(&root).arg(&copy));
        assert_eq!(pack_to(&copy, "4"), first);
        // A time before the epoch is kept.
        set_mtime(&root.join("etc/shadow"), OLD - 5);
        assert_ne!(pack_to(&root, "5"), first);
    }

    #[test]
    fn same_bytes_for_any_thread_count() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        // Several zstd jobs (2 MiB at level 1) and xz blocks (1 MiB at preset 0).
        fs::write(root.join("big"), data(12 << 20, 3)).unwrap();
        for c in [Compression::Zstd { level: 1 }, Compression::Xz { level: 0 }] {
            let outs: Vec<Vec<u8>> = [1, 2, 4]
                .iter()
                .map(|&n| {
                    let out = t.path().join(format!("{}-{n}", c.name()));
                    pack_with(&root, &out, &opts(c), n).unwrap();
                    fs::read(out).unwrap()
                })
                .collect();
            assert_eq!(outs[0], outs[1], "{} with 1 and 2 threads", c.name());
            assert_eq!(outs[0], outs[2], "{} with 1 and 4 threads", c.name());
        }
    }

    #[test]
    #[ignore = "needs root: the fixture tree has device nodes and other owners (make test runs it)"]
    fn limit_is_enforced_and_named() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        tree(&root);
        let out = t.path().join("out");
        for c in [Compression::default(), Compression::None] {
            let o = PackOptions {
                limit: Some(1000),
                ..opts(c)
            };
            let e = format!("{:#}", pack(&root, &out, &o).unwrap_err());
            assert!(e.contains("limit of 1000 bytes"), "{e}");
        }
        let fits = PackOptions {
            limit: Some(10 << 20),
            ..opts(Compression::default())
        };
        assert!(pack(&root, &out, &fits).unwrap().compressed <= 10 << 20);
    }

    #[test]
    fn other_filesystems_are_not_entered() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("proc")).unwrap();
        fs::write(root.join("kept"), b"x").unwrap();
        let proc_ = root.join("proc");
        if let Err(e) = nix::mount::mount(
            Some("tmpfs"),
            &proc_,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        ) {
            crate::system::testing::require(false, &format!("cannot mount a tmpfs here ({e})"));
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = nix::mount::umount(&self.0);
            }
        }
        let _guard = Unmount(proc_.clone());
        fs::write(proc_.join("hidden"), b"y").unwrap();
        let out = t.path().join("out");
        pack(&root, &out, &opts(Compression::None)).unwrap();
        let names = run(Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(File::open(&out).unwrap()));
        assert_eq!(String::from_utf8(names).unwrap(), ".\nkept\nproc\n");
    }

    #[test]
    #[ignore = "needs root: the fixture tree has device nodes and other owners (make test runs it)"]
    fn damaged_archives_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        tree(&root);
        for c in [
            Compression::default(),
            Compression::Xz { level: 0 },
            Compression::None,
        ] {
            let out = t.path().join(c.name());
            pack(&root, &out, &opts(c)).unwrap();
            let whole = fs::read(&out).unwrap();
            let bad = t.path().join("bad");
            // Cut short.
            for cut in [whole.len() / 2, 200, 7] {
                fs::write(&bad, &whole[..cut]).unwrap();
                let e = summarize(&bad).unwrap_err();
                assert!(format!("{e:#}").contains("bad"), "{e:#}");
            }
            // Bytes changed in the middle (a plain newc has no checksum
            // that would tell changed file data).
            if c == Compression::None {
                continue;
            }
            let mut broken = whole.clone();
            let mid = broken.len() / 2;
            for b in &mut broken[mid..mid + 64] {
                *b ^= 0x5a;
            }
            fs::write(&bad, &broken).unwrap();
            assert!(summarize(&bad).is_err(), "{}: damage not seen", c.name());
        }
        // A header whose fields are not hex.
        let out = t.path().join("none");
        let mut cpio = fs::read(&out).unwrap();
        cpio[6..14].copy_from_slice(b"zzzzzzzz");
        let bad = t.path().join("bad");
        fs::write(&bad, &cpio).unwrap();
        assert!(format!("{:#}", summarize(&bad).unwrap_err()).contains("damaged"));
        // Not an archive at all.
        fs::write(&bad, b"hello world, no cpio here").unwrap();
        assert!(format!("{:#}", summarize(&bad).unwrap_err()).contains("not a newc cpio"));
        fs::write(&bad, b"").unwrap();
        assert!(summarize(&bad).is_err());
    }

    #[test]
    #[ignore = "needs root: the fixture tree has device nodes and other owners (make test runs it)"]
    fn concatenated_archives_add_up() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        tree(&root);
        let one = t.path().join("one");
        let r = pack(&root, &one, &opts(Compression::None)).unwrap();
        // Two archives, and padding as an early-microcode cpio leaves.
        let mut two = fs::read(&one).unwrap();
        two.extend_from_slice(&[0; 1024]);
        two.extend_from_slice(&fs::read(&one).unwrap());
        let both = t.path().join("both");
        fs::write(&both, &two).unwrap();
        let s = summarize(&both).unwrap();
        assert_eq!(s.entries, 2 * r.entries);
        assert_eq!(s.bytes, 2 * summarize(&one).unwrap().bytes);
        // Not zeros, not a header: damage.
        two.extend_from_slice(b"junk");
        fs::write(&both, &two).unwrap();
        assert!(summarize(&both).is_err());
    }

    #[test]
    fn sniffs_compressed_cpio_only() {
        let cpio = b"070701000000010000".to_vec();
        assert_eq!(sniff(&cpio), Some("cpio"));
        assert_eq!(sniff(b"070702"), Some("cpio"));
        let z = zstd::bulk::compress(&cpio, 3).unwrap();
        assert_eq!(sniff(&z), Some("zstd"));
        let x = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 0);
            e.write_all(&cpio).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(sniff(&x), Some("xz"));
        let g = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&cpio).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(sniff(&g), Some("gzip"));
        // Compressed, but not a cpio (a compressed disk image, say).
        let not = zstd::bulk::compress(b"QFI\xfb and more", 3).unwrap();
        assert_eq!(sniff(&not), None);
        // Too short to decide: the compression is the answer.
        assert_eq!(sniff(&x[..8]), Some("xz"));
        assert_eq!(sniff(b"QFI\xfb"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn compression_from_the_command_line() {
        assert_eq!(
            Compression::parse("zstd", None).unwrap(),
            Compression::default()
        );
        assert_eq!(
            Compression::parse("xz", Some(9)).unwrap(),
            Compression::Xz { level: 9 }
        );
        assert_eq!(Compression::parse("none", None).unwrap(), Compression::None);
        assert!(Compression::parse("zstd", Some(22)).is_err());
        assert!(Compression::parse("xz", Some(10)).is_err());
        assert!(Compression::parse("none", Some(3)).is_err());
        assert!(Compression::parse("lz4", None).is_err());
    }
}
