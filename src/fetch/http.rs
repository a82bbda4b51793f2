//! HTTP transfer into the cache: streaming hash, resume, atomic publish.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, RANGE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};

use super::{Fetcher, MAX_CHECKSUM_LIST};
use crate::interrupt;
use crate::io::{read_some, Interruptible, Pump};

/// Connecting should be quick; a mirror that takes longer is better skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// reqwest's blocking timeout applies to each wait (response headers, every
/// body read), not to the whole transfer, so it acts as a stall detector and
/// a multi-GiB download on a slow link is still fine.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn build_client() -> Result<Client> {
    Client::builder()
        .user_agent(concat!("undercloud-live/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(READ_TIMEOUT)
        .build()
        .context("setting up the HTTP client")
}

fn get(fetcher: &Fetcher, url: &Url, range_from: Option<u64>) -> Result<Response> {
    let mut req = fetcher.client()?.get(url.clone());
    if let Some(from) = range_from {
        req = req.header(RANGE, format!("bytes={from}-"));
    }
    // A dropped connection and a stalled answer are the mirror's passing
    // trouble, worth another try; a name that does not resolve or a
    // refused connection will not change in the next seconds (the machine
    // is offline, or the mirror is not reachable from here): saying so at
    // once beats a minute of back-off. A malformed URL is not retried either.
    // Sent from a thread of its own: waiting for a stalled server's headers
    // must not outlast a signal (see `interrupt::blocking`).
    let sent = interrupt::blocking(&format!("GET {url}"), move || req.send())?;
    sent.map_err(|e| {
        let chain = error_chain(&e);
        if let Some(why) = e.is_connect().then(|| unreachable_reason(&chain)).flatten() {
            anyhow!(super::Unreachable {
                host: url.host_str().unwrap_or("?").to_string(),
                why,
                url: url.to_string(),
            })
        } else if e.is_connect() || e.is_timeout() || e.is_request() || e.is_body() {
            anyhow!(Transient::new(
                format!("GET {url}: {}", error_chain(&e)),
                None
            ))
        } else {
            anyhow!(e).context(format!("GET {url}"))
        }
    })
}

/// Why a connection failed for good, from the error's text (hyper and the
/// resolver give no typed cause through reqwest).
fn unreachable_reason(chain: &str) -> Option<&'static str> {
    let c = chain.to_ascii_lowercase();
    if c.contains("dns error") || c.contains("failed to lookup address") {
        Some("its name does not resolve")
    } else if c.contains("connection refused") {
        Some("it refused the connection")
    } else if c.contains("network is unreachable") || c.contains("no route to host") {
        Some("there is no route to it")
    } else {
        None
    }
}

/// reqwest's Display is only the outermost layer ("error sending
/// request"); the cause (connection refused, reset) is what helps.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

fn http_error(url: &Url, resp: &Response) -> anyhow::Error {
    let status = resp.status();
    let msg = format!("GET {url}: HTTP {status}");
    // 408 (request timeout), 429 (too many requests) and 5xx are the
    // server's passing state; everything else (404, 403, ...) will not
    // change by asking again.
    if status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
    {
        anyhow!(Transient::new(msg, retry_after(resp)))
    } else {
        anyhow!(msg)
    }
}

/// `Retry-After` in its delay-seconds form. The HTTP-date form is rare on
/// mirrors and would need a clock we do not otherwise trust; it falls back
/// to the normal backoff.
fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// A failure that may go away when asked again: a dropped or refused
/// connection, a cut-off body, HTTP 408/429/5xx.
#[derive(Debug)]
pub(super) struct Transient {
    msg: String,
    retry_after: Option<Duration>,
}

impl Transient {
    fn new(msg: String, retry_after: Option<Duration>) -> Self {
        Transient { msg, retry_after }
    }
}

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Transient {}

/// How often and how patiently a transient failure is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// No wait is ever longer; a `Retry-After` beyond it ends the retries
    /// (a mirror asking for minutes is better reported than waited on).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// Run `attempt` until it succeeds, fails for good, or the policy's
/// attempts are used up. Only `Transient` errors are retried.
fn with_retries<T>(
    fetcher: &Fetcher,
    url: &Url,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let policy = fetcher.retry;
    let mut n = 1;
    loop {
        let err = match attempt() {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Some(transient) = err.downcast_ref::<Transient>() else {
            return Err(err);
        };
        if n >= policy.attempts.max(1) {
            return Err(if n > 1 {
                err.context(format!("giving up on {url} after {n} attempts"))
            } else {
                err
            });
        }
        let backoff = policy
            .base_delay
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(policy.max_delay);
        let wait = match transient.retry_after {
            Some(after) if after > policy.max_delay => {
                return Err(err.context(format!(
                    "{url} asks to retry after {} s, longer than this tool waits",
                    after.as_secs()
                )));
            }
            Some(after) => after,
            None => backoff,
        };
        fetcher.progress.step(format!(
            "{transient}; retrying in {:.1} s (attempt {} of {})",
            wait.as_secs_f64(),
            n + 1,
            policy.attempts
        ));
        interrupt::sleep(wait)?;
        n += 1;
    }
}

/// A small text resource (a checksum list, a folder listing), read into
/// memory with a cap.
pub(super) fn get_small(fetcher: &Fetcher, url: &Url) -> Result<String> {
    with_retries(fetcher, url, || {
        let resp = get(fetcher, url, None)?;
        if !resp.status().is_success() {
            return Err(http_error(url, &resp));
        }
        let mut bytes = Vec::new();
        Pump::new(resp)
            .with_context(|| format!("downloading {url}"))?
            .take(MAX_CHECKSUM_LIST + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| match interrupt::is_io(&e) {
                true => anyhow!(interrupt::Interrupted),
                false => anyhow!(Transient::new(format!("downloading {url}: {e}"), None)),
            })?;
        if bytes.len() as u64 > MAX_CHECKSUM_LIST {
            bail!("{url} is too large for a checksum file");
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    })
}

/// Download `url` into the cache as `blobs/sha256/<hex>`.
///
/// Bytes go to `<hex>.part` while being hashed. A `.part` left by an
/// interrupted run is hashed and continued with a Range request; it is only
/// ever renamed to its final name after the whole file's digest matched, so a
/// partial or wrong file can never be taken for a verified one. An exclusive
/// lock on the `.part` keeps two concurrent runs from interleaving writes.
/// Transient failures (see `Transient`) are retried with backoff, each
/// retry resuming from what the `.part` already holds.
///
/// With `consume`, a fresh download is also handed to it while it arrives
/// (see `stream`), and the result says whether that went through: `true`
/// when the consumer read the whole, verified file; `false` when it was not
/// called, or its work must be thrown away (the transfer was cut and then
/// resumed, or an earlier run's `.part` was continued) and the caller reads
/// the verified blob instead.
pub(super) fn download(
    fetcher: &Fetcher,
    url: &Url,
    hex: &str,
    consume: Option<super::Consumer<'_>>,
) -> Result<bool> {
    let dir = fetcher.blob_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let part_path = dir.join(format!("{hex}.part"));
    let part = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&part_path)
        .with_context(|| format!("opening {}", part_path.display()))?;
    let mut part = match Flock::lock(part, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((_, Errno::EWOULDBLOCK)) => {
            bail!(
                "another process is downloading {url} into {}",
                part_path.display()
            )
        }
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", part_path.display())),
    };
    let result = (|| {
        let blob = fetcher.blob_path(hex);
        if blob.is_file() {
            // Another run finished it between our cache check and the lock.
            let _ = std::fs::remove_file(&part_path);
            return Ok(false);
        }
        // Hashed once; retries continue from this state instead of
        // re-reading a multi-GiB .part each time.
        let mut state = PartState {
            hasher: Sha256::new(),
            have: 0,
        };
        state.have = hash_existing(&mut part, &mut state.hasher)
            .with_context(|| format!("reading {}", part_path.display()))?;
        let mut consumer_error = None;
        if let Some(consume) = consume.filter(|_| state.have == 0) {
            let at = Place {
                url,
                hex,
                dir: &dir,
                part_path: &part_path,
            };
            match stream(fetcher, &at, &mut part, &mut state, consume) {
                Streamed::Done => return Ok(true),
                Streamed::Failed(e) => return Err(e),
                Streamed::Cut(e) => consumer_error = e,
            }
        }
        with_retries(fetcher, url, || {
            fill(fetcher, url, hex, &dir, &part_path, &mut part, &mut state)
        })?;
        // The bytes were right (they just verified), so the consumer's
        // failure was the archive's own: report it.
        match consumer_error {
            Some(e) => Err(e),
            None => Ok(false),
        }
    })();
    // Still under the lock, so this cannot remove another run's file: an
    // empty .part (say, after a 404) is worth nothing for a resume.
    if result.is_err() && part.metadata().is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&part_path);
    }
    result
}

/// Where a download goes, for `stream`.
struct Place<'a> {
    url: &'a Url,
    hex: &'a str,
    dir: &'a std::path::Path,
    part_path: &'a std::path::Path,
}

/// How a streamed download ended.
enum Streamed {
    /// Verified and published; the consumer read all of it without error.
    Done,
    /// Final: the digest did not match, or the cache could not be written.
    Failed(anyhow::Error),
    /// The transfer broke off (or never started): the `.part` and the state
    /// hold what came, for `fill` to resume; the consumer's work is void.
    /// With the consumer's own error when it had given up before the cut:
    /// that counts once the rest has come and verified.
    Cut(Option<anyhow::Error>),
}

/// One attempt at download-and-consume: the response body goes through a
/// reader that appends every byte to the `.part` and the hash before the
/// consumer sees it, so the archive is unpacked while it downloads instead
/// of being written, then read back. Nothing the consumer made is trusted
/// until the digest matched at the end: on any failure the caller throws
/// it away.
fn stream(
    fetcher: &Fetcher,
    at: &Place<'_>,
    part: &mut File,
    state: &mut PartState,
    consume: super::Consumer<'_>,
) -> Streamed {
    // A failure worth retrying is left to `fill` (with its backoff and
    // resume); one that is not (404, a bad URL) is final here already.
    let final_or_cut = |e: anyhow::Error| {
        if e.downcast_ref::<Transient>().is_some() {
            Streamed::Cut(None)
        } else {
            Streamed::Failed(e)
        }
    };
    let resp = match get(fetcher, at.url, None) {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => return final_or_cut(http_error(at.url, &r)),
        Err(e) => return final_or_cut(e),
    };
    let total = resp.content_length();
    if let Some(len) = total {
        if let Err(e) = crate::space::ensure_room(at.dir, len, &format!("downloading {}", at.url)) {
            return Streamed::Failed(e);
        }
    }
    if let Err(e) = part.seek(SeekFrom::Start(0)) {
        return Streamed::Failed(
            anyhow!(e).context(format!("seeking in {}", at.part_path.display())),
        );
    }
    let body = match Pump::new(resp) {
        Ok(b) => b,
        Err(e) => return Streamed::Failed(anyhow!(e).context(format!("downloading {}", at.url))),
    };
    let mut tee = Tee {
        body,
        part,
        part_path: at.part_path,
        state,
        bar: fetcher.progress.bytes(&file_name(at.url), total),
        total,
        url: at.url,
        failure: None,
    };
    let consumed = consume(&mut tee);
    // A consumer that failed because the transfer did has no error of its own.
    let consumed = match consumed {
        Err(_) if tee.failure.is_some() => Ok(()),
        c => c,
    };
    // The rest of the body, whether the consumer read to the end or gave
    // up: bytes after the archive's end are the file's too, and a consumer
    // that failed may have failed on wrong bytes, which only the digest
    // can tell.
    if tee.failure.is_none() {
        let _ = io::copy(&mut tee, &mut io::sink());
    }
    let Tee { bar, failure, .. } = tee;
    bar.finish();
    match failure {
        Some(TeeFailure::Cut) => return Streamed::Cut(consumed.err()),
        Some(TeeFailure::Local(e)) => return Streamed::Failed(e),
        None => {}
    }
    let actual = hex::encode(state.hasher.clone().finalize());
    if actual != at.hex {
        let _ = std::fs::remove_file(at.part_path);
        return Streamed::Failed(anyhow!(
            "checksum mismatch for {}: expected {}, got {actual}",
            at.url,
            at.hex
        ));
    }
    if let Err(e) = publish(part, at.part_path, &fetcher.blob_path(at.hex), at.dir) {
        return Streamed::Failed(e);
    }
    match consumed {
        Ok(()) => Streamed::Done,
        // The bytes are the right ones: the archive itself is bad.
        Err(e) => Streamed::Failed(e),
    }
}

enum TeeFailure {
    /// The connection failed or ended early: worth resuming.
    Cut,
    /// Writing the `.part` failed: not worth retrying.
    Local(anyhow::Error),
}

/// The response body, kept (`.part`) and hashed on its way to a consumer.
struct Tee<'a> {
    body: Pump,
    part: &'a mut File,
    part_path: &'a std::path::Path,
    state: &'a mut PartState,
    bar: crate::progress::Bar,
    total: Option<u64>,
    url: &'a Url,
    failure: Option<TeeFailure>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failure.is_some() {
            return Err(io::Error::other(format!(
                "the download of {} failed",
                self.url
            )));
        }
        let n = match read_some(&mut self.body, buf) {
            Ok(n) => n,
            // Final, not a cut to resume: the .part stays for a later run.
            Err(e) if interrupt::is_io(&e) => {
                self.failure = Some(TeeFailure::Local(anyhow!(interrupt::Interrupted)));
                return Err(e);
            }
            Err(e) => {
                self.failure = Some(TeeFailure::Cut);
                return Err(io::Error::new(
                    e.kind(),
                    format!("download of {} failed ({})", self.url, error_chain(&e)),
                ));
            }
        };
        if n == 0 {
            if self.total.is_some_and(|t| self.state.have < t) {
                self.failure = Some(TeeFailure::Cut);
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("download of {} truncated", self.url),
                ));
            }
            return Ok(0);
        }
        if let Err(e) = self.part.write_all(&buf[..n]) {
            let msg = format!("writing {}: {e}", self.part_path.display());
            self.failure = Some(TeeFailure::Local(
                anyhow!(e).context(format!("writing {}", self.part_path.display())),
            ));
            return Err(io::Error::other(msg));
        }
        self.state.hasher.update(&buf[..n]);
        self.state.have += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn file_name(url: &Url) -> String {
    url.path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .unwrap_or("download")
        .to_string()
}

/// What the `.part` holds: its length and the hash of those bytes.
struct PartState {
    hasher: Sha256,
    have: u64,
}

/// One attempt of `download`, under its lock: resume or start, stream,
/// verify, publish.
fn fill(
    fetcher: &Fetcher,
    url: &Url,
    hex: &str,
    dir: &std::path::Path,
    part_path: &std::path::Path,
    part: &mut File,
    state: &mut PartState,
) -> Result<()> {
    let blob = fetcher.blob_path(hex);
    let mut resp = get(fetcher, url, (state.have > 0).then_some(state.have))?;
    let status = resp.status();
    if state.have > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE {
        // Either the .part already holds the whole file (a run died between
        // the last byte and the rename) or the file on the server shrank.
        if hex::encode(state.hasher.clone().finalize()) == hex {
            return publish(part, part_path, &blob, dir);
        }
        restart(part, state, part_path)?;
        resp = get(fetcher, url, None)?;
    } else if state.have > 0
        && status.is_success()
        && !(status == StatusCode::PARTIAL_CONTENT && range_starts_at(&resp, state.have))
    {
        // The server ignored the Range (plain 200, whole body follows) or
        // answered a range we did not ask for: start over rather than splice
        // wrong bytes.
        restart(part, state, part_path)?;
        if status != StatusCode::OK {
            resp = get(fetcher, url, None)?;
        }
    }
    if !resp.status().is_success() {
        return Err(http_error(url, &resp));
    }

    let have = state.have;
    let expected_total = resp.content_length().map(|len| have + len);
    if let Some(len) = resp.content_length() {
        // Refuse up front what cannot fit, rather than fill the disk and
        // fail with ENOSPC hours later.
        crate::space::ensure_room(dir, len, &format!("downloading {url}"))?;
    }
    let mut bar = fetcher.progress.bytes(&file_name(url), expected_total);
    bar.inc(have);
    part.seek(SeekFrom::Start(have))
        .with_context(|| format!("seeking in {}", part_path.display()))?;
    let mut body = Pump::new(resp).with_context(|| format!("downloading {url}"))?;

    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = match read_some(&mut body, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if interrupt::is_io(&e) => {
                bar.finish();
                return Err(interrupt::Interrupted.into());
            }
            Err(e) => {
                bar.finish();
                return Err(broke_off(url, state.have, expected_total, &e));
            }
        };
        part.write_all(&buf[..n])
            .with_context(|| format!("writing {}", part_path.display()))?;
        state.hasher.update(&buf[..n]);
        state.have += n as u64;
        bar.inc(n as u64);
    }
    bar.finish();
    if let Some(total) = expected_total {
        if state.have < total {
            return Err(anyhow!(Transient::new(
                format!(
                    "download of {url} truncated: got {} of {total} bytes",
                    state.have
                ),
                None
            )));
        }
    }

    let actual = hex::encode(state.hasher.clone().finalize());
    if actual != hex {
        // Wrong bytes are worthless for a resume too.
        let _ = std::fs::remove_file(part_path);
        bail!("checksum mismatch for {url}: expected {hex}, got {actual}");
    }
    publish(part, part_path, &blob, dir)
}

/// The error of a body that broke off after `got` bytes: transient. The
/// .part stays for a resume (the next attempt, or a later run); it is not
/// in the cache under its final name, so it is never used unverified.
fn broke_off(url: &Url, got: u64, expected_total: Option<u64>, e: &io::Error) -> anyhow::Error {
    let msg = match expected_total {
        Some(total) if got < total => format!(
            "download of {url} truncated: got {got} of {total} bytes ({})",
            error_chain(e)
        ),
        _ => format!("download of {url} failed after {got} bytes ({e})"),
    };
    anyhow!(Transient::new(msg, None))
}

/// Feed what an earlier run left in the `.part` into the hasher.
fn hash_existing(part: &mut File, hasher: &mut Sha256) -> io::Result<u64> {
    part.seek(SeekFrom::Start(0))?;
    // A multi-GiB .part takes a while to hash.
    let mut input = Interruptible::new(&mut *part);
    let mut buf = vec![0u8; 1 << 17];
    let mut total = 0u64;
    loop {
        let n = match read_some(&mut input, &mut buf)? {
            0 => return Ok(total),
            n => n,
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

fn restart(part: &mut File, state: &mut PartState, part_path: &std::path::Path) -> Result<()> {
    part.set_len(0)
        .with_context(|| format!("truncating {}", part_path.display()))?;
    state.hasher = Sha256::new();
    state.have = 0;
    Ok(())
}

/// `Content-Range: bytes <start>-<end>/<total>` must start where we stopped.
fn range_starts_at(resp: &Response, offset: u64) -> bool {
    resp.headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes "))
        .and_then(|v| v.split_once('-'))
        .and_then(|(start, _)| start.trim().parse::<u64>().ok())
        == Some(offset)
}

/// fsync the data, rename into place, fsync the folder: after a crash the
/// blob is either absent or complete.
fn publish(
    part: &File,
    part_path: &std::path::Path,
    blob: &std::path::Path,
    dir: &std::path::Path,
) -> Result<()> {
    part.sync_all()
        .with_context(|| format!("syncing {}", part_path.display()))?;
    std::fs::rename(part_path, blob)
        .with_context(|| format!("renaming {} to {}", part_path.display(), blob.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_worth_retrying() {
        assert_eq!(
            unreachable_reason("client error (Connect): dns error: failed to lookup address information: Name or service not known"),
            Some("its name does not resolve")
        );
        assert_eq!(
            unreachable_reason(
                "client error (Connect): tcp connect error: Connection refused (os error 111)"
            ),
            Some("it refused the connection")
        );
        assert_eq!(unreachable_reason("operation timed out"), None);
        assert_eq!(unreachable_reason("connection reset by peer"), None);
    }
}
