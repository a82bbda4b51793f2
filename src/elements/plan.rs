//! What applying an element set does, phase by phase, before anything runs.
//!
//! The plan is the single answer to "what runs, in what order, from which
//! element": `elements plan` prints it and the runner executes it. Besides
//! the elements' hooks it holds the work dib's helper elements do at their
//! own run-parts positions (package-installs at `01`/`10`/`00`, removals at
//! `99`/`95`, install-bin at pre-install.d `01`, install-static at install.d
//! `10`), so hooks numbered around them run in the same order as under dib.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::buildenv::{self, BuildDirs};
use super::hooks::{self, Phase};
use super::packages::{self, PhasePackages};
use super::pkgmap::PkgMap;
use super::ElementSet;
use crate::spec::Distro;
use crate::system::command::Task;
use crate::system::sandbox::{self, Sandbox};

/// dib's `ARCH` for this machine: dib standardises x86-64 as `amd64` for
/// every distro (its Fedora/CentOS root.d scripts map it back locally).
pub const DIB_ARCH: &str = "amd64";

/// The facts hooks and filters see.
#[derive(Clone, Debug)]
pub struct Context {
    pub distro: Distro,
    pub release: String,
    pub image_name: String,
    pub cache_dir: PathBuf,
    pub offline: bool,
    /// The caller's DIB_* variables (dib passes them through its sanitised
    /// environment).
    pub caller_env: Vec<(String, String)>,
    /// The build host's python (dib's `DIB_PYTHON_EXEC`, which dib sets to
    /// the python running it).
    pub python: String,
}

impl Context {
    pub fn new(distro: Distro, release: &str, image_name: &str, cache_dir: &Path) -> Context {
        let mut caller_env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("DIB_"))
            .collect();
        caller_env.sort();
        Context {
            distro,
            release: release.to_string(),
            image_name: image_name.to_string(),
            cache_dir: cache_dir.to_path_buf(),
            offline: false,
            caller_env,
            python: host_python(),
        }
    }

    /// dib's hook environment. `hooks_path` is TMP_HOOKS_PATH as the hook
    /// sees it; `target_root` is given to hooks that run outside the root;
    /// `dirs` are the run's folders (none while planning).
    pub fn hook_env(
        &self,
        set: &ElementSet,
        hooks_path: &str,
        target_root: Option<&Path>,
        dirs: Option<&BuildDirs>,
    ) -> Vec<(String, String)> {
        let names: Vec<&str> = set.elements.iter().map(|e| e.name.as_str()).collect();
        // IMAGE_ELEMENT_YAML: dib's name -> path map of the set.
        let yaml: String = set
            .elements
            .iter()
            .map(|e| format!("{}: {}\n", e.name, e.dir.display()))
            .collect();
        let path: Vec<String> = set.path.iter().map(|p| p.display().to_string()).collect();
        let mut env: Vec<(String, String)> = vec![
            ("DISTRO_NAME".into(), self.distro.name().into()),
            ("DIB_RELEASE".into(), self.release.clone()),
            ("ARCH".into(), DIB_ARCH.into()),
            ("DIB_INIT_SYSTEM".into(), "systemd".into()),
            ("DIB_DEFAULT_INSTALLTYPE".into(), "source".into()),
            ("DIB_PYTHON_VERSION".into(), "3".into()),
            // dib-python's environment.d: the interpreter by name (hooks
            // say `$DIB_PYTHON -m venv`).
            ("DIB_PYTHON".into(), "python3".into()),
            ("DIB_PYTHON_EXEC".into(), self.python.clone()),
            ("IMAGE_NAME".into(), self.image_name.clone()),
            ("IMAGE_ELEMENT".into(), names.join(" ")),
            ("IMAGE_ELEMENT_YAML".into(), yaml),
            ("ELEMENTS_PATH".into(), path.join(":")),
            ("TMP_HOOKS_PATH".into(), hooks_path.into()),
            (
                "DIB_IMAGE_CACHE".into(),
                self.cache_dir.display().to_string(),
            ),
            (
                "DIB_OFFLINE".into(),
                if self.offline { "1" } else { "" }.into(),
            ),
            ("DIB_DEBUG_TRACE".into(), "0".into()),
        ];
        env.extend(buildenv::functions(set));
        if let Some(d) = dirs {
            env.extend(d.env());
        }
        if let Some(root) = target_root {
            env.push(("TARGET_ROOT".into(), root.display().to_string()));
            env.push(("TMP_MOUNT_PATH".into(), root.display().to_string()));
        }
        for (k, v) in &self.caller_env {
            env.retain(|(e, _)| e != k);
            env.push((k.clone(), v.clone()));
        }
        env
    }
}

/// Hook variables whose values name folders of one machine or run (they
/// move between builds of the same inputs, so caches do not key on them).
pub const FOLDER_VARS: &[&str] = &[
    "IMAGE_ELEMENT_YAML",
    "ELEMENTS_PATH",
    "BASH_FUNC_get_image_element_array%%",
    "TMP_BUILD_DIR",
    "TMP_IMAGE_DIR",
    "_LIB",
];

/// The build host's python3 (hooks run it outside the root), by PATH.
fn host_python() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/bin", "/usr/bin", "/bin"])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join("python3"))
        .find(|p| p.is_file());
    found
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "python3".to_string())
}

/// An element's systemd units (dib-init-system's folder for
/// DIB_INIT_SYSTEM=systemd).
pub const INIT_SCRIPTS: &str = "init-scripts/systemd";

/// Where dib-init-system puts systemd units in the root.
pub const SYSTEMD_UNITS: &str = "usr/lib/systemd/system";

/// One thing a phase does, in run order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// An element's hook script.
    Hook {
        name: String,
        element: String,
        path: PathBuf,
    },
    /// An element's hook from `<phase>.d/outside/`: it runs on the build
    /// host with `TARGET_ROOT`, at its place in the order of a phase that
    /// otherwise runs inside the root (a kickstart's `%post --nochroot`).
    OutsideHook {
        name: String,
        element: String,
        path: PathBuf,
    },
    /// One package-manager call installing these (translated) names.
    Install {
        name: String,
        packages: Vec<String>,
        elements: Vec<String>,
    },
    /// One package-manager call removing these.
    Uninstall {
        name: String,
        packages: Vec<String>,
        elements: Vec<String>,
    },
    /// bin/ folders copied to /usr/local/bin.
    Bin { name: String, elements: Vec<String> },
    /// static/ trees copied into the root.
    Static { name: String, elements: Vec<String> },
    /// init-scripts/systemd/ units copied to the root's systemd unit folder
    /// (dib-init-system's work).
    InitScripts { name: String, elements: Vec<String> },
}

impl Step {
    /// The run-parts name the step sorts by.
    pub fn name(&self) -> &str {
        match self {
            Step::Hook { name, .. }
            | Step::OutsideHook { name, .. }
            | Step::Install { name, .. }
            | Step::Uninstall { name, .. }
            | Step::Bin { name, .. }
            | Step::Static { name, .. }
            | Step::InitScripts { name, .. } => name,
        }
    }

    /// Who the step is from: the element, or the built-in helper.
    pub fn from(&self) -> String {
        match self {
            Step::Hook { element, .. } | Step::OutsideHook { element, .. } => element.clone(),
            Step::Install { .. } | Step::Uninstall { .. } => "package-installs".into(),
            Step::Bin { .. } => "install-bin".into(),
            Step::Static { .. } => "install-static".into(),
            Step::InitScripts { .. } => "dib-init-system".into(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Step::Hook { element, name, .. } => format!("{element}/{name}"),
            Step::OutsideHook { element, name, .. } => {
                format!("{element}/{name} (on the build host)")
            }
            Step::Install { packages, .. } => format!("install {}", packages.join(" ")),
            Step::Uninstall { packages, .. } => format!("remove {}", packages.join(" ")),
            Step::Bin { elements, .. } => format!("bin/ of {}", elements.join(" ")),
            Step::Static { elements, .. } => format!("static/ of {}", elements.join(" ")),
            Step::InitScripts { elements, .. } => {
                format!("{INIT_SCRIPTS}/ of {}", elements.join(" "))
            }
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PhasePlan {
    pub phase: Phase,
    /// Runs inside the root (a chroot, or the running system itself).
    pub in_chroot: bool,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub elements: Vec<String>,
    /// environment.d files, in sourcing order (element, file).
    pub environment: Vec<(String, String)>,
    /// install.d sub-folders install-types links into install.d.
    pub install_types: Vec<hooks::InstallType>,
    pub phases: Vec<PhasePlan>,
}

impl Plan {
    pub fn phase(&self, phase: Phase) -> Option<&PhasePlan> {
        self.phases.iter().find(|p| p.phase == phase)
    }
}

/// Where dib's package-installs element puts its work in each phase.
fn package_positions(phase: Phase) -> Option<(&'static str, &'static str)> {
    match phase {
        Phase::PreInstall => Some(("10-package-installs", "99-package-uninstalls")),
        Phase::Install => Some(("01-package-installs", "99-package-uninstalls")),
        Phase::PostInstall => Some(("00-package-installs", "95-package-uninstalls")),
        // dib installs nothing here; we allow it with install.d's positions.
        Phase::Finalise => Some(("01-package-installs", "99-package-uninstalls")),
        _ => None,
    }
}

/// Evaluate the elements' environment.d files on top of `base` the way
/// hooks will see them, for `when:` filters (dib squashes package-installs
/// in a hook, after sourcing them). Planning only reads, so the files run
/// in a sandbox (crate::system::sandbox) that can read the elements and the
/// host's /usr and /etc, and write nothing of the host.
fn sourced_env(
    files: &[(String, PathBuf)],
    base: &[(String, String)],
    elements: &[&Path],
) -> Result<BTreeMap<String, String>> {
    let mut map: BTreeMap<String, String> = base.iter().cloned().collect();
    if files.is_empty() {
        return Ok(map);
    }
    let sandbox = Sandbox::new(elements.iter().copied())?;
    let mut cmd = std::process::Command::new("/bin/bash");
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(base.iter().cloned())
        .arg("-c")
        .arg(SOURCE_ALL)
        .arg("environment.d");
    for (_, p) in files {
        // The sandbox starts in its own `/`: relative names would miss.
        // (and the real path: the folders are bound by theirs).
        cmd.arg(std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))?);
    }
    sandbox.confine(&mut cmd);
    // Whatever the status: a failure is explained from stderr below.
    let out = Task::new("bash sourcing environment.d files", &mut cmd).output()?;
    if let Some(why) = sandbox::explain_failure(&out.stderr) {
        bail!("sourcing environment.d files: {why}");
    }
    if !out.status.success() {
        bail!("{}", env_failure(files, &out));
    }
    for item in out.stdout.split(|b| *b == 0) {
        let item = String::from_utf8_lossy(item);
        if let Some((k, v)) = item.split_once('=') {
            map.insert(k.to_string(), v.to_string());
        }
    }
    Ok(map)
}

/// Source every file given, then print the environment. The files are
/// sourced under `set -eu` and `set -o pipefail`, the options dib-run-parts
/// holds when it sources them before each phase's hooks: a file that reads
/// an unset variable or has a failing command stops dib's build, so it stops
/// the plan. A file's own output goes to stderr (stdout carries the
/// result); when one ends the shell (`exit`, a failed command, an unset
/// variable), the trap names it by its position so that the error can say
/// which file of which element it was.
const SOURCE_ALL: &str = r#"set -eu
set -o pipefail
__ucl_n=0
trap 'rc=$?; [ "$__ucl_n" -gt 0 ] && echo "ucl-environment.d-failed:$__ucl_n:$rc" >&2' EXIT
for __ucl_f in "$@"; do __ucl_n=$((__ucl_n + 1)); . "$__ucl_f" >&2; done
__ucl_n=0
env -0"#;

/// The error of an environment.d run that failed: the file (element and
/// name), its exit status and what it printed.
fn env_failure(files: &[(String, PathBuf)], out: &std::process::Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let mut said: Vec<&str> = Vec::new();
    let mut which = None;
    for line in text.lines() {
        match line.strip_prefix("ucl-environment.d-failed:") {
            Some(rest) => which = rest.split(':').next().and_then(|n| n.parse::<usize>().ok()),
            None => said.push(line),
        }
    }
    let file = which
        .and_then(|n| files.get(n.checked_sub(1)?))
        .map(|(name, path)| {
            let element = path
                .parent()
                .and_then(Path::parent)
                .and_then(Path::file_name)
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("element {element:?}: environment.d/{name}")
        })
        .unwrap_or_else(|| "environment.d".to_string());
    // One line: the last few lines it printed are what explain it.
    let said = said[said.len().saturating_sub(10)..].join("; ");
    let said = said.trim();
    if said.is_empty() {
        format!("{file} failed ({}) and printed nothing", out.status)
    } else {
        format!("{file} failed ({}): {said}", out.status)
    }
}

/// One phase's packages: the deprecated lists' before package-installs'.
fn legacy_first(
    legacy: Option<PhasePackages>,
    yaml: Option<PhasePackages>,
) -> Option<PhasePackages> {
    match (legacy, yaml) {
        (Some(mut l), Some(y)) => {
            l.install.extend(y.install);
            l.uninstall.extend(y.uninstall);
            Some(l)
        }
        (l, y) => l.or(y),
    }
}

/// Work out every phase's steps for `set`.
pub fn make(set: &ElementSet, cx: &Context) -> Result<Plan> {
    let env_files = hooks::environment_files(&set.elements)?;
    let mut base_env = cx.hook_env(set, "/tmp/in_target.d", None, None);
    base_env.extend(buildenv::planning_dirs_env());
    let dirs: Vec<&Path> = set.elements.iter().map(|e| e.dir.as_path()).collect();
    let env = sourced_env(&env_files, &base_env, &dirs)?;
    let install_types = hooks::install_types(&set.elements, &env)?;
    let mut wanted = WantedPackages::gather(set, cx, &env, &install_types)?;
    let mut phases = Vec::new();
    for phase in Phase::ALL {
        let mut steps = hook_steps(set, phase, &install_types)?;
        steps.extend(wanted.steps(phase)?);
        steps.extend(helper_steps(set, phase));
        // Stable: on a tie the built-in step (pushed last) runs after the
        // element's hook of the same number and name order.
        steps.sort_by(|a, b| hooks::sort_n(a.name(), b.name()));
        phases.push(PhasePlan {
            phase,
            in_chroot: phase.in_chroot(),
            steps,
        });
    }
    Ok(Plan {
        elements: set.elements.iter().map(|e| e.name.clone()).collect(),
        environment: env_files
            .iter()
            .map(|(n, p)| (owner_of(set, p), n.clone()))
            .collect(),
        install_types,
        phases,
    })
}

/// The element whose folder holds `path` (an environment.d file).
fn owner_of(set: &ElementSet, path: &Path) -> String {
    set.elements
        .iter()
        .find(|e| path.starts_with(&e.dir))
        .map(|e| e.name.clone())
        .unwrap_or_default()
}

/// The elements' hooks of `phase`, in and outside the root.
fn hook_steps(
    set: &ElementSet,
    phase: Phase,
    install_types: &[hooks::InstallType],
) -> Result<Vec<Step>> {
    Ok(hooks::collect(&set.elements, phase, install_types)?
        .into_iter()
        .map(|h| match h.outside {
            false => Step::Hook {
                name: h.name,
                element: h.element,
                path: h.path,
            },
            true => Step::OutsideHook {
                name: h.name,
                element: h.element,
                path: h.path,
            },
        })
        .collect())
}

/// install-bin, install-static and dib-init-system's work, at the
/// positions of their dib hooks, for the elements that have such folders.
fn helper_steps(set: &ElementSet, phase: Phase) -> Vec<Step> {
    let with = |sub: &str| -> Vec<String> {
        set.elements
            .iter()
            .filter(|e| e.dir.join(sub).is_dir())
            .map(|e| e.name.clone())
            .collect()
    };
    let mut steps = Vec::new();
    let mut push = |elements: Vec<String>, step: fn(Vec<String>) -> Step| {
        if !elements.is_empty() {
            steps.push(step(elements));
        }
    };
    match phase {
        Phase::PreInstall => push(with("bin"), |elements| Step::Bin {
            name: "01-install-bin".into(),
            elements,
        }),
        Phase::Install => {
            push(with("static"), |elements| Step::Static {
                name: "10-install-static-files".into(),
                elements,
            });
            // dib-init-system's install.d hook, for DIB_INIT_SYSTEM=systemd.
            push(with(INIT_SCRIPTS), |elements| Step::InitScripts {
                name: "20-install-init-scripts".into(),
                elements,
            });
        }
        _ => {}
    }
    steps
}

/// What the set's package-installs files (and their deprecated
/// package-installs-* lists) ask for, phase by phase, with each element's
/// pkg-map to translate the names.
struct WantedPackages {
    lists: BTreeMap<Phase, PhasePackages>,
    legacy: BTreeMap<Phase, PhasePackages>,
    maps: BTreeMap<String, Option<PkgMap>>,
}

impl WantedPackages {
    fn gather(
        set: &ElementSet,
        cx: &Context,
        env: &BTreeMap<String, String>,
        install_types: &[hooks::InstallType],
    ) -> Result<WantedPackages> {
        let lookup = |k: &str| env.get(k).cloned();
        let filter = packages::Filter {
            arch: DIB_ARCH,
            env: &lookup,
        };
        let mut w = WantedPackages {
            lists: BTreeMap::new(),
            legacy: BTreeMap::new(),
            maps: BTreeMap::new(),
        };
        for el in &set.elements {
            packages::collect_legacy(&mut w.legacy, el, install_types)
                .with_context(|| format!("element {:?}: package-installs-* lists", el.name))?;
            let entries = packages::read(el).with_context(|| format!("element {:?}", el.name))?;
            packages::collect(&mut w.lists, &el.name, &entries, &filter)
                .with_context(|| format!("element {:?}: package-installs", el.name))?;
            let map = PkgMap::load(&el.dir, cx.distro.name(), &cx.release)
                .with_context(|| format!("element {:?}", el.name))?;
            w.maps.insert(el.name.clone(), map);
        }
        if set.builtins.iter().any(|b| b == "dib-python") {
            // dib-python's pre-install.d hook installs python3 for its link
            // (on Debian; elsewhere it expects one): the link is always
            // there, and with the element in the set what it names is too.
            w.lists
                .entry(Phase::PreInstall)
                .or_default()
                .install
                .push(packages::Wanted {
                    name: "python3".into(),
                    element: "dib-python".into(),
                });
        }
        Ok(w)
    }

    /// The install and removal steps of `phase` (taken: each phase once).
    fn steps(&mut self, phase: Phase) -> Result<Vec<Step>> {
        // dib installs the deprecated lists first, in a call of their own.
        let Some(p) = legacy_first(self.legacy.remove(&phase), self.lists.remove(&phase)) else {
            return Ok(Vec::new());
        };
        let Some((at_install, at_remove)) = package_positions(phase) else {
            if !p.install.is_empty() || !p.uninstall.is_empty() {
                bail!(
                    "package-installs: phase {} runs outside the root; packages can be installed in pre-install.d, install.d, post-install.d or finalise.d",
                    phase.dir()
                );
            }
            return Ok(Vec::new());
        };
        let mut steps = Vec::new();
        let (install, from) = self.translate(&p.install);
        if !install.is_empty() {
            steps.push(Step::Install {
                name: at_install.into(),
                packages: install,
                elements: from,
            });
        }
        let (remove, from) = self.translate(&p.uninstall);
        if !remove.is_empty() {
            steps.push(Step::Uninstall {
                name: at_remove.into(),
                packages: remove,
                elements: from,
            });
        }
        Ok(steps)
    }

    /// Names through each element's pkg-map, first-seen order kept, and the
    /// elements that asked.
    fn translate(&self, wanted: &[packages::Wanted]) -> (Vec<String>, Vec<String>) {
        let mut names: Vec<String> = Vec::new();
        let mut from: Vec<String> = Vec::new();
        for w in wanted {
            let out = match self.maps.get(&w.element).and_then(Option::as_ref) {
                Some(m) => m.translate(&w.name),
                None => vec![w.name.clone()],
            };
            for n in out {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            if !from.contains(&w.element) {
                from.push(w.element.clone());
            }
        }
        (names, from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elements::{Chain, Element};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, rel: &str, text: &str, mode: u32) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn init_scripts_and_legacy_lists_at_dibs_positions() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("el");
        write(&dir, "install.d/15-x", "#!/bin/sh\n", 0o755);
        write(&dir, "install.d/25-y", "#!/bin/sh\n", 0o755);
        write(
            &dir,
            "install.d/package-installs-el",
            "greeting\n-gcc\n",
            0o644,
        );
        write(&dir, "package-installs.yaml", "vim:\n", 0o644);
        write(
            &dir,
            "pkg-map",
            r#"{"default": {"greeting": "hello"}}"#,
            0o644,
        );
        write(&dir, "static/etc/x", "x", 0o644);
        write(&dir, "init-scripts/systemd/x.service", "[Unit]\n", 0o644);
        let set = ElementSet {
            elements: vec![Element {
                name: "el".into(),
                dir,
                deps: vec![],
                provides: vec![],
                chain: Chain::root("el"),
            }],
            ..Default::default()
        };
        let cx = Context::new(Distro::Debian, "bookworm", "image", t.path());
        let plan = make(&set, &cx).unwrap();
        let install = plan.phase(Phase::Install).unwrap();
        let steps: Vec<String> = install
            .steps
            .iter()
            .map(|s| format!("{} {} {}", s.name(), s.from(), s.describe()))
            .collect();
        assert_eq!(
            steps,
            [
                "01-package-installs package-installs install hello gcc vim",
                "10-install-static-files install-static static/ of el",
                "15-x el el/15-x",
                "20-install-init-scripts dib-init-system init-scripts/systemd/ of el",
                "25-y el el/25-y",
                "99-package-uninstalls package-installs remove gcc",
            ]
        );
    }

    #[test]
    fn hook_env_has_dibs_variables_and_folders() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(&root).unwrap();
        let set = ElementSet {
            path: vec!["/a".into(), "/b".into()],
            ..Default::default()
        };
        let mut cx = Context::new(Distro::Debian, "bookworm", "image", t.path());
        let dirs = BuildDirs::new(&root, &root.join("tmp/in_target.d")).unwrap();
        let env = cx.hook_env(&set, "/tmp/in_target.d", Some(&root), Some(&dirs));
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{k} missing"))
        };
        assert_eq!(get("ELEMENTS_PATH"), "/a:/b");
        assert!(!get("DIB_PYTHON_EXEC").is_empty());
        assert_eq!(get("DIB_PYTHON"), "python3");
        let build = PathBuf::from(get("TMP_BUILD_DIR"));
        assert_eq!(fs::read_link(build.join("mnt")).unwrap(), root);
        assert!(Path::new(&get("TMP_IMAGE_DIR")).is_dir());
        assert!(Path::new(&get("_LIB")).join("img-functions").is_file());
        assert!(get("BASH_FUNC_die%%").starts_with("() {"));
        // Planning has no run folders; the caller's DIB_* still wins.
        cx.caller_env = vec![("DIB_PYTHON_EXEC".into(), "/opt/py".into())];
        let env = cx.hook_env(&set, "/tmp/in_target.d", None, None);
        assert!(!env
            .iter()
            .any(|(n, _)| n == "TMP_BUILD_DIR" || n == "TARGET_ROOT"));
        assert!(env.contains(&("DIB_PYTHON_EXEC".into(), "/opt/py".into())));
    }

    /// install-types' folders, as dib's 99-enable-install-types picks
    /// them: the default type, a DIB_INSTALLTYPE_<prefix> variable (from
    /// the caller or environment.d) that keeps the default from applying
    /// even when its folder is missing; the chosen folder's hooks and
    /// deprecated lists count as install.d's, its data files are no hooks.
    #[test]
    fn install_types_link_the_chosen_folders() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("el");
        write(&dir, "install.d/50-common", "#!/bin/sh\n", 0o755);
        write(
            &dir,
            "install.d/el-source-install/60-from-source",
            "#!/bin/sh\n",
            0o755,
        );
        write(
            &dir,
            "install.d/el-source-install/el.service",
            "[Unit]\n",
            0o644,
        );
        write(
            &dir,
            "install.d/el-package-install/package-installs-el",
            "el-pkg\n",
            0o644,
        );
        write(
            &dir,
            "install.d/other-source-install/70-other",
            "#!/bin/sh\n",
            0o755,
        );
        write(
            &dir,
            "install.d/third-source-install/80-third",
            "#!/bin/sh\n",
            0o755,
        );
        // The prefix is the folder's: `other` is chosen by its own variable
        // (set in environment.d), for which no folder exists.
        write(
            &dir,
            "environment.d/10-types",
            "export DIB_INSTALLTYPE_other=repo\n",
            0o644,
        );
        let set = ElementSet {
            elements: vec![Element {
                name: "el".into(),
                dir,
                deps: vec![],
                provides: vec![],
                chain: Chain::root("el"),
            }],
            ..Default::default()
        };
        let mut cx = Context::new(Distro::Debian, "bookworm", "image", t.path());
        cx.caller_env.clear();
        let install = |cx: &Context| -> (Vec<String>, Vec<String>) {
            let plan = make(&set, cx).unwrap();
            let folders = plan
                .install_types
                .iter()
                .map(|i| i.folder.clone())
                .collect();
            let steps = plan
                .phase(Phase::Install)
                .unwrap()
                .steps
                .iter()
                .map(|s| format!("{} {}", s.name(), s.describe()))
                .collect();
            (folders, steps)
        };
        let (folders, steps) = install(&cx);
        assert_eq!(folders, ["el-source-install", "third-source-install"]);
        assert_eq!(
            steps,
            [
                "50-common el/50-common",
                "60-from-source el/60-from-source",
                "80-third el/80-third"
            ]
        );
        cx.caller_env = vec![("DIB_INSTALLTYPE_el".into(), "package".into())];
        let (folders, steps) = install(&cx);
        assert_eq!(folders, ["el-package-install", "third-source-install"]);
        assert_eq!(
            steps,
            [
                "01-package-installs install el-pkg",
                "50-common el/50-common",
                "80-third el/80-third"
            ]
        );
        cx.caller_env = vec![("DIB_DEFAULT_INSTALLTYPE".into(), "package".into())];
        let (folders, _) = install(&cx);
        assert_eq!(folders, ["el-package-install"]);
    }
}
