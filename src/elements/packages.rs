//! package-installs.yaml: which packages each phase installs or removes.
//!
//! Schema (diskimage-builder's): a map from package name to null, a map, or
//! a list of maps with `phase` (default install.d), `uninstall`,
//! `build-only`, `installtype`, `arch` / `not-arch` (comma lists; not both),
//! `dib_python_version` and `when` (`VAR=value` / `VAR!=value`, or a list
//! that must all hold; an unset VAR is an error, as in dib). The file may
//! also be `package-installs.json`. Entries are merged across elements the
//! way dib's package-installs-squash does.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::hooks::{InstallType, Phase};
use super::Element;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    phase: Option<String>,
    /// dib tests for the key's presence, not its value.
    #[serde(default)]
    uninstall: Option<serde_json::Value>,
    #[serde(default, rename = "build-only")]
    build_only: Option<serde_json::Value>,
    #[serde(default)]
    installtype: Option<String>,
    #[serde(default)]
    arch: Option<String>,
    #[serde(default, rename = "not-arch")]
    not_arch: Option<String>,
    #[serde(default)]
    dib_python_version: Option<serde_json::Value>,
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

/// A package name as an element wrote it, and that element (whose pkg-map
/// translates it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub element: String,
}

/// What one phase does with packages, before pkg-map translation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhasePackages {
    pub install: Vec<Wanted>,
    pub uninstall: Vec<Wanted>,
}

/// The facts package-installs filters on.
pub struct Filter<'a> {
    /// dib's `ARCH` (`amd64` on x86-64, whatever the distro).
    pub arch: &'a str,
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Filter<'_> {
    /// dib's install-types: `DIB_INSTALLTYPE_<element>` (dashes as
    /// underscores), else `DIB_DEFAULT_INSTALLTYPE`, else `source`.
    fn installtype(&self, element: &str) -> String {
        (self.env)(&format!("DIB_INSTALLTYPE_{}", element.replace('-', "_")))
            .or_else(|| (self.env)("DIB_DEFAULT_INSTALLTYPE"))
            .unwrap_or_else(|| "source".to_string())
    }
}

/// The parsed package-installs file of one element, in file order.
pub type Entries = Vec<(String, Vec<EntryRef>)>;

/// An opaque parsed entry (kept private so the schema stays here).
#[derive(Debug)]
pub struct EntryRef(Entry);

/// Read one element's package-installs.yaml or .json (if any).
pub fn read(el: &Element) -> Result<Entries> {
    for name in ["package-installs.yaml", "package-installs.json"] {
        let file = el.dir.join(name);
        if let Some(t) =
            crate::io::read_text_bounded_opt(&file, super::MAX_ELEMENT_FILE, "package list")?
        {
            return parse(&t).with_context(|| format!("{}", file.display()));
        }
    }
    Ok(Vec::new())
}

/// The phases whose folders dib's package-installs searches for the
/// deprecated `package-installs-<element>` lists.
pub const LEGACY_PHASES: [Phase; 3] = [Phase::PreInstall, Phase::Install, Phase::PostInstall];

/// Prefix of dib's deprecated package lists.
const LEGACY_PREFIX: &str = "package-installs-";

/// Add one element's deprecated lists, `<phase>/package-installs-<name>`
/// (dib still installs them): every line a package to install at the
/// start of that phase, one starting with `-` also to remove at its end.
/// `#` starts a comment line; a line may name several packages. `<name>`
/// is the element whose pkg-map translates them. Lists in the element's
/// `linked` install-types folders count as install.d's: install-types
/// links them there before package-installs looks.
pub fn collect_legacy(
    data: &mut BTreeMap<Phase, PhasePackages>,
    el: &Element,
    linked: &[InstallType],
) -> Result<()> {
    for phase in LEGACY_PHASES {
        let dir = el.dir.join(phase.dir());
        let mut dirs = vec![dir.clone()];
        if phase == Phase::Install {
            dirs.extend(
                linked
                    .iter()
                    .filter(|l| l.element == el.name)
                    .map(|l| dir.join(&l.folder)),
            );
        }
        let mut files: Vec<(String, std::path::PathBuf)> = dirs
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|entries| entries.flatten())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let owner = name.strip_prefix(LEGACY_PREFIX)?.to_string();
                e.path().is_file().then(|| (owner, e.path()))
            })
            .collect();
        // dib takes them in directory order; sorted, two builds agree.
        files.sort();
        for (owner, file) in files {
            let text =
                crate::io::read_text_bounded(&file, super::MAX_ELEMENT_FILE, "package list")?;
            let slot = data.entry(phase).or_default();
            legacy_lines(&text, &owner, slot).with_context(|| format!("{}", file.display()))?;
        }
    }
    Ok(())
}

fn legacy_lines(text: &str, owner: &str, slot: &mut PhasePackages) -> Result<()> {
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (names, remove) = match line.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (line, false),
        };
        for name in names.split_whitespace() {
            check_package_name(name)?;
            let w = Wanted {
                name: name.to_string(),
                element: owner.to_string(),
            };
            if remove {
                slot.uninstall.push(w.clone());
            }
            slot.install.push(w);
        }
    }
    Ok(())
}

pub fn parse(text: &str) -> Result<Entries> {
    // JSON first, like dib; YAML (a superset) otherwise, so errors are YAML's.
    let map: Option<Vec<(String, serde_json::Value)>> =
        match serde_json::from_str::<Option<serde_json::Map<String, serde_json::Value>>>(text) {
            Ok(m) => m.map(|m| m.into_iter().collect()),
            Err(_) => {
                let y: Option<BTreeMap<String, Option<serde_json::Value>>> =
                    serde_saphyr::from_str(text).map_err(|e| {
                        anyhow::anyhow!(e
                            .to_string()
                            .lines()
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join(" "))
                    })?;
                // File order matters (dib keeps it); YAML mappings come back
                // sorted here, so re-read the key order from the text.
                y.map(|m| {
                    let mut keys: Vec<(usize, String)> = m
                        .keys()
                        .map(|k| (key_position(text, k), k.clone()))
                        .collect();
                    keys.sort();
                    let mut m = m;
                    keys.into_iter()
                        .map(|(_, k)| {
                            let v = m.remove(&k).flatten().unwrap_or(serde_json::Value::Null);
                            (k, v)
                        })
                        .collect()
                })
            }
        };
    let mut out = Vec::new();
    for (pkg, value) in map.unwrap_or_default() {
        let value: Option<Value> =
            serde_json::from_value(value).map_err(|e| anyhow::anyhow!("package {pkg:?}: {e}"))?;
        let entries = match value {
            None => vec![Entry::default()],
            Some(Value::Map(e)) => vec![e],
            Some(Value::List(l)) if l.is_empty() => vec![Entry::default()],
            Some(Value::List(l)) => l,
        };
        for e in &entries {
            let phase_name = e.phase.as_deref().unwrap_or("install.d");
            Phase::from_dir(phase_name)
                .with_context(|| format!("package {pkg:?}: unknown phase {phase_name:?}"))?;
            if e.arch.is_some() && e.not_arch.is_some() {
                bail!("package {pkg:?}: arch and not-arch given together");
            }
        }
        out.push((pkg, entries.into_iter().map(EntryRef).collect()));
    }
    Ok(out)
}

/// Where a top-level key first appears in the text (for file order).
fn key_position(text: &str, key: &str) -> usize {
    let mut pos = 0;
    for line in text.lines() {
        let t = line.trim_end();
        if !t.starts_with([' ', '\t', '#']) {
            let k = t
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\'']);
            if k == key {
                return pos;
            }
        }
        pos += line.len() + 1;
    }
    usize::MAX
}

/// Merge one element's entries into `data` the way dib's squash does:
/// filters first, then an uninstall of a package another entry installs
/// (and does not remove) is dropped, and an install cancels an earlier
/// uninstall of the same package in that phase.
pub fn collect(
    data: &mut BTreeMap<Phase, PhasePackages>,
    element: &str,
    entries: &Entries,
    cx: &Filter,
) -> Result<()> {
    let elem_type = cx.installtype(element);
    for (pkg, list) in entries {
        check_package_name(pkg)?;
        for EntryRef(e) in list {
            let phase = Phase::from_dir(e.phase.as_deref().unwrap_or("install.d"))
                .unwrap_or(Phase::Install);
            let slot = data.entry(phase).or_default();
            let removes = e.uninstall.is_some() || e.build_only.is_some();
            let mut install = true;
            let mut uninstall = false;
            if removes {
                let in_install = slot.install.iter().any(|w| w.name == *pkg);
                let in_uninstall = slot.uninstall.iter().any(|w| w.name == *pkg);
                if in_install && !in_uninstall {
                    if e.build_only.is_none() {
                        continue;
                    }
                } else {
                    if e.uninstall.is_some() {
                        install = false;
                        uninstall = true;
                    }
                    if e.build_only.is_some() {
                        install = true;
                        uninstall = true;
                    }
                }
            } else {
                slot.uninstall.retain(|w| w.name != *pkg);
            }
            if !applies(e, &elem_type, cx).with_context(|| format!("package {pkg:?}"))? {
                continue;
            }
            let w = Wanted {
                name: pkg.clone(),
                element: element.to_string(),
            };
            if install {
                slot.install.push(w.clone());
            }
            if uninstall {
                slot.uninstall.push(w);
            }
        }
    }
    Ok(())
}

fn applies(e: &Entry, elem_type: &str, cx: &Filter) -> Result<bool> {
    if let Some(t) = &e.installtype {
        if t != elem_type {
            return Ok(false);
        }
    }
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
    if let Some(v) = &e.dib_python_version {
        let want = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if !want.is_empty() && want != (cx.env)("DIB_PYTHON_VERSION").unwrap_or_default() {
            return Ok(false);
        }
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
        let var = var.trim();
        if var.is_empty() || !var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            bail!("when: {c:?} is not VAR=value or VAR!=value");
        }
        // dib raises here rather than guessing: set a default in an
        // environment.d file.
        let have =
            (cx.env)(var).with_context(|| format!("when: {c:?}: variable {var} is not set"))?;
        if (have == want.trim()) == negate {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A package name as apt and dnf take it: it starts with a letter, digit,
/// `_` or `@` (a dnf group, from a kickstart's `@core`), so it is never
/// read as an option (`-o APT::...` or `--setopt=...` would change what the
/// package manager does), and holds no space or control character. Versions and architectures (`name=1.2`,
/// `name:amd64`, `name-1.2.x86_64`) pass.
pub fn check_package_name(name: &str) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        bail!("{name:?} is not a package name (it must start with a letter, digit, _ or @, and hold no spaces)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_never_options() {
        for good in [
            "ironic-api",
            "python3-ironicclient",
            "g++",
            "pkg=1.2-1",
            "libc6:amd64",
            "_x",
            "@core",
        ] {
            assert!(check_package_name(good).is_ok(), "{good}");
        }
        for bad in [
            "-oAPT::Get::AllowUnauthenticated=1",
            "--setopt=gpgcheck=0",
            "",
            "a b",
            "a\nb",
            ".x",
        ] {
            let e = check_package_name(bad).unwrap_err().to_string();
            assert!(e.contains("is not a package name"), "{bad:?}: {e}");
        }
    }
    use std::path::PathBuf;

    fn cx_env(k: &str) -> Option<String> {
        match k {
            "DIB_FLAVOR" => Some("big".into()),
            "DIB_DEFAULT_INSTALLTYPE" => Some("package".into()),
            "DIB_INSTALLTYPE_src_el" => Some("source".into()),
            _ => None,
        }
    }

    fn cx() -> Filter<'static> {
        Filter {
            arch: "amd64",
            env: &cx_env,
        }
    }

    fn squash(files: &[(&str, &str)]) -> Result<BTreeMap<Phase, PhasePackages>> {
        let mut data = BTreeMap::new();
        for (el, text) in files {
            collect(&mut data, el, &parse(text)?, &cx())?;
        }
        Ok(data)
    }

    fn names(v: &[Wanted]) -> Vec<&str> {
        v.iter().map(|w| w.name.as_str()).collect()
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
package-only:
  installtype: package
big-only:
  when: DIB_FLAVOR=big
not-big:
  when: DIB_FLAVOR != big
build-tool:
  build-only: true
py2:
  dib_python_version: 2
both:
  - phase: install.d
  - phase: finalise.d
    when:
      - DIB_FLAVOR=big
      - DIB_FLAVOR!=small
";
        let m = squash(&[("el", text)]).unwrap();
        assert_eq!(
            names(&m[&Phase::Install].install),
            ["plain", "package-only", "big-only", "build-tool", "both"]
        );
        assert_eq!(names(&m[&Phase::Install].uninstall), ["gone", "build-tool"]);
        assert_eq!(names(&m[&Phase::PreInstall].install), ["phased"]);
        assert_eq!(names(&m[&Phase::Finalise].install), ["both"]);
        assert_eq!(m[&Phase::Install].install[0].element, "el");
    }

    #[test]
    fn installtype_follows_the_element() {
        let m = squash(&[(
            "src-el",
            "a:\n  installtype: source\nb:\n  installtype: package\n",
        )])
        .unwrap();
        assert_eq!(names(&m[&Phase::Install].install), ["a"]);
    }

    #[test]
    fn squash_rules_across_elements() {
        // One element removes what another installs without removing it:
        // the removal is dropped. An install cancels an earlier removal.
        let m = squash(&[
            ("a", "shared:\nold:\n  uninstall: true\n"),
            ("b", "shared:\n  uninstall: true\nold:\n"),
        ])
        .unwrap();
        assert_eq!(names(&m[&Phase::Install].install), ["shared", "old"]);
        assert!(m[&Phase::Install].uninstall.is_empty());
    }

    #[test]
    fn json_form_and_errors() {
        let m = squash(&[(
            "j",
            r#"{"libxml2": null, "grub2": {"phase": "pre-install.d"}}"#,
        )])
        .unwrap();
        assert_eq!(names(&m[&Phase::Install].install), ["libxml2"]);
        assert_eq!(names(&m[&Phase::PreInstall].install), ["grub2"]);
        assert!(parse("pkg:\n  phase: nowhere.d\n").is_err());
        assert!(parse("pkg:\n  colour: red\n").is_err());
        assert!(parse("pkg:\n  arch: amd64\n  not-arch: arm64\n").is_err());
        assert!(squash(&[("x", "pkg:\n  when: NOEQUALS\n")]).is_err());
        let e = format!(
            "{:#}",
            squash(&[("x", "pkg:\n  when: DIB_UNSET=1\n")]).unwrap_err()
        );
        assert!(e.contains("DIB_UNSET is not set"), "{e}");
        assert!(parse("").unwrap().is_empty());
    }

    #[test]
    fn legacy_lists_install_and_remove_dashed_names() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("el");
        std::fs::create_dir_all(dir.join("install.d/sub")).unwrap();
        std::fs::create_dir_all(dir.join("post-install.d")).unwrap();
        std::fs::write(
            dir.join("install.d/package-installs-el"),
            "# comment\n\nvim\n  -gcc  \ncurl wget\n",
        )
        .unwrap();
        std::fs::write(dir.join("install.d/package-installs-other"), "tree\n").unwrap();
        // Only the phase folder itself is searched, as dib's find -maxdepth 1.
        std::fs::write(dir.join("install.d/sub/package-installs-el"), "no\n").unwrap();
        std::fs::write(dir.join("post-install.d/package-installs-el"), "late").unwrap();
        let el = Element {
            name: "el".into(),
            dir,
            deps: vec![],
            provides: vec![],
            chain: crate::elements::Chain::root("el"),
        };
        let mut m = BTreeMap::new();
        collect_legacy(&mut m, &el, &[]).unwrap();
        let install = &m[&Phase::Install];
        assert_eq!(
            names(&install.install),
            ["vim", "gcc", "curl", "wget", "tree"]
        );
        assert_eq!(names(&install.uninstall), ["gcc"]);
        // The file's name says whose pkg-map applies.
        assert_eq!(install.install[4].element, "other");
        assert_eq!(names(&m[&Phase::PostInstall].install), ["late"]);

        let mut slot = PhasePackages::default();
        assert!(legacy_lines("--setopt=x\n", "el", &mut slot).is_err());
    }

    #[test]
    fn yaml_keeps_file_order() {
        let m = squash(&[("o", "zeta:\nalpha:\n'quoted':\n")]).unwrap();
        assert_eq!(
            names(&m[&Phase::Install].install),
            ["zeta", "alpha", "quoted"]
        );
        let _ = PathBuf::new();
    }
}
