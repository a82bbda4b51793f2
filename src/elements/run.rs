//! Applying a plan to a root, phase by phase.
//!
//! Every element's files are staged, merged as dib merges them, in the
//! root's `/tmp/in_target.d`: that is `TMP_HOOKS_PATH` for every hook, so
//! data an outside hook (extra-data.d) leaves there is what an inside hook
//! reads. Hooks of pre-install, install, post-install and finalise run
//! inside the root: through a `Chroot` of a root folder, or directly when
//! the target is the running system (`/`). A hook never runs on the host
//! with only `TARGET_ROOT` pointing at another root, unless it is an
//! outside hook (`<phase>.d/outside/`, see `hooks::OUTSIDE`), which says so. block-device.d has
//! nothing to act on in a live image and is skipped with a note.
//!
//! Output of every hook and package-manager call is streamed line by line
//! with an `[element phase/hook]` prefix to the terminal and to the log.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};

use super::buildenv::BuildDirs;
use super::hooks::{self, Phase};
use super::packages;
use super::plan::{self, Plan, Step};
use super::ElementSet;
use super::{tools, tree};
use crate::chroot::{self, Chroot};
use crate::interrupt;
use crate::progress::Progress;

/// Where inside the root the merged element tree is staged (dib's path,
/// which some elements rely on).
pub const IN_TARGET: &str = "tmp/in_target.d";

/// Hook output: to the terminal (unless quiet) and to a log file.
#[derive(Clone, Default)]
pub struct OutputLog {
    file: Option<Arc<Mutex<File>>>,
    echo: bool,
}

impl OutputLog {
    pub fn new(path: Option<&Path>, echo: bool) -> Result<OutputLog> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                Some(Arc::new(Mutex::new(
                    File::create(p).with_context(|| format!("creating log {}", p.display()))?,
                )))
            }
            None => None,
        };
        Ok(OutputLog { file, echo })
    }

    /// One line of output from `prefix` (`marker install.d/50-marker`).
    pub fn line(&self, prefix: &str, text: &str) {
        let line = format!("[{prefix}] {text}");
        // Hook output on stdout, our own progress on stderr.
        if self.echo {
            println!("{line}");
        }
        self.write(&line);
    }

    /// A line of our own (phase headers, notes), to the log only: the
    /// terminal gets them through `Progress`.
    pub fn note(&self, text: &str) {
        self.write(&format!("==> {text}"));
    }

    fn write(&self, line: &str) {
        if let Some(f) = &self.file {
            if let Ok(mut f) = f.lock() {
                // A full disk must not stop the build over a log line.
                let _ = writeln!(f, "{line}");
            }
        }
    }
}

/// How in-chroot phases reach the root.
#[derive(Clone, Copy)]
pub enum Target<'a> {
    /// A root folder, through a chroot of it.
    Chroot(&'a Chroot),
    /// The running system itself (`--target /`): no chroot.
    Running,
}

pub struct Runner<'a> {
    pub set: &'a ElementSet,
    pub cx: &'a plan::Context,
    root: PathBuf,
    /// The staged tree on the host (`<root>/tmp/in_target.d`).
    staged: PathBuf,
    plan: Plan,
    progress: &'a Progress,
    log: OutputLog,
    refreshed: bool,
    is_staged: bool,
    /// Stage over a staged tree that is already there (the package
    /// layer's, restored or just made) instead of refusing it.
    resume: bool,
    /// TMP_BUILD_DIR and the rest, made when the first phase runs.
    dirs: Option<BuildDirs>,
    /// install-packages is in the root.
    has_tools: bool,
}

impl<'a> Runner<'a> {
    /// A runner of `plan` (made by `plan::make` for `set`, or a part of
    /// one: the build runs its package layer and the rest separately).
    pub fn new(
        set: &'a ElementSet,
        cx: &'a plan::Context,
        plan: Plan,
        root: &Path,
        progress: &'a Progress,
        log: OutputLog,
    ) -> Result<Self> {
        let staged = tree::resolve_in_root(root, Path::new(IN_TARGET))?;
        Ok(Runner {
            set,
            cx,
            root: root.to_path_buf(),
            staged,
            plan,
            progress,
            log,
            refreshed: false,
            is_staged: false,
            resume: false,
            dirs: None,
            has_tools: false,
        })
    }

    /// Continue from a runner that `leave_staged`: the staged tree (with
    /// what extra-data.d hooks left in it) is kept and every element's
    /// files are copied over it again, so edited files win.
    pub fn resuming(mut self) -> Self {
        self.resume = true;
        self
    }

    /// Stop without removing the staged tree: a `resuming` runner goes on
    /// from it.
    pub fn leave_staged(mut self) {
        self.is_staged = false;
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Leave out hooks with these names (`50-foo`, or `install.d/50-foo`
    /// for one phase). Returns the names that matched nothing.
    pub fn exclude_hooks(&mut self, names: &[String]) -> Vec<String> {
        let mut unmatched = Vec::new();
        for n in names {
            let (phase, hook) = match n.split_once('/') {
                Some((p, h)) => (Phase::from_dir(p), h),
                None => (None, n.as_str()),
            };
            let mut hit = false;
            for pp in &mut self.plan.phases {
                if phase.is_some_and(|p| p != pp.phase) {
                    continue;
                }
                pp.steps.retain(|s| {
                    let drop = matches!(s, Step::Hook { name, .. } | Step::OutsideHook { name, .. } if name == hook);
                    hit |= drop;
                    !drop
                });
            }
            if !hit {
                unmatched.push(n.clone());
            }
        }
        unmatched
    }

    /// Run `phases` in dib's order. In-chroot phases with work need
    /// `target`.
    pub fn run(&mut self, phases: &[Phase], target: Option<Target>) -> Result<()> {
        let mut phases = phases.to_vec();
        phases.sort();
        phases.dedup();
        if !self.is_staged {
            self.stage()?;
        }
        if self.dirs.is_none() {
            self.dirs = Some(BuildDirs::new(&self.root, &self.staged)?);
        }
        for phase in phases {
            interrupt::check()?;
            self.run_phase(phase, target)?;
        }
        Ok(())
    }

    /// Copy every element's tree into the staging folder, later elements
    /// over earlier ones, as dib builds its hooks tree.
    fn stage(&mut self) -> Result<()> {
        let exists = fs::symlink_metadata(&self.staged).is_ok();
        if exists && self.resume && self.staged.is_dir() && !self.staged.is_symlink() {
            self.is_staged = true;
            for el in &self.set.elements {
                tree::copy_tree(&el.dir, &self.staged, Path::new(""))
                    .with_context(|| format!("element {:?}: staging its files", el.name))?;
            }
            return self.link_install_types();
        }
        if exists {
            bail!(
                "{} already exists (a run in progress, or left by a failed one): remove it first",
                self.staged.display()
            );
        }
        let tmp = tree::resolve_in_root_follow(&self.root, Path::new("tmp"))?;
        if !tmp.is_dir() {
            fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        }
        fs::create_dir(&self.staged)
            .with_context(|| format!("creating {}", self.staged.display()))?;
        self.is_staged = true;
        for el in &self.set.elements {
            tree::copy_tree(&el.dir, &self.staged, Path::new(""))
                .with_context(|| format!("element {:?}: staging its files", el.name))?;
        }
        self.link_install_types()
    }

    /// install-types' links: every file of a chosen install.d sub-folder
    /// appears in the staged install.d under its name, as a relative
    /// symlink (dib's `ln -sf <folder>/* .`), so its hooks run from
    /// install.d and find their data files and package lists beside them
    /// (`$(dirname $0)`), inside the root and out.
    fn link_install_types(&self) -> Result<()> {
        let install = self.staged.join(Phase::Install.dir());
        for it in &self.plan.install_types {
            let dir = install.join(&it.folder);
            let mut names: Vec<_> = fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("reading {}", dir.display()))?;
            names.sort();
            for name in names {
                // `*` leaves out dot files.
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let target = Path::new(&it.folder).join(&name);
                tree::symlink_in_root(&install, Path::new(&name), &target).with_context(|| {
                    format!(
                        "element {:?}: linking install.d/{} for install-types",
                        it.element,
                        target.display()
                    )
                })?;
            }
        }
        Ok(())
    }

    fn run_phase(&mut self, phase: Phase, target: Option<Target>) -> Result<()> {
        let Some(pp) = self.plan.phase(phase).cloned() else {
            return Ok(());
        };
        if pp.steps.is_empty() {
            return Ok(());
        }
        if phase == Phase::BlockDevice {
            // A live image has no block device while it is built; hooks
            // here would partition a disk that does not exist.
            let msg = "block-device.d: skipped (a live image has no block device)";
            self.progress.step(msg);
            self.log.note(msg);
            return Ok(());
        }
        let target = if phase.in_chroot() {
            Some(target.with_context(|| {
                format!(
                    "{} runs inside the root, which is not prepared",
                    phase.dir()
                )
            })?)
        } else {
            None
        };
        if target.is_some() && !self.has_tools {
            // Going on from the package layer, the root has them already
            // (the layer is keyed by them), perhaps replaced by an
            // element's own bin/install-packages, which must stay.
            tools::install(&self.root, &tools::scripts(self.set, self.cx)?, self.resume)?;
            self.has_tools = true;
        }
        let header = format!(
            "{}: {}",
            phase.dir(),
            pp.steps
                .iter()
                .map(Step::describe)
                .collect::<Vec<_>>()
                .join(", ")
        );
        self.progress.step(&header);
        self.log.note(&header);
        for step in &pp.steps {
            interrupt::check()?;
            match step {
                Step::Hook { name, element, .. } => {
                    self.hook(phase, element, name, target)?;
                }
                Step::OutsideHook { name, element, .. } => {
                    self.hook_outside(phase, element, name, true)?;
                }
                Step::Install { name, packages, .. } => {
                    self.packages(phase, name, packages, true, target)?;
                }
                Step::Uninstall { name, packages, .. } => {
                    self.packages(phase, name, packages, false, target)?;
                }
                Step::Bin { elements, .. } => self.copy_dirs("bin", elements)?,
                Step::InitScripts { elements, .. } => {
                    self.copy_dirs(plan::INIT_SCRIPTS, elements)?
                }
                Step::Static { elements, .. } => {
                    self.copy_dirs("static", elements)?;
                    // New repository files may have come with them.
                    self.refreshed = false;
                }
            }
        }
        Ok(())
    }

    /// A hook of `phase`: inside the root for an in-root phase (`target`
    /// given), else on the build host.
    fn hook(&self, phase: Phase, element: &str, name: &str, target: Option<Target>) -> Result<()> {
        let Some(t) = target else {
            return self.hook_outside(phase, element, name, false);
        };
        let inner = format!("/{IN_TARGET}");
        let env = self.cx.hook_env(self.set, &inner, None, self.dirs.as_ref());
        let mut argv = vec![
            "/bin/bash".to_string(),
            "-c".to_string(),
            SOURCE_ENV_AND_EXEC.to_string(),
            format!("{inner}/{}/{name}", phase.dir()),
        ];
        for (element, file) in &self.plan.environment {
            argv.push(env_label(element, file));
            argv.push(format!("{inner}/environment.d/{file}"));
        }
        let mut cmd = self.inside(t, &argv, &env);
        let status = stream(
            &mut cmd,
            &hook_what(phase, element, name, false),
            &format!("{element} {}/{name}", phase.dir()),
            &self.log,
        )?;
        hook_status(phase, element, name, status)
    }

    /// A hook on the build host with `TARGET_ROOT`: one of an outside phase,
    /// or (`in_outside`) one from `<phase>.d/outside/`.
    fn hook_outside(
        &self,
        phase: Phase,
        element: &str,
        name: &str,
        in_outside: bool,
    ) -> Result<()> {
        let hooks_path = self.staged.display().to_string();
        let env = self
            .cx
            .hook_env(self.set, &hooks_path, Some(&self.root), self.dirs.as_ref());
        let mut script = self.staged.join(phase.dir());
        let mut label = format!("{element} {}/", phase.dir());
        if in_outside {
            script.push(hooks::OUTSIDE);
            label.push_str(hooks::OUTSIDE);
            label.push('/');
        }
        label.push_str(name);
        let mut cmd = Command::new("/bin/bash");
        cmd.current_dir(&self.staged)
            .env_clear()
            .env("PATH", self.outside_path())
            .env(
                "HOME",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into()),
            )
            .env("LANG", "C.UTF-8")
            .envs(env)
            .arg("-c")
            .arg(SOURCE_ENV_AND_EXEC)
            .arg(script.join(name));
        for (element, file) in &self.plan.environment {
            cmd.arg(env_label(element, file));
            cmd.arg(self.staged.join("environment.d").join(file));
        }
        let what = hook_what(phase, element, name, in_outside);
        let status = stream(&mut cmd, &what, &label, &self.log)?;
        hook_status(phase, element, name, status)
    }

    /// PATH for hooks outside the root: the host's, then our stand-ins.
    fn outside_path(&self) -> String {
        let mut p = host_path();
        if let Some(d) = &self.dirs {
            p.push(':');
            p.push_str(&d.bin().display().to_string());
        }
        p
    }

    /// A command inside the root: through the chroot, or directly on the
    /// running system with the same clean environment.
    fn inside(&self, target: Target, argv: &[String], env: &[(String, String)]) -> Command {
        match target {
            Target::Chroot(c) => c.command(argv, env),
            Target::Running => {
                let mut cmd = Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .current_dir("/")
                    .env_clear()
                    .envs(chroot::base_env())
                    .envs(env.iter().cloned());
                cmd
            }
        }
    }

    fn packages(
        &mut self,
        phase: Phase,
        name: &str,
        pkgs: &[String],
        install: bool,
        target: Option<Target>,
    ) -> Result<()> {
        let Some(t) = target else {
            bail!("{}: packages need the root prepared", phase.dir());
        };
        // Whatever produced the list (package-installs, pkg-map, a
        // kickstart's %packages), nothing reaches the package manager as an
        // option.
        for p in pkgs {
            packages::check_package_name(p).with_context(|| format!("{}: {name}", phase.dir()))?;
        }
        let pm = self.cx.distro.facts().packages;
        let tool = pm.program();
        let prefix = format!("package-installs {}/{name}", phase.dir());
        if install && !self.refreshed {
            let what = format!("{tool} metadata refresh");
            let mut cmd = self.inside(t, &pm.refresh(), &[]);
            let st = stream(&mut cmd, &what, &prefix, &self.log)?;
            if !st.success() {
                bail!("{what} failed ({st})");
            }
            self.refreshed = true;
        }
        let argv = if install {
            pm.install(pkgs)
        } else {
            pm.uninstall(pkgs)
        };
        let what = format!(
            "{tool} {} for {} ({})",
            if install { "install" } else { "remove" },
            phase.dir(),
            pkgs.join(" ")
        );
        let mut cmd = self.inside(t, &argv, &[]);
        let st = stream(&mut cmd, &what, &prefix, &self.log)?;
        if !st.success() {
            bail!("{what} failed ({st})");
        }
        Ok(())
    }

    fn copy_dirs(&self, sub: &str, elements: &[String]) -> Result<()> {
        for name in elements {
            let Some(el) = self.set.get(name) else {
                continue;
            };
            let src = el.dir.join(sub);
            let dest = match sub {
                "bin" => PathBuf::from("usr/local/bin"),
                plan::INIT_SCRIPTS => PathBuf::from(plan::SYSTEMD_UNITS),
                _ => PathBuf::new(),
            };
            if !dest.as_os_str().is_empty() {
                fs::create_dir_all(tree::resolve_in_root_follow(&self.root, &dest)?)
                    .with_context(|| format!("creating /{} in the root", dest.display()))?;
            }
            let n = tree::copy_tree(&src, &self.root, &dest)
                .with_context(|| format!("element {name:?}: copying {sub}/"))?;
            let msg = format!("{name}: {n} files from {sub}/");
            self.progress.step(&msg);
            self.log.note(&msg);
        }
        Ok(())
    }

    /// Remove the staged tree; with `clean_caches`, also the package
    /// manager's caches and logs (an image should not carry them, and
    /// removing them keeps two builds byte-identical).
    pub fn finish(&mut self, clean_caches: bool) -> Result<()> {
        self.unstage()?;
        if !clean_caches {
            return Ok(());
        }
        clear(&self.root, self.cx.distro.facts().packages.leftovers())
    }

    fn unstage(&mut self) -> Result<()> {
        if self.is_staged {
            self.is_staged = false;
            if fs::symlink_metadata(&self.staged).is_ok() {
                fs::remove_dir_all(&self.staged)
                    .with_context(|| format!("removing {}", self.staged.display()))?;
            }
        }
        Ok(())
    }
}

/// Empties each of `rels` in `root` (a folder keeps itself and any
/// `partial/` inside, which apt expects; a file is removed).
pub fn clear(root: &Path, rels: &[&str]) -> Result<()> {
    for rel in rels {
        let p = tree::resolve_in_root(root, Path::new(rel))?;
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                for e in fs::read_dir(&p).with_context(|| format!("reading {}", p.display()))? {
                    let e = e.with_context(|| format!("reading {}", p.display()))?;
                    let ep = e.path();
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        if ep.file_name().is_some_and(|n| n == "partial") {
                            continue;
                        }
                        fs::remove_dir_all(&ep)
                    } else {
                        fs::remove_file(&ep)
                    }
                    .with_context(|| format!("removing {}", ep.display()))?;
                }
            }
            Ok(_) => fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?,
            Err(_) => {}
        }
    }
    Ok(())
}

impl Drop for Runner<'_> {
    /// A failed run on an existing system must not leave the staged hooks
    /// (which may hold secrets such as a kickstart's passwords) behind.
    fn drop(&mut self) {
        if let Err(e) = self.unstage() {
            eprintln!("warning: {e:#}");
        }
    }
}

fn hook_what(phase: Phase, element: &str, name: &str, in_outside: bool) -> String {
    let sub = if in_outside { "outside/" } else { "" };
    format!("hook {}/{sub}{name} of element {element:?}", phase.dir())
}

fn hook_status(
    phase: Phase,
    element: &str,
    name: &str,
    status: std::process::ExitStatus,
) -> Result<()> {
    if !status.success() {
        bail!(
            "element {element:?}: hook {}/{name} failed ({status})",
            phase.dir()
        );
    }
    Ok(())
}

fn host_path() -> String {
    let mut p = std::env::var("PATH").unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        if !p.split(':').any(|x| x == d) {
            if !p.is_empty() {
                p.push(':');
            }
            p.push_str(d);
        }
    }
    p
}

/// Run `cmd`, streaming its stdout and stderr line by line to `log` with
/// `prefix`; killed with its process group on interrupt.
pub fn stream(
    cmd: &mut Command,
    what: &str,
    prefix: &str,
    log: &OutputLog,
) -> Result<std::process::ExitStatus> {
    // One pipe for both streams keeps a hook's lines in the order it wrote
    // them (an error message right after the output it explains).
    let (reader, writer) = nix::unistd::pipe().context("creating a pipe")?;
    let writer2 = writer.try_clone().context("creating a pipe")?;
    cmd.stdout(Stdio::from(writer)).stderr(Stdio::from(writer2));
    let child = interrupt::spawn(cmd, what);
    // Our copies of the write end must close, or the reader never ends.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let child = child?;
    let threads: Vec<_> = [File::from(reader)]
        .into_iter()
        .map(|r| {
            let log = log.clone();
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                let mut r = BufReader::new(r);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&buf);
                            log.line(&prefix, text.trim_end_matches(['\n', '\r']));
                        }
                    }
                }
            })
        })
        .collect();
    let status = interrupt::wait(child, what);
    // After an interrupt a grandchild may still hold the pipe; the process
    // group is killed by then, so the readers finish.
    for t in threads {
        let _ = t.join();
    }
    status
}

/// Source environment.d files and exec the hook given as $0, the way
/// dib-run-parts does it: under `set -eu` and `set -o pipefail` (its own
/// options while it sources them), so an unset variable or a failing
/// command in a file stops the hook as it stops dib. The files come after
/// the hook as (label, path) pairs in dib's order; the label (`element
/// "x": environment.d/20-y`) names a file that ends the shell.
const SOURCE_ENV_AND_EXEC: &str = r#"hook=$0
set -eu
set -o pipefail
trap 'echo "${__ucl_what:-environment.d} failed (exit status $?) before $hook ran" >&2' EXIT
while [ $# -gt 1 ]; do
    __ucl_what=$1
    if [ -f "$2" ]; then . "$2"; fi
    shift 2
done
trap - EXIT
exec "$hook""#;

/// The label `SOURCE_ENV_AND_EXEC` gives an environment.d file.
fn env_label(element: &str, name: &str) -> String {
    format!("element {element:?}: environment.d/{name}")
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::elements::Element;
    use crate::spec::Distro;

    /// Hooks of `post-install.d/outside/` run on the host with TARGET_ROOT,
    /// in name order, inside an in-root phase (no chroot needed for them).
    #[test]
    fn outside_hooks_run_on_the_host_in_order() {
        let t = tempfile::tempdir().unwrap();
        let el = t.path().join("el");
        let out = el.join("post-install.d/outside");
        fs::create_dir_all(&out).unwrap();
        for (name, word) in [("20-b", "b"), ("10-a", "a")] {
            let p = out.join(name);
            let script = format!(
                "#!/bin/sh\necho \"{word} $0\" >> \"$TARGET_ROOT/order\"\necho ran-{word}\n"
            );
            fs::write(&p, script).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        let set = ElementSet {
            elements: vec![Element::load("el", &el, vec!["el".to_string()]).unwrap()],
            builtins: vec![],
            provided: Default::default(),
            warnings: vec![],
            path: vec![],
        };
        let cx = plan::Context::new(Distro::Debian, "bookworm", "t", t.path());
        let progress = Progress::silent();
        let log_file = t.path().join("log");
        let log = OutputLog::new(Some(&log_file), false).unwrap();
        let mut r = Runner::new(
            &set,
            &cx,
            plan::make(&set, &cx).unwrap(),
            &root,
            &progress,
            log,
        )
        .unwrap();
        r.run(&[Phase::PostInstall], Some(Target::Running)).unwrap();
        r.finish(false).unwrap();
        let order = fs::read_to_string(root.join("order")).unwrap();
        let staged = root.join(IN_TARGET).join("post-install.d/outside");
        assert_eq!(
            order,
            format!(
                "a {}\nb {}\n",
                staged.join("10-a").display(),
                staged.join("20-b").display()
            )
        );
        let log = fs::read_to_string(&log_file).unwrap();
        assert!(
            log.contains("[el post-install.d/outside/10-a] ran-a"),
            "{log}"
        );
        assert!(!root.join(IN_TARGET).exists());
    }

    /// Hooks source environment.d as dib-run-parts does, under `set -eu`:
    /// a file reading an unset variable stops the hook before it runs, and
    /// the output names the file's element and name.
    #[test]
    fn an_unset_variable_in_environment_d_stops_the_hook() {
        let t = tempfile::tempdir().unwrap();
        let el = t.path().join("el");
        fs::create_dir_all(el.join("environment.d")).unwrap();
        fs::create_dir_all(el.join("root.d")).unwrap();
        let env_file = el.join("environment.d/10-x");
        fs::write(&env_file, "export UCL_X=1\n").unwrap();
        let hook = el.join("root.d/10-hook");
        fs::write(&hook, "#!/bin/sh\ntouch \"$TARGET_ROOT/ran\"\n").unwrap();
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        let set = ElementSet {
            elements: vec![Element::load("el", &el, vec!["el".to_string()]).unwrap()],
            ..Default::default()
        };
        let cx = plan::Context::new(Distro::Debian, "bookworm", "t", t.path());
        let plan = plan::make(&set, &cx).unwrap();
        // Planned while the file was fine; it breaks before the run.
        fs::write(&env_file, "export UCL_X=$UCL_NEVER_SET\n").unwrap();
        let progress = Progress::silent();
        let log_file = t.path().join("log");
        let log = OutputLog::new(Some(&log_file), false).unwrap();
        let mut r = Runner::new(&set, &cx, plan, &root, &progress, log).unwrap();
        let e = format!("{:#}", r.run(&[Phase::Root], None).unwrap_err());
        assert_eq!(
            e,
            "element \"el\": hook root.d/10-hook failed (exit status: 1)"
        );
        assert!(!root.join("ran").exists());
        let log = fs::read_to_string(&log_file).unwrap();
        assert!(
            log.contains("UCL_NEVER_SET: unbound variable")
                && log
                    .contains("element \"el\": environment.d/10-x failed (exit status 1) before "),
            "{log}"
        );
    }

    /// install-types' folders are linked into the staged install.d as dib
    /// links them: relative links, hooks and data files alike.
    #[test]
    fn install_types_folders_are_linked_when_staged() {
        let t = tempfile::tempdir().unwrap();
        let el = t.path().join("el");
        let sub = el.join("install.d/el-source-install");
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("60-hook"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(sub.join("60-hook"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(sub.join("el.service"), "[Unit]\n").unwrap();
        fs::create_dir_all(el.join("install.d/el-package-install")).unwrap();
        fs::write(
            el.join("install.d/el-package-install/package-installs-el"),
            "x\n",
        )
        .unwrap();
        let root = t.path().join("root");
        fs::create_dir(&root).unwrap();
        let set = ElementSet {
            elements: vec![Element::load("el", &el, vec!["el".to_string()]).unwrap()],
            ..Default::default()
        };
        let cx = plan::Context::new(Distro::Debian, "bookworm", "t", t.path());
        let progress = Progress::silent();
        let plan = plan::make(&set, &cx).unwrap();
        let mut r = Runner::new(&set, &cx, plan, &root, &progress, OutputLog::default()).unwrap();
        r.stage().unwrap();
        let install = root.join(IN_TARGET).join("install.d");
        for name in ["60-hook", "el.service"] {
            assert_eq!(
                fs::read_link(install.join(name)).unwrap(),
                Path::new("el-source-install").join(name)
            );
            assert!(install.join(name).is_file());
        }
        assert!(!install.join("package-installs-el").exists());
        r.finish(false).unwrap();
        assert!(!root.join(IN_TARGET).exists());
    }
}
