//! Fetcher behaviour against an in-process loopback HTTP server.
//!
//! The server is the tests' shared one (tests/common/http.rs): its routes
//! misbehave exactly as a real mirror does (wrong bytes, early close, 404,
//! ignoring Range) and it counts what was asked of it.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::{Behaviour, Server, SmallFs};
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, KeyType, SecretKeyParamsBuilder, SignedPublicKey,
    SignedSecretKey,
};
use pgp::types::Password;
use sha2::{Digest, Sha256};
use undercloud_live::fetch::base::{self, Plan};
use undercloud_live::fetch::{Fetcher, Keyring, RetryPolicy, Source};
use undercloud_live::prefetch;
use undercloud_live::progress::Progress;

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

/// Retries as in real use, but with millisecond waits.
fn fetcher(cache: &Path) -> Fetcher {
    Fetcher::new(cache.to_path_buf(), Progress::silent()).retry(RetryPolicy {
        attempts: 5,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(2),
    })
}

/// One attempt only: what a run does when the network stays bad.
fn fetcher_no_retry(cache: &Path) -> Fetcher {
    fetcher(cache).retry(RetryPolicy {
        attempts: 1,
        ..RetryPolicy::default()
    })
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
    let server = Server::routes(vec![("/rootfs.tar.xz", Behaviour::Serve(body.clone()))]);
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
    let server = Server::routes(vec![("/rootfs.tar.xz", Behaviour::Serve(body))]);
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
    let server = Server::routes(vec![(
        "/rootfs.tar.xz",
        Behaviour::Truncate {
            body: body.clone(),
            cut: 70_000,
        },
    )]);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/rootfs.tar.xz");
    let src = Source::new(&url).sha256(&hex);

    let err = fetcher_no_retry(cache.path()).fetch(&src).unwrap_err();
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
    // Retries are bounded: each resume is answered with a whole (and again
    // cut) body, so every attempt fails the same way.
    let hits = server.hits("/rootfs.tar.xz");
    let err = fetcher(cache.path()).fetch(&src).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!(
            "giving up on {url} after 5 attempts: download of {url} truncated"
        )),
        "{msg}"
    );
    assert_eq!(server.hits("/rootfs.tar.xz") - hits, 5);
    assert!(!cache.path().join("blobs/sha256").join(&hex).exists());
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let body = payload(256_000, 4);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![(
        "/base.tar",
        Behaviour::TruncateFirst {
            body: body.clone(),
            cut: 100_000,
        },
    )]);
    let cache = tempfile::tempdir().unwrap();
    let src = Source::new(server.url("/base.tar")).sha256(&hex);

    // A run that gives up keeps the .part; the next run resumes it.
    assert!(fetcher_no_retry(cache.path()).fetch(&src).is_err());
    let path = fetcher(cache.path()).fetch(&src).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(
        server.ranges("/base.tar"),
        vec![None, Some("bytes=100000-".to_string())]
    );
    assert_eq!(blob_files(cache.path()), vec![hex]);
}

#[test]
fn a_cut_connection_is_resumed_by_the_retry_of_the_same_run() {
    let body = payload(256_000, 14);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![(
        "/base.tar",
        Behaviour::TruncateFirst {
            body: body.clone(),
            cut: 90_000,
        },
    )]);
    let cache = tempfile::tempdir().unwrap();
    let path = fetcher(cache.path())
        .fetch(&Source::new(server.url("/base.tar")).sha256(&hex))
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(
        server.ranges("/base.tar"),
        vec![None, Some("bytes=90000-".to_string())]
    );
}

#[test]
fn server_errors_are_retried_then_succeed() {
    for status in [503u16, 500, 502, 408, 429] {
        let body = payload(20_000, 15);
        let hex = sha256_hex(&body);
        let server = Server::routes(vec![(
            "/base.tar",
            Behaviour::FailFirst {
                status,
                times: 2,
                retry_after: None,
                body: body.clone(),
            },
        )]);
        let cache = tempfile::tempdir().unwrap();
        let path = fetcher(cache.path())
            .fetch(&Source::new(server.url("/base.tar")).sha256(&hex))
            .unwrap_or_else(|e| panic!("HTTP {status}: {e:#}"));
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert_eq!(server.hits("/base.tar"), 3, "HTTP {status}");
    }
}

#[test]
fn retry_after_is_honoured_when_small_and_reported_when_large() {
    let body = payload(1_000, 16);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![
        (
            "/small.tar",
            Behaviour::FailFirst {
                status: 503,
                times: 1,
                retry_after: Some("1"),
                body: body.clone(),
            },
        ),
        (
            "/large.tar",
            Behaviour::FailFirst {
                status: 429,
                times: 1,
                retry_after: Some("3600"),
                body: body.clone(),
            },
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let t = Instant::now();
    fetcher(cache.path())
        .fetch(&Source::new(server.url("/small.tar")).sha256(&hex))
        .unwrap();
    // The policy's own backoff is 10 ms: only Retry-After explains a second.
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(server.hits("/small.tar"), 2);

    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/large.tar");
    let err = fetcher(cache.path())
        .fetch(&Source::new(&url).sha256(&hex))
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "{url} asks to retry after 3600 s, longer than this tool waits: GET {url}: HTTP 429 Too Many Requests"
        )
    );
    assert_eq!(server.hits("/large.tar"), 1);
}

#[test]
fn retries_are_bounded_and_client_errors_are_not_retried() {
    let server = Server::routes(vec![(
        "/down.tar",
        Behaviour::FailFirst {
            status: 500,
            times: usize::MAX,
            retry_after: None,
            body: Vec::new(),
        },
    )]);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url("/down.tar");
    let err = fetcher(cache.path())
        .fetch(&Source::new(&url).sha256("00".repeat(32)))
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!("giving up on {url} after 5 attempts: GET {url}: HTTP 500 Internal Server Error")
    );
    assert_eq!(server.hits("/down.tar"), 5);

    // 404 is an answer, not a hiccup.
    let missing = server.url("/missing.tar");
    assert!(fetcher(cache.path())
        .fetch(&Source::new(&missing).sha256("00".repeat(32)))
        .is_err());
    assert_eq!(server.hits("/missing.tar"), 1);
}

/// A refused connection will not change in the next seconds (nothing
/// listens there): it is reported at once, in one line, not retried with
/// back-off.
#[test]
fn refused_connections_are_reported_at_once() {
    // A port nothing listens on: bind, note the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/x.tar");
    let t = std::time::Instant::now();
    let err = fetcher(cache.path())
        .fetch(&Source::new(&url).sha256("00".repeat(32)))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert_eq!(
        msg,
        format!("cannot reach 127.0.0.1 (it refused the connection) for {url}")
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn resume_against_a_server_without_range_support_starts_over() {
    let body = payload(120_000, 5);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![("/base.tar", Behaviour::ServeNoRange(body.clone()))]);
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
    let server = Server::routes(vec![]);
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
    let server = Server::routes(vec![("/x.tar", Behaviour::Serve(b"x".to_vec()))]);
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
    let server = Server::routes(vec![
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

/// A list naming one file twice with different digests is refused (which
/// one would count?), and a digest given beside a list must agree with it.
#[test]
fn conflicting_digests_are_refused() {
    let body = payload(10_000, 7);
    let hex = sha256_hex(&body);
    let other = sha256_hex(b"other");
    let server = Server::routes(vec![
        ("/pub/root.tar.xz", Behaviour::Serve(body.clone())),
        (
            "/pub/TWICE",
            Behaviour::Serve(format!("{hex}  root.tar.xz\n{other}  root.tar.xz\n").into_bytes()),
        ),
        (
            "/pub/SAME-TWICE",
            Behaviour::Serve(format!("{hex}  root.tar.xz\n{hex} *root.tar.xz\n").into_bytes()),
        ),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let src =
        |list: &str| Source::new(server.url("/pub/root.tar.xz")).checksum_url(server.url(list));
    let err = fetcher(cache.path()).fetch(&src("/pub/TWICE")).unwrap_err();
    assert!(
        format!("{err:#}").contains("2 different SHA-256 entries for root.tar.xz"),
        "{err:#}"
    );
    assert!(blob_files(cache.path()).is_empty());
    let err = fetcher(cache.path())
        .fetch(&src("/pub/SAME-TWICE").sha256(other.clone()))
        .unwrap_err();
    assert!(format!("{err:#}").contains("disagree"), "{err:#}");
    let path = fetcher(cache.path())
        .fetch(&src("/pub/SAME-TWICE").sha256(hex.clone()))
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), body);
}

/// A throwaway signing key made for this test run (never a real one).
fn test_key(uid: &str) -> (SignedSecretKey, String) {
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(KeyType::Ed25519Legacy)
        .can_certify(true)
        .can_sign(true)
        .primary_user_id(uid.into());
    let secret = params
        .build()
        .unwrap()
        .generate(rand::thread_rng())
        .unwrap();
    let public = SignedPublicKey::from(secret.clone())
        .to_armored_string(ArmorOptions::default())
        .unwrap();
    (secret, public)
}

fn clearsign(text: &str, key: &SignedSecretKey) -> String {
    CleartextSignedMessage::sign(
        rand::thread_rng(),
        text,
        &key.primary_key,
        &Password::empty(),
    )
    .unwrap()
    .to_armored_string(ArmorOptions::default())
    .unwrap()
}

fn keyring_of(name: &str, armored: &str) -> Keyring {
    let mut ring = Keyring::empty();
    ring.add_armored(name, armored).unwrap();
    ring
}

/// The body of a Fedora Container CHECKSUM file, line for line as Fedora
/// writes it: a size comment, then a BSD-style SHA256 line, per image.
fn fedora_checksum_body(release: &str, compose: &str, image_hex: &str) -> String {
    format!(
        "# Fedora-Container-Base-Generic-{release}-{compose}.x86_64.oci.tar.xz: 60000 bytes\n\
         SHA256 (Fedora-Container-Base-Generic-{release}-{compose}.x86_64.oci.tar.xz) = {image_hex}\n\
         # Fedora-Container-Minimal-Base-{release}-{compose}.x86_64.oci.tar.xz: 5 bytes\n\
         SHA256 (Fedora-Container-Minimal-Base-{release}-{compose}.x86_64.oci.tar.xz) = {}\n",
        sha256_hex(b"other")
    )
}

struct FedoraMirror {
    server: Server,
    body: Vec<u8>,
    image: String,
    checksum: String,
}

/// A mirror with Fedora's folder layout serving one image and its CHECKSUM.
fn fedora_mirror(
    release: &str,
    compose: &str,
    checksum_text: impl Fn(&str) -> String,
) -> FedoraMirror {
    let body = payload(60_000, 7);
    let dir = format!("/fedora/releases/{release}/Container/x86_64/images/");
    let image = format!("{dir}Fedora-Container-Base-Generic-{release}-{compose}.x86_64.oci.tar.xz");
    let checksum = format!("{dir}Fedora-Container-{release}-{compose}-x86_64-CHECKSUM");
    let text = checksum_text(&fedora_checksum_body(release, compose, &sha256_hex(&body)));
    let listing = format!(
        "<html><body><h1>Index of {dir}</h1><pre>\
         <a href=\"../\">Parent Directory</a>\n\
         <a href=\"Fedora-Container-{release}-{compose}-x86_64-CHECKSUM\">Fedora-Container-{release}-{compose}-x86_64-CHECKSUM</a> 1K\n\
         </pre></body></html>"
    );
    let server = Server::routes(vec![
        (image.as_str(), Behaviour::Serve(body.clone())),
        (checksum.as_str(), Behaviour::Serve(text.into_bytes())),
        (dir.as_str(), Behaviour::Listing(listing)),
    ]);
    FedoraMirror {
        server,
        body,
        image,
        checksum,
    }
}

#[test]
fn checksum_list_in_fedora_clearsigned_format() {
    let (key, public) = test_key("Fedora test <test@example.invalid>");
    let m = fedora_mirror("41", "1.4", |body| clearsign(body, &key));
    let cache = tempfile::tempdir().unwrap();
    let src = Source::new(m.server.url(&m.image)).checksum_url(m.server.url(&m.checksum));
    let path = fetcher(cache.path())
        .keyring(keyring_of("test-key", &public))
        .fetch(&src.clone().require_signature(true))
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), m.body);

    // The armor Fedora's files have: header, Hash line, blank, text.
    let text = clearsign(
        &fedora_checksum_body("41", "1.4", &sha256_hex(&m.body)),
        &key,
    );
    assert!(
        text.starts_with(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# Fedora-Container-Base-Generic-41-1.4"
        ),
        "{text}"
    );
}

#[test]
fn a_changed_checksum_file_fails_its_signature() {
    let (key, public) = test_key("Fedora test <test@example.invalid>");
    let m = fedora_mirror("43", "1.6", |body| {
        // Signed, then one digit of the image's digest changed in transit.
        let signed = clearsign(body, &key);
        let line_start = signed.find("SHA256 (Fedora-Container-Base").unwrap();
        let eq = line_start + signed[line_start..].find(" = ").unwrap() + 3;
        let mut bytes = signed.into_bytes();
        bytes[eq] = if bytes[eq] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).unwrap()
    });
    let cache = tempfile::tempdir().unwrap();
    let list = m.server.url(&m.checksum);
    let err = fetcher(cache.path())
        .keyring(keyring_of("test-key", &public))
        .fetch(&Source::new(m.server.url(&m.image)).checksum_url(&list))
        .unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!("{list}: BAD signature by test-key: the file was changed after it was signed")
    );
    assert_eq!(
        m.server.hits(&m.image),
        0,
        "nothing downloaded on a bad list"
    );
}

#[test]
fn a_checksum_file_signed_by_an_unknown_key_is_refused() {
    let (stranger, _) = test_key("Mallory <mallory@example.invalid>");
    let (_, trusted) = test_key("Fedora test <test@example.invalid>");
    let m = fedora_mirror("43", "1.6", |body| clearsign(body, &stranger));
    let cache = tempfile::tempdir().unwrap();
    let list = m.server.url(&m.checksum);
    let src = Source::new(m.server.url(&m.image)).checksum_url(&list);
    let err = fetcher(cache.path())
        .keyring(keyring_of("test-key", &trusted))
        .fetch(&src)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!("{list}: signed by an unknown key (")),
        "{msg}"
    );
    assert!(msg.ends_with("trusted keys: test-key"), "{msg}");
    // The shipped Fedora keys do not know it either.
    let err = fetcher(cache.path()).fetch(&src).unwrap_err();
    assert!(
        format!("{err:#}").contains("RPM-GPG-KEY-fedora-43-primary"),
        "{err:#}"
    );
    assert_eq!(m.server.hits(&m.image), 0);

    // --insecure-skip-signature uses the list anyway (and warns).
    let path = fetcher(cache.path())
        .insecure_skip_signature(true)
        .fetch(&src)
        .unwrap();
    assert_eq!(std::fs::read(path).unwrap(), m.body);
}

#[test]
fn lines_outside_the_signed_text_are_ignored() {
    let (key, public) = test_key("Fedora test <test@example.invalid>");
    let m = fedora_mirror("43", "1.6", |body| {
        // Only the Minimal image is signed; an attacker appends an entry
        // for the Base image after the signature.
        let signed_part: String = body
            .lines()
            .filter(|l| !l.contains("Base-Generic"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!(
            "{}SHA256 (Fedora-Container-Base-Generic-43-1.6.x86_64.oci.tar.xz) = {}\n",
            clearsign(&signed_part, &key),
            sha256_hex(&payload(60_000, 7))
        )
    });
    let cache = tempfile::tempdir().unwrap();
    let err = fetcher(cache.path())
        .keyring(keyring_of("test-key", &public))
        .fetch(&Source::new(m.server.url(&m.image)).checksum_url(m.server.url(&m.checksum)))
        .unwrap_err();
    let msg = format!("{err:#}");
    // pgp refuses trailing data outright, or the entry is simply missing.
    assert!(
        msg.contains("trailing data") || msg.contains("has no SHA-256 entry"),
        "{msg}"
    );
    assert_eq!(m.server.hits(&m.image), 0);
}

#[test]
fn an_unsigned_list_is_refused_where_a_signature_is_required() {
    let m = fedora_mirror("43", "1.6", |body| body.to_string());
    let cache = tempfile::tempdir().unwrap();
    let list = m.server.url(&m.checksum);
    let src = Source::new(m.server.url(&m.image)).checksum_url(&list);
    let err = fetcher(cache.path())
        .fetch(&src.clone().require_signature(true))
        .unwrap_err();
    assert!(
        format!("{err:#}").starts_with(&format!("checksum file {list} is not signed")),
        "{err:#}"
    );
    // A Debian-style unsigned list is fine where no signature is required.
    let path = fetcher(cache.path()).fetch(&src).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), m.body);
}

#[test]
fn fedora_base_is_derived_from_the_release_and_the_mirror_listing() {
    let (key, public) = test_key("Fedora test <test@example.invalid>");
    // 46 has no built-in compose id: it is read from the folder listing.
    let m = fedora_mirror("46", "1.3", |body| clearsign(body, &key));
    let cache = tempfile::tempdir().unwrap();
    let plan = Plan::Fedora {
        mirror: m.server.url("/fedora"),
        release: "46".into(),
        compose: None,
    };
    let fetched = base::fetch(
        &fetcher(cache.path()).keyring(keyring_of("test-key", &public)),
        &plan,
    )
    .unwrap();
    assert_eq!(std::fs::read(&fetched.path).unwrap(), m.body);
    assert_eq!(fetched.location, m.server.url(&m.image));
    assert_eq!(
        m.server
            .hits("/fedora/releases/46/Container/x86_64/images/"),
        1
    );

    // The shipped Fedora keys are required by default: a test key's
    // signature is not enough.
    let cache = tempfile::tempdir().unwrap();
    let err = base::fetch(&fetcher(cache.path()), &plan).unwrap_err();
    assert!(format!("{err:#}").contains("unknown key"), "{err:#}");
}

/// The default Fedora spec names a release whose primary key ships with
/// the tool: without it, `make image BASE=fedora` would fail at the
/// signature of the very first download.
#[test]
fn the_default_fedora_release_has_a_shipped_key() {
    let spec = undercloud_live::spec::LoadedSpec::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("kickstart/undercloud-live-fedora.yaml"),
    )
    .unwrap()
    .spec;
    let wanted = format!("RPM-GPG-KEY-fedora-{}-primary", spec.base.release);
    let names: Vec<String> = Keyring::fedora()
        .unwrap()
        .fingerprints()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(names.contains(&wanted), "{wanted} not in {names:?}");
}

#[test]
fn a_download_larger_than_the_free_space_is_refused_up_front() {
    let Some(fs) = SmallFs::mount("1m") else {
        return;
    };
    let body = payload(3 << 20, 17);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![("/big.tar", Behaviour::Serve(body))]);
    let url = server.url("/big.tar");
    let err = fetcher(fs.path())
        .fetch(&Source::new(&url).sha256(&hex))
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.starts_with(&format!("downloading {url}: needs 3.0 MiB but only ")),
        "{msg}"
    );
    assert!(msg.contains(&fs.path().display().to_string()), "{msg}");
    assert_eq!(server.hits("/big.tar"), 1, "not retried");
}

#[test]
fn checksum_list_without_an_entry_names_both() {
    let server = Server::routes(vec![
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
    let server = Server::routes(vec![("/base.tar", Behaviour::Serve(body.clone()))]);
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
    let server = Server::routes(vec![("/base.tar", Behaviour::Serve(body))]);
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

#[test]
fn fetch_command_derives_fedora_urls_and_skips_signatures_only_when_told() {
    let (stranger, _) = test_key("Not Fedora <x@example.invalid>");
    let m = fedora_mirror("43", "1.6", |body| clearsign(body, &stranger));
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("f.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: f\nlabel: F\nbase:\n  distro: fedora\n  release: \"43\"\n  mirror: {}\n",
            m.server.url("/fedora")
        ),
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_undercloud-live"))
            .arg("fetch")
            .arg(&spec)
            .arg("--cache-dir")
            .arg(&cache)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}: signed by an unknown key",
            m.server.url(&m.checksum)
        )),
        "{stderr}"
    );
    assert_eq!(m.server.hits(&m.image), 0);

    for _ in 0..2 {
        let out = run(&["--insecure-skip-signature", "--quiet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        // Every time, even quiet and even when the blob is cached already.
        assert!(
            stderr.contains("warning: NOT checking the OpenPGP signature of"),
            "{stderr}"
        );
    }
    assert_eq!(m.server.hits(&m.image), 1);
}

// ---------------------------------------------------------------------------
// Unpacking while downloading (`fetch --unpack`, the build's first step).

/// A small rootfs as tar.xz: a folder with `files` payload files, plus a
/// symlink. Multi-MiB, so that a cut connection lands mid-archive.
fn rootfs_tar_xz(files: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(1_700_000_000);
    dir.set_uid(0);
    dir.set_gid(0);
    b.append_data(&mut dir, "etc/", std::io::empty()).unwrap();
    for i in 0..files {
        let data = payload(256 * 1024, 100 + i as u32);
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        b.append_data(&mut h, format!("etc/f{i}"), &data[..])
            .unwrap();
    }
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    l.set_mode(0o777);
    l.set_mtime(1_700_000_000);
    l.set_uid(0);
    l.set_gid(0);
    b.append_link(&mut l, "etc/link", "f0").unwrap();
    let tar = b.into_inner().unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 0);
    xz.write_all(&tar).unwrap();
    xz.finish().unwrap()
}

/// One `fetch_and_unpack` of what `behaviour` serves at /rootfs.tar.xz,
/// checked against `hex`, into a fresh cache and an empty root.
struct StreamRun {
    server: Server,
    url: String,
    dir: tempfile::TempDir,
    cache: PathBuf,
    root: PathBuf,
    result: anyhow::Result<(base::Fetched, prefetch::Unpacked)>,
}

fn stream_run(behaviour: Behaviour, hex: &str) -> StreamRun {
    let server = Server::routes(vec![("/rootfs.tar.xz", behaviour)]);
    let url = server.url("/rootfs.tar.xz");
    let dir = tempfile::tempdir().unwrap();
    let (cache, root) = (dir.path().join("cache"), dir.path().join("root"));
    std::fs::create_dir(&root).unwrap();
    let plan = Plan::Archive(Source::new(&url).sha256(hex));
    let result = prefetch::fetch_and_unpack(&fetcher(&cache), &plan, &root, &Progress::silent());
    StreamRun {
        server,
        url,
        dir,
        cache,
        root,
        result,
    }
}

fn assert_tree(root: &Path, files: usize) {
    for i in 0..files {
        let got = std::fs::read(root.join(format!("etc/f{i}"))).unwrap();
        assert_eq!(got, payload(256 * 1024, 100 + i as u32), "etc/f{i}");
    }
    assert_eq!(
        std::fs::read_link(root.join("etc/link")).unwrap(),
        Path::new("f0")
    );
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[test]
fn a_download_is_unpacked_while_it_arrives_and_cached_once_verified() {
    let body = rootfs_tar_xz(12);
    let hex = sha256_hex(&body);
    let run = stream_run(Behaviour::Serve(body.clone()), &hex);
    let (fetched, unpacked) = run.result.unwrap();
    assert!(
        unpacked.streamed,
        "a fresh download is unpacked as it comes"
    );
    assert_eq!(unpacked.stats.entries, 14);
    assert_tree(&run.root, 12);
    assert_eq!(std::fs::read(&fetched.path).unwrap(), body);
    assert_eq!(blob_files(&run.cache), vec![hex.clone()]);
    assert_eq!(run.server.hits("/rootfs.tar.xz"), 1);

    // The second time it comes from the cache, without the network.
    let again = run.dir.path().join("again");
    std::fs::create_dir(&again).unwrap();
    let (_, unpacked) = prefetch::fetch_and_unpack(
        &fetcher(&run.cache).offline(true),
        &Plan::Archive(Source::new(&run.url).sha256(&hex)),
        &again,
        &Progress::silent(),
    )
    .unwrap();
    assert!(!unpacked.streamed);
    assert_tree(&again, 12);
    assert_eq!(run.server.hits("/rootfs.tar.xz"), 1);
}

#[test]
fn a_streamed_download_with_the_wrong_digest_leaves_no_tree_and_no_blob() {
    let wrong = sha256_hex(b"something else");
    let run = stream_run(Behaviour::Serve(rootfs_tar_xz(4)), &wrong);
    let msg = format!("{:#}", run.result.unwrap_err());
    assert!(
        msg.starts_with(&format!(
            "checksum mismatch for {}: expected {wrong}",
            run.url
        )),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(is_empty(&run.root), "the unverified tree is removed");
    assert!(
        blob_files(&run.cache).is_empty(),
        "{:?}",
        blob_files(&run.cache)
    );
}

#[test]
fn a_cut_streamed_download_is_resumed_and_unpacked_from_the_verified_file() {
    let body = rootfs_tar_xz(12);
    let hex = sha256_hex(&body);
    let cut = body.len() / 2;
    let run = stream_run(Behaviour::TruncateFirst { body, cut }, &hex);
    let (_, unpacked) = run.result.unwrap();
    assert!(!unpacked.streamed, "the half-made tree is not kept");
    assert_tree(&run.root, 12);
    assert_eq!(
        run.server.ranges("/rootfs.tar.xz"),
        vec![None, Some(format!("bytes={cut}-"))],
        "the second request continues where the first was cut"
    );
    assert_eq!(blob_files(&run.cache), vec![hex]);
}

#[test]
fn a_corrupt_archive_with_the_right_digest_is_reported_as_corrupt() {
    let mut body = rootfs_tar_xz(8);
    let at = body.len() / 2;
    body[at] ^= 0x55;
    let hex = sha256_hex(&body);
    let run = stream_run(Behaviour::Serve(body), &hex);
    let msg = format!("{:#}", run.result.unwrap_err());
    assert!(
        msg.contains("data is truncated or corrupt"),
        "the archive's own fault, not the download's: {msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(is_empty(&run.root));
    // The bytes are what the digest names, so they are cached: the archive
    // is bad at its source, and another download would not help.
    assert_eq!(blob_files(&run.cache), vec![hex]);
    assert_eq!(run.server.hits("/rootfs.tar.xz"), 1);
}

#[test]
fn fetch_unpack_command_says_it_unpacked_while_downloading() {
    let body = rootfs_tar_xz(3);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![("/rootfs.tar.xz", Behaviour::Serve(body))]);
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_undercloud-live"))
        .arg("fetch")
        .arg(server.url("/rootfs.tar.xz"))
        .args(["--sha256", &hex, "--cache-dir"])
        .arg(dir.path().join("cache"))
        .arg("--unpack")
        .arg(dir.path().join("root"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("unpacked 5 entries") && stdout.contains("while downloading"),
        "{stdout}"
    );
    assert_tree(&dir.path().join("root"), 3);
}

/// A failed `fetch --unpack` takes back the folders it made (and leaves a
/// folder that was already there).
#[test]
fn a_failed_fetch_unpack_leaves_no_folder_behind() {
    let body = rootfs_tar_xz(3);
    let server = Server::routes(vec![("/rootfs.tar.xz", Behaviour::Serve(body))]);
    let dir = tempfile::tempdir().unwrap();
    let wrong = sha256_hex(b"not this");
    let run = |dest: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_undercloud-live"))
            .arg("fetch")
            .arg(server.url("/rootfs.tar.xz"))
            .args(["--sha256", &wrong, "--cache-dir"])
            .arg(dir.path().join("cache"))
            .arg("--unpack")
            .arg(dest)
            .output()
            .unwrap()
    };
    let o = run(&dir.path().join("new/root"));
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("checksum mismatch"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !dir.path().join("new").exists(),
        "the folders it made are left"
    );
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    let o = run(&dir.path().join("mine"));
    assert!(!o.status.success());
    assert!(
        dir.path().join("mine").is_dir(),
        "an existing folder was removed"
    );
}

// ---------------------------------------------------------------------------
// Interrupts: a signal stops a `fetch` within a second or so, whatever it
// is waiting on, and leaves nothing but the resumable `.part`.

/// How long a run may take to stop after the signal (the brief: about a
/// second; the slack is for a loaded test machine).
const STOP_WITHIN: Duration = Duration::from_secs(2);

/// `undercloud-live fetch URL --sha256 HEX --cache-dir CACHE [extra]`,
/// started in the background with its stderr collected by a thread.
struct Background {
    child: std::process::Child,
    stderr: thread::JoinHandle<String>,
}

fn start_fetch(url: &str, hex: &str, cache: &Path, extra: &[&std::ffi::OsStr]) -> Background {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_undercloud-live"))
        .arg("fetch")
        .arg(url)
        .args(["--sha256", hex, "--cache-dir"])
        .arg(cache)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stderr.take().unwrap();
    let stderr = thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    Background { child, stderr }
}

/// What an interrupted run did.
struct Stopped {
    status: std::process::ExitStatus,
    stderr: String,
    /// From the signal to the exit.
    took: Duration,
}

/// Waits until `started` says the run is under way, sends `sig`, and
/// waits for the exit (killing the run, and failing, if it goes on for
/// 10 s: that is the bug this guards against).
fn interrupt_when(
    mut run: Background,
    sig: nix::sys::signal::Signal,
    started: impl Fn() -> bool,
) -> Stopped {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started() {
        if let Ok(Some(status)) = run.child.try_wait() {
            panic!(
                "the run ended ({status}) before it started downloading: {}",
                run.stderr.join().unwrap()
            );
        }
        assert!(Instant::now() < deadline, "the download never started");
        thread::sleep(Duration::from_millis(10));
    }
    let pid = nix::unistd::Pid::from_raw(run.child.id() as i32);
    nix::sys::signal::kill(pid, sig).unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = run.child.kill();
            let _ = run.child.wait();
            panic!("still running 10 s after {sig}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let took = t.elapsed();
    Stopped {
        status,
        stderr: run.stderr.join().unwrap(),
        took,
    }
}

fn assert_interrupted(s: &Stopped, sig: nix::sys::signal::Signal) {
    eprintln!("stopped {:?} after {sig}; stderr:\n{}", s.took, s.stderr);
    assert!(s.took < STOP_WITHIN, "took {:?} to stop", s.took);
    assert_eq!(
        s.status.code(),
        Some(128 + sig as i32),
        "exit status after {sig}; stderr: {}",
        s.stderr
    );
    let last = s.stderr.lines().last().unwrap_or_default();
    assert_eq!(last, format!("error: interrupted by {sig}"), "{}", s.stderr);
}

/// Every file under `dir`, relative, sorted (folders are not listed).
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn part_len(cache: &Path, hex: &str) -> u64 {
    let part = cache.join(format!("downloads/blobs/sha256/{hex}.part"));
    std::fs::metadata(part).map_or(0, |m| m.len())
}

/// 3 MiB at about 800 KiB/s: a download that lasts a few seconds.
fn dribble(body: Vec<u8>) -> Behaviour {
    Behaviour::Dribble {
        body,
        chunk: 8 << 10,
        every: Duration::from_millis(10),
    }
}

#[test]
fn sigterm_stops_a_slow_download_and_keeps_only_the_resumable_part() {
    use nix::sys::signal::Signal;
    let body = payload(3 << 20, 7);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![("/base.tar", dribble(body.clone()))]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = start_fetch(&server.url("/base.tar"), &hex, &cache, &[]);
    let s = interrupt_when(run, Signal::SIGTERM, || part_len(&cache, &hex) >= 64 << 10);
    assert_interrupted(&s, Signal::SIGTERM);
    let part = format!("cache/downloads/blobs/sha256/{hex}.part");
    assert_eq!(files_under(dir.path()), vec![part.clone()]);
    let kept = std::fs::read(dir.path().join(&part)).unwrap();
    assert!(
        !kept.is_empty() && kept.len() < body.len(),
        "{} bytes",
        kept.len()
    );
    assert_eq!(kept, body[..kept.len()], "the part holds the file's start");

    // The next run continues it.
    let fast = Server::routes(vec![("/base.tar", Behaviour::Serve(body))]);
    let run = start_fetch(&fast.url("/base.tar"), &hex, &cache, &[]);
    let mut child = run.child;
    assert!(
        child.wait().unwrap().success(),
        "{}",
        run.stderr.join().unwrap()
    );
    assert_eq!(
        fast.ranges("/base.tar"),
        vec![Some(format!("bytes={}-", kept.len()))]
    );
    assert_eq!(blob_files(&cache.join("downloads")), vec![hex]);
}

#[test]
fn sigint_stops_fetch_unpack_and_removes_the_folder_it_made() {
    use nix::sys::signal::Signal;
    let body = rootfs_tar_xz(12);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![("/rootfs.tar.xz", dribble(body))]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let root = dir.path().join("new/root");
    let run = start_fetch(
        &server.url("/rootfs.tar.xz"),
        &hex,
        &cache,
        &["--unpack".as_ref(), root.as_os_str()],
    );
    // Signalled once the unpack has written files into the tree.
    let s = interrupt_when(run, Signal::SIGINT, || root.join("etc/f1").exists());
    assert_interrupted(&s, Signal::SIGINT);
    assert!(
        !dir.path().join("new").exists(),
        "the unpack folder is left"
    );
    assert_eq!(
        files_under(dir.path()),
        vec![format!("cache/downloads/blobs/sha256/{hex}.part")]
    );
}

#[test]
fn sigterm_stops_a_download_from_a_server_that_sent_headers_then_nothing() {
    use nix::sys::signal::Signal;
    let body = payload(1 << 20, 8);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![("/base.tar", Behaviour::Stall(body))]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = start_fetch(&server.url("/base.tar"), &hex, &cache, &[]);
    let headers_at = std::cell::Cell::new(None::<Instant>);
    // A moment after the headers went out, the client waits on the body.
    let s = interrupt_when(run, Signal::SIGTERM, || {
        if server.headers_sent() == 0 {
            return false;
        }
        let at = headers_at.get().unwrap_or_else(Instant::now);
        headers_at.set(Some(at));
        at.elapsed() > Duration::from_millis(300)
    });
    assert_interrupted(&s, Signal::SIGTERM);
    // An empty part is worth nothing for a resume, so it is removed.
    assert_eq!(files_under(dir.path()), Vec::<String>::new());
}

#[test]
fn sigint_ends_the_wait_before_a_retry() {
    use nix::sys::signal::Signal;
    let body = payload(1000, 9);
    let hex = sha256_hex(&body);
    let server = Server::routes(vec![(
        "/base.tar",
        Behaviour::FailFirst {
            status: 503,
            times: 100,
            retry_after: Some("20"),
            body,
        },
    )]);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = start_fetch(&server.url("/base.tar"), &hex, &cache, &[]);
    // The first answer asks for a 20 s wait; the signal comes during it.
    let s = interrupt_when(run, Signal::SIGINT, || server.hits("/base.tar") > 0);
    assert_interrupted(&s, Signal::SIGINT);
    assert_eq!(server.hits("/base.tar"), 1, "no retry after the signal");
    assert_eq!(files_under(dir.path()), Vec::<String>::new());
}
