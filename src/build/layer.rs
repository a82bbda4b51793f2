//! The package layer: the root as it stands after its last package
//! installation, cached so that a build whose packages did not change
//! starts from it (mkosi's `Incremental=`).
//!
//! The element plan is split after its last package step: everything up to
//! there (the base, outside hooks, pre-install.d hooks such as debconf
//! answers or repository files, dib's package-installs) is the layer; the
//! rest (static files, install.d hooks after `01`, the kickstart's %post,
//! finalise.d) runs on every build. The layer is cached with the staged
//! element tree in it, so what extra-data.d hooks left there for later
//! hooks is still there; the current element files are copied over it.
//!
//! The key holds everything that can change the layer: the base archive's
//! bytes, distro, release and mirror, the hook environment, every
//! environment.d file, and each step up to the split: a hook's script, a
//! package list (after the package map), a static/ or bin/ tree copied
//! before it. It does not hold what the mirror publishes later (a rebuild
//! with `--no-cache` picks up new package versions), nor files a hook
//! reads from other places (docs/cache.md says so).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::prepare::Prepared;
use crate::cache::{Key, Kind, Store};
use crate::elements::{
    hooks::Phase,
    plan::{self, Plan, Step},
    run::{self, IN_TARGET},
    tools, ElementSet,
};
use crate::progress::Progress;
use crate::rootfs;

/// Bump when what a layer holds changes meaning.
const FORMAT: &str = "package-layer v1";

/// The plan cut in two after its last package step. `None` when the plan
/// installs and removes no packages: nothing is worth caching then.
pub fn split(full: &Plan) -> Option<(Plan, Plan)> {
    let is_pkg = |s: &Step| matches!(s, Step::Install { .. } | Step::Uninstall { .. });
    let (last_phase, last_step) = full
        .phases
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, pp)| pp.steps.iter().rposition(is_pkg).map(|j| (i, j)))?;
    let mut layer = full.clone();
    let mut rest = full.clone();
    for (i, (lp, rp)) in layer
        .phases
        .iter_mut()
        .zip(rest.phases.iter_mut())
        .enumerate()
    {
        match i.cmp(&last_phase) {
            std::cmp::Ordering::Less => rp.steps.clear(),
            std::cmp::Ordering::Equal => {
                lp.steps.truncate(last_step + 1);
                rp.steps.drain(..=last_step);
            }
            std::cmp::Ordering::Greater => lp.steps.clear(),
        }
    }
    Some((layer, rest))
}

/// The layer's key (module comment: what is in it).
pub fn key(
    p: &Prepared,
    set: &ElementSet,
    cx: &plan::Context,
    layer: &Plan,
    base_archive: &Path,
) -> Result<Key> {
    let spec = &p.loaded.spec;
    let mut k = Key::new(FORMAT);
    k.str("distro", spec.base.distro.name());
    k.str("release", &spec.base.release);
    k.str("mirror", spec.base.mirror.as_deref().unwrap_or(""));
    k.file("base", base_archive)?;
    // Some variables name element folders, which move (the kickstart's is
    // made in the work folder): the names are in IMAGE_ELEMENT.
    for (name, value) in cx.hook_env(set, &format!("/{IN_TARGET}"), None, None) {
        if !plan::FOLDER_VARS.contains(&name.as_str()) {
            k.str(&format!("env {name}"), &value);
        }
    }
    // What hooks in the layer ran as install-packages, pkg-map (with the
    // pkg-maps) and dib-python.
    for (rel, text) in tools::scripts(set, cx)? {
        k.str(rel, &text);
    }
    k.str(tools::DIB_PYTHON.0, tools::DIB_PYTHON.1);
    // Which install.d sub-folders' files appear in install.d.
    for it in &layer.install_types {
        k.str("install-type", &format!("{}/{}", it.element, it.folder));
    }
    for (el, file) in &layer.environment {
        let dir = set
            .get(el)
            .with_context(|| format!("element {el:?} is not in the set"))?;
        k.file(
            &format!("environment.d {el}/{file}"),
            &dir.dir.join("environment.d").join(file),
        )?;
    }
    for pp in &layer.phases {
        for step in &pp.steps {
            let label = format!("{}/{} {}", pp.phase.dir(), step.name(), step.describe());
            k.str("step", &label);
            match step {
                Step::Hook { path, .. } | Step::OutsideHook { path, .. } => k.file(&label, path)?,
                Step::Static { elements, .. }
                | Step::Bin { elements, .. }
                | Step::InitScripts { elements, .. } => {
                    let sub = match step {
                        Step::Bin { .. } => "bin",
                        Step::InitScripts { .. } => plan::INIT_SCRIPTS,
                        _ => "static",
                    };
                    for name in elements {
                        if let Some(el) = set.get(name) {
                            k.tree(&format!("{label} {name}"), &el.dir.join(sub))?;
                        }
                    }
                }
                Step::Install { .. } | Step::Uninstall { .. } => {}
            }
        }
    }
    Ok(k)
}

/// Replaces the root with the cached layer.
pub fn restore(entry: &Path, root: &Path, progress: &Progress) -> Result<()> {
    let t = Instant::now();
    crate::chroot::remove_tree(root)?;
    std::fs::create_dir(root).with_context(|| format!("creating {}", root.display()))?;
    let stats = rootfs::unpack::unpack(entry, root, progress)
        .with_context(|| format!("restoring the package layer {}", entry.display()))?;
    progress.step(format!(
        "package layer restored: {} entries, {} in {:.1} s",
        stats.entries,
        crate::progress::human_bytes(stats.bytes),
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Readies the root (chroot closed, runner left staged) to be the layer:
/// the downloaded packages go, in every build, so a build from the cache
/// and one without it go on from the same tree.
pub fn settle(root: &Path, distro: crate::spec::Distro) -> Result<()> {
    run::clear(root, distro.facts().packages.downloads())
}

/// Stores the settled root as the layer for `key`. A cache that cannot be
/// written costs the next build time, not this one its image: a failure is
/// a warning.
pub fn save(store: &Store, name: &str, key: &Key, root: &Path, progress: &Progress) {
    let t = Instant::now();
    match store.put(Kind::Layer, name, key, |tmp| rootfs::pack::pack(root, tmp)) {
        Ok(entry) => progress.step(format!(
            "package layer cached: {} ({}, {:.1} s)",
            entry.display(),
            crate::progress::human_bytes(size(&entry)),
            t.elapsed().as_secs_f64()
        )),
        Err(e) => eprintln!("warning: the package layer was not cached: {e:#}"),
    }
}

fn size(p: &PathBuf) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// For the build log: the phases a layer covers.
pub fn describe(layer: &Plan) -> String {
    let phases: Vec<&str> = layer
        .phases
        .iter()
        .filter(|pp| !pp.steps.is_empty() && pp.phase != Phase::Cleanup)
        .map(|pp| pp.phase.dir())
        .collect();
    let steps: usize = layer.phases.iter().map(|pp| pp.steps.len()).sum();
    format!("{steps} steps of {}", phases.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elements::plan::PhasePlan;

    fn hook(n: &str) -> Step {
        Step::Hook {
            name: n.into(),
            element: "e".into(),
            path: PathBuf::from(n),
        }
    }

    fn install(n: &str) -> Step {
        Step::Install {
            name: n.into(),
            packages: vec!["p".into()],
            elements: vec!["e".into()],
        }
    }

    fn plan(phases: Vec<(Phase, Vec<Step>)>) -> Plan {
        Plan {
            elements: vec!["e".into()],
            environment: vec![],
            install_types: vec![],
            phases: phases
                .into_iter()
                .map(|(phase, steps)| PhasePlan {
                    phase,
                    in_chroot: phase.in_chroot(),
                    steps,
                })
                .collect(),
        }
    }

    fn names(p: &Plan) -> Vec<String> {
        p.phases
            .iter()
            .flat_map(|pp| pp.steps.iter().map(|s| s.name().to_string()))
            .collect()
    }

    #[test]
    fn splits_after_the_last_package_step() {
        let full = plan(vec![
            (Phase::ExtraData, vec![hook("10-fetch")]),
            (
                Phase::PreInstall,
                vec![hook("05-debconf"), install("10-package-installs")],
            ),
            (
                Phase::Install,
                vec![
                    install("01-package-installs"),
                    hook("10-static"),
                    hook("70-x"),
                ],
            ),
            (Phase::PostInstall, vec![hook("90-post")]),
        ]);
        let (layer, rest) = split(&full).unwrap();
        assert_eq!(
            names(&layer),
            [
                "10-fetch",
                "05-debconf",
                "10-package-installs",
                "01-package-installs"
            ]
        );
        assert_eq!(names(&rest), ["10-static", "70-x", "90-post"]);
        assert_eq!(layer.phases.len(), full.phases.len());
        assert_eq!(
            describe(&layer),
            "4 steps of extra-data.d, pre-install.d, install.d"
        );
    }

    #[test]
    fn no_packages_no_layer() {
        let full = plan(vec![(Phase::Install, vec![hook("50-x")])]);
        assert!(split(&full).is_none());
    }
}
