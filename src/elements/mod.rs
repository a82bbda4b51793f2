//! diskimage-builder compatible elements.
//!
//! An element is a folder on the elements path (earlier entries win) with
//! optional `element-deps`, `element-provides`, `<phase>.d/` hooks,
//! `environment.d/`, `package-installs.yaml`, `static/` and `bin/`. This
//! module finds and expands them (`resolve`); `hooks` gathers the run-parts
//! scripts of each phase, `packages` reads package-installs.yaml, and `run`
//! applies a resolved set to a build root.

pub mod hooks;
pub mod packages;
pub mod run;
pub mod tree;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::spec::Distro;

/// dib's own helper elements that other elements list in `element-deps`.
/// We implement what they do natively, so elements written for dib work
/// unchanged without dib installed.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "package-installs",
        "package-installs.yaml is installed by undercloud-live",
    ),
    (
        "install-static",
        "static/ trees are copied by undercloud-live",
    ),
    (
        "install-bin",
        "bin/ files are copied to /usr/local/bin by undercloud-live",
    ),
    ("install-types", "install type 'package' is the default"),
    (
        "dib-init-system",
        "DIB_INIT_SYSTEM=systemd is set by undercloud-live",
    ),
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub dir: PathBuf,
}

/// The expanded element list, in breadth-first order of discovery.
#[derive(Clone, Debug, Default)]
pub struct ElementSet {
    pub elements: Vec<Element>,
    /// Built-in names that were asked for (reported, nothing to run).
    pub builtins: Vec<String>,
}

/// Find `name` on the elements path: the first folder that has it wins.
pub fn find(name: &str, path: &[PathBuf]) -> Option<PathBuf> {
    path.iter().map(|p| p.join(name)).find(|d| d.is_dir())
}

fn read_list(file: &Path) -> Result<Vec<String>> {
    match fs::read_to_string(file) {
        Ok(text) => Ok(text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// Expand `requested` through `element-deps`, breadth-first as dib does.
/// A name that is neither on the path, built in, nor provided by another
/// element in the set is an error naming the chain that asked for it.
pub fn resolve(requested: &[String], path: &[PathBuf], distro: Distro) -> Result<ElementSet> {
    let mut set = ElementSet::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // Who asked for each element, to print the chain on errors.
    let mut parent: HashMap<String, String> = HashMap::new();
    let mut queue: VecDeque<String> = requested.iter().cloned().collect();
    let mut missing: Vec<String> = Vec::new();
    // The base distro is the operating system (dib's distro elements
    // provide `operating-system`).
    let mut provided: BTreeSet<String> =
        [distro.name().to_string(), "operating-system".to_string()]
            .into_iter()
            .collect();

    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(dir) = find(&name, path) {
            for dep in read_list(&dir.join("element-deps"))? {
                parent.entry(dep.clone()).or_insert_with(|| name.clone());
                queue.push_back(dep);
            }
            provided.extend(read_list(&dir.join("element-provides"))?);
            set.elements.push(Element { name, dir });
        } else if BUILTIN.iter().any(|(b, _)| *b == name) {
            set.builtins.push(name);
        } else {
            missing.push(name);
        }
    }
    for name in missing {
        if provided.contains(&name) {
            continue;
        }
        let mut chain = vec![name.clone()];
        let mut cur = name.clone();
        while let Some(p) = parent.get(&cur) {
            if chain.contains(p) {
                break;
            }
            chain.push(p.clone());
            cur = p.clone();
        }
        chain.reverse();
        let searched: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
        let via = if chain.len() > 1 {
            format!(" (needed by {})", chain[..chain.len() - 1].join(" -> "))
        } else {
            String::new()
        };
        bail!(
            "element {name:?} not found{via}; elements path: {}",
            if searched.is_empty() {
                "(empty)".to_string()
            } else {
                searched.join(":")
            }
        );
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk(root: &Path, name: &str, deps: &[&str]) {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        if !deps.is_empty() {
            fs::write(d.join("element-deps"), deps.join("\n") + "\n").unwrap();
        }
    }

    #[test]
    fn expands_breadth_first_and_earlier_path_wins() {
        let t = tempfile::tempdir().unwrap();
        let a = t.path().join("a");
        let b = t.path().join("b");
        mk(&a, "top", &["left", "right", "package-installs"]);
        mk(&a, "left", &["deep"]);
        mk(&a, "right", &[]);
        mk(&a, "deep", &[]);
        mk(&b, "top", &["never"]);
        let set = resolve(&["top".into()], &[a.clone(), b], Distro::Debian).unwrap();
        let names: Vec<_> = set.elements.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["top", "left", "right", "deep"]);
        assert_eq!(set.elements[0].dir, a.join("top"));
        assert_eq!(set.builtins, ["package-installs"]);
    }

    #[test]
    fn missing_element_names_the_chain() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "top", &["mid"]);
        mk(t.path(), "mid", &["ghost"]);
        let e = resolve(&["top".into()], &[t.path().to_path_buf()], Distro::Debian).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("\"ghost\" not found (needed by top -> mid)"),
            "{msg}"
        );
    }

    #[test]
    fn provides_and_operating_system_satisfy_deps() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "top", &["operating-system", "db"]);
        mk(t.path(), "mariadb", &[]);
        fs::write(t.path().join("mariadb/element-provides"), "db\n").unwrap();
        let set = resolve(
            &["top".into(), "mariadb".into()],
            &[t.path().to_path_buf()],
            Distro::Fedora,
        )
        .unwrap();
        assert_eq!(set.elements.len(), 2);
    }
}
