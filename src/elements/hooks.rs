//! Phases and run-parts: which hook scripts run, in which order.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::Element;

/// diskimage-builder's phases, in the order it runs them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Root,
    ExtraData,
    PreInstall,
    Install,
    PostInstall,
    PostRoot,
    BlockDevice,
    PreFinalise,
    Finalise,
    Cleanup,
}

impl Phase {
    pub const ALL: [Phase; 10] = [
        Phase::Root,
        Phase::ExtraData,
        Phase::PreInstall,
        Phase::Install,
        Phase::PostInstall,
        Phase::PostRoot,
        Phase::BlockDevice,
        Phase::PreFinalise,
        Phase::Finalise,
        Phase::Cleanup,
    ];

    /// The hook folder name, e.g. `install.d`.
    pub fn dir(self) -> &'static str {
        match self {
            Phase::Root => "root.d",
            Phase::ExtraData => "extra-data.d",
            Phase::PreInstall => "pre-install.d",
            Phase::Install => "install.d",
            Phase::PostInstall => "post-install.d",
            Phase::PostRoot => "post-root.d",
            Phase::BlockDevice => "block-device.d",
            Phase::PreFinalise => "pre-finalise.d",
            Phase::Finalise => "finalise.d",
            Phase::Cleanup => "cleanup.d",
        }
    }

    pub fn from_dir(s: &str) -> Option<Phase> {
        let s = s.trim_end_matches(".d");
        Phase::ALL
            .into_iter()
            .find(|p| p.dir().trim_end_matches(".d") == s)
    }

    /// Whether dib runs this phase's hooks inside the chroot.
    pub fn in_chroot(self) -> bool {
        matches!(
            self,
            Phase::PreInstall | Phase::Install | Phase::PostInstall | Phase::Finalise
        )
    }
}

impl serde::Serialize for Phase {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.dir())
    }
}

/// One hook script and the element it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    pub name: String,
    pub element: String,
    pub path: PathBuf,
    /// From `<phase>.d/outside/`: runs on the build host.
    pub outside: bool,
}

/// run-parts accepts only these names; anything with a dot (editor
/// backups, `.sh`, `.disabled`) is skipped, as dib-run-parts does.
pub fn valid_hook_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `LANG=C sort -n`: compare the leading number (an optional `-` and
/// digits; none counts as 0), then the whole name bytewise, so `9-b` runs
/// before `10-a`.
pub fn sort_n(a: &str, b: &str) -> Ordering {
    fn lead(s: &str) -> i128 {
        let (neg, rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s),
        };
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        // Names are short; a number too long for i128 sorts as the largest.
        let v: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().unwrap_or(i128::MAX)
        };
        if neg {
            -v
        } else {
            v
        }
    }
    lead(a)
        .cmp(&lead(b))
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

fn debug_trace() -> bool {
    std::env::var("DIB_DEBUG_TRACE")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|v| v > 0)
}

/// The sub-folder of a phase's hook folder whose hooks run on the build
/// host (with `TARGET_ROOT`) at their place in the phase's order, even in
/// a phase that runs inside the root. dib has no such thing (its
/// run-parts skips folders, so there they do not run at all); it exists
/// for livecd-creator's `%post --nochroot` scripts, which run between
/// in-root ones in file order.
pub const OUTSIDE: &str = "outside";

/// An install.d sub-folder `<prefix>-<type>-install` that install-types
/// links into install.d for the chosen type: each of its files appears in
/// install.d under its own name (hooks run from there, data files and
/// deprecated package lists are found there, as under dib).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstallType {
    pub element: String,
    /// The sub-folder's name, in the element's install.d.
    pub folder: String,
    /// Why it was chosen: `DIB_INSTALLTYPE_<prefix>=<type>`, or
    /// `DIB_DEFAULT_INSTALLTYPE=<type>`.
    pub chosen_by: String,
}

/// What dib's install-types does at extra-data.d `99`, for `elements` and
/// the environment hooks see (`env`, environment.d sourced). A variable
/// `DIB_INSTALLTYPE_<V>=<type>` picks `<V with _ as ->-<type>-install` and
/// keeps that prefix's default from applying (even when no such folder
/// exists); every other `<prefix>-<default>-install` folder is linked for
/// `DIB_DEFAULT_INSTALLTYPE` (default `source`). The prefix is the
/// folder's, usually the element's name, not always
/// (ironic-python-agent-ramdisk-base has `ironic-python-agent-ramdisk-*`).
pub fn install_types(
    elements: &[Element],
    env: &BTreeMap<String, String>,
) -> Result<Vec<InstallType>> {
    const VAR: &str = "DIB_INSTALLTYPE_";
    let chosen: BTreeMap<String, (&str, &str)> = env
        .iter()
        .filter_map(|(k, v)| {
            let v_name = k.strip_prefix(VAR)?;
            Some((v_name.replace('_', "-"), (k.as_str(), v.as_str())))
        })
        .collect();
    let default = env
        .get("DIB_DEFAULT_INSTALLTYPE")
        .map(String::as_str)
        .unwrap_or("source");
    let mut out = Vec::new();
    for el in elements {
        let dir = el.dir.join(Phase::Install.dir());
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut folders: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with("-install") && entry.path().is_dir() {
                folders.push(name);
            }
        }
        folders.sort();
        for folder in folders {
            let by_var = chosen
                .iter()
                .find(|(prefix, (_, t))| folder == format!("{prefix}-{t}-install"))
                .map(|(_, (k, t))| format!("{k}={t}"));
            let by_default = folder
                .strip_suffix(&format!("-{default}-install"))
                .filter(|prefix| !chosen.contains_key(*prefix))
                .map(|_| format!("DIB_DEFAULT_INSTALLTYPE={default}"));
            if let Some(chosen_by) = by_var.or(by_default) {
                out.push(InstallType {
                    element: el.name.clone(),
                    folder,
                    chosen_by,
                });
            }
        }
    }
    Ok(out)
}

/// The hooks of `phase` across `elements`, in run order, including those
/// in `<phase>.d/outside/` (marked `outside`) and, in install.d, those of
/// the `linked` install-types folders. Two hooks of the same name in the
/// same phase is an error (dib merges phases into one folder, where one
/// would silently replace the other; inside and outside would sort
/// ambiguously).
pub fn collect(elements: &[Element], phase: Phase, linked: &[InstallType]) -> Result<Vec<Hook>> {
    let mut by_name: BTreeMap<String, Hook> = BTreeMap::new();
    for el in elements {
        let dir = el.dir.join(phase.dir());
        let mut dirs = vec![(dir.join(OUTSIDE), true), (dir.clone(), false)];
        if phase == Phase::Install {
            dirs.extend(
                linked
                    .iter()
                    .filter(|l| l.element == el.name)
                    .map(|l| (dir.join(&l.folder), false)),
            );
        }
        for (dir, outside) in dirs {
            for (name, path) in runnable(&dir)? {
                if let Some(prev) = by_name.get(&name) {
                    bail!(
                        "hook {} {name} is defined by both elements {:?} and {:?}{}",
                        phase.dir(),
                        prev.element,
                        el.name,
                        if prev.outside != outside {
                            " (once in outside/)"
                        } else {
                            ""
                        }
                    );
                }
                let element = el.name.clone();
                by_name.insert(
                    name.clone(),
                    Hook {
                        name,
                        element,
                        path,
                        outside,
                    },
                );
            }
        }
    }
    let mut hooks: Vec<Hook> = by_name.into_values().collect();
    hooks.sort_by(|a, b| sort_n(&a.name, &b.name));
    Ok(hooks)
}

/// The files of `dir` run-parts would run: executable, with a valid name.
fn runnable(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let meta = fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            // run-parts runs executables only.
            if debug_trace() {
                eprintln!(
                    "debug: run-parts ignores {} (not executable)",
                    path.display()
                );
            }
            continue;
        }
        if !valid_hook_name(&name) {
            if debug_trace() {
                eprintln!(
                    "debug: run-parts ignores {} (names may hold only 0-9 A-Z a-z _ -)",
                    path.display()
                );
            }
            continue;
        }
        out.push((name, path));
    }
    Ok(out)
}

/// environment.d files of all elements, in the order dib sources them.
/// dib merges every element into one tree, so a file name used by two
/// elements is the later element's file; names may hold dots here.
pub fn environment_files(elements: &[Element]) -> Result<Vec<(String, PathBuf)>> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for el in elements {
        let dir = el.dir.join("environment.d");
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ok_name = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if ok_name && entry.path().is_file() {
                by_name.insert(name, entry.path());
            }
        }
    }
    let mut files: Vec<(String, PathBuf)> = by_name.into_iter().collect();
    files.sort_by(|a, b| sort_n(&a.0, &b.0));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn el(name: &str, dir: PathBuf) -> Element {
        Element {
            name: name.into(),
            dir,
            deps: vec![],
            provides: vec![],
            chain: crate::elements::Chain::root(name),
        }
    }

    fn hook(dir: &Path, phase: &str, name: &str, exec: bool) {
        let d = dir.join(phase);
        fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        fs::write(&p, "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            &p,
            fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
        )
        .unwrap();
    }

    #[test]
    fn sort_n_matches_gnu_sort() {
        let mut v = vec!["10-a", "9-b", "01-x", "a", "50-z", "1-y", "B"];
        v.sort_by(|a, b| sort_n(a, b));
        assert_eq!(v, ["B", "a", "01-x", "1-y", "9-b", "10-a", "50-z"]);
        let mut v = vec!["5-x", "-3-neg", "0-zero", "x"];
        v.sort_by(|a, b| sort_n(a, b));
        assert_eq!(v, ["-3-neg", "0-zero", "x", "5-x"]);
    }

    #[test]
    fn collects_in_order_and_skips_invalid() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        hook(&a, "install.d", "10-a", true);
        hook(&b, "install.d", "9-b", true);
        hook(&a, "install.d", "20-x.sh", true);
        hook(&a, "install.d", "30-noexec", false);
        let els = vec![el("a", a), el("b", b)];
        let hooks = collect(&els, Phase::Install, &[]).unwrap();
        let names: Vec<_> = hooks
            .iter()
            .map(|h| (h.name.as_str(), h.element.as_str()))
            .collect();
        assert_eq!(names, [("9-b", "b"), ("10-a", "a")]);
        assert!(collect(&els, Phase::Finalise, &[]).unwrap().is_empty());
    }

    #[test]
    fn duplicate_hook_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        hook(&a, "install.d", "50-same", true);
        hook(&b, "install.d", "50-same", true);
        let els = vec![el("a", a), el("b", b)];
        let e = format!("{:#}", collect(&els, Phase::Install, &[]).unwrap_err());
        assert!(
            e.contains("50-same") && e.contains("\"a\"") && e.contains("\"b\""),
            "{e}"
        );
    }

    #[test]
    fn outside_hooks_sort_among_inside_ones_and_clash_by_name() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        hook(&a, "post-install.d", "10-in", true);
        hook(&a, "post-install.d/outside", "20-out", true);
        hook(&a, "post-install.d", "30-in", true);
        hook(&a, "post-install.d/outside", "40-x.sh", true);
        let els = vec![el("a", a.clone())];
        let hooks = collect(&els, Phase::PostInstall, &[]).unwrap();
        let got: Vec<_> = hooks.iter().map(|h| (h.name.as_str(), h.outside)).collect();
        assert_eq!(got, [("10-in", false), ("20-out", true), ("30-in", false)]);
        assert!(hooks[1].path.ends_with("post-install.d/outside/20-out"));

        hook(&a, "post-install.d", "20-out", true);
        let e = format!("{:#}", collect(&els, Phase::PostInstall, &[]).unwrap_err());
        assert!(
            e.contains("20-out") && e.contains("once in outside/"),
            "{e}"
        );
    }

    #[test]
    fn phase_names_round_trip() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_dir(p.dir()), Some(p));
        }
        assert!(Phase::Install.in_chroot());
        assert!(!Phase::Root.in_chroot());
    }
}
