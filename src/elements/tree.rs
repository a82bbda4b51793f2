//! Copying element files (static/, bin/) into a root without ever leaving it.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Resolve `rel` inside `root` the way the root itself would see it:
/// symlinks are followed, but an absolute target restarts at `root`, and
/// `..` never climbs above it. A merged-/usr root's `lib -> usr/lib` then
/// works, while `/etc/x -> /etc/passwd` lands on the root's passwd, never the
/// host's. The last component is not followed (we may replace it).
pub fn resolve_in_root(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut pending: Vec<PathBuf> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .rev()
        .collect();
    let mut parts: Vec<PathBuf> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c.as_os_str() == ".." {
            parts.pop();
            continue;
        }
        let mut cur = root.to_path_buf();
        cur.extend(parts.iter());
        cur.push(&c);
        let is_last = pending.is_empty();
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() && !is_last => {
                hops += 1;
                if hops > 40 {
                    bail!(
                        "too many symlinks resolving {} in {}",
                        rel.display(),
                        root.display()
                    );
                }
                let target =
                    fs::read_link(&cur).with_context(|| format!("reading {}", cur.display()))?;
                if target.is_absolute() {
                    parts.clear();
                }
                for comp in target.components().rev() {
                    match comp {
                        Component::Normal(n) => pending.push(PathBuf::from(n)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => parts.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(parts);
    Ok(out)
}

/// Like `resolve_in_root`, but a symlink in the last component is followed
/// too (with the same confinement), giving the file a path really names.
pub fn resolve_in_root_follow(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut rel = rel.to_path_buf();
    for _ in 0..40 {
        let p = resolve_in_root(root, &rel)?;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let target =
                    fs::read_link(&p).with_context(|| format!("reading {}", p.display()))?;
                let parent = p
                    .strip_prefix(root)
                    .ok()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                rel = if target.is_absolute() {
                    target.components().skip(1).collect()
                } else {
                    parent.join(target)
                };
            }
            _ => return Ok(p),
        }
    }
    bail!(
        "too many symlinks resolving {} in {}",
        rel.display(),
        root.display()
    )
}

/// Copy the tree `src` into `root` at `dest_rel`, keeping modes; owners are
/// root's (the copy runs as root). Existing directories are kept, existing
/// files replaced.
pub fn copy_tree(src: &Path, root: &Path, dest_rel: &Path) -> Result<u64> {
    let mut count = 0;
    let entries = fs::read_dir(src).with_context(|| format!("reading {}", src.display()))?;
    let mut entries: Vec<_> = entries
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("reading {}", src.display()))?;
    // Sorted so that two builds create files in the same order.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let rel = dest_rel.join(entry.file_name());
        let to = resolve_in_root(root, &rel)?;
        let meta =
            fs::symlink_metadata(&from).with_context(|| format!("reading {}", from.display()))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            // A directory may be reached through a symlink in the root
            // (merged /usr: lib -> usr/lib); files then go where it points.
            let to = resolve_in_root_follow(root, &rel)?;
            match fs::symlink_metadata(&to) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => bail!(
                    "{} exists in the root and is not a directory",
                    rel.display()
                ),
                Err(_) => {
                    fs::create_dir(&to).with_context(|| format!("creating {}", to.display()))?;
                    fs::set_permissions(
                        &to,
                        fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
                    )
                    .with_context(|| format!("setting mode of {}", to.display()))?;
                }
            }
            count += copy_tree(&from, root, &rel)?;
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&from).with_context(|| format!("reading {}", from.display()))?;
            remove_existing(&to)?;
            symlink(&target, &to).with_context(|| format!("creating symlink {}", to.display()))?;
            count += 1;
        } else if ft.is_file() {
            remove_existing(&to)?;
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
            fs::set_permissions(
                &to,
                fs::Permissions::from_mode(meta.permissions().mode() & 0o7777),
            )
            .with_context(|| format!("setting mode of {}", to.display()))?;
            count += 1;
        } else {
            bail!(
                "{}: only files, folders and symlinks can be copied",
                from.display()
            );
        }
    }
    Ok(count)
}

/// Write `text` to `rel` in `root` with `mode`, replacing a file or
/// symlink there; parent folders are made, symlinks on the way followed
/// inside the root.
pub fn write_in_root(root: &Path, rel: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        let dir = resolve_in_root_follow(root, parent)?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let to = resolve_in_root(root, rel)?;
    remove_existing(&to)?;
    fs::write(&to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(&to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode of {}", to.display()))
}

/// Make `rel` in `root` a symlink to `target` (as the root sees it),
/// replacing a file or symlink there; parent folders are made, symlinks on
/// the way followed inside the root.
pub fn symlink_in_root(root: &Path, rel: &Path, target: &Path) -> Result<()> {
    if let Some(parent) = rel.parent().filter(|p| !p.as_os_str().is_empty()) {
        let dir = resolve_in_root_follow(root, parent)?;
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let to = resolve_in_root(root, rel)?;
    remove_existing(&to)?;
    symlink(target, &to).with_context(|| format!("creating symlink {}", to.display()))
}

fn remove_existing(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => bail!("{} is a directory in the root", p.display()),
        Ok(_) => fs::remove_file(p).with_context(|| format!("replacing {}", p.display())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinks_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("etc/abs")).unwrap();
        symlink("../../../../..", root.join("etc/up")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("lib/x")).unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("etc/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("etc/up/etc/shadow")).unwrap(),
            root.join("etc/shadow")
        );
        symlink("/usr/lib/real", root.join("usr/lib/alias")).unwrap();
        assert_eq!(
            resolve_in_root_follow(root, Path::new("lib/alias")).unwrap(),
            root.join("usr/lib/real")
        );
    }

    #[test]
    fn copies_a_static_tree_with_modes() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("static");
        let root = t.path().join("root");
        fs::create_dir_all(src.join("usr/local/bin")).unwrap();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::create_dir_all(src.join("lib/systemd")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        fs::write(src.join("usr/local/bin/tool"), "x").unwrap();
        fs::set_permissions(
            src.join("usr/local/bin/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(src.join("lib/systemd/unit"), "u").unwrap();
        let n = copy_tree(&src, &root, Path::new(""))
            .map_err(|e| format!("{e:#}"))
            .unwrap();
        assert_eq!(n, 2);
        let m = fs::metadata(root.join("usr/local/bin/tool")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        assert_eq!(
            fs::read_to_string(root.join("usr/lib/systemd/unit")).unwrap(),
            "u"
        );
    }
}
