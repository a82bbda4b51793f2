//! Shared helpers for the integration tests: a loopback HTTP file server,
//! the test base, and running the built binary.
#![allow(dead_code)]

pub mod testbed;
pub mod ucvm;
pub mod upstream;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

/// How the server misbehaves, to test the client's error paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Announce the full Content-Length, send half, close.
    Truncate,
}

pub struct Server {
    pub port: u16,
    pub requests: Arc<AtomicUsize>,
}

impl Server {
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

/// Serve the files of `dir` on 127.0.0.1 (a random port) until the test
/// process exits.
pub fn serve(dir: &Path, mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let dir = dir.to_path_buf();
    let counter = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let dir = dir.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &dir, mode);
            });
        }
    });
    Server { port, requests }
}

fn handle(mut stream: TcpStream, dir: &Path, mode: Mode) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let name = path.trim_start_matches('/');
    let file = dir.join(name);
    if name.contains("..") || !file.is_file() {
        stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return Ok(());
    }
    let mut f = std::fs::File::open(&file)?;
    let len = f.metadata()?.len();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n"
    )?;
    let limit = if mode == Mode::Truncate { len / 2 } else { len };
    let mut taken = (&mut f).take(limit);
    std::io::copy(&mut taken, &mut stream)?;
    stream.flush()?;
    Ok(())
}

/// The Debian test base folder (rootfs.tar.xz + SHA256SUMS): $UCL_TEST_BASE,
/// else made (or found in its cache) by scripts/make-test-base.
pub fn test_base() -> PathBuf {
    if let Some(d) = std::env::var_os("UCL_TEST_BASE") {
        return PathBuf::from(d);
    }
    let out = Command::new(repo().join("scripts/make-test-base"))
        .output()
        .expect("running scripts/make-test-base");
    assert!(
        out.status.success(),
        "scripts/make-test-base failed (the end-to-end tests need root and debootstrap):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("make-test-base printed its folder")
            .trim(),
    )
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_undercloud-live"))
}

/// `undercloud-live build SPEC` of the base `server` serves, written to
/// `out`, with the given cache and work folders; callers add what differs
/// (SOURCE_DATE_EPOCH, --keep-workdir).
pub fn build_command(
    spec: &Path,
    server: &Server,
    out: &Path,
    cache: &Path,
    work: &Path,
) -> Command {
    let mut cmd = bin();
    cmd.arg("build")
        .arg(spec)
        .arg("--output")
        .arg(out)
        .arg("--base")
        .arg(server.url("rootfs.tar.xz"))
        .arg("--base-checksum-url")
        .arg(server.url("SHA256SUMS"))
        .arg("--cache-dir")
        .arg(cache)
        .arg("--workdir")
        .arg(work);
    cmd
}

/// A fresh folder for one test under cargo's per-target temp folder.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running undercloud-live");
    eprintln!("$ {cmd:?}\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Set by `make test` and CI: every test's needs must be met there, so a
/// missing tool or device is a failure instead of a skip.
pub const REQUIRE_ALL: &str = "UCL_REQUIRE_ALL";

/// Whether what a test needs is here. When it is not, the test is skipped
/// with `reason` on standard error, or fails with it under
/// `UCL_REQUIRE_ALL`. Use through `require!`.
pub fn require(met: bool, reason: &str) -> bool {
    if met {
        return true;
    }
    if std::env::var_os(REQUIRE_ALL).is_some() {
        panic!("{reason} ({REQUIRE_ALL} is set: make test and CI need every test to run)");
    }
    eprintln!("skipped: {reason}");
    false
}

/// `require!(condition, "reason {}", x)`: returns from the test (skipped,
/// reason printed) when the condition is false, or fails under
/// `UCL_REQUIRE_ALL`.
#[macro_export]
macro_rules! require {
    ($met:expr, $($reason:tt)+) => {
        if !$crate::common::require($met, &format!($($reason)+)) {
            return;
        }
    };
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `tool`'s path: PATH, then the sbin folders (a user's PATH often lacks
/// them, and gdisk, mkfs and losetup live there).
pub fn tool_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "command -v {tool} >/dev/null || test -x /usr/sbin/{tool} || test -x /sbin/{tool}"
        ))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Mount points under `dir` visible from this (the host's) namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.display().to_string();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&d))
        .map(str::to_string)
        .collect()
}

/// Runs an independent tool (sgdisk, xorriso, qemu-img ...) and returns its
/// stdout and stderr; a failure fails the test with both.
pub fn tool(cmd: &mut Command) -> String {
    let o = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// A file's sha256, read in 1 MiB pieces (images are large).
pub fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    // sha2 0.11's hashers do not implement io::Write: feed them by hand.
    let mut f = std::fs::File::open(p).unwrap_or_else(|e| panic!("opening {}: {e}", p.display()));
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// A fake root with what `undercloud configure` needs: the two accounts
/// and iPXE.
pub fn configure_root(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nironic:x:0:0::/var/lib/ironic:/bin/false\nstack:x:0:0::/home/stack:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/shadow"),
        "root::1::::::\nironic:!:1::::::\nstack:!:1::::::\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::create_dir_all(root.join("usr/lib/ipxe")).unwrap();
    std::fs::write(root.join("usr/lib/ipxe/undionly.kpxe"), b"kpxe").unwrap();
    std::fs::write(root.join("usr/lib/ipxe/ipxe.efi"), b"efi").unwrap();
}

/// One HTTP/1.1 request, as a fake server in a test reads it.
pub struct Request {
    pub method: String,
    pub target: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

pub fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
            if k == "content-length" {
                len = v.parse().unwrap_or(0);
            }
            headers.push((k, v));
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Request {
        method,
        target,
        headers,
        body,
    })
}

/// A JSON answer in the shape of Ironic's (its version headers), closing
/// the connection.
pub fn respond(mut stream: &TcpStream, status: &str, body: &serde_json::Value) {
    let body = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         X-OpenStack-Ironic-API-Minimum-Version: 1.1\r\n\
         X-OpenStack-Ironic-API-Maximum-Version: 1.96\r\n\
         X-OpenStack-Ironic-API-Version: 1.96\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

/// The cache tests keep slow fixtures in: the tool's own default.
pub fn cache_root() -> PathBuf {
    undercloud_live::cache::default_cache_dir()
}

/// Every file under `dir`, sorted, as (relative path, mode, bytes).
fn files(dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>, base: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out, base);
        } else {
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let mode = e.metadata().unwrap().permissions().mode();
            out.insert(rel, (mode, std::fs::read(&p).unwrap()));
        }
    }
}

/// The key of the ramdisk's inputs: the spec and the element.
pub fn inputs_key(spec: &Path, element: &Path) -> String {
    let mut h = Sha256::new();
    h.update(b"ipa-ramdisk test v1\0");
    h.update(std::fs::read(spec).unwrap());
    let mut all = BTreeMap::new();
    files(element, &mut all, element);
    for (name, (mode, bytes)) in all {
        h.update(format!("\0{name}\0{mode:o}\0{}\0", bytes.len()).as_bytes());
        h.update(&bytes);
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// The built ramdisk's prefix (`.kernel` + `.initramfs`), from the cache or
/// built now.
/// (tests/ipa_ramdisk.rs boots it; the undercloud tests carry it.)
pub fn ipa_ramdisk() -> PathBuf {
    let spec = repo().join("kickstart/ipa-ramdisk-debian.yaml");
    let key = inputs_key(&spec, &repo().join("overlays/ipa-ramdisk"));
    let cache = cache_root();
    let dir = cache.join("ipa-ramdisk").join(&key);
    let prefix = dir.join("ipa");
    if prefix.with_extension("kernel").is_file() && prefix.with_extension("initramfs").is_file() {
        println!("ramdisk from the cache: {}", dir.display());
        return prefix;
    }
    let scratch = scratch("ipa-ramdisk-build");
    let t = Instant::now();
    let o = run(bin()
        .arg("build")
        .arg(&spec)
        .arg("--output")
        .arg(scratch.join("out/ipa"))
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--workdir")
        .arg(scratch.join("work"))
        .arg("--log")
        .arg(scratch.join("build.log")));
    assert!(
        o.status.success(),
        "building {} failed (needs root and the Debian mirror); log: {}",
        spec.display(),
        scratch.join("build.log").display()
    );
    let size = std::fs::metadata(scratch.join("out/ipa.initramfs"))
        .unwrap()
        .len();
    println!(
        "ramdisk built in {:.0} s: initramfs {} MiB",
        t.elapsed().as_secs_f64(),
        size >> 20
    );
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(scratch.join("out"), &dir).unwrap_or_else(|e| {
        // Another file system: copy.
        eprintln!("rename into the cache failed ({e}); copying");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["ipa.kernel", "ipa.initramfs"] {
            std::fs::copy(scratch.join("out").join(f), dir.join(f)).unwrap();
        }
    });
    prefix
}

/// An output of a slow build kept under `<cache>/<kind>/<key>/`, the key
/// made of every input: the files and folders named (contents, names and
/// modes) and this program (it goes into images and decides their bytes).
/// Only the newest key of a kind is kept. `make` writes the output into the
/// folder it is given; the result is that folder.
pub fn cached_build(kind: &str, inputs: &[PathBuf], make: impl FnOnce(&Path)) -> PathBuf {
    let mut h = Sha256::new();
    h.update(format!("{kind} v1\0").as_bytes());
    h.update(std::fs::read(env!("CARGO_BIN_EXE_undercloud-live")).unwrap());
    for input in inputs {
        let mut all = BTreeMap::new();
        if input.is_dir() {
            files(input, &mut all, input);
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(input).unwrap().permissions().mode();
            all.insert(String::new(), (mode, std::fs::read(input).unwrap()));
        }
        h.update(format!("\0{}\0", input.display()).as_bytes());
        for (name, (mode, bytes)) in all {
            h.update(format!("\0{name}\0{mode:o}\0{}\0", bytes.len()).as_bytes());
            h.update(&bytes);
        }
    }
    let key = hex::encode(h.finalize())[..16].to_string();
    let kind_dir = cache_root().join(kind);
    let dir = kind_dir.join(&key);
    if dir.join(".complete").is_file() {
        println!("{kind} from the cache: {}", dir.display());
        return dir;
    }
    let tmp = kind_dir.join(format!(".{key}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    make(&tmp);
    std::fs::write(tmp.join(".complete"), b"").unwrap();
    // Older keys of this kind are dead weight.
    for e in std::fs::read_dir(&kind_dir).unwrap().flatten() {
        if e.path() != tmp {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    std::fs::rename(&tmp, &dir).unwrap();
    dir
}

/// The marker image as a `format: disk` qcow2 (tests/specs/minimal.yaml on
/// the test base): what the provisioning test deploys.
pub fn deploy_disk_image() -> PathBuf {
    let base = test_base();
    let spec = repo().join("tests/specs/minimal.yaml");
    let dir = cached_build(
        "deploy-disk",
        &[
            spec.clone(),
            repo().join("tests/elements/marker-hello"),
            repo().join("tests/elements/marker"),
            base.join("SHA256SUMS"),
        ],
        |out| {
            let server = serve(&base, Mode::Normal);
            let work = scratch("deploy-disk-build");
            let t = Instant::now();
            let o = run(build_command(
                &spec,
                &server,
                &out.join("marker.qcow2"),
                &cache_root(),
                &work.join("work"),
            )
            .args(["--format", "disk"]));
            assert!(o.status.success(), "building the deploy disk image failed");
            println!(
                "deploy disk image built in {:.0} s",
                t.elapsed().as_secs_f64()
            );
            let _ = std::fs::remove_dir_all(&work);
        },
    );
    dir.join("marker.qcow2")
}

/// The undercloud test image (tests/specs/undercloud.yaml: Debian trixie
/// debootstrapped from the mirror, the shipped elements and kickstart, the
/// deploy ramdisk through extra_files), shared by the tests that boot it:
/// each boots a sparse copy, since booting writes to its persistence.
pub fn undercloud_image() -> PathBuf {
    let ipa = ipa_ramdisk();
    let spec = repo().join("tests/specs/undercloud.yaml");
    let staged = repo().join("target/test-images");
    let dir = cached_build(
        "undercloud-image",
        &[
            spec.clone(),
            repo().join("tests/specs/undercloud-esp.yaml"),
            repo().join("tests/specs/undercloud-nodes.yaml"),
            repo().join("overlays"),
            repo().join("kickstart/undercloud-live.ks"),
            repo().join("kickstart/undercloud-live-debian-map.yaml"),
            ipa.with_extension("kernel"),
            ipa.with_extension("initramfs"),
        ],
        |out| {
            // Where the spec's extra_files expect the deploy ramdisk.
            std::fs::create_dir_all(&staged).unwrap();
            for ext in ["kernel", "initramfs"] {
                std::fs::copy(ipa.with_extension(ext), staged.join(format!("ipa.{ext}"))).unwrap();
            }
            let work = scratch("undercloud-image-build");
            let t = Instant::now();
            let o = run(bin()
                .arg("build")
                .arg(&spec)
                .arg("--output")
                .arg(out.join("undercloud.img"))
                .arg("--cache-dir")
                .arg(cache_root())
                .arg("--workdir")
                .arg(work.join("work")));
            assert!(
                o.status.success(),
                "building {} failed (needs root and the Debian mirror)",
                spec.display()
            );
            // When this build installed the packages (its package layer was
            // not in the cache), the kernel package was configured and its
            // hook made no /boot/initrd.img (INITRD=No): the live initrd is
            // the only one.
            let log = std::fs::read_to_string(out.join("undercloud.img.log")).unwrap();
            let restored = log
                .lines()
                .any(|l| l.contains("package layer") && l.contains("from the cache"));
            if !restored {
                assert!(
                    log.contains("Setting up linux-image-"),
                    "no kernel installed?"
                );
            }
            assert!(
                !log.contains("Generating /boot/initrd.img"),
                "a package trigger built /boot/initrd.img during the build"
            );
            println!(
                "undercloud image built in {:.0} s: {} MiB",
                t.elapsed().as_secs_f64(),
                std::fs::metadata(out.join("undercloud.img")).unwrap().len() >> 20
            );
            let _ = std::fs::remove_dir_all(&work);
        },
    );
    dir.join("undercloud.img")
}

/// A sparse copy of `from` (a shared image a test boots writable).
pub fn copy_sparse(from: &Path, to: &Path) {
    let o = Command::new("cp")
        .args(["--sparse=always", "--reflink=auto"])
        .arg(from)
        .arg(to)
        .output()
        .expect("running cp");
    assert!(
        o.status.success(),
        "cp {}: {}",
        from.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A small tmpfs, unmounted on drop, for running out of space on purpose.
/// `None` when the test cannot mount one: skipped, or failed under
/// `UCL_REQUIRE_ALL`.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    pub fn mount(size: &str) -> Option<SmallFs> {
        if !require(is_root(), "mounting a tmpfs needs root") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !require(ok, "mount -t tmpfs failed") {
            return None;
        }
        Some(SmallFs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
