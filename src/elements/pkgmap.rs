//! dib's `pkg-map`: per-element translation of generic package names into
//! a distro's names.
//!
//! An element's `pkg-map` file is JSON with up to four sections, most
//! specific last to apply: `default`, `family` (redhat: fedora, centos, rhel;
//! debian: debian, ubuntu; suse: opensuse; gentoo), `distro` (by
//! `DISTRO_NAME`) and `release` (by `DISTRO_NAME`, then `DIB_RELEASE`). A name
//! mapped to an empty string is dropped; a value may name several packages
//! separated by spaces. package-installs passes names without a mapping
//! through unchanged (dib's `--missing-ok`).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

type Section = BTreeMap<String, String>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    default: Section,
    #[serde(default)]
    family: BTreeMap<String, Section>,
    #[serde(default)]
    distro: BTreeMap<String, Section>,
    #[serde(default)]
    release: BTreeMap<String, BTreeMap<String, Section>>,
}

/// The distro family pkg-map uses for a `DISTRO_NAME`.
pub fn family(distro: &str) -> Option<&'static str> {
    match distro {
        "fedora" | "rhel" | "rhel7" | "centos" | "centos7" | "openeuler" => Some("redhat"),
        "debian" | "ubuntu" => Some("debian"),
        "opensuse" => Some("suse"),
        "gentoo" => Some("gentoo"),
        _ => None,
    }
}

/// One element's effective name map for a distro and release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PkgMap {
    names: BTreeMap<String, String>,
}

impl PkgMap {
    /// Read `<element>/pkg-map`; `None` when the element has none.
    pub fn load(element_dir: &Path, distro: &str, release: &str) -> Result<Option<PkgMap>> {
        let file = element_dir.join("pkg-map");
        let Some(text) =
            crate::io::read_text_bounded_opt(&file, super::MAX_ELEMENT_FILE, "element pkg-map")?
        else {
            return Ok(None);
        };
        PkgMap::parse(&text, distro, release)
            .map(Some)
            .with_context(|| format!("{}", file.display()))
    }

    pub fn parse(text: &str, distro: &str, release: &str) -> Result<PkgMap> {
        let f: File = serde_json::from_str(text).context("not a pkg-map JSON file")?;
        let mut names = f.default;
        if let Some(m) = family(distro).and_then(|fam| f.family.get(fam)) {
            names.extend(m.clone());
        }
        if let Some(m) = f.distro.get(distro) {
            names.extend(m.clone());
        }
        if let Some(m) = f.release.get(distro).and_then(|r| r.get(release)) {
            names.extend(m.clone());
        }
        Ok(PkgMap { names })
    }

    /// Every name the map knows and its packages (space-separated; empty
    /// for a name mapped to nothing), in name order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.names.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The distro's packages for `name`: the mapping if there is one (which
    /// may be none at all), else the name itself.
    pub fn translate(&self, name: &str) -> Vec<String> {
        match self.names.get(name) {
            Some(v) => v.split_whitespace().map(str::to_string).collect(),
            None => vec![name.to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = r#"{
      "release": { "fedora": { "23": { "nova_package": "foo bar" } } },
      "distro": { "fedora": { "nova_package": "openstack-compute",
                              "glance_package": "openstack-image" } },
      "family": { "redhat": { "nova_package": "openstack-nova",
                              "glance_package": "openstack-glance" },
                  "suse": { "nova_package": "" } },
      "default": { "nova_package": "nova", "glance_package": "glance" }
    }"#;

    fn t(distro: &str, release: &str, name: &str) -> Vec<String> {
        PkgMap::parse(MAP, distro, release).unwrap().translate(name)
    }

    #[test]
    fn most_specific_section_wins() {
        assert_eq!(t("fedora", "43", "nova_package"), ["openstack-compute"]);
        assert_eq!(t("fedora", "23", "nova_package"), ["foo", "bar"]);
        assert_eq!(t("rhel", "9", "nova_package"), ["openstack-nova"]);
        assert_eq!(t("centos", "9", "glance_package"), ["openstack-glance"]);
        assert_eq!(t("debian", "bookworm", "nova_package"), ["nova"]);
        assert!(t("opensuse", "15", "nova_package").is_empty());
        // No mapping at all: the name passes through.
        assert_eq!(t("debian", "bookworm", "vim"), ["vim"]);
    }

    #[test]
    fn bad_files_are_errors() {
        assert!(PkgMap::parse("{", "debian", "x").is_err());
        assert!(PkgMap::parse(r#"{"defaults": {}}"#, "debian", "x").is_err());
        assert!(PkgMap::parse(r#"{"default": {"a": 1}}"#, "debian", "x").is_err());
        assert!(PkgMap::parse("{}", "debian", "x").is_ok());
    }
}
