//! `undercloud-live cache list|prune`: what the cache holds, and removing
//! what is stale.
//!
//! An entry is a child of a top-level folder (`layers/…`, `initrd/…`, the
//! test suite's image caches), or of a folder under `downloads/` (bases,
//! debootstrap roots). Hidden `.…partial-PID` names are writes in
//! progress, or left by a build that was killed: they are removed by
//! `prune` once their process is gone, never while it runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

#[derive(Clone, Debug)]
pub struct Entry {
    /// The folder it is in, relative to the cache: `layers`,
    /// `downloads/debootstrap`.
    pub kind: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
    /// A write in progress or one that was cut off.
    pub partial: bool,
}

impl Entry {
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.modified).unwrap_or_default()
    }

    /// Whether the process that is writing it is still running.
    fn writer_alive(&self) -> bool {
        let n = self.name();
        // `.partial-<pid>` or `.partial-<pid>-<n>`.
        n.rsplit_once(".partial-")
            .and_then(|(_, rest)| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }
}

/// Every entry under `dir`, largest kinds first in no particular order
/// inside; a cache that does not exist yet is empty.
pub fn list(dir: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let Ok(top) = fs::read_dir(dir) else {
        return Ok(out);
    };
    for t in top {
        let t = t.with_context(|| format!("reading {}", dir.display()))?;
        if !t.file_type().is_ok_and(|ft| ft.is_dir()) {
            continue;
        }
        let kind = t.file_name().to_string_lossy().into_owned();
        // Downloads are files in folders named by what they are.
        let groups = kind == "downloads";
        entries_in(&t.path(), &kind, groups, &mut out)?;
    }
    out.sort_by(|a, b| a.kind.cmp(&b.kind).then(a.path.cmp(&b.path)));
    Ok(out)
}

fn entries_in(dir: &Path, kind: &str, groups: bool, out: &mut Vec<Entry>) -> Result<()> {
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let path = e.path();
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if groups && meta.is_dir() {
            let sub = format!("{kind}/{}", e.file_name().to_string_lossy());
            entries_in(&path, &sub, false, out)?;
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        // An entry's list of inputs belongs to it (`prune` removes both).
        if name.ends_with(".inputs") && !meta.is_dir() {
            continue;
        }
        out.push(Entry {
            kind: kind.to_string(),
            size: disk_usage(&path),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            partial: name.starts_with('.') && name.contains(".partial"),
            path,
        });
    }
    Ok(())
}

/// Bytes a file or folder takes on disk (sparse files count what they
/// use); unreadable parts count as nothing.
fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = fs::symlink_metadata(path) else {
        return 0;
    };
    let own = m.blocks() * 512;
    if !m.is_dir() {
        return own;
    }
    own + fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| disk_usage(&e.path()))
        .sum::<u64>()
}

/// What `prune` removes.
#[derive(Clone, Copy, Debug)]
pub struct Prune {
    /// Every entry (but writes still in progress).
    pub all: bool,
    /// Entries not used for longer than this.
    pub older_than: Duration,
    pub dry_run: bool,
}

/// Removes the entries `rule` selects; returns them.
pub fn prune(dir: &Path, rule: Prune) -> Result<Vec<Entry>> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for e in list(dir)? {
        let pick = if e.partial {
            !e.writer_alive()
        } else {
            rule.all || e.age(now) > rule.older_than
        };
        if !pick {
            continue;
        }
        if !rule.dry_run {
            let r = if e.path.is_dir() {
                fs::remove_dir_all(&e.path)
            } else {
                fs::remove_file(&e.path)
            };
            r.with_context(|| format!("removing {}", e.path.display()))?;
            let _ = fs::remove_file(super::inputs_path(&e.path));
        }
        removed.push(e);
    }
    Ok(removed)
}

/// `cache list`: the table of what `dir` holds.
pub fn list_text(dir: &Path) -> Result<String> {
    Ok(render(dir, &list(dir)?))
}

/// `cache prune`: removes what `rule` selects and says what went.
pub fn prune_text(dir: &Path, rule: Prune) -> Result<String> {
    use crate::progress::human_bytes;
    let gone = prune(dir, rule)?;
    let verb = if rule.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let mut s = String::new();
    for e in &gone {
        s.push_str(&format!(
            "{verb} {}/{} ({})\n",
            e.kind,
            e.name(),
            human_bytes(e.size)
        ));
    }
    let total: u64 = gone.iter().map(|e| e.size).sum();
    s.push_str(&format!(
        "{verb} {}, {}; {} left in {}\n",
        entries(gone.len()),
        human_bytes(total),
        human_bytes(list(dir)?.iter().map(|e| e.size).sum()),
        dir.display()
    ));
    Ok(s)
}

/// `cache list`'s table: kind, size, age, name; then the total.
pub fn render(dir: &Path, entries: &[Entry]) -> String {
    use crate::progress::human_bytes;
    let now = SystemTime::now();
    let mut s = format!("cache: {}\n", dir.display());
    if entries.is_empty() {
        s.push_str("(empty)\n");
        return s;
    }
    s.push_str(&format!(
        "{:<22} {:>10} {:>8}  {}\n",
        "KIND", "SIZE", "AGE", "ENTRY"
    ));
    for e in entries {
        s.push_str(&format!(
            "{:<22} {:>10} {:>8}  {}{}\n",
            e.kind,
            human_bytes(e.size),
            age(e.age(now)),
            e.name(),
            if e.partial { "  (partial)" } else { "" }
        ));
    }
    let total: u64 = entries.iter().map(|e| e.size).sum();
    s.push_str(&format!(
        "{}, {}\n",
        self::entries(entries.len()),
        human_bytes(total)
    ));
    s
}

fn entries(n: usize) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{n} entries")
    }
}

/// `3d`, `5h`, `12m`, `40s`: the largest unit that is at least one.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `--older-than`: a number of days, or with a unit (`12h`, `30m`, `2d`).
pub fn parse_age(text: &str) -> Result<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .with_context(|| format!("{text:?} is not an age (like 30d, 12h, 45m)"))?;
    let secs = match unit {
        "" | "d" => n.checked_mul(86400),
        "h" => n.checked_mul(3600),
        "m" => n.checked_mul(60),
        "s" => Some(n),
        _ => None,
    };
    secs.map(Duration::from_secs)
        .with_context(|| format!("{text:?} is not an age (like 30d, 12h, 45m)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch_back(p: &Path, secs: u64) {
        let f = fs::File::options().write(true).open(p).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn lists_and_prunes_by_age_and_partial_writes() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path();
        fs::create_dir_all(c.join("layers")).unwrap();
        fs::create_dir_all(c.join("downloads/debootstrap")).unwrap();
        fs::create_dir_all(c.join("undercloud-image/abc")).unwrap();
        fs::write(
            c.join("layers/old-0123456789abcdef.tar.zst"),
            vec![1u8; 8192],
        )
        .unwrap();
        fs::write(c.join("layers/new-0123456789abcdef.tar.zst"), b"n").unwrap();
        fs::write(
            c.join("layers/old-0123456789abcdef.tar.zst.inputs"),
            b"x k\n",
        )
        .unwrap();
        fs::write(c.join("downloads/debootstrap/trixie-1.tar.zst"), b"d").unwrap();
        fs::write(c.join("undercloud-image/abc/x.iso"), b"i").unwrap();
        // A write whose process is gone, and one still running (us).
        let dead = c.join("layers/.a.tar.zst.partial-999999999");
        let live = c.join(format!(
            "layers/.b.tar.zst.partial-{}-3",
            std::process::id()
        ));
        fs::write(&dead, b"p").unwrap();
        fs::write(&live, b"p").unwrap();
        touch_back(&c.join("layers/old-0123456789abcdef.tar.zst"), 40 * 86400);

        let all = list(c).unwrap();
        let kinds: Vec<(&str, String)> = all.iter().map(|e| (e.kind.as_str(), e.name())).collect();
        assert!(
            kinds.contains(&("downloads/debootstrap", "trixie-1.tar.zst".into())),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&("undercloud-image", "abc".into())),
            "{kinds:?}"
        );
        assert_eq!(all.len(), 6);
        let table = render(c, &all);
        assert!(
            table.contains("(partial)") && table.contains("6 entries"),
            "{table}"
        );

        let rule = Prune {
            all: false,
            older_than: Duration::from_secs(30 * 86400),
            dry_run: true,
        };
        let would: Vec<String> = prune(c, rule).unwrap().iter().map(Entry::name).collect();
        assert_eq!(would.len(), 2, "{would:?}");
        assert!(dead.exists(), "a dry run removed something");
        prune(
            c,
            Prune {
                dry_run: false,
                ..rule
            },
        )
        .unwrap();
        assert!(!dead.exists() && live.exists());
        assert!(!c.join("layers/old-0123456789abcdef.tar.zst").exists());
        assert!(!c
            .join("layers/old-0123456789abcdef.tar.zst.inputs")
            .exists());
        assert!(c.join("layers/new-0123456789abcdef.tar.zst").exists());

        prune(c, Prune { all: true, ..rule }.with_dry_run(false)).unwrap();
        let left: Vec<String> = list(c).unwrap().iter().map(Entry::name).collect();
        assert_eq!(
            left,
            vec![live.file_name().unwrap().to_string_lossy().into_owned()]
        );
    }

    impl Prune {
        fn with_dry_run(mut self, d: bool) -> Prune {
            self.dry_run = d;
            self
        }
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("30").unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(parse_age("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert!(parse_age("x").is_err() && parse_age("3w").is_err());
        assert!(parse_age("99999999999999999999d").is_err());
        assert_eq!(age(Duration::from_secs(90)), "1m");
        assert_eq!(age(Duration::from_secs(3 * 86400)), "3d");
    }
}
