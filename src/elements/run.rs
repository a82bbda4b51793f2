//! Applying a resolved element set to a build root, phase by phase.
//!
//! In-chroot phases (pre-install, install, post-install, finalise) run their
//! hooks inside the root through `Chroot`, staged under /tmp/in_target.d as
//! dib does; the other phases run on the host with `TARGET_ROOT` pointing at
//! the root. block-device.d has nothing to act on in a live image (there is no
//! disk while building it) and is skipped with a note.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::hooks::{self, Hook, Phase};
use super::packages::{self, PackageManager, PhasePackages};
use super::tree;
use super::ElementSet;
use crate::chroot::Chroot;
use crate::interrupt;
use crate::progress::Progress;
use crate::spec::Distro;

/// Where inside the root in-chroot hooks are staged (dib's path, which some
/// elements rely on).
const IN_TARGET: &str = "tmp/in_target.d";

pub struct Runner<'a> {
    pub set: &'a ElementSet,
    pub root: &'a Path,
    /// Host folder for outside hooks' TMP_HOOKS_PATH.
    pub work: &'a Path,
    pub distro: Distro,
    pub release: &'a str,
    pub image_name: &'a str,
    pub cache_dir: &'a Path,
    pub progress: &'a Progress,
    packages: BTreeMap<Phase, PhasePackages>,
    refreshed: bool,
}

impl<'a> Runner<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        set: &'a ElementSet,
        root: &'a Path,
        work: &'a Path,
        distro: Distro,
        release: &'a str,
        image_name: &'a str,
        cache_dir: &'a Path,
        progress: &'a Progress,
    ) -> Result<Self> {
        let env_lookup = |k: &str| -> Option<String> {
            match k {
                "DISTRO_NAME" => Some(distro.name().to_string()),
                "DIB_RELEASE" => Some(release.to_string()),
                "ARCH" => Some(distro.arch().to_string()),
                "DIB_INIT_SYSTEM" => Some("systemd".to_string()),
                _ => std::env::var(k).ok(),
            }
        };
        let cx = packages::Filter {
            arch: distro.arch(),
            installtype: "package",
            env: &env_lookup,
        };
        let mut per = Vec::new();
        for el in &set.elements {
            per.push(packages::for_element(el, &cx)?);
        }
        let packages = packages::merge(per);
        for (phase, p) in &packages {
            if (!p.install.is_empty() || !p.uninstall.is_empty()) && !phase.in_chroot() {
                bail!(
                    "package-installs: phase {} runs outside the root; packages can be installed in pre-install.d, install.d, post-install.d or finalise.d",
                    phase.dir()
                );
            }
        }
        Ok(Runner {
            set,
            root,
            work,
            distro,
            release,
            image_name,
            cache_dir,
            progress,
            packages,
            refreshed: false,
        })
    }

    /// dib's hook environment, plus the caller's DIB_* variables.
    fn env(&self, inside: bool) -> Vec<(String, String)> {
        let names: Vec<&str> = self.set.elements.iter().map(|e| e.name.as_str()).collect();
        let hooks_path = if inside {
            format!("/{IN_TARGET}")
        } else {
            self.work.join("hooks").display().to_string()
        };
        let mut env: Vec<(String, String)> = vec![
            ("DISTRO_NAME".into(), self.distro.name().into()),
            ("DIB_RELEASE".into(), self.release.into()),
            ("ARCH".into(), self.distro.arch().into()),
            ("DIB_INIT_SYSTEM".into(), "systemd".into()),
            ("IMAGE_NAME".into(), self.image_name.into()),
            ("IMAGE_ELEMENT".into(), names.join(" ")),
            ("TMP_HOOKS_PATH".into(), hooks_path),
            (
                "DIB_IMAGE_CACHE".into(),
                self.cache_dir.display().to_string(),
            ),
            ("DIB_OFFLINE".into(), String::new()),
        ];
        if !inside {
            env.push(("TARGET_ROOT".into(), self.root.display().to_string()));
            env.push(("TMP_MOUNT_PATH".into(), self.root.display().to_string()));
        }
        let mut caller: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("DIB_"))
            .collect();
        caller.sort();
        for (k, v) in caller {
            env.retain(|(e, _)| *e != k);
            env.push((k, v));
        }
        if !env.iter().any(|(k, _)| k == "DIB_DEBUG_TRACE") {
            env.push(("DIB_DEBUG_TRACE".into(), "0".into()));
        }
        env
    }

    /// Run `phases` in dib's order. `chroot` must be given for in-chroot
    /// phases that have something to do.
    pub fn run(&mut self, phases: &[Phase], chroot: Option<&Chroot>) -> Result<()> {
        let mut phases = phases.to_vec();
        phases.sort();
        self.stage_environment(phases.iter().any(|p| p.in_chroot()))?;
        for phase in phases {
            interrupt::check()?;
            self.run_phase(phase, chroot)?;
        }
        Ok(())
    }

    fn run_phase(&mut self, phase: Phase, chroot: Option<&Chroot>) -> Result<()> {
        let inside = || {
            chroot.with_context(|| {
                format!(
                    "{} runs inside the root, which is not prepared",
                    phase.dir()
                )
            })
        };
        if phase == Phase::BlockDevice {
            // A live image has no block device while it is built; hooks
            // here would partition a disk that does not exist.
            if !hooks::collect(&self.set.elements, phase)?.is_empty() {
                self.progress
                    .step("block-device.d: skipped (a live image has no block device)");
            }
            return Ok(());
        }
        if phase == Phase::Install {
            self.copy_static_and_bin()?;
        }
        if let Some(p) = self.packages.get(&phase).cloned() {
            self.packages_for(phase, &p, inside()?)?;
        }
        let hooks = hooks::collect(&self.set.elements, phase)?;
        if hooks.is_empty() {
            return Ok(());
        }
        self.progress.step(format!(
            "{}: {}",
            phase.dir(),
            hooks
                .iter()
                .map(|h| format!("{}/{}", h.element, h.name))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        if phase.in_chroot() {
            self.stage_in_root(phase, &hooks)?;
        }
        for hook in &hooks {
            interrupt::check()?;
            let status = if phase.in_chroot() {
                let inner = format!("/{IN_TARGET}/{}/{}", phase.dir(), hook.name);
                let mut cmd = inside()?.command(
                    &["/bin/bash", "-c", SOURCE_ENV_AND_EXEC, &inner],
                    &self.env(true),
                );
                let what = format!("hook {}/{}", phase.dir(), hook.name);
                interrupt::wait(interrupt::spawn(&mut cmd, &what)?, &what)?
            } else {
                let mut cmd = Command::new("/bin/bash");
                cmd.env_clear()
                    .env(
                        "PATH",
                        std::env::var("PATH")
                            .unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
                    )
                    .envs(self.env(false))
                    .args(["-c", SOURCE_ENV_AND_EXEC])
                    .arg(&hook.path);
                let what = format!("hook {}/{}", phase.dir(), hook.name);
                interrupt::wait(interrupt::spawn(&mut cmd, &what)?, &what)?
            };
            if !status.success() {
                bail!(
                    "element {:?}: hook {}/{} failed ({status})",
                    hook.element,
                    phase.dir(),
                    hook.name
                );
            }
        }
        Ok(())
    }

    /// Copy every element's environment.d into one folder, for outside hooks
    /// (work/hooks/environment.d) and inside ones (/tmp/in_target.d).
    fn stage_environment(&self, inside: bool) -> Result<()> {
        let files = hooks::environment_files(&self.set.elements)?;
        let mut bases = vec![self.work.join("hooks")];
        if inside {
            bases.push(self.root.join(IN_TARGET));
        }
        for base in bases {
            let dir = base.join("environment.d");
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, path) in &files {
                fs::copy(path, dir.join(name))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
        Ok(())
    }

    fn stage_in_root(&self, phase: Phase, hooks: &[Hook]) -> Result<()> {
        let dir = self.root.join(IN_TARGET).join(phase.dir());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        for h in hooks {
            let to = dir.join(&h.name);
            fs::copy(&h.path, &to).with_context(|| format!("copying {}", h.path.display()))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("setting mode of {}", to.display()))?;
        }
        Ok(())
    }

    fn copy_static_and_bin(&self) -> Result<()> {
        for el in &self.set.elements {
            let st = el.dir.join("static");
            if st.is_dir() {
                let n = tree::copy_tree(&st, self.root, Path::new(""))
                    .with_context(|| format!("element {:?}: copying static/", el.name))?;
                self.progress.step(format!("{}: {n} static files", el.name));
            }
            let bin = el.dir.join("bin");
            if bin.is_dir() {
                let dest = PathBuf::from("usr/local/bin");
                fs::create_dir_all(tree::resolve_in_root(self.root, &dest)?)
                    .context("creating /usr/local/bin in the root")?;
                tree::copy_tree(&bin, self.root, &dest)
                    .with_context(|| format!("element {:?}: copying bin/", el.name))?;
            }
        }
        Ok(())
    }

    fn packages_for(&mut self, phase: Phase, p: &PhasePackages, chroot: &Chroot) -> Result<()> {
        let pm = packages::manager(self.distro);
        let tool = match pm {
            PackageManager::Apt => "apt-get",
            PackageManager::Dnf => "dnf",
        };
        if !p.install.is_empty() {
            if !self.refreshed {
                chroot.run(&pm.refresh(), &[], &format!("{tool} metadata refresh"))?;
                self.refreshed = true;
            }
            self.progress.step(format!(
                "{}: installing {}",
                phase.dir(),
                p.install.join(" ")
            ));
            chroot.run(
                &pm.install(&p.install),
                &[],
                &format!(
                    "{tool} install for {} ({})",
                    phase.dir(),
                    p.install.join(" ")
                ),
            )?;
        }
        if !p.uninstall.is_empty() {
            self.progress.step(format!(
                "{}: removing {}",
                phase.dir(),
                p.uninstall.join(" ")
            ));
            chroot.run(
                &pm.uninstall(&p.uninstall),
                &[],
                &format!(
                    "{tool} remove for {} ({})",
                    phase.dir(),
                    p.uninstall.join(" ")
                ),
            )?;
        }
        Ok(())
    }

    /// Remove the staged hooks and the package manager's caches and logs.
    pub fn finish(&self) -> Result<()> {
        let staged = self.root.join(IN_TARGET);
        if staged.exists() {
            fs::remove_dir_all(&staged)
                .with_context(|| format!("removing {}", staged.display()))?;
        }
        for rel in packages::manager(self.distro).leftovers() {
            let p = tree::resolve_in_root(self.root, Path::new(rel))?;
            match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    // Keep the folder (apt expects lists/partial to exist).
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
                Ok(_) => {
                    fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?
                }
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// Source environment.d (sorted by the staging) and exec the hook given as
/// $0, the way dib-run-parts does it.
const SOURCE_ENV_AND_EXEC: &str =
    r#"for f in "$TMP_HOOKS_PATH"/environment.d/*; do [ -f "$f" ] && . "$f"; done; exec "$0""#;
