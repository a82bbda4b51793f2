//! OCI image layouts as a base: archives in the layout Fedora publishes its
//! Container Base in (`blobs/sha256/…`, then `index.json` and `oci-layout`,
//! xz-compressed), built here blob by blob, and unpacked as the image they
//! hold: layers in order, whiteouts applied, digests checked, hostile
//! whiteouts refused.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};
use undercloud_live::progress::Progress;
use undercloud_live::rootfs::oci::host_arch;
use undercloud_live::rootfs::unpack::{unpack, UnpackStats};

const MTIME: u64 = 1_761_287_534;
const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A tar built with raw header names, so hostile names can be expressed.
struct Tar {
    b: tar::Builder<Vec<u8>>,
}

impl Tar {
    fn new() -> Self {
        Tar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn raw(
        &mut self,
        kind: EntryType,
        name: &str,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        let mut h = Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        {
            let old = h.as_old_mut();
            assert!(name.len() <= 100 && link.len() <= 100);
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
        self
    }

    fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(EntryType::Directory, name, "", mode, b"")
    }

    fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.raw(EntryType::Regular, name, "", mode, data)
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(EntryType::Symlink, name, target, 0o777, b"")
    }

    /// A whiteout or opaque marker: an empty regular file, as image
    /// builders write them.
    fn marker(&mut self, name: &str) -> &mut Self {
        self.file(name, 0o644, b"")
    }

    fn bytes(&mut self) -> Vec<u8> {
        self.b.finish().unwrap();
        self.b.get_ref().clone()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut enc = liblzma::write::XzEncoder::new(Vec::new(), 1);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The blobs of an image layout under construction.
#[derive(Default)]
struct Layout {
    blobs: Vec<(String, Vec<u8>)>,
}

impl Layout {
    /// Store a blob; its descriptor's JSON (`extra` adds fields).
    fn add(&mut self, media_type: &str, bytes: Vec<u8>, extra: &str) -> String {
        let hex = sha256(&bytes);
        let size = bytes.len();
        if !self.blobs.iter().any(|(h, _)| *h == hex) {
            self.blobs.push((hex.clone(), bytes));
        }
        format!(r#"{{"mediaType":"{media_type}","digest":"sha256:{hex}","size":{size}{extra}}}"#)
    }

    /// An image manifest for `layers` ((media type, blob) pairs): config
    /// and manifest blobs in KIWI's shape; returns the manifest descriptor.
    fn image(&mut self, arch: &str, layers: Vec<(&str, Vec<u8>)>, extra: &str) -> String {
        let diff_ids: Vec<String> = layers
            .iter()
            .map(|(_, blob)| format!("\"sha256:{}\"", sha256(blob)))
            .collect();
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","DISTTAG=f43container","FGC=f43","container=oci"],"Cmd":["/bin/bash"],"Labels":{{"license":"MIT","name":"fedora","vendor":"Fedora Project","version":"43"}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}},"history":[{{"created":"2025-10-24T06:32:14Z","created_by":"KIWI 10.2.33"}}]}}"#,
            diff_ids.join(",")
        );
        let config = self.add(CONFIG, config.into_bytes(), "");
        let layers: Vec<String> = layers
            .into_iter()
            .map(|(media_type, blob)| self.add(media_type, blob, ""))
            .collect();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","config":{config},"layers":[{}],"annotations":{{"org.opencontainers.image.created":"2025-10-24T06:32:14Z"}}}}"#,
            layers.join(",")
        );
        self.add(MANIFEST, manifest.into_bytes(), extra)
    }

    /// The layout as an xz-compressed tar in Fedora's entry order: the
    /// blobs, then `index.json`, then `oci-layout`. `prefix` is "" or "./";
    /// `tamper` changes one byte of the blob with that digest after its
    /// name was taken.
    fn archive(&self, index_manifests: &[String], prefix: &str, tamper: Option<&str>) -> Vec<u8> {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            index_manifests.join(",")
        );
        let mut t = Tar::new();
        if !prefix.is_empty() {
            t.dir(prefix, 0o755);
        }
        t.dir(&format!("{prefix}blobs/"), 0o755)
            .dir(&format!("{prefix}blobs/sha256/"), 0o755);
        for (hex, bytes) in &self.blobs {
            let mut bytes = bytes.clone();
            if tamper == Some(hex.as_str()) {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0x01;
            }
            t.file(&format!("{prefix}blobs/sha256/{hex}"), 0o644, &bytes);
        }
        t.file(&format!("{prefix}index.json"), 0o644, index.as_bytes())
            .file(
                &format!("{prefix}oci-layout"),
                0o644,
                br#"{"imageLayoutVersion": "1.0.0"}"#,
            );
        xz(&t.bytes())
    }
}

/// Fedora's index entry: a manifest descriptor with a ref name, no platform.
fn ref_name(tag: &str) -> String {
    format!(r#","annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}"#)
}

struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    dest: PathBuf,
    outside: PathBuf,
}

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

const ARCHIVE: &str = "Fedora-Container-Base-Generic-43-1.6.x86_64.oci.tar.xz";

impl Fixture {
    fn unpack(&self, bytes: &[u8]) -> anyhow::Result<UnpackStats> {
        let p = self.base.join(ARCHIVE);
        fs::write(&p, bytes).unwrap();
        unpack(&p, &self.dest, &Progress::silent())
    }

    /// The blob spool next to `dest` is gone and nothing outside `dest`
    /// changed.
    fn assert_clean_beside_dest(&self) {
        let mut top: Vec<_> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        top.sort();
        assert_eq!(top, vec![ARCHIVE, "dest", "outside"]);
        assert_eq!(fs::read_dir(&self.outside).unwrap().count(), 1);
        assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"host data");
    }
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every path under `dir`, to check no whiteout marker was created.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

fn base_layer() -> Vec<u8> {
    Tar::new()
        .dir("./", 0o755)
        .dir("etc/", 0o755)
        .file(
            "etc/os-release",
            0o644,
            b"NAME=\"Fedora Linux\"\nVERSION_ID=43\n",
        )
        .file("etc/motd", 0o644, b"welcome\n")
        .dir("usr/", 0o755)
        .dir("usr/bin/", 0o755)
        .file("usr/bin/tool", 0o755, b"v1")
        .file("usr/bin/passwd", 0o4755, b"suid")
        .symlink("bin", "usr/bin")
        .dir("var/", 0o755)
        .dir("var/cache/", 0o755)
        .dir("var/cache/dnf/", 0o755)
        .file("var/cache/dnf/a", 0o644, b"a")
        .dir("var/cache/dnf/sub/", 0o700)
        .file("var/cache/dnf/sub/b", 0o644, b"b")
        .dir("opt/", 0o755)
        .dir("opt/old/", 0o555)
        .file("opt/old/x", 0o444, b"x")
        .dir("srv/", 0o755)
        .file("srv/lower", 0o644, b"lower")
        .file("data", 0o644, b"a file below")
        .dir("root/", 0o550)
        .dir("home/", 0o755)
        .file("home/old", 0o644, b"old")
        .bytes()
}

fn top_layer() -> Vec<u8> {
    Tar::new()
        .dir("etc/", 0o755)
        .marker("etc/.wh.motd")
        .file("etc/hostname", 0o600, b"undercloud\n")
        .dir("usr/bin/", 0o755)
        .file("usr/bin/tool", 0o700, b"v2")
        // Opaque marker first, as image builders write it.
        .dir("var/cache/dnf/", 0o755)
        .marker("var/cache/dnf/.wh..wh..opq")
        .file("var/cache/dnf/new", 0o644, b"new")
        // A whole lower tree whited out (read-only directories in it).
        .marker("opt/.wh.old")
        // Opaque marker after an entry of its own layer: that one stays.
        .file("srv/upper", 0o644, b"upper")
        .marker("srv/.wh..wh..opq")
        // A lower file becomes a directory.
        .dir("data/", 0o750)
        .file("data/inner", 0o644, b"inner")
        // A whiteout after this layer wrote below the path: only the
        // lower part goes.
        .file("home/user/file", 0o644, b"mine")
        .marker(".wh.home")
        // A whiteout of a path that never existed is harmless.
        .marker("etc/.wh.nonexistent")
        .bytes()
}

#[test]
fn fedora_shaped_archive_applies_layers_with_whiteouts() {
    let f = fixture();
    let mut layout = Layout::default();
    let manifest = layout.image(
        host_arch(),
        vec![(GZIP, gzip(&base_layer())), (GZIP, gzip(&top_layer()))],
        &ref_name("43"),
    );
    let stats = f.unpack(&layout.archive(&[manifest], "", None)).unwrap();

    let d = &f.dest;
    assert_eq!(
        names(d),
        ["bin", "data", "etc", "home", "opt", "root", "srv", "usr", "var"]
    );
    assert_eq!(names(&d.join("etc")), ["hostname", "os-release"]);
    assert_eq!(mode(&d.join("etc/hostname")), 0o600);
    assert_eq!(fs::read(d.join("usr/bin/tool")).unwrap(), b"v2");
    assert_eq!(mode(&d.join("usr/bin/tool")), 0o700);
    assert_eq!(mode(&d.join("usr/bin/passwd")), 0o4755);
    assert_eq!(fs::read_link(d.join("bin")).unwrap(), Path::new("usr/bin"));
    assert_eq!(names(&d.join("var/cache/dnf")), ["new"]);
    assert_eq!(mode(&d.join("var/cache/dnf")), 0o755);
    assert_eq!(names(&d.join("opt")), Vec::<String>::new());
    assert_eq!(names(&d.join("srv")), ["upper"]);
    assert!(fs::symlink_metadata(d.join("data")).unwrap().is_dir());
    assert_eq!(mode(&d.join("data")), 0o750);
    assert_eq!(fs::read(d.join("data/inner")).unwrap(), b"inner");
    assert_eq!(mode(&d.join("root")), 0o550);
    assert_eq!(names(&d.join("home")), ["user"]);
    assert_eq!(fs::read(d.join("home/user/file")).unwrap(), b"mine");
    assert_eq!(mode(d), 0o755);

    let mut all = Vec::new();
    walk(d, &mut all);
    assert!(
        !all.iter()
            .any(|p| p.file_name().unwrap().to_string_lossy().starts_with(".wh.")),
        "a whiteout marker was created: {all:?}"
    );
    // 24 entries below, 10 above (markers are not entries).
    assert_eq!(stats.entries, 24 + 10);
    f.assert_clean_beside_dest();
}

#[test]
fn corrupted_blob_is_named_by_its_digest() {
    let f = fixture();
    let mut layout = Layout::default();
    let layer = gzip(&base_layer());
    let layer_hex = sha256(&layer);
    let manifest = layout.image(host_arch(), vec![(GZIP, layer)], &ref_name("43"));
    let err = f
        .unpack(&layout.archive(&[manifest], "", Some(&layer_hex)))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!(
            "unpacking {}: blob sha256:{layer_hex} does not match its digest (its content hashes to sha256:",
            f.base.join(ARCHIVE).display()
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    assert_eq!(names(&f.dest), Vec::<String>::new(), "nothing was applied");
    f.assert_clean_beside_dest();
}

#[test]
fn nested_index_picks_this_machines_platform() {
    let f = fixture();
    let mut layout = Layout::default();
    let layer = |arch: &str| {
        Tar::new()
            .dir("./", 0o755)
            .file("arch", 0o644, arch.as_bytes())
            .bytes()
    };
    // Other compressions than Fedora's gzip, and a plain tar.
    let amd = layout.image(
        "amd64",
        vec![(ZSTD, zstd::encode_all(&layer("amd64")[..], 3).unwrap())],
        r#","platform":{"architecture":"amd64","os":"linux"}"#,
    );
    let arm = layout.image(
        "arm64",
        vec![(TAR, layer("arm64"))],
        r#","platform":{"architecture":"arm64","os":"linux","variant":"v8"}"#,
    );
    let list = format!(r#"{{"schemaVersion":2,"mediaType":"{INDEX}","manifests":[{arm},{amd}]}}"#);
    let list = layout.add(INDEX, list.into_bytes(), &ref_name("latest"));
    // Written with `tar -C layout .`: every name starts with "./".
    let stats = f.unpack(&layout.archive(&[list], "./", None)).unwrap();
    assert_eq!(stats.entries, 2);
    if ["amd64", "arm64"].contains(&host_arch()) {
        assert_eq!(
            fs::read(f.dest.join("arch")).unwrap(),
            host_arch().as_bytes()
        );
    }
    f.assert_clean_beside_dest();
}

#[test]
fn hostile_whiteouts_are_refused() {
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            Tar::new().marker("../.wh.secret").bytes(),
            "../.wh.secret",
            "path leaves the root",
        ),
        (
            Tar::new().marker("lib/.wh.secret").bytes(),
            "lib/.wh.secret",
            "whiteout goes through the symlink \"lib\"",
        ),
        (
            Tar::new().marker("lib/.wh..wh..opq").bytes(),
            "lib/.wh..wh..opq",
            "whiteout goes through the symlink \"lib\"",
        ),
        (
            Tar::new().marker("etc/.wh..").bytes(),
            "etc/.wh..",
            "whiteout without a file name",
        ),
    ];
    for (top, entry, reason) in cases {
        let f = fixture();
        let lower = Tar::new()
            .dir("./", 0o755)
            .dir("etc/", 0o755)
            .symlink("lib", f.outside.to_str().unwrap())
            .bytes();
        let mut layout = Layout::default();
        let manifest = layout.image(
            host_arch(),
            vec![(GZIP, gzip(&lower)), (GZIP, gzip(&top))],
            &ref_name("43"),
        );
        let err = f
            .unpack(&layout.archive(&[manifest], "", None))
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&format!("refusing tar entry {entry:?}")),
            "entry not named: {msg}"
        );
        assert!(msg.contains(reason), "reason {reason:?} missing: {msg}");
        assert!(msg.contains("layer 2/2 (sha256:"), "layer not named: {msg}");
        assert!(!msg.contains('\n'), "not one line: {msg}");
        f.assert_clean_beside_dest();
    }
}

#[test]
fn whiteout_names_in_a_plain_rootfs_are_just_files() {
    let f = fixture();
    let tar = Tar::new()
        .dir("./", 0o755)
        .file("blobs", 0o644, b"not first, so not a layout")
        .marker(".wh.etc")
        .bytes();
    let p = f.base.join("rootfs.tar");
    fs::write(&p, &tar).unwrap();
    // A first entry named like a part of a layout makes a layout, and a
    // layout without its index says so.
    let err = unpack(&p, &f.dest, &Progress::silent()).unwrap_err();
    assert!(
        format!("{err:#}").ends_with(
            "\"blobs\" looks like part of an OCI image layout, but the archive has no index.json"
        ),
        "{err:#}"
    );

    let tar = Tar::new()
        .dir("./", 0o700)
        .marker(".wh.etc")
        .file("blobs", 0o644, b"a file")
        .bytes();
    fs::write(&p, &tar).unwrap();
    let stats = unpack(&p, &f.dest, &Progress::silent()).unwrap();
    assert_eq!(stats.entries, 3);
    assert_eq!(names(&f.dest), [".wh.etc", "blobs"]);
    assert_eq!(mode(&f.dest), 0o700, "the held-back root entry was applied");
}

#[test]
fn missing_or_mismatched_blobs_are_named() {
    let f = fixture();
    let mut layout = Layout::default();
    let manifest = layout.image(host_arch(), vec![(GZIP, gzip(&base_layer()))], "");
    let (layer_hex, _) = layout.blobs[1].clone();
    layout.blobs.remove(1);
    let err = f
        .unpack(&layout.archive(&[manifest], "", None))
        .unwrap_err();
    assert!(
        format!("{err:#}").ends_with(&format!(
            "layer 1/1 (sha256:{layer_hex}): blob sha256:{layer_hex} is missing from the archive"
        )),
        "{err:#}"
    );
    f.assert_clean_beside_dest();

    // The index claims another size than the manifest blob has.
    let mut layout = Layout::default();
    let manifest = layout.image(host_arch(), vec![(GZIP, gzip(&base_layer()))], "");
    let wrong = manifest.replacen(r#""size":"#, r#""size":1"#, 1);
    let err = f.unpack(&layout.archive(&[wrong], "", None)).unwrap_err();
    assert!(
        format!("{err:#}").contains("bytes, but its descriptor says 1"),
        "{err:#}"
    );
    f.assert_clean_beside_dest();
}

#[test]
fn an_image_for_another_machine_is_refused() {
    let other = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let f = fixture();
    let mut layout = Layout::default();
    let manifest = layout.image(other, vec![(GZIP, gzip(&base_layer()))], &ref_name("43"));
    let err = f
        .unpack(&layout.archive(&[manifest], "", None))
        .unwrap_err();
    assert!(
        format!("{err:#}").ends_with(&format!(
            "is an image for linux/{other}, but this machine runs linux/{}",
            host_arch()
        )),
        "{err:#}"
    );
    assert_eq!(names(&f.dest), Vec::<String>::new());
    f.assert_clean_beside_dest();
}
