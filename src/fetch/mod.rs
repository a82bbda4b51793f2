//! Base download: HTTP(S)/file/local sources into a cache, sha256 verified while streaming.
//!
//! The cache is content-addressed (`<cache>/blobs/sha256/<hex>`): a blob is
//! only ever renamed into place after its digest matched, so its presence
//! alone proves it was verified and a later fetch needs no network. Local
//! sources are hashed in place and never copied: a multi-GiB base on a local
//! disk should not be duplicated just to be checked.

pub mod base;
mod checksums;
pub mod debootstrap;
pub mod fedora;
mod http;
pub mod signature;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub use checksums::parse_checksums;
pub use http::RetryPolicy;
pub use signature::Keyring;

use crate::progress::Progress;

/// Reads a download while it arrives (`Fetcher::fetch_streaming`): it is
/// given the bytes in order, front to back, and must read them to the end.
pub type Consumer<'a> = &'a mut dyn FnMut(&mut dyn Read) -> Result<()>;

/// A server that cannot be reached at all (its name does not resolve, or
/// it refuses connections): not retried, and reported with what to do.
#[derive(Debug)]
pub struct Unreachable {
    pub host: String,
    pub why: &'static str,
    pub url: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot reach {} ({}) for {}",
            self.host, self.why, self.url
        )
    }
}

impl std::error::Error for Unreachable {}

/// The error of a base that could not be fetched, with the ways around an
/// unreachable mirror when that was the cause; other errors unchanged.
pub fn explain_unreachable(err: anyhow::Error, distro: crate::spec::Distro) -> anyhow::Error {
    let Some(u) = err.chain().find_map(|e| e.downcast_ref::<Unreachable>()) else {
        return err;
    };
    let other = distro.facts().unreachable_hint;
    anyhow::anyhow!(
        "{u}: {other}set base.mirror in the spec to a mirror you can reach, or pass --base FILE with a base you downloaded"
    )
}

/// Where a file comes from and how to know it is the right one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Source {
    /// `http://`, `https://`, `file://` URL, or a local path.
    pub location: String,
    /// Expected SHA-256 digest in hex; takes precedence over `checksum_url`.
    pub sha256: Option<String>,
    /// A `SHA256SUMS` or Fedora `CHECKSUM` list (URL, `file://` or path)
    /// with an entry for the basename of `location`.
    pub checksum_url: Option<String>,
    /// The checksum list must be a clearsigned message by a trusted key
    /// (Fedora's published bases). Without this, a clearsigned list is still
    /// verified, and an unsigned one (a Debian-style `SHA256SUMS`) is
    /// accepted: its trust then rests on the transport and on the URL the
    /// user chose.
    pub require_signature: bool,
}

impl Source {
    pub fn new(location: impl Into<String>) -> Self {
        Source {
            location: location.into(),
            ..Source::default()
        }
    }

    pub fn sha256(mut self, hex: impl Into<String>) -> Self {
        self.sha256 = Some(hex.into());
        self
    }

    pub fn checksum_url(mut self, url: impl Into<String>) -> Self {
        self.checksum_url = Some(url.into());
        self
    }

    pub fn require_signature(mut self, yes: bool) -> Self {
        self.require_signature = yes;
        self
    }
}

/// Downloads and verifies sources into a content-addressed cache.
pub struct Fetcher {
    cache_dir: PathBuf,
    progress: Progress,
    offline: bool,
    keyring: Keyring,
    skip_signature: bool,
    retry: RetryPolicy,
    // Built on first network use: offline runs and local sources never pay
    // for (or fail on) TLS setup.
    client: OnceLock<reqwest::blocking::Client>,
}

/// A parsed `Source::location`.
enum Location {
    Remote(reqwest::Url),
    Local(PathBuf),
}

impl Location {
    fn parse(location: &str) -> Result<Location> {
        let lower = location.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url =
                reqwest::Url::parse(location).with_context(|| format!("invalid URL {location}"))?;
            Ok(Location::Remote(url))
        } else if lower.starts_with("file:") {
            let url =
                reqwest::Url::parse(location).with_context(|| format!("invalid URL {location}"))?;
            // to_file_path refuses remote hosts and relative forms, which
            // cannot name a local file unambiguously.
            let path = url
                .to_file_path()
                .map_err(|()| anyhow::anyhow!("{location} does not name a local file"))?;
            Ok(Location::Local(path))
        } else if location.contains("://") {
            bail!("unsupported URL scheme in {location} (use http, https, file or a path)")
        } else if location.is_empty() {
            bail!("empty source location")
        } else {
            Ok(Location::Local(PathBuf::from(location)))
        }
    }

    /// The name looked up in a checksum list.
    fn basename(&self) -> Option<String> {
        match self {
            Location::Remote(url) => url
                .path_segments()
                .and_then(|mut s| s.next_back())
                .filter(|s| !s.is_empty())
                .map(percent_decode),
            Location::Local(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
        }
    }
}

impl Fetcher {
    /// A fetcher that trusts Fedora's shipped release keys.
    pub fn new(cache_dir: PathBuf, progress: Progress) -> Self {
        Fetcher {
            cache_dir,
            progress,
            offline: false,
            // The shipped keys are checked by a unit test; should one ever
            // fail to parse, every signed list fails as "unknown key",
            // which is the safe direction.
            keyring: Keyring::fedora().unwrap_or_default(),
            skip_signature: false,
            retry: RetryPolicy::default(),
            client: OnceLock::new(),
        }
    }

    /// The keys a clearsigned checksum list must be signed by (replaces the
    /// shipped Fedora keys).
    pub fn keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = keyring;
        self
    }

    /// Use clearsigned checksum lists without checking their signature
    /// (`--insecure-skip-signature`); every use prints a warning.
    pub fn insecure_skip_signature(mut self, yes: bool) -> Self {
        self.skip_signature = yes;
        self
    }

    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// Only the cache (and local files) may be used; no network access.
    pub fn offline(mut self, yes: bool) -> Self {
        self.offline = yes;
        self
    }

    /// Where a verified blob with this digest lives (whether or not it exists yet).
    pub fn blob_path(&self, sha256_hex: &str) -> PathBuf {
        self.blob_dir().join(sha256_hex.to_ascii_lowercase())
    }

    fn blob_dir(&self) -> PathBuf {
        self.cache_dir.join("blobs").join("sha256")
    }

    /// Returns the path of a verified copy of `src`: the cache blob for remote
    /// sources, the file itself for local ones. A local source without any
    /// checksum is returned unverified; the caller decides whether to warn.
    pub fn fetch(&self, src: &Source) -> Result<PathBuf> {
        Ok(self.fetch_streaming(src, None)?.0)
    }

    /// `fetch`, and when the file has to be downloaded, `consume` reads it
    /// while it arrives (unpacking it, say), instead of after it was
    /// written to the cache and read back. The second value says whether
    /// `consume` read the whole verified file: when it is false `consume`
    /// was not called, or what it made must be thrown away (the transfer
    /// was cut and resumed, or continued an earlier run's partial file),
    /// and the caller reads the returned path instead. When the digest does
    /// not match, the error is that mismatch, whatever `consume` said.
    pub fn fetch_streaming(
        &self,
        src: &Source,
        consume: Option<Consumer<'_>>,
    ) -> Result<(PathBuf, bool)> {
        let location = Location::parse(&src.location)?;
        if let Location::Remote(_) = location {
            if src.sha256.is_none() && src.checksum_url.is_none() {
                bail!(
                    "remote source {} needs a sha256 or a checksum_url",
                    src.location
                );
            }
        }
        let expected = self.expected_digest(src, &location)?;
        match location {
            Location::Local(path) => {
                let meta = std::fs::metadata(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                if !meta.is_file() {
                    bail!("{} is not a regular file", path.display());
                }
                if let Some(hex) = expected {
                    self.verify_local(&path, &hex)?;
                }
                Ok((path, false))
            }
            Location::Remote(url) => {
                // Checked above: a remote source always has a digest by now.
                let hex = expected.with_context(|| format!("no sha256 known for {url}"))?;
                let blob = self.blob_path(&hex);
                if blob.is_file() {
                    return Ok((blob, false));
                }
                if self.offline {
                    bail!(
                        "{url} is not in the cache ({}) and downloads are off (offline)",
                        blob.display()
                    );
                }
                let consumed = http::download(self, &url, &hex, consume)?;
                Ok((blob, consumed))
            }
        }
    }

    /// The digest to check against: the explicit one, else the entry for
    /// this file's basename in the checksum list.
    /// Given both, both must agree: a digest that silently won over a
    /// signed list would defeat the signature.
    fn expected_digest(&self, src: &Source, location: &Location) -> Result<Option<String>> {
        let explicit = match &src.sha256 {
            Some(hex) => {
                let hex = hex.trim();
                if !checksums::is_sha256_hex(hex) {
                    bail!(
                        "invalid sha256 for {}: {hex:?} is not 64 hex digits",
                        src.location
                    );
                }
                Some(hex.to_ascii_lowercase())
            }
            None => None,
        };
        let Some(list_location) = &src.checksum_url else {
            return Ok(explicit);
        };
        let listed = self.listed_digest(src, location, list_location)?;
        match explicit {
            Some(hex) if hex != listed => bail!(
                "the given sha256 {hex} and {list_location}'s entry {listed} disagree for {}",
                src.location
            ),
            _ => Ok(Some(listed)),
        }
    }

    /// The entry for this file's basename in the checksum list; two
    /// different entries for one name are refused (which would count?).
    fn listed_digest(
        &self,
        src: &Source,
        location: &Location,
        list_location: &str,
    ) -> Result<String> {
        let name = location.basename().with_context(|| {
            format!(
                "{} has no file name to look up in {list_location}",
                src.location
            )
        })?;
        let text = self.checksum_list(list_location)?;
        let text = self.checked_list(&text, list_location, src.require_signature)?;
        let mut found: Vec<String> = parse_checksums(&text)
            .into_iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, hex)| hex)
            .collect();
        found.sort();
        found.dedup();
        match found.as_slice() {
            [] => bail!("checksum file {list_location} has no SHA-256 entry for {name}"),
            [one] => Ok(one.clone()),
            _ => bail!(
                "checksum file {list_location} has {} different SHA-256 entries for {name}",
                found.len()
            ),
        }
    }

    /// Text of a checksum list. Remote lists are fetched fresh when online
    /// (they may move, like Fedora's "latest" composes) and remembered under
    /// `<cache>/checksums/` so an offline run can still resolve the digest.
    fn checksum_list(&self, list_location: &str) -> Result<String> {
        match Location::parse(list_location)? {
            Location::Local(path) => read_limited_file(&path),
            Location::Remote(url) => {
                let key = hex::encode(Sha256::digest(url.as_str().as_bytes()));
                let saved = self.cache_dir.join("checksums").join(key);
                if self.offline {
                    return read_limited_file(&saved).with_context(|| {
                        format!("checksum file {url} is not in the cache and downloads are off (offline)")
                    });
                }
                let text = http::get_small(self, &url)?;
                save_atomically(&saved, text.as_bytes())
                    .with_context(|| format!("caching checksum file {url}"))?;
                Ok(text)
            }
        }
    }

    /// The part of a checksum list that may be trusted: the signed text of a
    /// clearsigned list whose signature verified, or an unsigned list where
    /// no signature is required.
    fn checked_list(&self, text: &str, what: &str, required: bool) -> Result<String> {
        if signature::is_clearsigned(text) {
            if self.skip_signature {
                warn_skipped(what);
                return Ok(signature::signed_text_unverified(text, what)?.text);
            }
            let signed = signature::verify_clearsigned(text, &self.keyring, what)?;
            if let Some(signer) = &signed.signer {
                self.progress
                    .step(format!("checksum file {what}: good signature by {signer}"));
            }
            return Ok(signed.text);
        }
        if required {
            if self.skip_signature {
                warn_skipped(what);
                return Ok(text.to_string());
            }
            bail!(
                "checksum file {what} is not signed, but this base needs a signed one \
                 (--insecure-skip-signature uses it anyway)"
            );
        }
        Ok(text.to_string())
    }

    /// A small text resource fetched over HTTP(S) (a folder listing), with
    /// the same retries as downloads.
    pub fn get_text(&self, url: &str) -> Result<String> {
        if self.offline {
            bail!("{url} is needed and downloads are off (offline)");
        }
        match Location::parse(url)? {
            Location::Remote(u) => http::get_small(self, &u),
            Location::Local(path) => read_limited_file(&path),
        }
    }

    /// Hash a local file in place, streaming, with a progress bar.
    fn verify_local(&self, path: &Path, expected: &str) -> Result<()> {
        let file = crate::io::open_regular(path, "source")?;
        let len = file.metadata().map(|m| m.len()).ok();
        let mut file = crate::io::Interruptible::new(file);
        let mut bar = self
            .progress
            .bytes(&format!("verify {}", display_name(path)), len);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 17];
        loop {
            let n = match crate::io::read_some(&mut file, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            hasher.update(&buf[..n]);
            bar.inc(n as u64);
        }
        bar.finish();
        let got = hex::encode(hasher.finalize());
        if got != expected {
            bail!(
                "checksum mismatch for {}: expected {expected}, got {got}",
                path.display()
            );
        }
        Ok(())
    }

    fn client(&self) -> Result<&reqwest::blocking::Client> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let client = http::build_client()?;
        // A concurrent first use may have won the race; either client is fine.
        let _ = self.client.set(client);
        self.client.get().context("http client not initialised")
    }
}

/// Printed on every use, whatever `--quiet` says: skipping a signature
/// check must never go unnoticed in a log.
fn warn_skipped(what: &str) {
    eprintln!(
        "warning: NOT checking the OpenPGP signature of {what} (--insecure-skip-signature): \
         its checksums are only as trustworthy as the connection they came over"
    );
}

/// Checksum lists are small; a cap keeps a wrong URL (say, the ISO itself)
/// from being read into memory.
const MAX_CHECKSUM_LIST: u64 = 16 << 20;

fn read_limited_file(path: &Path) -> Result<String> {
    // A list is text, but a stray byte must not hide the digest lines:
    // decode lossily, as for a downloaded list.
    let bytes = crate::io::read_bounded(path, MAX_CHECKSUM_LIST, "checksum file")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Write to a temporary name beside `path`, fsync, rename: readers only ever
/// see a complete file.
fn save_atomically(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent folder", path.display()))?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let result = (|| -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Decode `%XX` escapes in a URL path segment (names in checksum lists are
/// plain file names, not URL-encoded).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // Byte-wise: slicing the str here could split a UTF-8 character.
            if let (Some(hi), Some(lo)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        assert!(matches!(
            Location::parse("https://example.org/a/b.tar.xz").unwrap(),
            Location::Remote(_)
        ));
        match Location::parse("file:///srv/base%20image.tar").unwrap() {
            Location::Local(p) => assert_eq!(p, PathBuf::from("/srv/base image.tar")),
            Location::Remote(_) => panic!("file URL parsed as remote"),
        }
        match Location::parse("relative/base.tar").unwrap() {
            Location::Local(p) => assert_eq!(p, PathBuf::from("relative/base.tar")),
            Location::Remote(_) => panic!("path parsed as remote"),
        }
        let err = Location::parse("ftp://example.org/x").err().unwrap();
        assert!(format!("{err:#}").contains("ftp://example.org/x"));
    }

    #[test]
    fn basenames() {
        let l = Location::parse("https://example.org/pub/Fedora%2041.tar.xz?x=1").unwrap();
        assert_eq!(l.basename().as_deref(), Some("Fedora 41.tar.xz"));
        let l = Location::parse("https://example.org/").unwrap();
        assert_eq!(l.basename(), None);
        let l = Location::parse("/srv/rootfs.tar").unwrap();
        assert_eq!(l.basename().as_deref(), Some("rootfs.tar"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
