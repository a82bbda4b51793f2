//! Shared helpers for the integration tests: a loopback HTTP file server,
//! the test base, and running the built binary.
#![allow(dead_code)]

pub mod testbed;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
