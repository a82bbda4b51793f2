//! Rootfs unpacking: metadata fidelity, compression sniffing, and refusal of
//! hostile archives. Archives are built here with the tar crate; hostile
//! headers are written byte by byte, since the builder itself refuses them.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::{is_root, SmallFs};
use tar::{EntryType, Header};
use undercloud_live::progress::Progress;
use undercloud_live::rootfs::unpack::{sniff, unpack, Compression, UnpackStats};

const MTIME: u64 = 1_700_000_000;

/// A tar archive under construction.
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

/// One entry's header fields; defaults describe a root-owned file.
struct E<'a> {
    kind: EntryType,
    name: &'a [u8],
    link: &'a [u8],
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    dev: (u32, u32),
}

impl Default for E<'_> {
    fn default() -> Self {
        E {
            kind: EntryType::Regular,
            name: b"",
            link: b"",
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: MTIME,
            dev: (0, 0),
        }
    }
}

impl Tar {
    fn new() -> Self {
        Tar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    /// Append with the raw name and link bytes, bypassing the builder's own
    /// path checks so hostile names can be expressed.
    fn raw(&mut self, e: E<'_>, data: &[u8]) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(data.len() as u64);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        {
            let old = h.as_old_mut();
            assert!(e.name.len() <= 100 && e.link.len() <= 100);
            old.name = [0; 100];
            old.name[..e.name.len()].copy_from_slice(e.name);
            old.linkname = [0; 100];
            old.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(
            E {
                kind: EntryType::Directory,
                name: name.as_bytes(),
                mode,
                ..E::default()
            },
            b"",
        )
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.raw(
            E {
                name: name.as_bytes(),
                ..E::default()
            },
            data,
        )
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            E {
                kind: EntryType::Symlink,
                name: name.as_bytes(),
                link: target.as_bytes(),
                mode: 0o777,
                ..E::default()
            },
            b"",
        )
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(
            E {
                kind: EntryType::Link,
                name: name.as_bytes(),
                link: target.as_bytes(),
                ..E::default()
            },
            b"",
        )
    }

    /// A pax extended header applying to the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (key, value) in records {
            // "<len> <key>=<value>\n", where len counts itself.
            let body_len = key.len() + value.len() + 3;
            let mut len = body_len + 1;
            while len.to_string().len() + body_len != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        self.raw(
            E {
                kind: EntryType::XHeader,
                name: b"PaxHeaders/next",
                ..E::default()
            },
            &data,
        )
    }

    fn bytes(&mut self) -> Vec<u8> {
        self.b.finish().unwrap();
        self.b.get_ref().clone()
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
}

/// `base/dest` is the unpack root, `base/outside` holds a file that a
/// hostile archive would like to reach.
fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().to_path_buf();
    let dest = base.join("dest");
    let outside = base.join("outside");
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"host data").unwrap();
    Fixture {
        _tmp: tmp,
        base,
        dest,
        outside,
    }
}

impl Fixture {
    fn archive(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.base.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    fn unpack(&self, bytes: &[u8]) -> anyhow::Result<UnpackStats> {
        let p = self.archive("rootfs.tar", bytes);
        unpack(&p, &self.dest, &Progress::silent())
    }

    /// Nothing was added or changed next to `dest`.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
        let secret = self.outside.join("secret");
        assert_eq!(fs::read(&secret).unwrap(), b"host data");
        assert_eq!(fs::symlink_metadata(&secret).unwrap().nlink(), 1);
        let mut top: Vec<_> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "rootfs.tar")
            .collect();
        top.sort();
        assert_eq!(top, vec!["dest", "outside"]);
    }
}

/// The error must be one line naming the entry and the reason.
fn assert_refused(err: anyhow::Error, entry: &str, reason: &str) {
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("refusing tar entry {entry:?}")),
        "entry not named: {msg}"
    );
    assert!(msg.contains(reason), "reason {reason:?} missing: {msg}");
    assert!(!msg.contains('\n'), "not one line: {msg}");
}

#[test]
fn refuses_parent_dir_escape() {
    let f = fixture();
    let bytes = Tar::new()
        .file("./ok", b"fine")
        .file("../outside/pwned", b"x")
        .bytes();
    assert_refused(
        f.unpack(&bytes).unwrap_err(),
        "../outside/pwned",
        "path leaves the root",
    );
    let bytes = Tar::new().file("a/../../outside/pwned", b"x").bytes();
    assert_refused(
        f.unpack(&bytes).unwrap_err(),
        "a/../../outside/pwned",
        "path leaves the root",
    );
    f.assert_outside_untouched();
}

#[test]
fn refuses_absolute_path() {
    let f = fixture();
    let target = f.outside.join("pwned");
    let name = target.to_str().unwrap();
    let bytes = Tar::new().file(name, b"x").bytes();
    assert_refused(f.unpack(&bytes).unwrap_err(), name, "path is absolute");
    f.assert_outside_untouched();
}

#[test]
fn refuses_writing_through_a_symlinked_directory() {
    for target in [f_abs_outside(), "../outside".to_string()] {
        let f = fixture();
        let target = target.replace("@BASE@", f.base.to_str().unwrap());
        let bytes = Tar::new()
            .symlink("link", &target)
            .file("link/pwned", b"x")
            .bytes();
        assert_refused(
            f.unpack(&bytes).unwrap_err(),
            "link/pwned",
            "path goes through the symlink \"link\"",
        );
        f.assert_outside_untouched();
    }
}

fn f_abs_outside() -> String {
    "@BASE@/outside".to_string()
}

#[test]
fn refuses_writing_through_a_symlink_already_in_dest() {
    // dest may not be empty (a re-run); a symlink there is never followed.
    let f = fixture();
    std::os::unix::fs::symlink(&f.outside, f.dest.join("etc")).unwrap();
    let bytes = Tar::new()
        .file("etc/passwd", b"root::0:0::/:/bin/sh\n")
        .bytes();
    assert_refused(
        f.unpack(&bytes).unwrap_err(),
        "etc/passwd",
        "goes through the symlink",
    );
    f.assert_outside_untouched();
}

#[test]
fn refuses_replacing_a_symlink_with_a_file() {
    // Opening the final component would follow the symlink to the host.
    let f = fixture();
    let secret = f.outside.join("secret");
    let bytes = Tar::new()
        .symlink("passwd", secret.to_str().unwrap())
        .file("passwd", b"overwritten")
        .bytes();
    assert_refused(
        f.unpack(&bytes).unwrap_err(),
        "passwd",
        "would replace a symlink with a regular file",
    );
    f.assert_outside_untouched();
}

#[test]
fn refuses_replacing_a_directory_with_a_symlink() {
    let f = fixture();
    let bytes = Tar::new()
        .dir("d/", 0o755)
        .symlink("d", f.outside.to_str().unwrap())
        .file("d/pwned", b"x")
        .bytes();
    assert_refused(
        f.unpack(&bytes).unwrap_err(),
        "d",
        "would replace a directory with a symlink",
    );
    f.assert_outside_untouched();
}

#[test]
fn refuses_hostile_hard_links() {
    let f = fixture();
    let secret = f.outside.join("secret");
    let cases: Vec<(String, String)> = vec![
        ("../outside/secret".into(), "leaves the root".into()),
        (secret.to_str().unwrap().into(), "is absolute".into()),
    ];
    for (target, reason) in cases {
        let bytes = Tar::new().hardlink("h", &target).bytes();
        assert_refused(f.unpack(&bytes).unwrap_err(), "h", &reason);
    }
    // Through a symlink that points out of the root.
    let f2 = fixture();
    let bytes = Tar::new()
        .symlink("l", f2.outside.to_str().unwrap())
        .hardlink("h", "l/secret")
        .bytes();
    assert_refused(
        f2.unpack(&bytes).unwrap_err(),
        "h",
        "hard link target goes through the symlink \"l\"",
    );
    // Replacing an existing symlink by a hard link to a file is a type change.
    let f3 = fixture();
    let bytes = Tar::new()
        .file("real", b"inside")
        .symlink("x", f3.outside.join("secret").to_str().unwrap())
        .hardlink("x", "real")
        .bytes();
    assert_refused(
        f3.unpack(&bytes).unwrap_err(),
        "x",
        "would replace a symlink with a regular file",
    );
    f.assert_outside_untouched();
    f2.assert_outside_untouched();
    f3.assert_outside_untouched();
}

#[test]
fn absolute_symlink_targets_are_stored_not_followed() {
    // Real rootfs trees are full of absolute symlinks; they are fine as
    // long as nothing is written through them.
    let f = fixture();
    let bytes = Tar::new()
        .dir("./", 0o755)
        .dir("usr/", 0o755)
        .dir("usr/lib/", 0o755)
        .symlink("lib", "/usr/lib")
        .symlink("etc-mtab", "/proc/self/mounts")
        .file("usr/lib/libc.so", b"ELF")
        .bytes();
    f.unpack(&bytes).unwrap();
    assert_eq!(
        fs::read_link(f.dest.join("lib")).unwrap(),
        Path::new("/usr/lib")
    );
    assert_eq!(fs::read(f.dest.join("usr/lib/libc.so")).unwrap(), b"ELF");
    f.assert_outside_untouched();
}

#[test]
fn later_entries_replace_earlier_ones_of_the_same_kind() {
    let f = fixture();
    let bytes = Tar::new()
        .file("a", b"first")
        .hardlink("b", "a")
        .file("b", b"second")
        .symlink("s", "one")
        .symlink("s", "two")
        .bytes();
    f.unpack(&bytes).unwrap();
    // "b" was unlinked and recreated, not written through the hard link.
    assert_eq!(fs::read(f.dest.join("a")).unwrap(), b"first");
    assert_eq!(fs::read(f.dest.join("b")).unwrap(), b"second");
    assert_eq!(fs::read_link(f.dest.join("s")).unwrap(), Path::new("two"));
}

#[test]
fn keeps_owners_modes_times_links_nodes_and_xattrs() {
    require!(
        is_root(),
        "needs root to set owners and create device nodes"
    );
    let f = fixture();
    // VFS_CAP_REVISION_2 with CAP_NET_RAW (bit 13) permitted and effective.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&(0x0200_0001u32).to_le_bytes());
    cap[4..8].copy_from_slice(&(1u32 << 13).to_le_bytes());
    let mut t = Tar::new();
    t.dir("./", 0o755)
        .dir("./usr/", 0o755)
        .dir("./usr/bin/", 0o755)
        .raw(
            E {
                name: b"./usr/bin/su",
                mode: 0o4755,
                ..E::default()
            },
            b"#!setuid\n",
        )
        .pax(&[
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.user.origin", b"test"),
        ])
        .raw(
            E {
                name: b"./usr/bin/ping",
                mode: 0o755,
                ..E::default()
            },
            b"ping",
        )
        .hardlink("./usr/bin/su-again", "./usr/bin/su")
        .raw(
            E {
                kind: EntryType::Directory,
                name: b"./home/alice/",
                mode: 0o700,
                uid: 1000,
                gid: 1000,
                mtime: 1_600_000_100,
                ..E::default()
            },
            b"",
        )
        .pax(&[("mtime", b"1600000000.25")])
        .raw(
            E {
                name: b"./home/alice/notes",
                mode: 0o640,
                uid: 1000,
                gid: 1001,
                ..E::default()
            },
            b"hello",
        )
        // A read-only directory with a child written after it.
        .raw(
            E {
                kind: EntryType::Directory,
                name: b"./etc/ro/",
                mode: 0o555,
                mtime: 1_500_000_000,
                ..E::default()
            },
            b"",
        )
        .file("./etc/ro/inside", b"x")
        .raw(
            E {
                kind: EntryType::Symlink,
                name: b"./bin",
                link: b"usr/bin",
                mode: 0o777,
                uid: 5,
                gid: 6,
                mtime: 1_400_000_000,
                ..E::default()
            },
            b"",
        )
        .raw(
            E {
                kind: EntryType::Char,
                name: b"./dev/null",
                mode: 0o666,
                dev: (1, 3),
                ..E::default()
            },
            b"",
        )
        .raw(
            E {
                kind: EntryType::Block,
                name: b"./dev/loop0",
                mode: 0o660,
                gid: 6,
                dev: (7, 0),
                ..E::default()
            },
            b"",
        )
        .raw(
            E {
                kind: EntryType::Fifo,
                name: b"./run/initctl",
                mode: 0o600,
                ..E::default()
            },
            b"",
        );
    let stats = f.unpack(&t.bytes()).unwrap();
    assert_eq!(stats.entries, 14);
    assert_eq!(stats.bytes, (9 + 4 + 5 + 1) as u64);

    let d = &f.dest;
    let m = |p: &str| fs::symlink_metadata(d.join(p)).unwrap();

    let su = m("usr/bin/su");
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!((su.uid(), su.gid()), (0, 0));
    assert_eq!(su.mtime(), MTIME as i64);
    let again = m("usr/bin/su-again");
    assert_eq!(again.ino(), su.ino(), "hard link");
    assert_eq!(su.nlink(), 2);

    let ping = d.join("usr/bin/ping");
    assert_eq!(
        xattr::get(&ping, "security.capability").unwrap(),
        Some(cap.clone())
    );
    assert_eq!(
        xattr::get(&ping, "user.origin").unwrap(),
        Some(b"test".to_vec())
    );

    let alice = m("home/alice");
    assert_eq!((alice.uid(), alice.gid()), (1000, 1000));
    assert_eq!(alice.mode() & 0o7777, 0o700);
    assert_eq!(
        alice.mtime(),
        1_600_000_100,
        "dir mtime set after its children"
    );
    let notes = m("home/alice/notes");
    assert_eq!((notes.uid(), notes.gid()), (1000, 1001));
    assert_eq!(notes.mode() & 0o7777, 0o640);
    assert_eq!(
        (notes.mtime(), notes.mtime_nsec()),
        (1_600_000_000, 250_000_000)
    );

    let ro = m("etc/ro");
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert_eq!(ro.mtime(), 1_500_000_000);
    assert_eq!(fs::read(d.join("etc/ro/inside")).unwrap(), b"x");

    let bin = m("bin");
    assert!(bin.file_type().is_symlink());
    assert_eq!(fs::read_link(d.join("bin")).unwrap(), Path::new("usr/bin"));
    assert_eq!((bin.uid(), bin.gid()), (5, 6));
    assert_eq!(bin.mtime(), 1_400_000_000);

    let null = m("dev/null");
    assert!(null.file_type().is_char_device());
    assert_eq!(
        (
            nix::sys::stat::major(null.rdev()),
            nix::sys::stat::minor(null.rdev())
        ),
        (1, 3)
    );
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = m("dev/loop0");
    assert!(lp.file_type().is_block_device());
    assert_eq!(
        (
            nix::sys::stat::major(lp.rdev()),
            nix::sys::stat::minor(lp.rdev())
        ),
        (7, 0)
    );
    assert_eq!((lp.gid(), lp.mode() & 0o7777), (6, 0o660));
    assert!(m("run/initctl").file_type().is_fifo());

    let root = fs::metadata(d).unwrap();
    assert_eq!(root.mode() & 0o7777, 0o755, "\"./\" applies to the root");
}

fn sample_tar() -> Vec<u8> {
    // Large and varied enough to span several xz blocks.
    let mut t = Tar::new();
    t.dir("./", 0o755).dir("./data/", 0o755);
    for i in 0..40 {
        let content: Vec<u8> = (0..20_000u32)
            .map(|j| (j.wrapping_mul(31).wrapping_add(i * 7) % 251) as u8)
            .collect();
        t.file(&format!("./data/f{i:02}"), &content);
    }
    t.symlink("./latest", "data/f39");
    t.bytes()
}

fn check_sample(dest: &Path) {
    assert_eq!(fs::read_dir(dest.join("data")).unwrap().count(), 40);
    let f7 = fs::read(dest.join("data/f07")).unwrap();
    assert_eq!(f7.len(), 20_000);
    let (i, j) = (7u32, 1u32);
    assert_eq!(f7[j as usize], ((j * 31 + i * 7) % 251) as u8);
    assert_eq!(
        fs::read_link(dest.join("latest")).unwrap(),
        Path::new("data/f39")
    );
}

/// xz as `xz -T0` writes it: one stream of many independent blocks.
fn xz_multiblock(data: &[u8]) -> Vec<u8> {
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(2)
        .block_size(64 * 1024)
        .preset(1)
        .encoder()
        .unwrap();
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn each_compression_is_sniffed_and_unpacked() {
    let tar = sample_tar();
    // Names deliberately disagree with contents: only magic bytes count.
    let cases: Vec<(&str, Vec<u8>, Compression)> = vec![
        ("plain.tar.gz", tar.clone(), Compression::None),
        ("xz.tar.zst", xz_multiblock(&tar), Compression::Xz),
        ("gz.tar", gzip(&tar), Compression::Gzip),
        (
            "zst.tar.xz",
            zstd::encode_all(&tar[..], 3).unwrap(),
            Compression::Zstd,
        ),
    ];
    for (name, bytes, expected) in cases {
        let f = fixture();
        let p = f.archive(name, &bytes);
        assert_eq!(sniff(&p).unwrap(), expected, "{name}");
        let stats = unpack(&p, &f.dest, &Progress::silent()).unwrap();
        assert_eq!(stats.entries, 43, "{name}");
        assert_eq!(stats.bytes, 40 * 20_000, "{name}");
        check_sample(&f.dest);
    }
}

#[test]
fn concatenated_xz_streams_are_all_decoded() {
    let tar = sample_tar();
    let (a, b) = tar.split_at(tar.len() / 3);
    let mut bytes = xz_multiblock(a);
    bytes.extend_from_slice(&[0u8; 8]); // stream padding is allowed between streams
    bytes.extend(xz_multiblock(b));
    let f = fixture();
    let p = f.archive("joined.tar.xz", &bytes);
    unpack(&p, &f.dest, &Progress::silent()).unwrap();
    check_sample(&f.dest);
}

#[test]
fn truncated_or_corrupt_compressed_data_fails_cleanly() {
    let tar = sample_tar();
    let xz = xz_multiblock(&tar);
    let gz = gzip(&tar);
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    let mut flipped = xz.clone();
    let mid = flipped.len() / 2;
    for b in &mut flipped[mid..mid + 64] {
        *b ^= 0x5A;
    }
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("rootfs.tar.xz", xz[..xz.len() / 2].to_vec(), "xz"),
        // Everything but the stream footer: all tar data decodes, only
        // the end of the xz stream is missing.
        ("rootfs-tail.tar.xz", xz[..xz.len() - 8].to_vec(), "xz"),
        ("rootfs-flip.tar.xz", flipped, "xz"),
        ("rootfs.tar.gz", gz[..gz.len() / 2].to_vec(), "gzip"),
        ("rootfs.tar.zst", zst[..zst.len() / 2].to_vec(), "zstd"),
    ];
    for (name, bytes, fmt) in cases {
        let f = fixture();
        let p = f.archive(name, &bytes);
        let err = unpack(&p, &f.dest, &Progress::silent()).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "unpacking {}: {fmt} data is truncated or corrupt",
                p.display()
            ),
            "{name}"
        );
    }
}

#[test]
fn truncated_plain_tar_fails() {
    let tar = sample_tar();
    let f = fixture();
    let p = f.archive("cut.tar", &tar[..tar.len() / 2 + 100]);
    let err = unpack(&p, &f.dest, &Progress::silent()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!(
            "unpacking {}: tar data is truncated or corrupt",
            p.display()
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn unknown_format_is_named() {
    let f = fixture();
    let p = f.archive("rootfs.tar.bz2", b"BZh91AY&SY not really");
    let err = unpack(&p, &f.dest, &Progress::silent()).unwrap_err();
    assert!(format!("{err:#}").contains("rootfs.tar.bz2"), "{err:#}");
    let p = f.archive("rootfs.img", &[0u8; 1024]);
    let err = sniff(&p).unwrap_err();
    assert!(format!("{err:#}").contains("rootfs.img"), "{err:#}");
}

#[test]
fn an_entry_larger_than_the_free_space_is_refused_by_name() {
    let Some(small) = SmallFs::mount("2m") else {
        return;
    };
    // 8 MiB of zeros: a few KiB compressed, far beyond the 2 MiB tmpfs.
    let mut t = Tar::new();
    t.dir("./", 0o755)
        .dir("./etc/", 0o755)
        .dir("./var/", 0o755)
        .file("./etc/small", b"fits")
        .file("./var/big.img", &vec![0u8; 8 << 20]);
    let archive = tempfile::tempdir().unwrap();
    let path = archive.path().join("rootfs.tar.xz");
    fs::write(&path, xz_multiblock(&t.bytes())).unwrap();
    let dest = small.path().join("root");
    fs::create_dir(&dest).unwrap();

    let err = unpack(&path, &dest, &Progress::silent()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("refusing tar entry \"./var/big.img\": 8.0 MiB does not fit, only "),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(fs::read(dest.join("etc/small")).unwrap(), b"fits");
    assert!(!dest.join("var/big.img").exists(), "nothing of it written");
}

/// Sparse files as GNU tar writes them (`--sparse`, in its gnu and posix
/// formats) are refused by name, before anything of them is written: the
/// gnu form was written out in full (a 3 KiB archive became gigabytes), the
/// posix one came out as `GNUSparseFile.N/...` with the real file missing.
#[test]
fn refuses_sparse_files() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("plain"), b"fine").unwrap();
    let sparse = fs::File::create(src.join("holes")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    drop(sparse);
    for format in ["gnu", "posix"] {
        let archive = work.path().join(format!("{format}.tar"));
        let st = std::process::Command::new("tar")
            .arg("--sparse")
            .arg(format!("--format={format}"))
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&src)
            .args(["plain", "holes"])
            .status()
            .expect("running GNU tar");
        assert!(st.success());
        let bytes = fs::read(&archive).unwrap();
        assert!(
            bytes.len() < 1 << 20,
            "{format}: tar did not make it sparse"
        );
        let f = fixture();
        let err = f.unpack(&bytes).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("a sparse file (tar --sparse)"),
            "{format}: {msg}"
        );
        assert!(!msg.contains('\n'), "{format}: {msg}");
        assert!(
            msg.contains("holes"),
            "{format}: the entry is not named: {msg}"
        );
    }
}
