//! The one way an element set and a kickstart are chosen, for `build` and
//! for `elements apply|plan|deps|show` alike: the same elements path rule,
//! the same checks on the kickstart, the same warnings, and the kickstart
//! made into the same generated element.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::{Element, ElementSet};
use crate::kickstart::{self, translate::PackageMap, Kickstart};
use crate::spec::Distro;

/// What to choose from.
#[derive(Clone, Debug, Default)]
pub struct Request {
    pub elements: Vec<String>,
    /// Left out, with what only they needed.
    pub exclude: Vec<String>,
    /// The folders searched, first wins (see [`elements_path`]).
    pub path: Vec<PathBuf>,
    pub kickstart: Option<PathBuf>,
    pub kickstart_package_map: Option<PathBuf>,
}

/// The resolved set and the parsed kickstart with its package map.
#[derive(Clone, Debug)]
pub struct Selected {
    pub set: ElementSet,
    pub kickstart: Option<(Kickstart, PackageMap)>,
}

/// The elements path: the folders given (command line, then spec), then
/// `$ELEMENTS_PATH`, whose empty entries are skipped (dib's lists are often
/// built as `$ELEMENTS_PATH:more`, leaving a leading colon).
pub fn elements_path(given: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut path = given;
    if let Some(env) = std::env::var_os("ELEMENTS_PATH") {
        path.extend(std::env::split_paths(&env).filter(|p| !p.as_os_str().is_empty()));
    }
    path
}

/// Resolves the elements and reads the kickstart: every check that needs
/// no root (names, dependencies, the kickstart's syntax and package names).
pub fn select(req: &Request, distro: Distro) -> Result<Selected> {
    let set = super::resolve(&req.elements, &req.exclude, &req.path, distro)?;
    let kickstart = match &req.kickstart {
        Some(file) => Some(load_kickstart(
            file,
            req.kickstart_package_map.as_deref(),
            &set,
            distro,
        )?),
        None => None,
    };
    Ok(Selected { set, kickstart })
}

fn load_kickstart(
    file: &Path,
    map_file: Option<&Path>,
    set: &ElementSet,
    distro: Distro,
) -> Result<(Kickstart, PackageMap)> {
    let map = match map_file {
        Some(f) => PackageMap::load(f)?,
        None => PackageMap::default(),
    };
    let ks = kickstart::parse_file(file)?;
    // Package names are checked now, before any download.
    kickstart::translate::package_list(&ks, distro, &map)?;
    if set.get(kickstart::translate::ELEMENT).is_some() {
        bail!(
            "an element named {:?} is in the set; the kickstart runs under that name",
            kickstart::translate::ELEMENT
        );
    }
    Ok((ks, map))
}

impl Selected {
    /// The set's warnings, then the kickstart's (what it says that we do
    /// not apply).
    pub fn warnings(&self, distro: Distro) -> Vec<String> {
        let mut w = self.set.warnings.clone();
        if let Some((ks, _)) = &self.kickstart {
            w.extend(ks.warnings.iter().cloned());
            w.extend(kickstart::translate::warnings(ks, distro));
        }
        w
    }

    /// The set with the kickstart, if any, generated into `work` as one
    /// more element after the others.
    pub fn with_kickstart_element(
        &self,
        distro: Distro,
        release: &str,
        work: &Path,
    ) -> Result<ElementSet> {
        let mut set = self.set.clone();
        if let Some((ks, map)) = &self.kickstart {
            let name = kickstart::translate::ELEMENT;
            let dir = work.join(name);
            kickstart::translate::generate(ks, distro, release, map, &dir)?;
            set.elements
                .push(Element::load(name, &dir, vec![name.to_string()])?);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kickstart_becomes_the_last_element_and_its_warnings_follow_the_sets() {
        let t = tempfile::tempdir().unwrap();
        let ks = t.path().join("a.ks");
        std::fs::write(
            &ks,
            "%packages\nvim\n%end\n%post\necho hi\n%end\nmodule --name=nodejs --stream=18\n",
        )
        .unwrap();
        let req = Request {
            kickstart: Some(ks),
            ..Default::default()
        };
        let sel = select(&req, Distro::Debian).unwrap();
        let set = sel
            .with_kickstart_element(Distro::Debian, "trixie", t.path())
            .unwrap();
        let last = set.elements.last().unwrap();
        assert_eq!(last.name, kickstart::translate::ELEMENT);
        assert!(last.dir.starts_with(t.path()));
        assert!(
            sel.warnings(Distro::Debian)
                .iter()
                .any(|w| w.contains("debian has no DNF modules")),
            "{:?}",
            sel.warnings(Distro::Debian)
        );
    }

    #[test]
    fn an_element_with_the_kickstarts_name_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let name = kickstart::translate::ELEMENT;
        std::fs::create_dir_all(t.path().join(name)).unwrap();
        let ks = t.path().join("a.ks");
        std::fs::write(&ks, "%post\ntrue\n%end\n").unwrap();
        let req = Request {
            elements: vec![name.to_string()],
            path: vec![t.path().to_path_buf()],
            kickstart: Some(ks),
            ..Default::default()
        };
        let e = select(&req, Distro::Debian).unwrap_err().to_string();
        assert!(e.contains("the kickstart runs under that name"), "{e}");
    }
}
