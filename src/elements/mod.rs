//! diskimage-builder compatible elements.
//!
//! An element is a folder on the elements path (earlier entries win) with
//! optional `element-deps`, `element-provides`, `<phase>.d/` hooks,
//! `environment.d/`, `package-installs.yaml`, `pkg-map`, `static/` and `bin/`.
//! This module finds and expands them (`resolve`); `hooks` gathers the
//! run-parts scripts of each phase, `packages` reads package-installs.yaml,
//! `pkgmap` translates package names, `plan` decides what each phase does and
//! `run` applies a plan to a root.

pub mod apply;
pub mod buildenv;
pub mod hooks;
pub mod packages;
pub mod pkgmap;
pub mod plan;
pub mod run;
pub mod select;
pub mod tools;
pub mod tree;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Serialize;

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
        "pkg-map",
        "pkg-map files translate package-installs names by undercloud-live, whose pkg-map is in the root's /usr/local/bin",
    ),
    (
        "dib-python",
        "/usr/local/bin/dib-python links the root's python3 (installed at pre-install.d), by undercloud-live",
    ),
    (
        "install-static",
        "static/ trees are copied by undercloud-live",
    ),
    (
        "install-bin",
        "bin/ files are copied to /usr/local/bin by undercloud-live",
    ),
    (
        "install-types",
        "DIB_DEFAULT_INSTALLTYPE / DIB_INSTALLTYPE_<element> are honoured by undercloud-live",
    ),
    (
        "dib-init-system",
        "DIB_INIT_SYSTEM=systemd is set, and init-scripts/systemd/ units are installed, by undercloud-live",
    ),
    ("dib-run-parts", "run-parts is built into undercloud-live"),
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Element {
    pub name: String,
    pub dir: PathBuf,
    /// Names from `element-deps`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deps: Vec<String>,
    /// Names from `element-provides`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub provides: Vec<String>,
    /// Who asked for it: the requested element first, this one last.
    pub chain: Chain,
}

impl Element {
    /// An element read from `dir` (used for generated elements too).
    pub fn load(name: &str, dir: &Path, chain: impl Into<Chain>) -> Result<Element> {
        Ok(Element {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            deps: read_list(&dir.join("element-deps"))?,
            provides: read_list(&dir.join("element-provides"))?,
            chain: chain.into(),
        })
    }
}

/// A chain of element names, the requested element first. Each element's
/// chain shares its asker's (a linked list pointing up), so a dependency
/// chain n deep costs memory linear in n; a vector per element, each a copy
/// of its asker's plus one name, cost n^2/2 names (3.3 GB at n = 10,000).
#[derive(Clone)]
pub struct Chain(Arc<Link>);

struct Link {
    name: String,
    up: Option<Chain>,
    len: usize,
}

impl Chain {
    /// A chain of one name (a requested element).
    pub fn root(name: &str) -> Chain {
        Chain(Arc::new(Link {
            name: name.to_string(),
            up: None,
            len: 1,
        }))
    }

    /// This chain with `name` appended.
    pub fn then(&self, name: &str) -> Chain {
        Chain(Arc::new(Link {
            name: name.to_string(),
            up: Some(self.clone()),
            len: self.0.len + 1,
        }))
    }

    pub fn len(&self) -> usize {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The names, the requested element first.
    pub fn names(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.len());
        let mut at = Some(self);
        while let Some(c) = at {
            out.push(c.0.name.clone());
            at = c.0.up.as_ref();
        }
        out.reverse();
        out
    }

    pub fn join(&self, sep: &str) -> String {
        self.names().join(sep)
    }
}

impl Drop for Link {
    // The default drop recurses once per link: a chain deep enough would
    // overflow the stack. Unlink iteratively while this is the last owner.
    fn drop(&mut self) {
        let mut up = self.up.take();
        while let Some(Chain(arc)) = up {
            up = match Arc::try_unwrap(arc) {
                Ok(mut link) => link.up.take(),
                Err(_) => None,
            };
        }
    }
}

impl From<Vec<String>> for Chain {
    /// An empty vector gives an empty-named root (never done by callers).
    fn from(names: Vec<String>) -> Chain {
        let mut it = names.iter();
        let mut c = Chain::root(it.next().map(String::as_str).unwrap_or(""));
        for n in it {
            c = c.then(n);
        }
        c
    }
}

impl PartialEq for Chain {
    fn eq(&self, other: &Chain) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.names() == other.names()
    }
}

impl Eq for Chain {}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Serialize for Chain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

/// The expanded element list, in breadth-first order of discovery.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ElementSet {
    pub elements: Vec<Element>,
    /// Built-in names that were asked for (reported, nothing to run).
    pub builtins: Vec<String>,
    /// Names satisfied by `element-provides` (or by the base distro), and
    /// by whom.
    pub provided: BTreeMap<String, String>,
    /// Things accepted that are worth saying (a dependency cycle).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The elements path the set was found on (hooks see it as
    /// `ELEMENTS_PATH`, as under dib).
    #[serde(skip)]
    pub path: Vec<PathBuf>,
}

impl ElementSet {
    pub fn get(&self, name: &str) -> Option<&Element> {
        self.elements.iter().find(|e| e.name == name)
    }
}

/// Find `name` on the elements path: the first folder that has it wins.
/// Only a valid name is looked up: `/etc`, `..` or `../x` would name a
/// folder anywhere on the host.
pub fn find(name: &str, path: &[PathBuf]) -> Option<PathBuf> {
    if !valid_name(name) {
        return None;
    }
    path.iter().map(|p| p.join(name)).find(|d| d.is_dir())
}

pub use crate::spec::{check_element_name as check_name, valid_element_name as valid_name};

/// Largest element metadata file (element-deps, element-provides, pkg-map,
/// package-installs): these list names, a few KiB at most; 1 MiB is far
/// beyond any real element and keeps a stray big file from eating memory.
pub(crate) const MAX_ELEMENT_FILE: u64 = crate::io::MIB;

fn read_list(file: &Path) -> Result<Vec<String>> {
    let Some(text) = crate::io::read_text_bounded_opt(file, MAX_ELEMENT_FILE, "element file")?
    else {
        return Ok(Vec::new());
    };
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn chain_text(chain: &[String]) -> String {
    chain.join(" -> ")
}

/// The name the base distro's own element goes by in `provided`.
fn distro_provider(distro: Distro) -> String {
    format!("{} (the base)", distro.name())
}

/// The "provider" of a name the command line excluded.
pub const EXCLUDED: &str = "--exclude-element";

/// dib's elements for the work our own output stages do for every format
/// (partitioning, file systems, the bootloader: src/build, src/boot): with
/// `vm` on a command line they would run that work a second time, on a root
/// that is no disk, so the names are satisfied by us instead.
pub const DISK_ELEMENTS: &[&str] = &[
    "block-device",
    "block-device-efi",
    "block-device-efi-4k",
    "block-device-efi-lvm",
    "block-device-gpt",
    "block-device-mbr",
    "bootloader",
    "grub2",
];

/// The "provider" of `DISK_ELEMENTS`.
pub const DISK_PROVIDER: &str = "undercloud-live (its own partitions, file systems and bootloader)";

/// What every walk starts knowing: the base's names, our disk work's, and
/// the names the command line excluded.
fn fixed_providers(distro: Distro, exclude: &[String]) -> BTreeMap<String, String> {
    let base = distro_provider(distro);
    let mut m: BTreeMap<String, String> = distro
        .facts()
        .dib_elements
        .iter()
        .chain(&["operating-system"])
        .map(|n| (n.to_string(), base.clone()))
        .collect();
    for n in DISK_ELEMENTS {
        m.insert(n.to_string(), DISK_PROVIDER.into());
    }
    for x in exclude {
        m.insert(x.clone(), EXCLUDED.into());
    }
    m
}

/// Expand `requested` through `element-deps`, breadth-first as dib does.
///
/// `element-provides` names satisfy dependencies and keep an element of that
/// name out of the set; the base distro provides `operating-system` and its
/// dib distro elements (`distro::Facts::dib_elements`), `exclude` names are left out with
/// whatever only they needed (instack's `-x`). Errors name the chain that led
/// to the problem: a missing element, two elements providing the same name,
/// an element in the set that another element also provides, another
/// distribution's distro element. A dependency cycle is accepted, as dib
/// accepts it, with a warning in `ElementSet::warnings`.
pub fn resolve(
    requested: &[String],
    exclude: &[String],
    path: &[PathBuf],
    distro: Distro,
) -> Result<ElementSet> {
    for x in exclude {
        check_name(x).context("--exclude-element")?;
    }
    // A provider found late in the walk can make an element found earlier
    // unnecessary (dib's "run through the provided elements first"). Walk
    // again with what the last walk learned until nothing changes; each
    // round only adds names, so this ends.
    let fixed = fixed_providers(distro, exclude);
    let mut known = fixed.clone();
    for _ in 0..32 {
        let (set, missing) = walk(requested, path, distro, &known)?;
        let displaced: Vec<&Element> = set
            .elements
            .iter()
            .filter(|e| set.provided.contains_key(&e.name))
            .collect();
        if displaced.is_empty() {
            if let Some((name, chain)) = missing.into_iter().next() {
                let chain = chain.map(|c| c.names()).unwrap_or_default();
                let searched: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
                let via = if chain.len() > 1 {
                    format!(" (needed by {})", chain_text(&chain[..chain.len() - 1]))
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
            let mut set = set;
            set.warnings.extend(cycle_warning(&set));
            set.path = path.to_vec();
            return Ok(set);
        }
        for e in displaced {
            if requested.contains(&e.name) || known.contains_key(&e.name) {
                bail!(
                    "element {:?} (asked for by {}) is also provided by {:?}: use one or the other",
                    e.name,
                    e.chain.join(" -> "),
                    set.provided[&e.name]
                );
            }
        }
        known = fixed.clone();
        known.extend(set.provided);
    }
    bail!("element provides do not settle (too many rounds)")
}

/// A name neither found nor provided, and the chain that asked for it.
type Missing = (String, Option<Chain>);

fn walk(
    requested: &[String],
    path: &[PathBuf],
    distro: Distro,
    known: &BTreeMap<String, String>,
) -> Result<(ElementSet, Vec<Missing>)> {
    let mut set = ElementSet::default();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    // The first chain that reached each name (breadth-first: a shortest).
    let mut chains: HashMap<String, Chain> = HashMap::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for r in requested {
        chains.entry(r.clone()).or_insert_with(|| Chain::root(r));
        queue.push_back(r.clone());
    }
    let mut missing: Vec<String> = Vec::new();
    // The base distro is the operating system: dib's distro elements
    // provide `operating-system`.
    let base = distro_provider(distro);
    set.provided.insert("operating-system".to_string(), base);

    while let Some(name) = queue.pop_front() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let chain = chains
            .get(&name)
            .cloned()
            .unwrap_or_else(|| Chain::root(&name));
        check_name(&name).with_context(|| format!("asked for by {}", chain.join(" -> ")))?;
        if let Some(provider) = known.get(&name) {
            // Someone else provides it; it stays out of the set.
            set.provided
                .entry(name.clone())
                .or_insert_with(|| provider.clone());
            continue;
        }
        if BUILTIN.iter().any(|(b, _)| *b == name) {
            // Ours, even with diskimage-builder's tree on the path: its
            // copy would do the same work a second time (and needs
            // variables only its own scripts set).
            set.builtins.push(name);
        } else if let Some(dir) = find(&name, path) {
            let el = Element::load(&name, &dir, chain.clone())
                .with_context(|| format!("element {name:?}"))?;
            if el.provides.iter().any(|p| p == "operating-system") {
                bail!(
                    "element {:?} (asked for by {}) makes its own operating system, but this build's root is the spec's {} base (which stands for {}): leave it out, or build from a base of its distribution",
                    el.name,
                    chain.join(" -> "),
                    distro.name(),
                    distro.facts().dib_elements.join(", ")
                );
            }
            for p in &el.provides {
                if let Some(other) = set.provided.get(p) {
                    if *other != el.name {
                        bail!(
                            "{p:?} is provided by both {other:?} and {:?} (asked for by {})",
                            el.name,
                            chain.join(" -> ")
                        );
                    }
                }
                set.provided.insert(p.clone(), el.name.clone());
            }
            for dep in &el.deps {
                chains.entry(dep.clone()).or_insert_with(|| chain.then(dep));
                queue.push_back(dep.clone());
            }
            set.elements.push(el);
        } else {
            missing.push(name);
        }
    }
    // Names neither found nor provided, with the chain that asked for them.
    let missing = missing
        .into_iter()
        .filter(|n| !set.provided.contains_key(n))
        .map(|n| {
            let chain = chains.get(&n).cloned();
            (n, chain)
        })
        .collect();
    Ok((set, missing))
}

/// A dependency cycle among the elements of the set, as a warning naming
/// it. dib accepts cycles (tripleo-image-elements' `os-apply-config` and
/// `os-refresh-config` need each other), and so do we: the set is the same
/// whichever member comes first; only the breadth-first order depends on
/// which was asked for.
fn cycle_warning(set: &ElementSet) -> Option<String> {
    let index: HashMap<&str, usize> = set
        .elements
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done. Depth-first with
    // an explicit stack of (element, next dependency to look at): a
    // recursive walk would overflow the stack on a deep dependency chain.
    let mut state = vec![0u8; set.elements.len()];
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for root in 0..set.elements.len() {
        if state[root] != 0 {
            continue;
        }
        state[root] = 1;
        stack.push((root, 0));
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            let Some(dep) = set.elements[i].deps.get(*next) else {
                stack.pop();
                state[i] = 2;
                continue;
            };
            *next += 1;
            let Some(&j) = index.get(dep.as_str()) else {
                continue;
            };
            if state[j] == 1 {
                let from = stack.iter().position(|&(k, _)| k == j).unwrap_or(0);
                let mut cycle: Vec<String> = stack[from..]
                    .iter()
                    .map(|&(k, _)| set.elements[k].name.clone())
                    .collect();
                cycle.push(set.elements[j].name.clone());
                let first = &set.elements[j];
                return Some(format!(
                    "element dependency cycle: {} (reached by {}); accepted, as diskimage-builder does",
                    chain_text(&cycle),
                    first.chain.join(" -> ")
                ));
            }
            if state[j] == 0 {
                state[j] = 1;
                stack.push((j, 0));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

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
        let set = resolve(&["top".into()], &[], &[a.clone(), b], Distro::Debian).unwrap();
        let names: Vec<_> = set.elements.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["top", "left", "right", "deep"]);
        assert_eq!(set.elements[0].dir, a.join("top"));
        assert_eq!(set.builtins, ["package-installs"]);
    }

    #[test]
    fn names_that_are_paths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("elements");
        mk(&path, "top", &["/etc"]);
        // A folder beside the elements path that "../x" would reach.
        mk(t.path(), "x", &[]);
        for bad in ["../x", "/etc", ".", "..", "", "-e", ".hidden", "a/b"] {
            let e = resolve(
                &[bad.into()],
                &[],
                std::slice::from_ref(&path),
                Distro::Debian,
            )
            .unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains("is not an element name"), "{bad:?}: {msg}");
        }
        let e = resolve(
            &["top".into()],
            &[],
            std::slice::from_ref(&path),
            Distro::Debian,
        )
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("asked for by top -> /etc")
                && msg.contains("\"/etc\" is not an element name"),
            "{msg}"
        );
        for good in [
            "fedora-minimal",
            "ironic-python-agent-ramdisk",
            "dib_init",
            "c++",
            "v1.2",
        ] {
            assert!(valid_name(good), "{good}");
        }
    }

    #[test]
    fn missing_element_names_the_chain() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "top", &["mid"]);
        mk(t.path(), "mid", &["ghost"]);
        let e = resolve(
            &["top".into()],
            &[],
            &[t.path().to_path_buf()],
            Distro::Debian,
        )
        .unwrap_err();
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
            &[],
            &[t.path().to_path_buf()],
            Distro::Fedora,
        )
        .unwrap();
        assert_eq!(set.elements.len(), 2);
    }

    fn provides(root: &Path, name: &str, what: &[&str]) {
        fs::write(
            root.join(name).join("element-provides"),
            what.join("\n") + "\n",
        )
        .unwrap();
    }

    /// The set resolved for Debian from one folder, and its names.
    fn names_of(requested: &[&str], exclude: &[&str], root: &Path) -> (ElementSet, Vec<String>) {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let set = resolve(
            &own(requested),
            &own(exclude),
            &[root.to_path_buf()],
            Distro::Debian,
        )
        .unwrap();
        let names = set.elements.iter().map(|e| e.name.clone()).collect();
        (set, names)
    }

    fn err(requested: &[&str], root: &Path) -> String {
        let req: Vec<String> = requested.iter().map(|s| s.to_string()).collect();
        format!(
            "{:#}",
            resolve(&req, &[], &[root.to_path_buf()], Distro::Debian).unwrap_err()
        )
    }

    #[test]
    fn provided_element_stays_out_even_when_found_first() {
        // top needs "db"; a plain "db" element exists, but mariadb (found
        // later in the walk) provides it: dib leaves the plain one out.
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "top", &["db", "extra"]);
        mk(t.path(), "db", &["db-only-dep"]);
        mk(t.path(), "extra", &["mariadb"]);
        mk(t.path(), "mariadb", &[]);
        provides(t.path(), "mariadb", &["db"]);
        let set = resolve(
            &["top".into()],
            &[],
            &[t.path().to_path_buf()],
            Distro::Debian,
        )
        .unwrap();
        let names: Vec<_> = set.elements.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["top", "extra", "mariadb"]);
        assert_eq!(set.provided["db"], "mariadb");
        assert_eq!(set.provided["operating-system"], "debian (the base)");
        assert_eq!(
            set.get("mariadb").unwrap().chain.names(),
            ["top", "extra", "mariadb"]
        );
    }

    #[test]
    fn two_providers_of_one_name_conflict() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "top", &["mysql", "mariadb"]);
        mk(t.path(), "mysql", &[]);
        mk(t.path(), "mariadb", &[]);
        provides(t.path(), "mysql", &["db"]);
        provides(t.path(), "mariadb", &["db"]);
        let e = err(&["top"], t.path());
        assert!(
            e.contains("\"db\" is provided by both \"mysql\" and \"mariadb\"")
                && e.contains("top -> mariadb"),
            "{e}"
        );
    }

    #[test]
    fn an_element_and_a_provider_of_its_name_conflict() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "db", &[]);
        mk(t.path(), "mariadb", &[]);
        provides(t.path(), "mariadb", &["db"]);
        let e = err(&["db", "mariadb"], t.path());
        assert!(
            e.contains("\"db\"") && e.contains("also provided by \"mariadb\""),
            "{e}"
        );
    }

    #[test]
    fn distro_elements_are_the_base_or_refused() {
        let t = tempfile::tempdir().unwrap();
        // dib's own shape: the distro element depends on its -minimal
        // sibling, which provides the operating system.
        mk(t.path(), "debian", &["debian-minimal"]);
        mk(t.path(), "debian-minimal", &["debootstrap"]);
        provides(t.path(), "debian-minimal", &["operating-system"]);
        mk(t.path(), "ubuntu", &["ubuntu-minimal"]);
        mk(t.path(), "ubuntu-minimal", &[]);
        provides(t.path(), "ubuntu-minimal", &["operating-system"]);
        mk(t.path(), "vm", &[]);
        let (set, names) = names_of(&["vm", "debian"], &[], t.path());
        assert_eq!(names, ["vm"]);
        assert_eq!(set.provided["debian"], "debian (the base)");
        let e = err(&["vm", "ubuntu"], t.path());
        assert_eq!(
            e,
            "element \"ubuntu-minimal\" (asked for by ubuntu -> ubuntu-minimal) makes its own operating system, but this build's root is the spec's debian base (which stands for debian, debian-minimal, debian-upstream, debian-systemd): leave it out, or build from a base of its distribution"
        );
    }

    #[test]
    fn excluded_elements_and_what_only_they_need_stay_out() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "top", &["a", "b"]);
        mk(t.path(), "a", &["only-a"]);
        mk(t.path(), "b", &[]);
        mk(t.path(), "only-a", &[]);
        let (set, names) = names_of(&["top"], &["a"], t.path());
        assert_eq!(names, ["top", "b"]);
        assert_eq!(set.provided["a"], EXCLUDED);
        let e = resolve(
            &["top".into()],
            &["../a".into()],
            &[t.path().to_path_buf()],
            Distro::Debian,
        )
        .unwrap_err();
        assert!(format!("{e:#}").starts_with("--exclude-element"), "{e:#}");
    }

    #[test]
    fn a_cycle_is_accepted_with_a_warning_naming_it() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "top", &["a"]);
        mk(t.path(), "a", &["b"]);
        mk(t.path(), "b", &["c"]);
        mk(t.path(), "c", &["a"]);
        let (set, names) = names_of(&["top"], &[], t.path());
        assert_eq!(names, ["top", "a", "b", "c"]);
        assert_eq!(
            set.warnings,
            ["element dependency cycle: a -> b -> c -> a (reached by top -> a); accepted, as diskimage-builder does"]
        );
    }

    #[test]
    fn oversized_element_deps_is_refused() {
        let t = tempfile::tempdir().unwrap();
        mk(t.path(), "big", &[]);
        // Comment lines only: were it read, it would name no dependency.
        let line = "# padding padding padding padding padding padding padding\n";
        let text = line.repeat((MAX_ELEMENT_FILE as usize / line.len()) + 1);
        fs::write(t.path().join("big/element-deps"), text).unwrap();
        let e = format!(
            "{:#}",
            Element::load("big", &t.path().join("big"), Vec::new()).unwrap_err()
        );
        assert!(
            e.contains("1 MiB limit") && e.contains("element-deps"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }

    /// 10,000 element folders: in memory where the system has a tmpfs
    /// (creating and removing them on a busy disk takes most of a minute).
    fn many_elements_dir() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .unwrap()
    }

    /// A 10,000-deep element-deps chain resolves in linear memory and time
    /// (per-element chain vectors made it quadratic: 3.3 GB).
    #[test]
    fn deep_dependency_chain_is_linear() {
        let t = many_elements_dir();
        const DEPTH: usize = 10_000;
        for i in 0..DEPTH {
            let d = t.path().join(format!("e{i}"));
            fs::create_dir(&d).unwrap();
            if i + 1 < DEPTH {
                fs::write(d.join("element-deps"), format!("e{}\n", i + 1)).unwrap();
            }
        }
        let start = std::time::Instant::now();
        let set = resolve(
            &["e0".into()],
            &[],
            &[t.path().to_path_buf()],
            Distro::Debian,
        )
        .unwrap();
        assert_eq!(set.elements.len(), DEPTH);
        let last = set.get(&format!("e{}", DEPTH - 1)).unwrap();
        assert_eq!(last.chain.len(), DEPTH);
        assert_eq!(last.chain.names()[..2], ["e0", "e1"]);
        drop(set);
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn deep_cycle_is_named_without_recursion() {
        let t = many_elements_dir();
        const DEPTH: usize = 10_000;
        for i in 0..DEPTH {
            let d = t.path().join(format!("e{i}"));
            fs::create_dir(&d).unwrap();
            fs::write(d.join("element-deps"), format!("e{}\n", (i + 1) % DEPTH)).unwrap();
        }
        let set = resolve(
            &["e0".into()],
            &[],
            &[t.path().to_path_buf()],
            Distro::Debian,
        )
        .unwrap();
        assert_eq!(set.elements.len(), DEPTH);
        assert!(set.warnings[0].starts_with("element dependency cycle: e0 -> e1 -> "));
    }
}
