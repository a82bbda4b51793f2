//! HTTP transfer into the cache: streaming hash, resume, atomic publish.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use reqwest::blocking::{Client, Response};
use reqwest::header::{CONTENT_RANGE, RANGE};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};

use super::{Fetcher, MAX_CHECKSUM_LIST};

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
    req.send().with_context(|| format!("GET {url}"))
}

fn http_error(url: &Url, status: StatusCode) -> anyhow::Error {
    anyhow!("GET {url}: HTTP {status}")
}

/// A small text resource (a checksum list), read into memory with a cap.
pub(super) fn get_small(fetcher: &Fetcher, url: &Url) -> Result<String> {
    let resp = get(fetcher, url, None)?;
    if !resp.status().is_success() {
        return Err(http_error(url, resp.status()));
    }
    let mut bytes = Vec::new();
    resp.take(MAX_CHECKSUM_LIST + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("downloading {url}"))?;
    if bytes.len() as u64 > MAX_CHECKSUM_LIST {
        bail!("{url} is too large for a checksum file");
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Download `url` into the cache as `blobs/sha256/<hex>`.
///
/// Bytes go to `<hex>.part` while being hashed. A `.part` left by an
/// interrupted run is hashed and continued with a Range request; it is only
/// ever renamed to its final name after the whole file's digest matched, so a
/// partial or wrong file can never be taken for a verified one. An exclusive
/// lock on the `.part` keeps two concurrent runs from interleaving writes.
pub(super) fn download(fetcher: &Fetcher, url: &Url, hex: &str) -> Result<()> {
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
    let result = fill(fetcher, url, hex, &dir, &part_path, &mut part);
    // Still under the lock, so this cannot remove another run's file: an
    // empty .part (say, after a 404) is worth nothing for a resume.
    if result.is_err() && part.metadata().is_ok_and(|m| m.len() == 0) {
        let _ = std::fs::remove_file(&part_path);
    }
    result
}

/// The locked part of `download`: resume or start, stream, verify, publish.
fn fill(
    fetcher: &Fetcher,
    url: &Url,
    hex: &str,
    dir: &std::path::Path,
    part_path: &std::path::Path,
    part: &mut File,
) -> Result<()> {
    let blob = fetcher.blob_path(hex);
    if blob.is_file() {
        // Another run finished it between our cache check and the lock.
        let _ = std::fs::remove_file(part_path);
        return Ok(());
    }

    let mut hasher = Sha256::new();
    let mut have = hash_existing(part, &mut hasher)
        .with_context(|| format!("reading {}", part_path.display()))?;

    let mut resp = get(fetcher, url, (have > 0).then_some(have))?;
    let status = resp.status();
    if have > 0 && status == StatusCode::RANGE_NOT_SATISFIABLE {
        // Either the .part already holds the whole file (a run died between
        // the last byte and the rename) or the file on the server shrank.
        if hex::encode(hasher.clone().finalize()) == hex {
            return publish(part, part_path, &blob, dir);
        }
        restart(part, &mut hasher, &mut have, part_path)?;
        resp = get(fetcher, url, None)?;
    } else if have > 0
        && status.is_success()
        && !(status == StatusCode::PARTIAL_CONTENT && range_starts_at(&resp, have))
    {
        // The server ignored the Range (plain 200, whole body follows) or
        // answered a range we did not ask for: start over rather than splice
        // wrong bytes.
        restart(part, &mut hasher, &mut have, part_path)?;
        if status != StatusCode::OK {
            resp = get(fetcher, url, None)?;
        }
    }
    if !resp.status().is_success() {
        return Err(http_error(url, resp.status()));
    }

    let expected_total = resp.content_length().map(|len| have + len);
    let name = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .unwrap_or("download")
        .to_string();
    let mut bar = fetcher.progress.bytes(&name, expected_total);
    bar.inc(have);
    part.seek(SeekFrom::Start(have))
        .with_context(|| format!("seeking in {}", part_path.display()))?;

    let mut got = have;
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                bar.finish();
                // The .part stays for a later resume; it is not in the cache
                // under its final name, so it is never used unverified.
                return Err(match expected_total {
                    Some(total) if got < total => anyhow!(e).context(format!(
                        "download of {url} truncated: got {got} of {total} bytes"
                    )),
                    _ => anyhow!(e).context(format!("download of {url} failed after {got} bytes")),
                });
            }
        };
        part.write_all(&buf[..n])
            .with_context(|| format!("writing {}", part_path.display()))?;
        hasher.update(&buf[..n]);
        got += n as u64;
        bar.inc(n as u64);
    }
    bar.finish();
    if let Some(total) = expected_total {
        if got < total {
            bail!("download of {url} truncated: got {got} of {total} bytes");
        }
    }

    let actual = hex::encode(hasher.finalize());
    if actual != hex {
        // Wrong bytes are worthless for a resume too.
        let _ = std::fs::remove_file(part_path);
        bail!("checksum mismatch for {url}: expected {hex}, got {actual}");
    }
    publish(part, part_path, &blob, dir)
}

/// Feed what an earlier run left in the `.part` into the hasher.
fn hash_existing(part: &mut File, hasher: &mut Sha256) -> io::Result<u64> {
    part.seek(SeekFrom::Start(0))?;
    let mut buf = vec![0u8; 1 << 17];
    let mut total = 0u64;
    loop {
        let n = match part.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

fn restart(
    part: &mut File,
    hasher: &mut Sha256,
    have: &mut u64,
    part_path: &std::path::Path,
) -> Result<()> {
    part.set_len(0)
        .with_context(|| format!("truncating {}", part_path.display()))?;
    *hasher = Sha256::new();
    *have = 0;
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
