//! Safe, streaming extraction of a base rootfs tarball into a build root.
//!
//! The archive is untrusted input even after its checksum matched (the
//! checksum only says it is the file the spec named), and the build runs as
//! root, so extraction must never write outside `dest`. The tar crate's
//! `unpack_in` is not enough for that: it canonicalizes paths on the host,
//! and canonicalizing through a rootfs's absolute symlinks (`/etc/mtab ->
//! /proc/...`, `lib -> /usr/lib`) resolves them against the *host*. So paths
//! are checked lexically and every existing component is `lstat`ed, and
//! each entry kind is created here with no-follow primitives.
//!
//! The archive may also be an OCI image layout (Fedora's Container Base is
//! published as one): `blobs/sha256/<hex>`, `index.json`, `oci-layout`.
//! Such a layout is told from a rootfs by its first entry (writers put
//! `blobs/` first; a rootfs has no `blobs`, `index.json` or `oci-layout` at
//! its top). Its blobs are streamed, sha256-checked against their names,
//! into a private folder beside `dest`, which is removed on every path;
//! then the layers of the image `index.json` leads to are applied in order
//! with OCI whiteouts, each through the same entry checks as a rootfs.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use tar::EntryType;

use super::oci;
use crate::io::{read_some, Counting};
use crate::progress::Progress;
use crate::space::Room;

/// Compression of a base archive, told by magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Xz,
    Gzip,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "tar",
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// What an unpack wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries created (files, directories, links, nodes).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Tell the compression of `path` from its first bytes. Names lie (Fedora's
/// `.tar.xz` images and `docker export` output are both called many things),
/// magic numbers do not.
pub fn sniff(path: &Path) -> Result<Compression> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let head = read_head(file, 512).with_context(|| format!("reading {}", path.display()))?;
    classify(&head, &path.display().to_string())
}

/// The first `len` bytes of a stream (fewer only when it is shorter):
/// enough to tell its compression (a tar header is 512 bytes).
fn read_head(input: impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(len as usize);
    input.take(len).read_to_end(&mut head)?;
    Ok(head)
}

fn classify(head: &[u8], label: &str) -> Result<Compression> {
    if let Some(c) = magic(head) {
        Ok(c)
    } else if head.starts_with(b"BZh") {
        bail!("{label}: bzip2 archives are not supported (use xz, gzip or zstd)")
    } else {
        bail!("{label}: not a tar archive (expected xz, gzip, zstd or plain tar)")
    }
}

fn magic(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0xFD, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else if head.starts_with(&[0x1F, 0x8B]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        Some(Compression::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        // POSIX ("ustar\0") and GNU ("ustar  ") headers both start so.
        Some(Compression::None)
    } else if is_v7_tar_header(head) {
        Some(Compression::None)
    } else {
        None
    }
}

/// A pre-POSIX (V7) tar header has no magic; its checksum (the byte sum
/// of the header with the checksum field read as spaces) is what marks it.
fn is_v7_tar_header(head: &[u8]) -> bool {
    let Some(header) = head.get(..512) else {
        return false;
    };
    if header[0] == 0 {
        return false;
    }
    let field = &header[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    let Some(stored) = std::str::from_utf8(&digits)
        .ok()
        .filter(|d| !d.is_empty())
        .and_then(|d| u32::from_str_radix(d, 8).ok())
    else {
        return false;
    };
    let sum: u32 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    sum == stored
}

/// Extract `archive` into `dest` (which must exist), keeping numeric owners,
/// modes (setuid included), mtimes, links, device nodes, fifos and xattrs.
///
/// Streams: file -> decompressor -> tar reader -> filesystem; memory stays
/// flat whatever the archive size. Hostile entries (absolute paths, `..`,
/// writes through symlinks, type-changing replacements) stop the unpack
/// with an error naming the entry; nothing is written outside `dest`. After
/// an error `dest` holds a partial tree (directory modes not yet applied):
/// the caller discards it rather than build on it.
///
/// An OCI image layout (see the module notes) is unpacked as the image it
/// holds for this machine's platform: its layers applied in order, with
/// whiteouts. Every blob must hash to its name; the stats count the
/// entries of all layers.
pub fn unpack(archive: &Path, dest: &Path, progress: &Progress) -> Result<UnpackStats> {
    let label = archive.display().to_string();
    let file = File::open(archive).with_context(|| format!("opening {label}"))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {label}"))?
        .len();
    let shown = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| label.clone());
    let mut bar = progress.bytes(&format!("unpack {shown}"), Some(size));
    // The compressed bytes, as the decompressor pulls them: the bar tracks
    // the position in the file (its size is known; the unpacked size is
    // not).
    let result = unpack_from(Counting::new(file, &mut bar), &label, dest, progress);
    bar.finish();
    result
}

/// `unpack` from a stream instead of a file: the compression is told from
/// the stream's first bytes, and the archive is read exactly once, front to
/// back, to its end. `fetch` hands a download to this while it arrives
/// (the archive is verified when its last byte has come, so until then the
/// tree in `dest` is provisional and the caller removes it on any error).
/// `label` names the archive in messages.
pub fn unpack_from(
    mut input: impl Read,
    label: &str,
    dest: &Path,
    progress: &Progress,
) -> Result<UnpackStats> {
    let root_meta = fs::metadata(dest).with_context(|| format!("reading {}", dest.display()))?;
    if !root_meta.is_dir() {
        bail!("{} is not a directory", dest.display());
    }
    let head = read_head(&mut input, 512).with_context(|| format!("reading {label}"))?;
    let compression = classify(&head, label)?;
    let input = io::Cursor::new(head).chain(input);

    let mut extractor = Extractor::new(dest);
    // Dropped on every return (and unwind): that removes an OCI spool.
    let mut sink = Sink::Undecided { root: None };
    read_tar(compression, input, |tar| {
        outer_entries(tar, &mut extractor, &mut sink, dest)
    })
    .with_context(|| format!("unpacking {label}"))?;

    match sink {
        Sink::Oci(spool) => apply_oci(&spool, &mut extractor, progress),
        Sink::Undecided { root: Some(root) } => extractor.apply_root(root),
        Sink::Undecided { root: None } | Sink::Rootfs => Ok(()),
    }
    .and_then(|()| extractor.finish_dirs())
    .with_context(|| format!("unpacking {label}"))?;
    Ok(extractor.stats)
}

/// Decompress `input` and hand the tar reader to `body`, then read the
/// compressed stream to its end: a stream cut right after a tar entry
/// boundary still looks like a complete tar to the tar reader, and only the
/// decompressor notices the missing end of stream. A failure that started
/// in the decompressor is reported as bad compressed data.
fn read_tar<R: Read>(
    compression: Compression,
    input: R,
    body: impl FnOnce(&mut tar::Archive<&mut dyn Read>) -> Result<()>,
) -> Result<()> {
    let decode_error: RefCell<Option<io::Error>> = RefCell::new(None);
    // Checked on both sides of the decompressor: its input (a file, a
    // spooled layer) may be read for long before any output comes, and a
    // small input can expand to gigabytes read without touching it.
    let input = crate::io::Interruptible::new(input);
    let result = (|| -> Result<()> {
        let decoded: Box<dyn Read + '_> = match compression {
            Compression::None => Box::new(input),
            Compression::Xz => Box::new(crate::io::xz::XzStreams::new(BufReader::with_capacity(
                1 << 16,
                input,
            ))?),
            // Multi-member gzip (pigz, concatenated files) is valid gzip.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(input))),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(input).context("starting the zstd decoder")?,
            ),
        };
        let mut watched = Watch {
            inner: crate::io::Interruptible::new(decoded),
            error: &decode_error,
        };
        body(&mut tar::Archive::new(&mut watched as &mut dyn Read))?;
        io::copy(&mut watched, &mut io::sink()).context("reading to the end of the archive")?;
        Ok(())
    })();
    match (result, decode_error.into_inner()) {
        // The decoder and the tar reader rewrap read errors in their own
        // words ("tar data is truncated or corrupt"); after a signal the
        // failure is the signal's.
        (Err(_), _) if crate::interrupt::interrupted() => Err(crate::interrupt::Interrupted.into()),
        (Err(_), Some(e))
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData
            ) =>
        {
            Err(anyhow!(
                "{} data is truncated or corrupt",
                compression.name()
            ))
        }
        // Out of memory, an unsupported check type, a read error on the file.
        (Err(_), Some(e)) => Err(anyhow!("reading {} data: {e}", compression.name())),
        (r, _) => r,
    }
}

/// Failures reading the archive itself (as opposed to writing the tree)
/// mean a damaged or cut-off tar; say so rather than echo the tar reader's
/// internal wording alone.
fn damaged(e: io::Error) -> anyhow::Error {
    anyhow!("tar data is truncated or corrupt ({e})")
}

/// Where the entries of the archive go, decided by its first entry.
enum Sink {
    /// Nothing but the root entry (kept for a rootfs) seen yet.
    Undecided {
        root: Option<Parsed>,
    },
    Rootfs,
    Oci(Spool),
}

/// Top-level names that only an OCI image layout has.
fn starts_oci_layout(rel: &Path) -> bool {
    rel.components().next().is_some_and(|c| {
        ["blobs", "index.json", "oci-layout"]
            .map(OsStr::new)
            .contains(&c.as_os_str())
    })
}

fn outer_entries(
    tar: &mut tar::Archive<&mut dyn Read>,
    extractor: &mut Extractor,
    sink: &mut Sink,
    dest: &Path,
) -> Result<()> {
    for entry in tar.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let Some(parsed) = Extractor::parse(&mut entry)? else {
            continue;
        };
        match sink {
            Sink::Rootfs => extractor.apply(parsed, &mut entry)?,
            Sink::Oci(spool) => spool.entry(parsed, &mut entry)?,
            Sink::Undecided { root } => {
                if parsed.is_dir && parsed.rel.as_os_str().is_empty() {
                    *root = Some(parsed);
                } else if starts_oci_layout(&parsed.rel) {
                    let mut spool = Spool::create(dest, &parsed.shown)?;
                    spool.entry(parsed, &mut entry)?;
                    *sink = Sink::Oci(spool);
                } else {
                    if let Some(root) = root.take() {
                        extractor.apply_root(root)?;
                    }
                    extractor.apply(parsed, &mut entry)?;
                    *sink = Sink::Rootfs;
                }
            }
        }
    }
    Ok(())
}

/// The blobs of an OCI layout, each checked against its digest as it is
/// copied out of the archive, plus its `index.json` and `oci-layout`. The
/// folder lives beside `dest` (same filesystem, outside the tree being
/// built) and is removed when the spool is dropped.
struct Spool {
    dir: PathBuf,
    /// The entry that showed the archive to be a layout, for messages.
    first: String,
    index: Option<Vec<u8>>,
    layout: Option<Vec<u8>>,
    buf: Vec<u8>,
    /// Free space left for blobs (None when statvfs cannot tell).
    room: Option<Room>,
}

impl Spool {
    fn create(dest: &Path, first: &str) -> Result<Spool> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let dir = parent.join(format!(
            ".oci-blobs-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        // A folder of this name can only be left over from a dead process
        // that had our pid.
        if fs::symlink_metadata(&dir).is_ok() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Spool {
            dir,
            first: first.to_string(),
            index: None,
            layout: None,
            buf: vec![0u8; 1 << 17],
            room: Room::new(parent).ok(),
        })
    }

    fn entry<R: Read>(&mut self, parsed: Parsed, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let parts: Vec<&OsStr> = parsed.rel.iter().collect();
        let shown = &parsed.shown;
        let regular = matches!(parsed.kind, EntryType::Regular | EntryType::Continuous);
        let is = |i: usize, name: &str| parts.get(i).is_some_and(|p| *p == OsStr::new(name));
        if parsed.is_dir {
            // blobs/, blobs/sha256/, the layout's own root: nothing to keep.
            return Ok(());
        }
        if parts.len() == 1 && (is(0, "index.json") || is(0, "oci-layout")) {
            if !regular {
                return Err(refuse(shown, "is not a regular file"));
            }
            let bytes = read_small(entry, shown)?;
            if is(0, "index.json") {
                self.index = Some(bytes);
            } else {
                self.layout = Some(bytes);
            }
            return Ok(());
        }
        if parts.len() == 3 && is(0, "blobs") && is(1, "sha256") {
            let Some(hex) = parts[2].to_str().filter(|h| oci::is_sha256_hex(h)) else {
                // Not a digest, so no descriptor can name it.
                return Ok(());
            };
            if !regular {
                return Err(refuse(shown, "a blob must be a regular file"));
            }
            return self.store(hex, entry, shown);
        }
        // Anything else (blobs of other digest algorithms, docker's
        // manifest.json and repositories) is not needed.
        Ok(())
    }

    fn store<R: Read>(
        &mut self,
        hex: &str,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<()> {
        let path = self.dir.join(hex);
        if let Some(room) = &mut self.room {
            room.take(entry.size(), || format!("refusing tar entry {shown:?}"))?;
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let mut hasher = Sha256::new();
        loop {
            let n = match read_some(entry, &mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(anyhow!(
                        "tar data is truncated or corrupt in entry {shown:?} ({e})"
                    ))
                }
            };
            hasher.update(&self.buf[..n]);
            out.write_all(&self.buf[..n])
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != hex {
            return Err(oci::digest_mismatch(hex, &actual));
        }
        Ok(())
    }

    /// The verified blob a descriptor names, opened, with its size checked.
    fn open(&self, d: &oci::Descriptor) -> Result<File> {
        let hex = d.sha256()?;
        let path = self.dir.join(hex);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                bail!("blob {} is missing from the archive", d.digest)
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let len = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if len != d.size {
            bail!(
                "blob {} is {len} bytes, but its descriptor says {}",
                d.digest,
                d.size
            );
        }
        Ok(file)
    }

    fn read_json(&self, d: &oci::Descriptor) -> Result<Vec<u8>> {
        if d.size > oci::MAX_JSON {
            bail!(
                "blob {} is {} bytes, too large for image metadata",
                d.digest,
                d.size
            );
        }
        let mut bytes = Vec::new();
        self.open(d)?
            .read_to_end(&mut bytes)
            .with_context(|| format!("reading blob {}", d.digest))?;
        Ok(bytes)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The content of a small metadata file of the layout.
fn read_small<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Vec<u8>> {
    let size = entry.header().size().unwrap_or(u64::MAX);
    if size > oci::MAX_JSON {
        return Err(refuse(shown, format!("{size} bytes is too large")));
    }
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow!("tar data is truncated or corrupt in entry {shown:?} ({e})"))?;
    Ok(bytes)
}

/// Apply the layers of the image the spooled layout holds for this machine.
fn apply_oci(spool: &Spool, extractor: &mut Extractor, progress: &Progress) -> Result<()> {
    let (Some(index), Some(layout)) = (&spool.index, &spool.layout) else {
        let missing = if spool.index.is_none() {
            "index.json"
        } else {
            "oci-layout"
        };
        bail!(
            "{:?} looks like part of an OCI image layout, but the archive has no {missing}",
            spool.first
        );
    };
    oci::check_layout(layout)?;
    let image = oci::resolve(index, oci::host_arch(), &mut |d| spool.read_json(d))?;
    progress.step(format!("OCI image {image}"));
    let count = image.layers.len();
    for (i, layer) in image.layers.iter().enumerate() {
        let n = i + 1;
        (|| -> Result<()> {
            let mut file = spool.open(layer)?;
            let compression = layer_compression(&mut file, &layer.digest)?;
            let mut bar = progress.bytes(&format!("layer {n}/{count}"), Some(layer.size));
            extractor.begin_layer();
            let result = read_tar(compression, Counting::new(file, &mut bar), |tar| {
                extractor.run(tar)
            });
            bar.finish();
            result
        })()
        .with_context(|| format!("layer {n}/{count} ({})", layer.digest))?;
    }
    extractor.end_layers();
    Ok(())
}

/// A layer's compression, told by magic bytes like the archive's own
/// (media types are not trusted for it); no magic means plain tar, which
/// also covers the all-zero empty tar.
fn layer_compression(file: &mut File, digest: &str) -> Result<Compression> {
    let head = read_head(&mut *file, 8).with_context(|| format!("reading blob {digest}"))?;
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading blob {digest}"))?;
    Ok(match magic(&head) {
        Some(c) => c,
        None if head.starts_with(b"BZh") => bail!("bzip2 layers are not supported"),
        None => Compression::None,
    })
}

/// Remembers the decompressor's first error, so a failure deep inside the
/// tar reader can be reported as what it is: bad compressed data.
struct Watch<'a, R> {
    inner: R,
    error: &'a RefCell<Option<io::Error>>,
}

impl<R: Read> Read for Watch<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            let mut slot = self.error.borrow_mut();
            if slot.is_none() {
                *slot = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

/// Metadata common to all entry kinds.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    xattrs: Vec<(OsString, Vec<u8>)>,
    /// The pax header describes a GNU sparse file (`GNU.sparse.*` keys,
    /// in each of its formats 0.0, 0.1 and 1.0).
    sparse: bool,
}

/// What sits (or will sit) at a path; replacing one kind by another is
/// refused because that is how "create a dir, swap it for a symlink, write
/// through it" attacks work, and a real rootfs never needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    CharDev,
    BlockDev,
    Fifo,
    Socket,
}

impl Kind {
    fn of(ft: fs::FileType) -> Kind {
        if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_socket() {
            Kind::Socket
        } else {
            Kind::File
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File => "regular file",
            Kind::Symlink => "symlink",
            Kind::CharDev => "character device",
            Kind::BlockDev => "block device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

fn refuse(entry: &str, why: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("refusing tar entry {entry:?}: {why}")
}

/// The entry's path as a plain relative path, or why it is not one.
fn lexical(path: &Path) -> std::result::Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("path leaves the root"),
            Component::RootDir | Component::Prefix(_) => return Err("path is absolute"),
        }
    }
    Ok(out)
}

/// One tar entry's header, checked and decoded.
struct Parsed {
    kind: EntryType,
    /// Old (pre-POSIX) tars mark directories only by a trailing slash.
    is_dir: bool,
    rel: PathBuf,
    shown: String,
    meta: Meta,
}

/// Paths the OCI layer being applied has written. Whiteouts and opaque
/// markers only act on what lower layers left, and a lower layer's path may
/// change kind (as overlayfs allows) where within one layer that is refused.
#[derive(Default)]
struct Layer {
    /// Paths this layer created.
    written: HashSet<PathBuf>,
    /// Those and all their ancestors.
    touched: HashSet<PathBuf>,
}

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

struct Extractor {
    root: PathBuf,
    /// Owners can only be given away by root; as another user the files
    /// stay the caller's (the build itself needs root anyway).
    chown: bool,
    /// Directory modes and mtimes, applied after everything is written
    /// (after every layer of an OCI image): a read-only directory must not
    /// block its own children, and creating a child changes the parent's
    /// mtime. Keyed by path so a repeated entry wins and iteration in
    /// reverse visits children before parents.
    dirs: BTreeMap<PathBuf, (u32, (i64, u32))>,
    /// Set while applying OCI layers.
    layer: Option<Layer>,
    stats: UnpackStats,
    buf: Vec<u8>,
    /// Free space left on the root's filesystem (None when statvfs cannot
    /// tell): an entry larger than that is refused by name before writing.
    room: Option<Room>,
}

impl Extractor {
    fn new(root: &Path) -> Self {
        Extractor {
            root: root.to_path_buf(),
            chown: nix::unistd::geteuid().is_root(),
            dirs: BTreeMap::new(),
            layer: None,
            stats: UnpackStats::default(),
            buf: vec![0u8; 1 << 17],
            room: Room::new(root).ok(),
        }
    }

    /// Apply every entry of one tar (an OCI layer).
    fn run(&mut self, archive: &mut tar::Archive<&mut dyn Read>) -> Result<()> {
        for entry in archive.entries().map_err(damaged)? {
            let mut entry = entry.map_err(damaged)?;
            if let Some(parsed) = Self::parse(&mut entry)? {
                self.apply(parsed, &mut entry)?;
            }
        }
        Ok(())
    }

    /// Start applying an OCI layer: whiteouts are interpreted from now on.
    fn begin_layer(&mut self) {
        self.layer = Some(Layer::default());
    }

    fn end_layers(&mut self) {
        self.layer = None;
    }

    /// Decode and check an entry's header; `None` for entries that describe
    /// nothing to create.
    fn parse<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Parsed>> {
        let kind = entry.header().entry_type();
        let path_bytes = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&path_bytes).into_owned();
        if kind.is_pax_global_extensions() || kind == EntryType::new(b'V') {
            // Archive-wide metadata / a GNU volume label: nothing to create.
            return Ok(None);
        }
        let path = entry
            .path()
            .map_err(|e| refuse(&shown, format!("unreadable path: {e}")))?;
        let rel = lexical(&path).map_err(|why| refuse(&shown, why))?;
        let meta = read_meta(entry).map_err(|e| refuse(&shown, format!("bad header: {e:#}")))?;
        if kind == EntryType::GNUSparse || meta.sparse {
            // GNU's sparse entries (`tar --sparse`) hold a map of holes: the
            // tar crate writes such files out in full (a 3 KiB archive
            // became 3 GiB), and their pax form would come out as
            // `GNUSparseFile.N/...` with the real file missing. Base
            // archives are never made this way; refuse rather than guess.
            return Err(refuse(
                &shown,
                "a sparse file (tar --sparse) is not supported: make the archive without --sparse",
            ));
        }
        let is_dir = kind.is_dir() || (kind == EntryType::Regular && path_bytes.ends_with(b"/"));
        Ok(Some(Parsed {
            kind,
            is_dir,
            rel,
            shown,
            meta,
        }))
    }

    /// The root entry ("./") of a rootfs, held back until the archive
    /// proved not to be an OCI layout.
    fn apply_root(&mut self, root: Parsed) -> Result<()> {
        self.directory(&root.rel, &root.shown, &root.meta)?;
        self.stats.entries += 1;
        Ok(())
    }

    fn apply<R: Read>(&mut self, parsed: Parsed, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let Parsed {
            kind,
            is_dir,
            rel,
            shown,
            meta,
        } = parsed;
        let shown = shown.as_str();
        if self.layer.is_some() {
            let name = rel.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
            if name.starts_with(WHITEOUT) {
                return self.whiteout(&rel, name, shown);
            }
        }
        if is_dir {
            self.directory(&rel, shown, &meta)?;
        } else if rel.as_os_str().is_empty() {
            return Err(refuse(shown, "empty path"));
        } else {
            match kind {
                EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                    self.file(&rel, shown, &meta, entry)?
                }
                EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(|e| refuse(shown, format!("unreadable link target: {e}")))?
                        .filter(|t| !t.as_os_str().is_empty())
                        .ok_or_else(|| refuse(shown, "symlink without a target"))?
                        .into_owned();
                    self.symlink(&rel, shown, &target, &meta)?
                }
                EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| refuse(shown, format!("unreadable link target: {e}")))?
                        .filter(|t| !t.as_os_str().is_empty())
                        .ok_or_else(|| refuse(shown, "hard link without a target"))?
                        .into_owned();
                    self.hard_link(&rel, shown, &target)?
                }
                EntryType::Char | EntryType::Block | EntryType::Fifo => {
                    self.node(&rel, shown, kind, &meta, entry.header())?
                }
                other => return Err(refuse(shown, format!("unsupported entry type {other:?}"))),
            }
        }
        if let Some(layer) = &mut self.layer {
            layer.written.insert(rel.clone());
            let mut p = rel.as_path();
            loop {
                // Ancestors are mostly shared: stop at the first one known.
                if !layer.touched.insert(p.to_path_buf()) {
                    break;
                }
                match p.parent() {
                    Some(parent) => p = parent,
                    None => break,
                }
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// An OCI whiteout `<dir>/.wh.<name>` (delete `<dir>/<name>` from lower
    /// layers) or opaque marker `<dir>/.wh..wh..opq` (empty `<dir>` of what
    /// lower layers put there). The marker itself is never created.
    fn whiteout(&mut self, rel: &Path, name: &[u8], shown: &str) -> Result<()> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        if name == OPAQUE {
            if let Some(dir) = self.lower_dir(parent, shown)? {
                self.clear_lower(&dir, parent)?;
            }
            return Ok(());
        }
        let target = &name[WHITEOUT.len()..];
        if target.starts_with(WHITEOUT) {
            // Other `.wh..wh.` names are aufs bookkeeping (`.wh..wh.plnk`),
            // not changes to the tree.
            return Ok(());
        }
        if target.is_empty() || target == b"." || target == b".." {
            return Err(refuse(shown, "whiteout without a file name"));
        }
        let Some(dir) = self.lower_dir(parent, shown)? else {
            return Ok(());
        };
        let target_rel = parent.join(OsStr::from_bytes(target));
        let full = dir.join(OsStr::from_bytes(target));
        let layer = self.layer.as_ref().expect("whiteouts only in layers");
        if layer.written.contains(&target_rel) {
            // Whiteouts hide lower layers only, never their own layer.
            return Ok(());
        }
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() && layer.touched.contains(&target_rel) => {
                // This layer put files below it: only the lower part goes.
                self.clear_lower(&full, &target_rel)
            }
            Ok(_) => self.remove_lower(&full),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("reading {}", full.display())),
        }
    }

    /// The full path of directory `rel` for a whiteout in it, or `None` if
    /// there is no such directory (then there is nothing to delete). A
    /// symlink on the way is refused: deleting through it could reach
    /// anywhere.
    fn lower_dir(&self, rel: &Path, shown: &str) -> Result<Option<PathBuf>> {
        let mut full = self.root.clone();
        for part in rel.components() {
            full.push(part);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refuse(
                        shown,
                        format!("whiteout goes through the symlink {}", self.inside(&full)),
                    ))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("reading {}", full.display())),
            }
        }
        Ok(Some(full))
    }

    /// Remove what lower layers left in directory `full` (`rel` inside the
    /// root), keeping what the current layer wrote there.
    fn clear_lower(&mut self, full: &Path, rel: &Path) -> Result<()> {
        let mut names = Vec::new();
        for child in fs::read_dir(full).with_context(|| format!("reading {}", full.display()))? {
            names.push(
                child
                    .with_context(|| format!("reading {}", full.display()))?
                    .file_name(),
            );
        }
        for name in names {
            let child_rel = rel.join(&name);
            let child = full.join(&name);
            let layer = self.layer.as_ref().expect("whiteouts only in layers");
            if layer.touched.contains(&child_rel) {
                let m = fs::symlink_metadata(&child)
                    .with_context(|| format!("reading {}", child.display()))?;
                if m.is_dir() {
                    self.clear_lower(&child, &child_rel)?;
                }
                continue;
            }
            self.remove_lower(&child)?;
        }
        Ok(())
    }

    /// Remove a lower layer's file or whole tree at `full`; symlinks are
    /// removed themselves, never followed.
    fn remove_lower(&mut self, full: &Path) -> Result<()> {
        let m =
            fs::symlink_metadata(full).with_context(|| format!("reading {}", full.display()))?;
        if m.is_dir() {
            fs::remove_dir_all(full).with_context(|| format!("removing {}", full.display()))?;
            self.dirs.retain(|p, _| !p.starts_with(full));
        } else {
            fs::remove_file(full).with_context(|| format!("removing {}", full.display()))?;
        }
        Ok(())
    }

    /// Create missing parent directories of `rel` and return the full path,
    /// refusing if any existing component is a symlink or not a directory.
    fn prepare(&self, rel: &Path, shown: &str) -> Result<PathBuf> {
        let mut full = self.root.clone();
        let parts: Vec<_> = rel.components().collect();
        let Some((last, parents)) = parts.split_last() else {
            return Ok(full);
        };
        for part in parents {
            full.push(part);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refuse(
                        shown,
                        format!("path goes through the symlink {}", self.inside(&full)),
                    ))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(refuse(
                        shown,
                        format!("{} is not a directory", self.inside(&full)),
                    ))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Archives may omit parent entries; tar then makes them 0755.
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&full)
                        .with_context(|| format!("creating {}", full.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("reading {}", full.display())),
            }
        }
        full.push(last);
        Ok(full)
    }

    /// Make room for a new entry of kind `new` at `full`. Same kind: a
    /// non-directory is unlinked (never written in place, which would write
    /// through hard links) and a directory is kept. Different kind: refused,
    /// unless a lower OCI layer put it there (then it is removed, as
    /// overlayfs would hide it). Returns whether a directory already exists
    /// there.
    fn make_room(&mut self, full: &Path, shown: &str, new: Kind) -> Result<bool> {
        match fs::symlink_metadata(full) {
            Ok(m) => {
                let old = Kind::of(m.file_type());
                if old != new {
                    let rel = full.strip_prefix(&self.root).unwrap_or(full);
                    if self
                        .layer
                        .as_ref()
                        .is_some_and(|l| !l.touched.contains(rel))
                    {
                        self.remove_lower(full)?;
                        return Ok(false);
                    }
                    return Err(refuse(
                        shown,
                        format!("would replace a {} with a {}", old.noun(), new.noun()),
                    ));
                }
                if old == Kind::Dir {
                    return Ok(true);
                }
                fs::remove_file(full).with_context(|| format!("removing {}", full.display()))?;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e).with_context(|| format!("reading {}", full.display())),
        }
    }

    fn directory(&mut self, rel: &Path, shown: &str, meta: &Meta) -> Result<()> {
        // "./" describes the root itself: its owner and mode matter too.
        let full = if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            let full = self.prepare(rel, shown)?;
            if !self.make_room(&full, shown, Kind::Dir)? {
                // Owner-only until finish_dirs: the final mode may forbid writes.
                DirBuilder::new()
                    .mode(0o700)
                    .create(&full)
                    .with_context(|| format!("creating {}", full.display()))?;
            }
            full
        };
        self.owner(&full, shown, meta, None)?;
        self.set_xattrs(&full, shown, meta, None)?;
        self.dirs.insert(full, (meta.mode, meta.mtime));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        rel: &Path,
        shown: &str,
        meta: &Meta,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let full = self.prepare(rel, shown)?;
        if let Some(room) = &mut self.room {
            room.take(entry.size(), || format!("refusing tar entry {shown:?}"))?;
        }
        self.make_room(&full, shown, Kind::File)?;
        // create_new (O_EXCL) never follows a symlink, even a dangling one.
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&full)
            .with_context(|| format!("creating {}", full.display()))?;
        loop {
            let n = match read_some(entry, &mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    return Err(anyhow!(
                        "tar data is truncated or corrupt in entry {shown:?} ({e})"
                    ))
                }
            };
            out.write_all(&self.buf[..n])
                .with_context(|| format!("writing {}", full.display()))?;
            self.stats.bytes += n as u64;
        }
        // Order matters: chown clears setuid/setgid bits and file
        // capabilities, so mode and xattrs come after it.
        self.owner(&full, shown, meta, Some(&out))?;
        out.set_permissions(Permissions::from_mode(meta.mode))
            .with_context(|| format!("setting the mode of {}", full.display()))?;
        self.set_xattrs(&full, shown, meta, Some(&out))?;
        let t = system_time(meta.mtime);
        out.set_times(FileTimes::new().set_accessed(t).set_modified(t))
            .with_context(|| format!("setting the mtime of {}", full.display()))?;
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, shown: &str, target: &Path, meta: &Meta) -> Result<()> {
        // The target is stored, never followed, so it may point anywhere
        // (rootfs symlinks are often absolute); writes through it are what
        // prepare() and make_room() refuse.
        let full = self.prepare(rel, shown)?;
        self.make_room(&full, shown, Kind::Symlink)?;
        std::os::unix::fs::symlink(target, &full)
            .with_context(|| format!("creating the symlink {}", full.display()))?;
        self.owner(&full, shown, meta, None)?;
        self.set_xattrs(&full, shown, meta, None)?;
        set_times_nofollow(&full, meta.mtime)
    }

    fn hard_link(&mut self, rel: &Path, shown: &str, target: &Path) -> Result<()> {
        let target_rel = match lexical(target) {
            Ok(t) if t.as_os_str().is_empty() => {
                return Err(refuse(shown, "hard link to the root"))
            }
            Ok(t) => t,
            Err(why) => {
                return Err(refuse(
                    shown,
                    format!("hard link target {:?}: {why}", target.display().to_string()),
                ))
            }
        };
        if target_rel == rel {
            // A link to itself: the file is already there.
            return Ok(());
        }
        let target_full = self.existing(&target_rel, shown)?;
        let target_kind = match fs::symlink_metadata(&target_full) {
            Ok(m) => Kind::of(m.file_type()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refuse(
                    shown,
                    format!(
                        "hard link target {:?} does not exist",
                        target_rel.display().to_string()
                    ),
                ))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", target_full.display())),
        };
        if target_kind == Kind::Dir {
            return Err(refuse(shown, "hard link to a directory"));
        }
        let full = self.prepare(rel, shown)?;
        self.make_room(&full, shown, target_kind)?;
        // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the
        // symlink itself, never what it points to.
        fs::hard_link(&target_full, &full)
            .with_context(|| format!("linking {} to {}", full.display(), target_full.display()))
    }

    /// Full path of an entry that must already exist, with no symlink in
    /// its parent components (a hard link through a symlink could reach a
    /// host file).
    fn existing(&self, rel: &Path, shown: &str) -> Result<PathBuf> {
        let mut full = self.root.clone();
        let parts: Vec<_> = rel.components().collect();
        let Some((last, parents)) = parts.split_last() else {
            return Ok(full);
        };
        for part in parents {
            full.push(part);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refuse(
                        shown,
                        format!(
                            "hard link target goes through the symlink {}",
                            self.inside(&full)
                        ),
                    ))
                }
                _ => {
                    return Err(refuse(
                        shown,
                        format!(
                            "hard link target {:?} does not exist",
                            rel.display().to_string()
                        ),
                    ))
                }
            }
        }
        full.push(last);
        Ok(full)
    }

    fn node(
        &mut self,
        rel: &Path,
        shown: &str,
        kind: EntryType,
        meta: &Meta,
        header: &tar::Header,
    ) -> Result<()> {
        let (sflag, new_kind) = match kind {
            EntryType::Char => (SFlag::S_IFCHR, Kind::CharDev),
            EntryType::Block => (SFlag::S_IFBLK, Kind::BlockDev),
            _ => (SFlag::S_IFIFO, Kind::Fifo),
        };
        let dev = if new_kind == Kind::Fifo {
            0
        } else {
            let major = header
                .device_major()
                .ok()
                .flatten()
                .ok_or_else(|| refuse(shown, "device node without a major number"))?;
            let minor = header
                .device_minor()
                .ok()
                .flatten()
                .ok_or_else(|| refuse(shown, "device node without a minor number"))?;
            makedev(u64::from(major), u64::from(minor))
        };
        let full = self.prepare(rel, shown)?;
        self.make_room(&full, shown, new_kind)?;
        mknod(&full, sflag, Mode::from_bits_truncate(0o600), dev)
            .with_context(|| format!("creating the {} {}", new_kind.noun(), full.display()))?;
        self.owner(&full, shown, meta, None)?;
        // The node was just created by us and is not a symlink, so a
        // path-based chmod cannot be redirected.
        fs::set_permissions(&full, Permissions::from_mode(meta.mode))
            .with_context(|| format!("setting the mode of {}", full.display()))?;
        self.set_xattrs(&full, shown, meta, None)?;
        set_times_nofollow(&full, meta.mtime)
    }

    /// Numeric owner, never looked up by name: the host's user database
    /// has nothing to do with the rootfs's.
    fn owner(&self, full: &Path, shown: &str, meta: &Meta, file: Option<&File>) -> Result<()> {
        if !self.chown {
            return Ok(());
        }
        let r = match file {
            Some(f) => std::os::unix::fs::fchown(f, Some(meta.uid), Some(meta.gid)),
            None => std::os::unix::fs::lchown(full, Some(meta.uid), Some(meta.gid)),
        };
        r.with_context(|| {
            format!(
                "setting owner {}:{} of {shown:?} on {}",
                meta.uid,
                meta.gid,
                full.display()
            )
        })
    }

    fn set_xattrs(&self, full: &Path, shown: &str, meta: &Meta, file: Option<&File>) -> Result<()> {
        use xattr::FileExt;
        for (name, value) in &meta.xattrs {
            let r = match file {
                Some(f) => f.set_xattr(name, value),
                // xattr::set is lsetxattr: it never follows a symlink.
                None => xattr::set(full, name, value),
            };
            r.with_context(|| {
                format!(
                    "setting xattr {} of {shown:?} on {}",
                    name.to_string_lossy(),
                    full.display()
                )
            })?;
        }
        Ok(())
    }

    fn finish_dirs(&mut self) -> Result<()> {
        for (path, (mode, mtime)) in std::mem::take(&mut self.dirs).into_iter().rev() {
            let m = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            if !m.is_dir() {
                bail!("{} is no longer a directory", path.display());
            }
            fs::set_permissions(&path, Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
            set_times_nofollow(&path, mtime)?;
        }
        Ok(())
    }

    fn inside(&self, full: &Path) -> String {
        format!(
            "{:?}",
            full.strip_prefix(&self.root)
                .unwrap_or(full)
                .display()
                .to_string()
        )
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta> {
    let header = entry.header();
    // Only permission bits plus setuid/setgid/sticky: the file type comes
    // from the entry type, never from stray high mode bits.
    let mode = header.mode().context("mode")? & 0o7777;
    let uid = u32::try_from(header.uid().context("uid")?).context("uid out of range")?;
    let gid = u32::try_from(header.gid().context("gid")?).context("gid out of range")?;
    let mut mtime = (
        i64::try_from(header.mtime().context("mtime")?).unwrap_or(i64::MAX),
        0,
    );
    let mut xattrs = Vec::new();
    let mut sparse = false;
    if let Some(exts) = entry.pax_extensions().context("pax header")? {
        for ext in exts {
            let ext = ext.context("pax header")?;
            let key = ext.key_bytes();
            if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                xattrs.push((
                    std::ffi::OsStr::from_bytes(name).to_os_string(),
                    ext.value_bytes().to_vec(),
                ));
            } else if key.starts_with(b"GNU.sparse.") {
                sparse = true;
            } else if key == b"mtime" {
                // pax keeps sub-second precision ("1700000000.123456789").
                if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                    mtime = t;
                }
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
        sparse,
    })
}

fn parse_pax_time(v: &str) -> Option<(i64, u32)> {
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let nanos = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some((secs, nanos))
}

fn system_time((secs, nanos): (i64, u32)) -> SystemTime {
    // Pre-1970 stamps are clamped: FileTimes wants a SystemTime, and no
    // real rootfs file predates the epoch.
    SystemTime::UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos)
}

fn set_times_nofollow(path: &Path, (secs, nanos): (i64, u32)) -> Result<()> {
    let t = TimeSpec::new(secs, i64::from(nanos));
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .with_context(|| format!("setting the mtime of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths() {
        assert_eq!(
            lexical(Path::new("./etc/passwd")),
            Ok(PathBuf::from("etc/passwd"))
        );
        assert_eq!(lexical(Path::new("./")), Ok(PathBuf::new()));
        assert_eq!(lexical(Path::new("a/./b")), Ok(PathBuf::from("a/b")));
        assert_eq!(lexical(Path::new("../x")), Err("path leaves the root"));
        assert_eq!(lexical(Path::new("a/../../x")), Err("path leaves the root"));
        assert_eq!(lexical(Path::new("/etc/passwd")), Err("path is absolute"));
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time("1700000000.5"),
            Some((1_700_000_000, 500_000_000))
        );
        assert_eq!(
            parse_pax_time("1700000000.1234567891"),
            Some((1_700_000_000, 123_456_789))
        );
        assert_eq!(parse_pax_time("x"), None);
    }

    #[test]
    fn old_v7_tar_headers_are_recognised_by_checksum() {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..5].copy_from_slice(b"hello");
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        assert_eq!(magic(h.as_bytes()), Some(Compression::None));
        let mut bad = *h.as_bytes();
        bad[0] = b'j';
        assert_eq!(magic(&bad), None);
        assert_eq!(magic(&[0u8; 512]), None);
    }

    #[test]
    fn sniff_rejects_unknown_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mystery.tar.xz");
        fs::write(&p, b"hello, not an archive").unwrap();
        let err = sniff(&p).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("mystery.tar.xz"), "{msg}");
        assert!(msg.contains("not a tar archive"), "{msg}");
    }
}
