//! The stages every format shares: the base fetched and unpacked into the
//! work root, then the elements (and the kickstart, as one more element)
//! applied to it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::prepare::Prepared;
use super::workspace::Workspace;
use super::BuildOptions;
use crate::boot::kernel::{self, Kernel};
use crate::chroot::Chroot;
use crate::elements::{
    self,
    hooks::Phase,
    plan,
    run::{OutputLog, Runner, Target},
};
use crate::fetch::{self, Fetcher};
use crate::interrupt;
use crate::kickstart;
use crate::progress::Progress;

/// The base, unpacked into the work root.
pub struct Base {
    root: PathBuf,
}

/// The customised root: every element applied, cleanup.d included.
pub struct Root {
    pub path: PathBuf,
    pub kernel: Kernel,
}

/// What a format's stage sees while the root is still set up as a chroot
/// (after the last in-root phase, before cleanup.d).
pub struct InRoot<'a> {
    pub chroot: &'a Chroot,
    pub kernel: &'a Kernel,
    pub plan: &'a Prepared,
    pub ws: &'a Workspace,
    pub progress: &'a Progress,
}

/// fetch + unpack: a download is unpacked while it arrives.
pub fn fetch_base(
    p: &Prepared,
    opts: &BuildOptions,
    ws: &Workspace,
    progress: &Progress,
) -> Result<Base> {
    let plan = fetch::base::plan(
        &p.loaded,
        &fetch::base::Overrides {
            location: opts.base.clone(),
            sha256: opts.base_sha256.clone(),
            checksum_url: opts.base_checksum_url.clone(),
        },
    )?;
    progress.step(format!("fetching base {}", plan.describe()));
    let fetcher = Fetcher::new(p.cache_dir.join("downloads"), progress.clone())
        .offline(opts.offline)
        .insecure_skip_signature(opts.insecure_skip_signature);
    let root = ws.root();
    let (fetched, unpacked) =
        crate::prefetch::fetch_and_unpack(&fetcher, &plan, &root, progress)
            .map_err(|e| fetch::explain_unreachable(e, p.loaded.spec.base.distro))?;
    if !fetched.verified {
        eprintln!(
            "warning: base {} has no checksum in the spec: it is used unverified",
            fetched.location
        );
    }
    progress.step(unpacked.to_string());
    interrupt::check()?;
    Ok(Base { root })
}

/// Applies the elements and the kickstart to the base. `in_root` runs
/// after every phase but cleanup.d, with the root still a chroot: the live
/// image builds its initrd there. cleanup.d runs last, outside, as in dib.
pub fn customise<T>(
    p: &Prepared,
    ws: &Workspace,
    base: Base,
    progress: &Progress,
    log: &OutputLog,
    in_root: impl FnOnce(&InRoot) -> Result<T>,
) -> Result<(Root, T)> {
    let root = base.root;
    let spec = &p.loaded.spec;
    // The tool itself goes in before the elements, so that their hooks and
    // units can call it (`medium cat`, `status`, `install`).
    if let Some(exe) = &p.installer {
        install_self(exe, &root)?;
    }
    for (dest, src) in &p.extra_root {
        put_file(src, &root, dest)?;
    }
    let mut set = p.set.clone();
    // The kickstart becomes one more element, applied after the others.
    if let Some((ks, map)) = &p.kickstart {
        let dir = ws.elements().join(kickstart::translate::ELEMENT);
        kickstart::translate::generate(ks, spec.base.distro, &spec.base.release, map, &dir)?;
        set.elements.push(elements::Element::load(
            kickstart::translate::ELEMENT,
            &dir,
            vec![kickstart::translate::ELEMENT.to_string()],
        )?);
    }
    let mut cx = plan::Context::new(
        spec.base.distro,
        &spec.base.release,
        &spec.name,
        &p.cache_dir,
    );
    cx.offline = p.offline;

    let chroot = Chroot::enter(&root)?;
    let mut runner = Runner::new(&set, &cx, &root, progress, log.clone())?;
    let names: Vec<&str> = set.elements.iter().map(|e| e.name.as_str()).collect();
    progress.step(format!("elements: {}", names.join(" ")));
    let before_cleanup: Vec<Phase> = Phase::ALL
        .into_iter()
        .filter(|p| *p != Phase::Cleanup)
        .collect();
    runner.run(&before_cleanup, Some(Target::Chroot(&chroot)))?;
    let kernel = kernel::find(&root)?;
    let made = in_root(&InRoot {
        chroot: &chroot,
        kernel: &kernel,
        plan: p,
        ws,
        progress,
    })?;
    chroot.close()?;
    runner.run(&[Phase::Cleanup], None)?;
    runner.finish(true)?;
    interrupt::check()?;
    Ok((Root { path: root, kernel }, made))
}

/// Copies a spec's `extra_files` entry into the root (mode 0644). Parents
/// are made 0755. The path was checked by the
/// spec; a symlink on the way (the base's /lib -> usr/lib, say) is followed
/// inside the root only.
fn put_file(src: &Path, root: &Path, dest: &str) -> Result<()> {
    let target = root.join(dest.trim_start_matches('/'));
    let parent = target
        .parent()
        .with_context(|| format!("extra_files: {dest}: no parent folder"))?;
    let mut dir = root.to_path_buf();
    for c in Path::new(dest.trim_start_matches('/'))
        .parent()
        .into_iter()
        .flat_map(|p| p.components())
    {
        dir.push(c);
        if fs::symlink_metadata(&dir).is_ok_and(|m| m.file_type().is_symlink()) {
            bail!(
                "extra_files: {dest}: {} is a symbolic link in the image; name the real path",
                dir.display()
            );
        }
    }
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    copy_in(src, &target, 0o644)
}

/// Copies `src` to `target` under a temporary name beside it, sets `mode`,
/// then renames: an interrupted copy leaves nothing that looks whole.
fn copy_in(src: &Path, target: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file");
    let tmp = target.with_file_name(format!(".{name}.partial"));
    fs::copy(src, &tmp).with_context(|| {
        format!(
            "copying {} into the image as {}",
            src.display(),
            target.display()
        )
    })?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    fs::rename(&tmp, target).with_context(|| format!("creating {}", target.display()))?;
    Ok(())
}

/// Copies the running program to /usr/bin/undercloud-live in the root.
fn install_self(exe: &Path, root: &Path) -> Result<()> {
    let bin = root.join("usr/bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    copy_in(exe, &bin.join("undercloud-live"), 0o755)
}
