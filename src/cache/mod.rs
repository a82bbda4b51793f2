//! Where undercloud-live keeps what it downloads and builds once, and the
//! store that build stages reuse work through.
//!
//! An entry is one file, `<cache>/<kind>/<name>-<key>.<ext>`: `name` says
//! what it was built for (the spec's name), `key` is a digest of every
//! input that can change it (see `Key`). An entry is written under a hidden
//! temporary name and renamed when complete, so a lookup never sees half an
//! entry, and two builds writing the same key at once both end with a
//! whole file (the later rename wins; the bytes are the same). Storing an
//! entry removes the older entries of the same kind and name: an edited
//! spec replaces its cache instead of adding to it. A reader opens the file
//! before using it, so a concurrent prune (an unlink) cannot pull it away
//! half-read.

mod key;
pub mod manage;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

pub use key::Key;

/// `$UCL_CACHE_DIR`, else `$XDG_CACHE_HOME/undercloud-live`, else
/// `~/.cache/undercloud-live`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UCL_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("undercloud-live")
}

/// The kinds of entries builds store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A root after its package installation (`build::layer`).
    Layer,
    /// A live initrd made by dracut (`build::hybrid`).
    Initrd,
}

impl Kind {
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Layer => "layers",
            Kind::Initrd => "initrd",
        }
    }

    fn ext(self) -> &'static str {
        match self {
            Kind::Layer => "tar.zst",
            Kind::Initrd => "img",
        }
    }
}

/// The build cache under one folder.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, kind: Kind, name: &str, key: &Key) -> PathBuf {
        self.dir.join(kind.dir()).join(format!(
            "{}-{}.{}",
            safe_name(name),
            key.short(),
            kind.ext()
        ))
    }

    /// The entry for `key`, if one is complete. Its time is set to now, so
    /// that `cache prune --older-than` removes what is not being used.
    pub fn get(&self, kind: Kind, name: &str, key: &Key) -> Option<PathBuf> {
        let p = self.path(kind, name, key);
        let f = fs::File::options().write(true).open(&p).ok()?;
        let _ = f.set_modified(SystemTime::now());
        Some(p)
    }

    /// Writes an entry: `write` fills a temporary file, which is synced and
    /// renamed to the entry's name; older entries of this kind and name go.
    /// On any failure nothing is left.
    pub fn put(
        &self,
        kind: Kind,
        name: &str,
        key: &Key,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let dest = self.path(kind, name, key);
        let dir = self.dir.join(kind.dir());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The pid says whose it is (`prune` leaves a live writer's alone);
        // the counter keeps two writers in one process apart.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{file}.partial-{}-{n}", std::process::id()));
        // The inputs go beside the entry first: an entry never lacks them.
        let inputs = inputs_path(&dest);
        fs::write(&inputs, key.manifest())
            .with_context(|| format!("writing {}", inputs.display()))?;
        let result = write(&tmp).and_then(|()| {
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("syncing {}", tmp.display()))?;
            fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
        });
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            let _ = fs::remove_file(&inputs);
            return Err(e);
        }
        let prefix = format!("{}-", safe_name(name));
        let suffix = format!(".{}", kind.ext());
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let same_name = n
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(&suffix));
            // `<name>-<16 hex>`: a spec named "a" must not remove "a-b"'s.
            if same_name.is_some_and(|k| k.len() == 16 && k.bytes().all(|b| b.is_ascii_hexdigit()))
                && e.path() != dest
            {
                let _ = fs::remove_file(e.path());
                let _ = fs::remove_file(inputs_path(&e.path()));
            }
        }
        Ok(dest)
    }

    /// After a miss: what differs from the entry this kind and name had
    /// (its inputs file), in a few words for the build log. None when
    /// there was no earlier entry to compare with.
    pub fn explain_miss(&self, kind: Kind, name: &str, key: &Key) -> Option<String> {
        let prefix = format!("{}-", safe_name(name));
        let old = fs::read_dir(self.dir.join(kind.dir()))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".inputs"))
            })?;
        let manifest = fs::read_to_string(old).ok()?;
        let changed = key.changed_since(&manifest);
        let shown: Vec<&str> = changed.iter().take(4).map(String::as_str).collect();
        let more = changed.len().saturating_sub(shown.len());
        Some(format!(
            "changed since the cached one: {}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ))
    }

    /// How large the cache has grown, and how to shrink it, when it is
    /// over `limit` bytes: a build prints it at its end. Nothing removes
    /// entries behind the operator's back, but growth is never unnoticed.
    pub fn size_note(&self, limit: u64) -> Option<String> {
        let entries = manage::list(&self.dir).ok()?;
        let total: u64 = entries.iter().map(|e| e.size).sum();
        (total > limit).then(|| {
            format!(
                "note: the cache {} holds {} (over {}): `undercloud-live cache list` shows it, `undercloud-live cache prune` shrinks it",
                self.dir.display(),
                crate::progress::human_bytes(total),
                crate::progress::human_bytes(limit)
            )
        })
    }
}

/// Where an entry's inputs are listed (`Key::manifest`).
pub fn inputs_path(entry: &Path) -> PathBuf {
    let mut s = entry.as_os_str().to_owned();
    s.push(".inputs");
    PathBuf::from(s)
}

/// The size over which a build says how large the cache is:
/// `$UCL_CACHE_WARN_SIZE` (bytes, or with K/M/G/T), else 20 GiB.
pub fn warn_size() -> u64 {
    std::env::var("UCL_CACHE_WARN_SIZE")
        .ok()
        .and_then(|v| crate::spec::ByteSize::parse(&v).ok())
        .map(|b| b.0)
        .unwrap_or(20 << 30)
}

/// A spec name as a file-name part: anything but `[A-Za-z0-9._]` becomes
/// `_` (names are checked by the spec, but the cache must not trust that).
fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> Key {
        let mut k = Key::new("test");
        k.str("v", s);
        k
    }

    #[test]
    fn put_then_get_and_replace_older_entries_of_the_same_name() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        assert!(s.get(Kind::Layer, "spec", &key("a")).is_none());
        let a = s
            .put(Kind::Layer, "spec", &key("a"), |p| Ok(fs::write(p, b"A")?))
            .unwrap();
        let other = s
            .put(Kind::Layer, "spec-b", &key("a"), |p| {
                Ok(fs::write(p, b"O")?)
            })
            .unwrap();
        assert_eq!(s.get(Kind::Layer, "spec", &key("a")), Some(a.clone()));
        let b = s
            .put(Kind::Layer, "spec", &key("b"), |p| Ok(fs::write(p, b"B")?))
            .unwrap();
        assert!(!a.exists(), "the older entry of the same spec stays");
        assert!(b.exists() && other.exists());
        let names: Vec<_> = fs::read_dir(d.path().join("layers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "two entries and their inputs: {names:?}");
        assert_eq!(
            s.explain_miss(Kind::Layer, "spec", &key("c")).unwrap(),
            "changed since the cached one: v"
        );
        assert!(s.explain_miss(Kind::Layer, "nothing", &key("c")).is_none());
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        let err = s
            .put(Kind::Initrd, "x", &key("a"), |p| {
                fs::write(p, b"half")?;
                anyhow::bail!("disk full")
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("disk full"));
        assert!(s.get(Kind::Initrd, "x", &key("a")).is_none());
        let left: Vec<_> = fs::read_dir(d.path().join("initrd"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn concurrent_writers_of_one_key_leave_one_whole_entry() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        let body = vec![7u8; 1 << 20];
        std::thread::scope(|t| {
            for _ in 0..4 {
                t.spawn(|| {
                    s.put(Kind::Layer, "spec", &key("a"), |p| {
                        // Written in pieces, so the writers overlap.
                        let mut f = fs::File::create(p)?;
                        for chunk in body.chunks(4096) {
                            std::io::Write::write_all(&mut f, chunk)?;
                        }
                        Ok(())
                    })
                    .unwrap();
                });
            }
        });
        let got = s.get(Kind::Layer, "spec", &key("a")).unwrap();
        assert_eq!(fs::read(got).unwrap(), body);
        let names: Vec<_> = fs::read_dir(d.path().join("layers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "one entry and its inputs: {names:?}");
    }

    #[test]
    fn a_cache_over_the_limit_says_so() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        s.put(Kind::Layer, "x", &key("a"), |p| {
            Ok(fs::write(p, vec![1u8; 64 << 10])?)
        })
        .unwrap();
        assert!(s.size_note(1 << 30).is_none());
        let note = s.size_note(4096).unwrap();
        assert!(
            note.contains("cache prune") && note.contains("over 4.0 KiB"),
            "{note}"
        );
    }

    #[test]
    fn names_cannot_leave_the_folder() {
        assert_eq!(safe_name("../etc"), "_.._etc");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name("undercloud-live"), "undercloud_live");
    }
}
