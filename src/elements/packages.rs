//! package-installs.yaml: which packages each phase installs or removes.
//!
//! Schema (diskimage-builder's): a map from package name to null, a map, or
//! a list of maps with `phase` (default install.d), `uninstall`,
//! `installtype` (`package` or `source`), `arch` / `not-arch` (comma lists)
//! and `when` (`VAR=value` / `VAR!=value`, or a list that must all hold).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::hooks::Phase;
use super::Element;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    uninstall: Option<bool>,
    #[serde(default)]
    installtype: Option<String>,
    #[serde(default)]
    arch: Option<String>,
    #[serde(default, rename = "not-arch")]
    not_arch: Option<String>,
    #[serde(default)]
    when: Option<When>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum When {
    One(String),
    All(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Value {
    Map(Entry),
    List(Vec<Entry>),
}

/// What one phase does with packages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhasePackages {
    pub install: Vec<String>,
    pub uninstall: Vec<String>,
}

/// The facts package-installs filters on.
pub struct Filter<'a> {
    pub arch: &'a str,
    pub installtype: &'a str,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// Parse one element's package-installs.yaml (if any).
pub fn for_element(el: &Element, cx: &Filter) -> Result<BTreeMap<Phase, PhasePackages>> {
    let file = el.dir.join("package-installs.yaml");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    parse(&text, cx).with_context(|| format!("{}", file.display()))
}

pub fn parse(text: &str, cx: &Filter) -> Result<BTreeMap<Phase, PhasePackages>> {
    let map: Option<BTreeMap<String, Option<Value>>> =
        serde_saphyr::from_str(text).map_err(|e| {
            anyhow::anyhow!(e
                .to_string()
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" "))
        })?;
    let mut out: BTreeMap<Phase, PhasePackages> = BTreeMap::new();
    for (pkg, value) in map.unwrap_or_default() {
        let entries = match value {
            None => vec![Entry::default()],
            Some(Value::Map(e)) => vec![e],
            Some(Value::List(l)) => l,
        };
        for e in entries {
            if !applies(&e, cx).with_context(|| format!("package {pkg:?}"))? {
                continue;
            }
            let phase_name = e.phase.as_deref().unwrap_or("install.d");
            let phase = Phase::from_dir(phase_name)
                .with_context(|| format!("package {pkg:?}: unknown phase {phase_name:?}"))?;
            let slot = out.entry(phase).or_default();
            if e.uninstall.unwrap_or(false) {
                slot.uninstall.push(pkg.clone());
            } else {
                slot.install.push(pkg.clone());
            }
        }
    }
    Ok(out)
}

fn applies(e: &Entry, cx: &Filter) -> Result<bool> {
    let in_list = |list: &str| list.split(',').map(str::trim).any(|a| a == cx.arch);
    if let Some(a) = &e.arch {
        if !in_list(a) {
            return Ok(false);
        }
    }
    if let Some(a) = &e.not_arch {
        if in_list(a) {
            return Ok(false);
        }
    }
    if e.installtype.as_deref().unwrap_or("package") != cx.installtype {
        return Ok(false);
    }
    let conds: Vec<&str> = match &e.when {
        None => vec![],
        Some(When::One(s)) => vec![s.as_str()],
        Some(When::All(v)) => v.iter().map(String::as_str).collect(),
    };
    for c in conds {
        let (var, want, negate) = if let Some((v, w)) = c.split_once("!=") {
            (v, w, true)
        } else if let Some((v, w)) = c.split_once('=') {
            (v, w, false)
        } else {
            bail!("when: {c:?} is not VAR=value or VAR!=value");
        };
        let have = (cx.env)(var.trim()).unwrap_or_default();
        if (have == want.trim()) == negate {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Merge per-element results into one list per phase, keeping first-seen
/// order and dropping duplicates: one package-manager call per phase.
pub fn merge(per_element: Vec<BTreeMap<Phase, PhasePackages>>) -> BTreeMap<Phase, PhasePackages> {
    let mut out: BTreeMap<Phase, PhasePackages> = BTreeMap::new();
    for m in per_element {
        for (phase, p) in m {
            let slot = out.entry(phase).or_default();
            for pkg in p.install {
                if !slot.install.contains(&pkg) {
                    slot.install.push(pkg);
                }
            }
            for pkg in p.uninstall {
                if !slot.uninstall.contains(&pkg) {
                    slot.uninstall.push(pkg);
                }
            }
        }
    }
    out
}

/// The package manager of a base distro.
pub fn manager(distro: crate::spec::Distro) -> PackageManager {
    match distro {
        crate::spec::Distro::Debian => PackageManager::Apt,
        crate::spec::Distro::Fedora => PackageManager::Dnf,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageManager {
    Apt,
    Dnf,
}

impl PackageManager {
    /// Command lines (run inside the root) that refresh metadata, install
    /// and remove packages.
    pub fn refresh(self) -> Vec<String> {
        match self {
            PackageManager::Apt => argv("apt-get -q update"),
            PackageManager::Dnf => argv("dnf -y makecache"),
        }
    }

    pub fn install(self, pkgs: &[String]) -> Vec<String> {
        let mut v = match self {
            // Recommends would pull in a desktop's worth of packages; dib's
            // Debian elements turn them off the same way.
            PackageManager::Apt => argv(
                "apt-get -q -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install",
            ),
            PackageManager::Dnf => argv("dnf -y --setopt=install_weak_deps=False install"),
        };
        v.extend(pkgs.iter().cloned());
        v
    }

    pub fn uninstall(self, pkgs: &[String]) -> Vec<String> {
        let mut v = match self {
            PackageManager::Apt => argv("apt-get -q -y remove"),
            PackageManager::Dnf => argv("dnf -y remove"),
        };
        v.extend(pkgs.iter().cloned());
        v
    }

    /// Caches and logs a live image should not carry; removing them also
    /// keeps two builds of the same inputs byte-identical.
    pub fn leftovers(self) -> &'static [&'static str] {
        match self {
            PackageManager::Apt => &[
                "var/cache/apt/archives",
                "var/cache/apt/pkgcache.bin",
                "var/cache/apt/srcpkgcache.bin",
                "var/lib/apt/lists",
                "var/log/apt",
                "var/log/dpkg.log",
                "var/log/alternatives.log",
                "var/cache/ldconfig/aux-cache",
                "var/cache/debconf/config.dat-old",
                "var/cache/debconf/templates.dat-old",
                "var/lib/dpkg/status-old",
            ],
            PackageManager::Dnf => &[
                "var/cache/dnf",
                "var/cache/libdnf5",
                "var/log/dnf.log",
                "var/log/dnf.librepo.log",
                "var/log/dnf.rpm.log",
                "var/log/dnf5.log",
                "var/cache/ldconfig/aux-cache",
            ],
        }
    }
}

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx_env(k: &str) -> Option<String> {
        match k {
            "DIB_FLAVOR" => Some("big".into()),
            _ => None,
        }
    }

    fn cx() -> Filter<'static> {
        Filter {
            arch: "amd64",
            installtype: "package",
            env: &cx_env,
        }
    }

    #[test]
    fn full_schema() {
        let text = "\
plain:
phased:
  phase: pre-install.d
gone:
  uninstall: true
armonly:
  arch: arm64, ppc64el
notamd:
  not-arch: amd64
source-only:
  installtype: source
big-only:
  when: DIB_FLAVOR=big
not-big:
  when: DIB_FLAVOR!=big
both:
  - phase: install.d
  - phase: finalise.d
    when:
      - DIB_FLAVOR=big
      - UNSET!=x
";
        let m = parse(text, &cx()).unwrap();
        assert_eq!(m[&Phase::Install].install, ["big-only", "both", "plain"]);
        assert_eq!(m[&Phase::Install].uninstall, ["gone"]);
        assert_eq!(m[&Phase::PreInstall].install, ["phased"]);
        assert_eq!(m[&Phase::Finalise].install, ["both"]);
    }

    #[test]
    fn bad_yaml_and_bad_phase_are_errors() {
        assert!(parse("pkg:\n  phase: nowhere.d\n", &cx()).is_err());
        assert!(parse("pkg:\n  colour: red\n", &cx()).is_err());
        assert!(parse("pkg:\n  when: NOEQUALS\n", &cx()).is_err());
        assert!(parse("", &cx()).unwrap().is_empty());
    }

    #[test]
    fn merge_dedups_in_order() {
        let a = parse("x:\ny:\n", &cx()).unwrap();
        let b = parse("y:\nz:\n", &cx()).unwrap();
        let m = merge(vec![a, b]);
        assert_eq!(m[&Phase::Install].install, ["x", "y", "z"]);
    }
}
