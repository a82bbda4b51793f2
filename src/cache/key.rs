//! Cache keys: a SHA-256 over labelled inputs. Every field is written with
//! its label and length, so no two different input lists hash alike by
//! running into each other.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct Key {
    hasher: Sha256,
    /// Each input's label and a digest of its value, in order: saved
    /// beside an entry so a later miss can say what changed.
    labels: Vec<(String, String)>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.short())
    }
}

impl Key {
    /// A key for one kind of entry; bump `kind`'s version string when what
    /// the entry holds changes meaning.
    pub fn new(kind: &str) -> Key {
        let mut k = Key {
            hasher: Sha256::new(),
            labels: Vec::new(),
        };
        k.str("kind", kind);
        k.str("tool", env!("CARGO_PKG_VERSION"));
        k
    }

    fn field(&mut self, label: &str, bytes: &[u8]) {
        self.hasher
            .update(format!("{}:{label}:{}:", label.len(), bytes.len()).as_bytes());
        self.hasher.update(bytes);
        let one = Sha256::digest(bytes);
        self.labels
            .push((label.to_string(), hex::encode(&one[..8])));
    }

    pub fn str(&mut self, label: &str, value: &str) {
        self.field(label, value.as_bytes());
    }

    /// A file's content (or its absence, which is an input too).
    pub fn file(&mut self, label: &str, path: &Path) -> Result<()> {
        match fs::symlink_metadata(path) {
            Err(_) => self.field(label, b"\0absent"),
            Ok(m) if m.file_type().is_symlink() => {
                let t =
                    fs::read_link(path).with_context(|| format!("reading {}", path.display()))?;
                self.field(label, format!("\0link {}", t.display()).as_bytes());
            }
            Ok(m) if m.is_file() => {
                let mut h = Sha256::new();
                let mut f =
                    fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f
                        .read(&mut buf)
                        .with_context(|| format!("reading {}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                let line = format!("{:o} {}", m.permissions().mode(), hex::encode(h.finalize()));
                self.field(label, line.as_bytes());
            }
            Ok(m) => self.field(label, format!("\0other {:o}", m.mode()).as_bytes()),
        }
        Ok(())
    }

    /// Every file under `dir` (names, modes, symlink targets, contents),
    /// in name order; symlinks are not followed. A missing folder counts
    /// as empty.
    pub fn tree(&mut self, label: &str, dir: &Path) -> Result<()> {
        let mut files = BTreeMap::new();
        walk(dir, Path::new(""), &mut files)?;
        self.field(label, format!("{} entries", files.len()).as_bytes());
        for rel in files.keys() {
            self.file(&format!("{label}/{rel}"), &dir.join(rel))?;
        }
        Ok(())
    }

    /// The first 16 hex digits: the part entry names carry.
    pub fn short(&self) -> String {
        hex::encode(self.hasher.clone().finalize())[..16].to_string()
    }

    /// How many inputs went in, for the build log.
    pub fn inputs(&self) -> usize {
        self.labels.len()
    }

    /// One line per input: `digest label`.
    pub fn manifest(&self) -> String {
        self.labels
            .iter()
            .map(|(l, d)| format!("{d} {l}\n"))
            .collect()
    }

    /// The labels whose value differs from (or is missing in) an older
    /// key's `manifest`, and those the older one had that this lacks.
    pub fn changed_since(&self, old_manifest: &str) -> Vec<String> {
        let old: BTreeMap<&str, &str> = old_manifest
            .lines()
            .filter_map(|l| l.split_once(' ').map(|(d, l)| (l, d)))
            .collect();
        let mut out: Vec<String> = self
            .labels
            .iter()
            .filter(|(l, d)| old.get(l.as_str()) != Some(&d.as_str()))
            .map(|(l, _)| l.clone())
            .collect();
        let new: BTreeMap<&str, ()> = self.labels.iter().map(|(l, _)| (l.as_str(), ())).collect();
        out.extend(
            old.keys()
                .filter(|l| !new.contains_key(*l))
                .map(|l| format!("{l} (gone)")),
        );
        out
    }
}

fn walk(dir: &Path, rel: &Path, out: &mut BTreeMap<String, ()>) -> Result<()> {
    let Ok(rd) = fs::read_dir(dir.join(rel)) else {
        return Ok(());
    };
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.join(rel).display()))?;
        let r = rel.join(e.file_name());
        let t = e
            .file_type()
            .with_context(|| format!("reading {}", e.path().display()))?;
        if t.is_dir() {
            walk(dir, &r, out)?;
        } else {
            out.insert(r.to_string_lossy().into_owned(), ());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_do_not_run_into_each_other() {
        let mut a = Key::new("k");
        a.str("x", "ab");
        a.str("y", "c");
        let mut b = Key::new("k");
        b.str("x", "a");
        b.str("y", "bc");
        assert_ne!(a.short(), b.short());
        assert_eq!(Key::new("k").short(), Key::new("k").short());
        assert_ne!(Key::new("k").short(), Key::new("j").short());
    }

    #[test]
    fn says_which_inputs_changed() {
        let mut a = Key::new("k");
        a.str("x", "1");
        a.str("y", "1");
        a.str("z", "1");
        let mut b = Key::new("k");
        b.str("x", "1");
        b.str("y", "2");
        b.str("w", "1");
        assert_eq!(b.changed_since(&a.manifest()), ["y", "w", "z (gone)"]);
        assert!(a.changed_since(&a.manifest()).is_empty());
    }

    #[test]
    fn trees_see_content_mode_names_and_links() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        fs::create_dir_all(t.join("a/b")).unwrap();
        fs::write(t.join("a/b/f"), "1").unwrap();
        let key = || {
            let mut k = Key::new("k");
            k.tree("t", t).unwrap();
            k.short()
        };
        let k0 = key();
        assert_eq!(k0, key());
        fs::write(t.join("a/b/f"), "2").unwrap();
        let k1 = key();
        assert_ne!(k0, k1);
        fs::set_permissions(t.join("a/b/f"), fs::Permissions::from_mode(0o755)).unwrap();
        let k2 = key();
        assert_ne!(k1, k2);
        std::os::unix::fs::symlink("f", t.join("a/b/l")).unwrap();
        let k3 = key();
        assert_ne!(k2, k3);
        let mut missing = Key::new("k");
        missing.tree("t", &t.join("nothing")).unwrap();
        let mut empty = Key::new("k");
        fs::create_dir(t.join("empty")).unwrap();
        empty.tree("t", &t.join("empty")).unwrap();
        assert_eq!(missing.short(), empty.short());
    }
}
