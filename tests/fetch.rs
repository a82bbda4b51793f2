//! Fetcher behaviour against an in-process loopback HTTP server.
//!
//! The server is hand-written HTTP/1.1 on a std TcpListener so each test can
//! misbehave exactly as a real mirror does (wrong bytes, early close, 404,
//! ignoring Range) and count what was asked of it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;

use sha2::{Digest, Sha256};
use undercloud_live::fetch::{Fetcher, Source};
use undercloud_live::progress::Progress;

#[derive(Clone)]
enum Behaviour {
    /// 200 with the body, honouring `Range: bytes=N-` with a 206.
    Serve(Vec<u8>),
    /// 200 without Range support (always the whole body).
    ServeNoRange(Vec<u8>),
    /// The first request announces the full length but the connection is
    /// closed after `cut` bytes; later requests behave like `Serve`.
    TruncateFirst { body: Vec<u8>, cut: usize },
    /// Announces `Content-Length` of the full body, sends `cut` bytes, closes.
    Truncate { body: Vec<u8>, cut: usize },
}

#[derive(Default)]
struct Log {
    /// (path, Range header if any) per request, in order.
    requests: Vec<(String, Option<String>)>,
}

struct Server {
    base: String,
    log: Arc<Mutex<Log>>,
}

impl Server {
    fn start(routes: Vec<(&str, Behaviour)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let routes: Arc<HashMap<String, Behaviour>> = Arc::new(
            routes
                .into_iter()
                .map(|(p, b)| (p.to_string(), b))
                .collect(),
        );
        let log = Arc::new(Mutex::new(Log::default()));
        let thread_log = Arc::clone(&log);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let routes = Arc::clone(&routes);
                let log = Arc::clone(&thread_log);
                thread::spawn(move || handle(stream, &routes, &log));
            }
        });
        Server { base, log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn hits(&self, path: &str) -> usize {
        let log = self.log.lock().unwrap();
        log.requests.iter().filter(|(p, _)| p == path).count()
    }

    fn total_hits(&self) -> usize {
        self.log.lock().unwrap().requests.len()
    }

    fn ranges(&self, path: &str) -> Vec<Option<String>> {
        let log = self.log.lock().unwrap();
        log.requests
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

fn handle(stream: TcpStream, routes: &HashMap<String, Behaviour>, log: &Mutex<Log>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_string();
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let nth = {
        let mut log = log.lock().unwrap();
        log.requests.push((path.clone(), range.clone()));
        log.requests.iter().filter(|(p, _)| *p == path).count()
    };
    let mut out = stream;
    let respond_full = |out: &mut TcpStream, body: &[u8], honour_range: bool| {
        let start = range
            .as_deref()
            .filter(|_| honour_range)
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        match start {
            Some(s) if s >= body.len() => {
                let _ = write!(
                    out,
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    body.len()
                );
            }
            Some(s) => {
                let _ = write!(
                    out,
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    s,
                    body.len() - 1,
                    body.len(),
                    body.len() - s
                );
                let _ = out.write_all(&body[s..]);
            }
            None => {
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = out.write_all(body);
            }
        }
    };
    let truncated = |out: &mut TcpStream, body: &[u8], cut: usize| {
        let _ = write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = out.write_all(&body[..cut]);
        let _ = out.flush();
    };
    match routes.get(&path) {
        None => {
            let _ = write!(
                out,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
            );
        }
        Some(Behaviour::Serve(body)) => respond_full(&mut out, body, true),
        Some(Behaviour::ServeNoRange(body)) => respond_full(&mut out, body, false),
        Some(Behaviour::Truncate { body, cut }) => truncated(&mut out, body, *cut),
        Some(Behaviour::TruncateFirst { body, cut }) => {
            if nth == 1 {
                truncated(&mut out, body, *cut)
            } else {
                respond_full(&mut out, body, true)
            }
        }
    }
    let _ = out.shutdown(std::net::Shutdown::Both);
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic, incompressible-looking test payload.
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

fn fetcher(cache: &Path) -> Fetcher {
    Fetcher::new(cache.to_path_buf(), Progress::silent())
}

fn blob_files(cache: &Path) -> Vec<String> {
    let dir = cache.join("blobs").join("sha256");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn good_file_is_fetched_cached_and_not_downloaded_again() {
    let body = payload(300_000, 1);
    let hex = sha256_hex(&body);
    let server = Server::start(vec![("/rootfs.tar.xz", Behaviour::Serve(body.clone()))]);
    let cache = tempfile::tempdir().unwrap();
    let src = Source::new(server.url("/rootfs.tar.xz")).sha256(hex.to_uppercase());

    let path = fetcher(cache.path()).fetch(&src).unwrap();
    assert_eq!(path, cache.path().join("blobs/sha256").join(&hex));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(server.hits("/rootfs.tar.xz"), 1);
    assert_eq!(
        blob_files(cache.path()),
        vec![hex.clone()],
        "no .part left behind"
    );

    // A second fetch, and an offline one, are served from the cache alone.
    let again = fetcher(cache.path()).fetch(&src).unwrap();
    assert_eq!(again, path);
    let offline = fetcher(cache.path()).offline(true).fetch(&src).unwrap();
    assert_eq!(offline, path);
    assert_eq!(server.hits("/rootfs.tar.xz"), 1);
}

#[test]
fn wrong_checksum_fails_with_one_line_and_caches_nothing() {
    let body = payload(50_000, 2);
    let actual = sha256_hex(&body);
    let wrong = sha256_hex(b"something else");
    let server = Server::start(vec![("/rootfs.tar.xz", Behaviour::Serve(body))]);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/rootfs.tar.xz");

    let err = fetcher(cache.path())
        .fetch(&Source::new(&url).sha256(&wrong))
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!("checksum mismatch for {url}: expected {wrong}, got {actual}")
    );
    assert!(
        blob_files(cache.path()).is_empty(),
        "{:?}",
        blob_files(cache.path())
    );
}

#[test]
fn truncated_body_fails_and_is_never_cached() {
    let body = payload(200_000, 3);
    let hex = sha256_hex(&body);
    let server = Server::start(vec![(
        "/rootfs.tar.xz",
        Behaviour::Truncate {
            body: body.clone(),
            cut: 70_000,
        },
    )]);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/rootfs.tar.xz");
    let src = Source::new(&url).sha256(&hex);

    let err = fetcher(cache.path()).fetch(&src).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!(
            "download of {url} truncated: got 70000 of 200000 bytes"
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(!cache.path().join("blobs/sha256").join(&hex).exists());

    // Whatever was kept for resuming is never taken as a verified blob.
    let err = fetcher(cache.path()).offline(true).fetch(&src).unwrap_err();
    assert!(format!("{err:#}").contains("not in the cache"), "{err:#}");
    let err = fetcher(cache.path()).fetch(&src).unwrap_err();
    assert!(format!("{err:#}").contains("truncated"), "{err:#}");
    assert!(!cache.path().join("blobs/sha256").join(&hex).exists());
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let body = payload(256_000, 4);
    let hex = sha256_hex(&body);
    let server = Server::start(vec![(
        "/base.tar",
        Behaviour::TruncateFirst {
            body: body.clone(),
            cut: 100_000,
        },
    )]);
    let cache = tempfile::tempdir().unwrap();
    let src = Source::new(server.url("/base.tar")).sha256(&hex);

    assert!(fetcher(cache.path()).fetch(&src).is_err());
    let path = fetcher(cache.path()).fetch(&src).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(
        server.ranges("/base.tar"),
        vec![None, Some("bytes=100000-".to_string())]
    );
    assert_eq!(blob_files(cache.path()), vec![hex]);
}

#[test]
fn resume_against_a_server_without_range_support_starts_over() {
    let body = payload(120_000, 5);
    let hex = sha256_hex(&body);
    let server = Server::start(vec![("/base.tar", Behaviour::ServeNoRange(body.clone()))]);
    let cache = tempfile::tempdir().unwrap();
    // A stale partial file from an earlier run, with wrong bytes in it.
    let dir = cache.path().join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{hex}.part")), vec![0xAA; 5000]).unwrap();

    let path = fetcher(cache.path())
        .fetch(&Source::new(server.url("/base.tar")).sha256(&hex))
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(
        server.ranges("/base.tar"),
        vec![Some("bytes=5000-".to_string())]
    );
}

#[test]
fn http_error_status_is_reported() {
    let server = Server::start(vec![]);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/missing.tar.xz");
    let err = fetcher(cache.path())
        .fetch(&Source::new(&url).sha256("00".repeat(32)))
        .unwrap_err();
    assert_eq!(format!("{err:#}"), format!("GET {url}: HTTP 404 Not Found"));
    assert!(blob_files(cache.path()).is_empty());
}

#[test]
fn remote_source_needs_a_checksum() {
    let cache = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9/rootfs.tar.xz";
    let err = fetcher(cache.path()).fetch(&Source::new(url)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(url), "{msg}");
    assert!(msg.contains("sha256 or a checksum_url"), "{msg}");
}

#[test]
fn invalid_sha256_is_rejected() {
    let cache = tempfile::tempdir().unwrap();
    let err = fetcher(cache.path())
        .fetch(&Source::new("http://127.0.0.1:9/x.tar").sha256("abc"))
        .unwrap_err();
    assert!(format!("{err:#}").contains("not 64 hex digits"), "{err:#}");
}

#[test]
fn offline_without_cache_fails_without_touching_the_network() {
    let server = Server::start(vec![("/x.tar", Behaviour::Serve(b"x".to_vec()))]);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/x.tar");
    let err = fetcher(cache.path())
        .offline(true)
        .fetch(&Source::new(&url).sha256(sha256_hex(b"x")))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&url) && msg.contains("offline"), "{msg}");
    assert_eq!(server.total_hits(), 0);
}

#[test]
fn checksum_list_in_sha256sums_format() {
    let body = payload(40_000, 6);
    let hex = sha256_hex(&body);
    let sums = format!(
        "{}  other.tar.xz\n{hex}  debian-12-rootfs.tar.xz\n",
        sha256_hex(b"other")
    );
    let server = Server::start(vec![
        (
            "/pub/debian-12-rootfs.tar.xz",
            Behaviour::Serve(body.clone()),
        ),
        ("/pub/SHA256SUMS", Behaviour::Serve(sums.into_bytes())),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let src = Source::new(server.url("/pub/debian-12-rootfs.tar.xz"))
        .checksum_url(server.url("/pub/SHA256SUMS"));
    let path = fetcher(cache.path()).fetch(&src).unwrap();
    assert_eq!(path, cache.path().join("blobs/sha256").join(&hex));
    assert_eq!(std::fs::read(&path).unwrap(), body);

    // Offline, the list remembered from the online run still resolves it.
    let hits = server.total_hits();
    let offline = fetcher(cache.path()).offline(true).fetch(&src).unwrap();
    assert_eq!(offline, path);
    assert_eq!(server.total_hits(), hits);
}

#[test]
fn checksum_list_in_fedora_clearsigned_format() {
    let name = "Fedora-Container-Base-Generic-41-1.4.x86_64.oci.tar.xz";
    let body = payload(60_000, 7);
    let hex = sha256_hex(&body);
    let checksum = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\n\
         Hash: SHA256\n\
         \n\
         # {name}: 60000 bytes\n\
         SHA256 ({name}) = {hex}\n\
         # Fedora-Container-Minimal-Base-41-1.4.x86_64.tar.xz: 5 bytes\n\
         SHA256 (Fedora-Container-Minimal-Base-41-1.4.x86_64.tar.xz) = {}\n\
         -----BEGIN PGP SIGNATURE-----\n\
         \n\
         iQIzBAEBCAAdFiEEpa6lVPp1fLMkVuyHmHNjdABLYvgFAmcUGnkACgkQmHNjdABL\n\
         =Qk3a\n\
         -----END PGP SIGNATURE-----\n",
        sha256_hex(b"other")
    );
    let file_path = format!("/Container/x86_64/images/{name}");
    let server = Server::start(vec![
        (file_path.as_str(), Behaviour::Serve(body.clone())),
        (
            "/Container/x86_64/images/Fedora-Container-41-1.4-x86_64-CHECKSUM",
            Behaviour::Serve(checksum.into_bytes()),
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let src = Source::new(server.url(&file_path)).checksum_url(
        server.url("/Container/x86_64/images/Fedora-Container-41-1.4-x86_64-CHECKSUM"),
    );
    let path = fetcher(cache.path()).fetch(&src).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
}

#[test]
fn checksum_list_without_an_entry_names_both() {
    let server = Server::start(vec![
        ("/a/rootfs.tar", Behaviour::Serve(b"data".to_vec())),
        (
            "/a/SHA256SUMS",
            Behaviour::Serve(format!("{}  other.tar\n", sha256_hex(b"data")).into_bytes()),
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let list = server.url("/a/SHA256SUMS");
    let err = fetcher(cache.path())
        .fetch(&Source::new(server.url("/a/rootfs.tar")).checksum_url(&list))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&list) && msg.contains("rootfs.tar"), "{msg}");
    assert_eq!(server.hits("/a/rootfs.tar"), 0);
}

#[test]
fn local_paths_and_file_urls_are_verified_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let body = payload(10_000, 8);
    let hex = sha256_hex(&body);
    let file = dir.path().join("base.tar.zst");
    std::fs::write(&file, &body).unwrap();
    let f = fetcher(cache.path());

    // Plain path: returned as-is, nothing copied into the cache.
    let got = f
        .fetch(&Source::new(file.to_str().unwrap()).sha256(&hex))
        .unwrap();
    assert_eq!(got, file);
    // file:// URL.
    let url = format!("file://{}", file.display());
    let got = f.fetch(&Source::new(&url).sha256(&hex)).unwrap();
    assert_eq!(got, file);
    assert!(blob_files(cache.path()).is_empty());

    // Offline changes nothing for local files.
    let got = fetcher(cache.path())
        .offline(true)
        .fetch(&Source::new(&url).sha256(&hex))
        .unwrap();
    assert_eq!(got, file);

    // A checksum list given as a local path.
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&sums, format!("{hex} *base.tar.zst\n")).unwrap();
    let got = f
        .fetch(&Source::new(&url).checksum_url(sums.to_str().unwrap()))
        .unwrap();
    assert_eq!(got, file);
    // ... and as a file:// URL.
    let got = f
        .fetch(&Source::new(&url).checksum_url(format!("file://{}", sums.display())))
        .unwrap();
    assert_eq!(got, file);

    // Mismatch names the path.
    let wrong = sha256_hex(b"nope");
    let err = f
        .fetch(&Source::new(file.to_str().unwrap()).sha256(&wrong))
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "checksum mismatch for {}: expected {wrong}, got {hex}",
            file.display()
        )
    );

    // No checksum at all: allowed for local files (the caller warns).
    let got = f.fetch(&Source::new(file.to_str().unwrap())).unwrap();
    assert_eq!(got, file);

    // Missing file: error names it.
    let missing = dir.path().join("nope.tar");
    let err = f
        .fetch(&Source::new(missing.to_str().unwrap()))
        .unwrap_err();
    assert!(format!("{err:#}").contains("nope.tar"), "{err:#}");
}

#[test]
fn complete_part_file_is_published_after_a_416() {
    // A run that died between the last byte and the rename.
    let body = payload(30_000, 9);
    let hex = sha256_hex(&body);
    let server = Server::start(vec![("/base.tar", Behaviour::Serve(body.clone()))]);
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{hex}.part")), &body).unwrap();

    let path = fetcher(cache.path())
        .fetch(&Source::new(server.url("/base.tar")).sha256(&hex))
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(
        server.ranges("/base.tar"),
        vec![Some("bytes=30000-".to_string())]
    );
    assert_eq!(blob_files(cache.path()), vec![hex]);
}

#[test]
fn concurrent_download_of_the_same_blob_is_refused() {
    use nix::fcntl::{Flock, FlockArg};
    let body = payload(1_000, 10);
    let hex = sha256_hex(&body);
    let server = Server::start(vec![("/base.tar", Behaviour::Serve(body))]);
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    // Another "process" holds the lock on an (empty, just started) .part.
    let part = dir.join(format!("{hex}.part"));
    let held = Flock::lock(
        std::fs::File::create(&part).unwrap(),
        FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| e)
    .unwrap();

    let err = fetcher(cache.path())
        .fetch(&Source::new(server.url("/base.tar")).sha256(&hex))
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("another process is downloading"),
        "{err:#}"
    );
    assert!(part.exists(), "the other run's .part must be left alone");
    assert_eq!(server.total_hits(), 0);
    drop(held);
}
