//! The stages every format shares: the base fetched and unpacked into the
//! work root, then the elements (and the kickstart, as one more element)
//! applied to it.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::layer;
use super::prepare::Prepared;
use super::workspace::Workspace;
use super::BuildOptions;
use crate::boot::kernel::{self, Kernel};
use crate::cache::{Kind, Store};
use crate::chroot::Chroot;
use crate::elements::{
    self,
    hooks::Phase,
    plan,
    run::{OutputLog, Runner, Target},
};
use crate::fetch::{self, Fetcher};
use crate::interrupt;
use crate::progress::Progress;

/// The base, unpacked into the work root.
pub struct Base {
    root: PathBuf,
    /// The verified archive it came from (the package layer's key).
    archive: PathBuf,
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
    Ok(Base {
        root,
        archive: fetched.path,
    })
}

/// Applies the elements and the kickstart to the base. The package layer
/// comes first (from the cache when its key matches, `layer`), then this
/// program and the spec's extra_files, then the rest of the plan. `in_root`
/// runs after every phase but cleanup.d, with the root still a chroot: the
/// live image builds its initrd there. cleanup.d runs last, outside, as in
/// dib.
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
    let set = element_set(p, ws)?;
    let mut cx = plan::Context::new(
        spec.base.distro,
        &spec.base.release,
        &spec.name,
        &p.cache_dir,
    );
    cx.offline = p.offline;
    let names: Vec<&str> = set.elements.iter().map(|e| e.name.as_str()).collect();
    progress.step(format!("elements: {}", names.join(" ")));
    let full = plan::make(&set, &cx)?;
    super::initrd::hold_kernel_install(&root, spec.base.distro)?;
    let (rest, layered) = match layer::split(&full) {
        Some((packages, rest)) => {
            package_layer(p, &set, &cx, &packages, &root, &base.archive, progress, log)?;
            (rest, true)
        }
        None => (full, false),
    };
    // The tool itself goes in before the rest of the elements, so that
    // their hooks and units can call it (`medium cat`, `status`, `install`).
    if let Some(exe) = &p.installer {
        install_self(exe, &root)?;
    }
    for (dest, src) in &p.extra_root {
        put_file(src, &root, dest)?;
    }
    let chroot = Chroot::enter(&root)?.for_image();
    let mut runner = Runner::new(&set, &cx, rest, &root, progress, log.clone())?;
    if layered {
        // The layer left its staged element tree for the rest to go on from.
        runner = runner.resuming();
    }
    runner.run(&before_cleanup(), Some(Target::Chroot(&chroot)))?;
    super::initrd::release_kernel_install(&root)?;
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

/// The spec's elements, and the kickstart as one more element after them.
fn element_set(p: &Prepared, ws: &Workspace) -> Result<elements::ElementSet> {
    let base = &p.loaded.spec.base;
    p.selected
        .with_kickstart_element(base.distro, &base.release, &ws.elements())
}

fn before_cleanup() -> Vec<Phase> {
    Phase::ALL
        .into_iter()
        .filter(|p| *p != Phase::Cleanup)
        .collect()
}

/// The plan up to its last package step: restored from the cache when
/// its key matches, else run and (unless `--no-cache`) cached. Either way
/// the root ends settled, with the staged element tree left for the rest.
#[allow(clippy::too_many_arguments)]
fn package_layer(
    p: &Prepared,
    set: &elements::ElementSet,
    cx: &plan::Context,
    packages: &plan::Plan,
    root: &Path,
    archive: &Path,
    progress: &Progress,
    log: &OutputLog,
) -> Result<()> {
    let name = &p.loaded.spec.name;
    let key = layer::key(p, set, cx, packages, archive)?;
    let store = p.use_cache.then(|| Store::new(&p.cache_dir));
    let what = format!(
        "package layer {} ({}; {} inputs)",
        key.short(),
        layer::describe(packages),
        key.inputs()
    );
    if let Some(entry) = store.as_ref().and_then(|s| s.get(Kind::Layer, name, &key)) {
        let msg = format!("{what}: from the cache, {}", entry.display());
        progress.step(&msg);
        log.note(&msg);
        return layer::restore(&entry, root, progress);
    }
    let msg = match &store {
        Some(s) => format!(
            "{what}: not in the cache, building it{}",
            s.explain_miss(Kind::Layer, name, &key)
                .map(|w| format!(" ({w})"))
                .unwrap_or_default()
        ),
        None => format!("{what}: building it (--no-cache)"),
    };
    progress.step(&msg);
    log.note(&msg);
    let chroot = Chroot::enter(root)?.for_image();
    let mut runner = Runner::new(set, cx, packages.clone(), root, progress, log.clone())?;
    runner.run(&before_cleanup(), Some(Target::Chroot(&chroot)))?;
    runner.leave_staged();
    chroot.close()?;
    layer::settle(root, p.loaded.spec.base.distro)?;
    interrupt::check()?;
    if let Some(store) = &store {
        layer::save(store, name, &key, root, progress);
    }
    Ok(())
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
