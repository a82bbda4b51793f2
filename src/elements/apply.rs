//! `undercloud-live elements apply|plan|deps|show`: elements on an existing
//! system, and what a set of elements will do.
//!
//! `apply --target /` runs hooks on the running system itself, without a
//! chroot; any other target folder gets the same chroot a build uses for the
//! in-root phases. A hook never runs on the host with only `TARGET_ROOT`
//! pointing at another root.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::hooks::Phase;
use super::plan::{self, Plan};
use super::run::{OutputLog, Runner, Target};
use super::{select, tree, Element, ElementSet};
use crate::chroot::Chroot;
use crate::progress::Progress;
use crate::spec::Distro;

/// Which elements, found where, for which distro.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    pub elements: Vec<String>,
    /// Left out, with what only they needed.
    pub exclude: Vec<String>,
    /// Searched first; `ELEMENTS_PATH` follows.
    pub elements_path: Vec<PathBuf>,
    pub distro: Option<Distro>,
    pub release: Option<String>,
    pub kickstart: Option<PathBuf>,
    pub kickstart_package_map: Option<PathBuf>,
    pub image_name: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub offline: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    pub selection: Selection,
    pub target: PathBuf,
    /// Phases to run (default: all).
    pub phases: Vec<Phase>,
    /// Hook names left out.
    pub exclude_hooks: Vec<String>,
    pub dry_run: bool,
    pub log: Option<PathBuf>,
}

impl Selection {
    fn path(&self) -> Vec<PathBuf> {
        select::elements_path(self.elements_path.clone())
    }

    fn request(&self) -> select::Request {
        select::Request {
            elements: self.elements.clone(),
            exclude: self.exclude.clone(),
            path: self.path(),
            kickstart: self.kickstart.clone(),
            kickstart_package_map: self.kickstart_package_map.clone(),
        }
    }

    /// Distro and release: given, else from the root's os-release.
    fn distro_release(&self, root: &Path) -> Result<(Distro, String)> {
        let detected = os_release(root);
        let distro = match (self.distro, &detected) {
            (Some(d), _) => d,
            (None, Ok((d, _))) => *d,
            (None, Err(e)) => bail!("{e:#}; give --distro"),
        };
        let release = match (&self.release, detected) {
            (Some(r), _) => r.clone(),
            (None, Ok((_, r))) if !r.is_empty() => r,
            _ => bail!(
                "cannot tell the release of {}; give --release",
                root.display()
            ),
        };
        Ok((distro, release))
    }
}

/// The distro and release named by `<root>/etc/os-release`.
pub fn os_release(root: &Path) -> Result<(Distro, String)> {
    let mut text = None;
    for rel in ["etc/os-release", "usr/lib/os-release"] {
        let p = tree::resolve_in_root_follow(root, Path::new(rel))?;
        // os-release is a few hundred bytes; the base image is not trusted
        // to keep it a small regular file.
        if let Ok(t) = crate::io::read_text_bounded(&p, 64 * 1024, "os-release") {
            text = Some(t);
            break;
        }
    }
    let text = text.with_context(|| format!("{} has no os-release", root.display()))?;
    crate::distro::from_os_release(&text).with_context(|| root.display().to_string())
}

/// Resolve the selection (warnings on standard error); with a kickstart,
/// generate its element into `work` and add it.
fn resolve_set(sel: &Selection, distro: Distro, release: &str, work: &Path) -> Result<ElementSet> {
    let selected = select::select(&sel.request(), distro)?;
    for w in selected.warnings(distro) {
        eprintln!("warning: {w}");
    }
    if let Some((loc, _)) = selected
        .kickstart
        .as_ref()
        .and_then(|(ks, _)| ks.bootloader.as_ref())
    {
        // livecd-creator puts these on the live medium; a root has none.
        eprintln!(
            "warning: {loc}: bootloader --append/--timeout not applied: elements apply makes no boot medium (build applies them)"
        );
    }
    selected.with_kickstart_element(distro, release, work)
}

fn context(sel: &Selection, distro: Distro, release: &str) -> plan::Context {
    let cache = sel
        .cache_dir
        .clone()
        .unwrap_or_else(crate::cache::default_cache_dir);
    let mut cx = plan::Context::new(
        distro,
        release,
        sel.image_name.as_deref().unwrap_or("image"),
        &cache,
    );
    cx.offline = sel.offline;
    cx
}

/// Run the selected elements' phases on `target`.
pub fn apply(opts: &ApplyOptions, progress: &Progress) -> Result<()> {
    let target = std::fs::canonicalize(&opts.target)
        .with_context(|| format!("target {}", opts.target.display()))?;
    if !target.is_dir() {
        bail!("target {} is not a folder", target.display());
    }
    let running = target == Path::new("/");
    let (distro, release) = opts.selection.distro_release(&target)?;
    let work = tempfile::Builder::new()
        .prefix("undercloud-live-apply-")
        .tempdir()
        .context("creating a work folder")?;
    let set = resolve_set(&opts.selection, distro, &release, work.path())?;
    let cx = context(&opts.selection, distro, &release);
    let log = OutputLog::new(opts.log.as_deref(), !progress.is_quiet())?;
    let plan = plan::make(&set, &cx)?;
    let mut runner = Runner::new(&set, &cx, plan, &target, progress, log)?;
    let unmatched = runner.exclude_hooks(&opts.exclude_hooks);
    for n in unmatched {
        eprintln!("warning: --exclude-hook {n}: no such hook in the plan");
    }
    let phases: Vec<Phase> = if opts.phases.is_empty() {
        Phase::ALL.to_vec()
    } else {
        opts.phases.clone()
    };
    if opts.dry_run {
        print!("{}", plan_text(runner.plan(), Some(&phases)));
        return Ok(());
    }
    crate::chroot::require_root("elements apply")?;
    progress.step(format!(
        "applying {} to {} ({} {release}{})",
        set.elements
            .iter()
            .map(|e| e.name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        target.display(),
        distro.name(),
        if running { ", the running system" } else { "" }
    ));
    let (before, cleanup): (Vec<Phase>, Vec<Phase>) =
        phases.iter().partition(|p| **p != Phase::Cleanup);
    let needs_root = before.iter().any(|p| {
        p.in_chroot()
            && runner
                .plan()
                .phase(*p)
                .is_some_and(|pp| !pp.steps.is_empty())
    });
    if running {
        runner.run(&before, Some(Target::Running))?;
    } else if needs_root {
        let chroot = Chroot::enter(&target)?;
        runner.run(&before, Some(Target::Chroot(&chroot)))?;
        chroot.close()?;
    } else {
        runner.run(&before, None)?;
    }
    runner.run(&cleanup, None)?;
    runner.finish(false)?;
    Ok(())
}

fn parse_distro(sel: &Selection) -> Result<(Distro, String)> {
    // Without a target, plan for the system we run on unless told.
    sel.distro_release(Path::new("/"))
}

/// `elements plan`: what will run, in what order, from which element.
pub fn plan(sel: &Selection, phases: &[Phase], json: bool) -> Result<String> {
    let (distro, release) = parse_distro(sel)?;
    let work = tempfile::tempdir().context("creating a work folder")?;
    let set = resolve_set(sel, distro, &release, work.path())?;
    let p = plan::make(&set, &context(sel, distro, &release))?;
    if json {
        let mut p = p;
        if !phases.is_empty() {
            p.phases.retain(|pp| phases.contains(&pp.phase));
        }
        return Ok(serde_json::to_string_pretty(&p)? + "\n");
    }
    Ok(plan_text(
        &p,
        if phases.is_empty() {
            None
        } else {
            Some(phases)
        },
    ))
}

pub fn plan_text(p: &Plan, phases: Option<&[Phase]>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "elements: {}", p.elements.join(" "));
    if !p.environment.is_empty() {
        let _ = writeln!(
            s,
            "environment.d (sourced before every hook): {}",
            p.environment
                .iter()
                .map(|(e, f)| format!("{e}/{f}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for it in &p.install_types {
        let _ = writeln!(
            s,
            "install-types: install.d/{} of {} linked into install.d ({})",
            it.folder, it.element, it.chosen_by
        );
    }
    for pp in &p.phases {
        if phases.is_some_and(|ps| !ps.contains(&pp.phase)) {
            continue;
        }
        let host = pp
            .steps
            .iter()
            .filter(|st| matches!(st, plan::Step::OutsideHook { .. }))
            .count();
        let where_ = match (pp.in_chroot, host) {
            (true, 0) => "inside".to_string(),
            // Steps from outside/ run on the host in an inside phase.
            (true, n) => format!("inside; {n} on the build host"),
            (false, _) => "outside".to_string(),
        };
        if pp.steps.is_empty() {
            let _ = writeln!(s, "{} ({where_}): nothing", pp.phase.dir());
            continue;
        }
        let note = if pp.phase == Phase::BlockDevice {
            ", skipped: a live image has no block device"
        } else {
            ""
        };
        let _ = writeln!(s, "{} ({where_}{note}):", pp.phase.dir());
        for st in &pp.steps {
            let _ = writeln!(
                s,
                "  {:<28} {:<20} {}",
                st.name(),
                st.from(),
                match st {
                    plan::Step::Hook { path, .. } => path.display().to_string(),
                    // Honest about where it runs in a phase marked inside.
                    plan::Step::OutsideHook { path, .. } => {
                        format!("{} (on the build host)", path.display())
                    }
                    other => other.describe(),
                }
            );
        }
    }
    s
}

#[derive(Serialize)]
struct DepsReport<'a> {
    elements: &'a [Element],
    builtins: Vec<(&'a str, &'a str)>,
    provided: &'a std::collections::BTreeMap<String, String>,
    warnings: &'a [String],
}

/// `elements deps`: the expanded set, where each element was found and the
/// chain that asked for it.
pub fn deps(sel: &Selection, json: bool) -> Result<String> {
    let (distro, _) = parse_distro(sel)?;
    let set = super::resolve(&sel.elements, &sel.exclude, &sel.path(), distro)?;
    let builtins: Vec<(&str, &str)> = super::BUILTIN
        .iter()
        .filter(|(n, _)| set.builtins.iter().any(|b| b == n))
        .copied()
        .collect();
    if json {
        return Ok(serde_json::to_string_pretty(&DepsReport {
            elements: &set.elements,
            builtins,
            provided: &set.provided,
            warnings: &set.warnings,
        })? + "\n");
    }
    let mut s = String::new();
    for e in &set.elements {
        let _ = writeln!(
            s,
            "{:<24} {}  (via {})",
            e.name,
            e.dir.display(),
            e.chain.join(" -> ")
        );
    }
    for (n, what) in builtins {
        let _ = writeln!(s, "{n:<24} built in: {what}");
    }
    for (n, by) in &set.provided {
        if by == super::EXCLUDED {
            let _ = writeln!(s, "{n:<24} left out ({by})");
        } else {
            let _ = writeln!(s, "{n:<24} provided by {by}");
        }
    }
    for w in &set.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    Ok(s)
}

#[derive(Serialize)]
struct ShowReport<'a> {
    element: &'a Element,
    files: Vec<String>,
    plan: &'a Plan,
}

/// `elements show NAME`: one element's files and what it does on its own.
pub fn show(sel: &Selection, name: &str, json: bool) -> Result<String> {
    let (distro, release) = parse_distro(sel)?;
    super::check_name(name)?;
    let dir = super::find(name, &sel.path()).with_context(|| {
        format!(
            "element {name:?} not found; elements path: {}",
            sel.path()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        )
    })?;
    let el = Element::load(name, &dir, vec![name.to_string()])?;
    let set = ElementSet {
        elements: vec![el.clone()],
        path: sel.path(),
        ..Default::default()
    };
    let p = plan::make(&set, &context(sel, distro, &release))?;
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    if json {
        return Ok(serde_json::to_string_pretty(&ShowReport {
            element: &el,
            files,
            plan: &p,
        })? + "\n");
    }
    let mut s = String::new();
    let _ = writeln!(s, "element:  {name}");
    let _ = writeln!(s, "folder:   {}", dir.display());
    let _ = writeln!(s, "deps:     {}", el.deps.join(" "));
    let _ = writeln!(s, "provides: {}", el.provides.join(" "));
    let _ = writeln!(s, "files:    {}", files.join(" "));
    s.push_str(&plan_text(&p, None));
    Ok(s)
}
