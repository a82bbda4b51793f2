//! `undercloud-live build`: the pipeline from a spec to one hybrid image.
//!
//! fetch -> unpack -> elements (+ packages) -> live initrd -> squashfs ->
//! ESP -> ISO9660/El Torito/GPT. Each stage is a module with a narrow
//! interface; this file only sequences them, owns the work folder and makes
//! sure a failed or interrupted build leaves no output file and no mounts.

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::boot::{self, bios, loader::EfiLoader, menu};
use crate::chroot::{self, Chroot};
use crate::elements::{
    self,
    hooks::Phase,
    plan,
    run::{OutputLog, Runner, Target},
};
use crate::fetch::{self, Fetcher};
use crate::fs::{erofs, esp, ext4, squashfs};
use crate::image::{self, HybridSpec, IsoSource};
use crate::interrupt;
use crate::kickstart;
use crate::progress::{human_bytes, Progress};
use crate::spec::{self, LoadedSpec, RootFormat};

#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub spec: PathBuf,
    pub output: Option<PathBuf>,
    /// Override the spec's base source (a URL or a local path).
    pub base: Option<String>,
    pub base_sha256: Option<String>,
    pub base_checksum_url: Option<String>,
    /// Searched before the spec's elements_path.
    pub elements_path: Vec<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub keep_workdir: bool,
    pub offline: bool,
    /// Use a signed checksum list without checking its signature (warns).
    pub insecure_skip_signature: bool,
    /// A kickstart applied after the spec's elements (overrides the spec's).
    pub kickstart: Option<PathBuf>,
    /// Package-name map for the kickstart (overrides the spec's).
    pub kickstart_package_map: Option<PathBuf>,
    /// Build log (default: `<output>.log` beside the output).
    pub log: Option<PathBuf>,
    /// Add (or resize) the persistence partition: `--persistent-size`.
    pub persistent_size: Option<spec::ByteSize>,
}

#[derive(Clone, Debug)]
pub struct BuildReport {
    pub output: PathBuf,
    pub size: u64,
    pub seconds: f64,
    pub kernel: String,
    /// Whether the image boots under legacy BIOS too.
    pub bios: bool,
    /// The embedded media checksum (hex MD5).
    pub md5: Option<String>,
}

/// `$UCL_CACHE_DIR`, else `$XDG_CACHE_HOME/undercloud-live`, else
/// `~/.cache/undercloud-live`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UCL_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("undercloud-live")
}

/// Removes a half-written output on every exit path but success.
struct PartialOutput {
    path: PathBuf,
    done: bool,
}

impl Drop for PartialOutput {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes the work folder (unless kept), refusing while anything is
/// mounted inside it.
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("note: work folder kept at {}", self.path.display());
        } else if let Err(e) = chroot::remove_tree(&self.path) {
            eprintln!("warning: {e:#}");
        }
    }
}

pub fn build(opts: &BuildOptions, progress: &Progress) -> Result<BuildReport> {
    let started = Instant::now();
    let mut loaded = LoadedSpec::load(&opts.spec)?;
    if let Some(size) = opts.persistent_size {
        let p = loaded
            .spec
            .persistence
            .get_or_insert(spec::Persistence { size, label: None });
        p.size = size;
        spec::validate_persistence(p, loaded.spec.root.format)
            .with_context(|| format!("--persistent-size for spec {}", opts.spec.display()))?;
    }
    let loaded = loaded;
    let spec = &loaded.spec;
    let epoch = spec::source_date_epoch()?;

    // Everything that can be checked without work is checked first, so a
    // typo costs a second, not a download.
    let mut elements_path: Vec<PathBuf> = opts.elements_path.clone();
    elements_path.extend(spec.elements_path.iter().map(|p| loaded.resolve(p)));
    if let Some(env) = std::env::var_os("ELEMENTS_PATH") {
        elements_path.extend(std::env::split_paths(&env));
    }
    let mut set = elements::resolve(&spec.elements, &elements_path, spec.base.distro)?;
    let ks_file = opts
        .kickstart
        .clone()
        .or_else(|| spec.kickstart.as_ref().map(|p| loaded.resolve(p)));
    let ks_map_file = opts.kickstart_package_map.clone().or_else(|| {
        spec.kickstart_package_map
            .as_ref()
            .map(|p| loaded.resolve(p))
    });
    let ks_map = match &ks_map_file {
        Some(f) => kickstart::translate::PackageMap::load(f)?,
        None => kickstart::translate::PackageMap::default(),
    };
    let ks = match &ks_file {
        Some(f) => {
            let ks = kickstart::parse_file(f)?;
            // Package names are checked now, before any download.
            kickstart::translate::package_list(&ks, spec.base.distro, &ks_map)?;
            if set.get(kickstart::translate::ELEMENT).is_some() {
                anyhow::bail!(
                    "an element named {:?} is in the set; the kickstart runs under that name",
                    kickstart::translate::ELEMENT
                );
            }
            Some(ks)
        }
        None => None,
    };
    let mut extra_esp: Vec<(String, PathBuf)> = Vec::new();
    for (dest, src) in &spec.esp_files {
        let src = loaded.resolve(src);
        if !src.is_file() {
            anyhow::bail!(
                "esp_files: {dest}: {} is not a readable file",
                src.display()
            );
        }
        extra_esp.push((dest.clone(), src));
    }
    let installer = if spec.installer {
        Some(std::env::current_exe().context("finding this program to put into the image")?)
    } else {
        None
    };
    match spec.root.format {
        RootFormat::Squashfs => squashfs::check_tool()?,
        RootFormat::Erofs => erofs::check_tool()?,
    }
    if spec.persistence.is_some() {
        ext4::check_tools()?;
    }
    for tool in ["chroot", "bash"] {
        if squashfs::which(tool).is_none() {
            anyhow::bail!("{tool} not found: install package coreutils / bash");
        }
    }

    let output = match (&opts.output, &spec.output) {
        (Some(o), _) => o.clone(),
        (None, Some(o)) => loaded.resolve(o),
        (None, None) => PathBuf::from(format!("{}.iso", spec.name)),
    };
    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let file_name = output
        .file_name()
        .with_context(|| format!("output {} has no file name", output.display()))?
        .to_string_lossy()
        .into_owned();
    let partial = PartialOutput {
        path: out_dir.join(format!(".{file_name}.partial-{}", std::process::id())),
        done: false,
    };

    let cache_dir = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let log_path = opts
        .log
        .clone()
        .unwrap_or_else(|| out_dir.join(format!("{file_name}.log")));
    let log = OutputLog::new(Some(&log_path), !progress.is_quiet())?;
    log.note(&format!(
        "building {} from {}",
        output.display(),
        opts.spec.display()
    ));
    if let Some(ks) = &ks {
        for w in &ks.warnings {
            eprintln!("warning: {w}");
            log.note(&format!("warning: {w}"));
        }
    }
    let work = WorkDir {
        path: match &opts.workdir {
            Some(w) => w.clone(),
            None => std::env::temp_dir().join(format!(
                "undercloud-live-{}-{}",
                spec.name,
                std::process::id()
            )),
        },
        keep: opts.keep_workdir,
    };
    if work.path.exists() {
        chroot::remove_tree(&work.path)?;
    }
    fs::create_dir_all(&work.path).with_context(|| format!("creating {}", work.path.display()))?;
    let root = work.path.join("root");
    fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;

    // fetch
    let plan = fetch::base::plan(
        &loaded,
        &fetch::base::Overrides {
            location: opts.base.clone(),
            sha256: opts.base_sha256.clone(),
            checksum_url: opts.base_checksum_url.clone(),
        },
    )?;
    progress.step(format!("fetching base {}", plan.describe()));
    let fetcher = Fetcher::new(cache_dir.join("downloads"), progress.clone())
        .offline(opts.offline)
        .insecure_skip_signature(opts.insecure_skip_signature);
    // fetch + unpack: a download is unpacked while it arrives.
    let (fetched, unpacked) = crate::prefetch::fetch_and_unpack(&fetcher, &plan, &root, progress)?;
    if !fetched.verified {
        eprintln!(
            "warning: base {} has no checksum in the spec: it is used unverified",
            fetched.location
        );
    }
    progress.step(unpacked.to_string());
    interrupt::check()?;

    // The tool itself goes in before the elements, so that their hooks and
    // units can call it (`medium cat`, `status`, `install`).
    if let Some(exe) = &installer {
        install_self(exe, &root)?;
    }

    // The kickstart becomes one more element, applied after the others.
    if let Some(ks) = &ks {
        let dir = work
            .path
            .join("elements")
            .join(kickstart::translate::ELEMENT);
        kickstart::translate::generate(ks, spec.base.distro, &spec.base.release, &ks_map, &dir)?;
        set.elements.push(elements::Element::load(
            kickstart::translate::ELEMENT,
            &dir,
            vec![kickstart::translate::ELEMENT.to_string()],
        )?);
    }
    let mut cx = plan::Context::new(spec.base.distro, &spec.base.release, &spec.name, &cache_dir);
    cx.offline = opts.offline;

    // elements, then the live initrd, inside the root
    let kernel;
    let initrd = work.path.join("initrd.img");
    let mut bios_assets = None;
    {
        let chroot = Chroot::enter(&root)?;
        let mut runner = Runner::new(&set, &cx, &root, progress, log.clone())?;
        let names: Vec<&str> = set.elements.iter().map(|e| e.name.as_str()).collect();
        progress.step(format!("elements: {}", names.join(" ")));
        // Every phase but cleanup.d runs now; cleanup.d comes after the
        // initrd is built and the root is unmounted, as in dib.
        let before_cleanup: Vec<Phase> = Phase::ALL
            .into_iter()
            .filter(|p| *p != Phase::Cleanup)
            .collect();
        runner.run(&before_cleanup, Some(Target::Chroot(&chroot)))?;
        kernel = boot::kernel::find(&root)?;
        let t = Instant::now();
        progress.step(format!(
            "building the live initrd for kernel {} with dracut",
            kernel.version
        ));
        let extra_drivers: &[&str] = match spec.root.format {
            RootFormat::Squashfs => &[],
            RootFormat::Erofs => &["erofs"],
        };
        if spec.root.format == RootFormat::Erofs {
            check_erofs_kernel(&root, &kernel.version, spec.root.compression())?;
        }
        boot::build_initrd(&chroot, &kernel.version, epoch, extra_drivers, &initrd)?;
        progress.step(format!(
            "initrd built in {:.1} s",
            t.elapsed().as_secs_f64()
        ));
        match bios::missing(&root, spec.base.distro) {
            None => {
                let img = work.path.join("eltorito.img");
                bios_assets = Some(bios::make(&chroot, spec.base.distro, &img)?);
                progress.step("legacy BIOS boot image made with grub-mkimage (i386-pc-eltorito)");
            }
            Some(why) => eprintln!("note: {why}: building a UEFI-only image"),
        }
        chroot.close()?;
        runner.run(&[Phase::Cleanup], None)?;
        runner.finish(true)?;
    }
    let loader = boot::loader::find(&root, spec.base.distro)?;
    // dracut puts checkisomd5 into the initrd only if the root has it; a
    // check entry without it would fail the boot.
    let media_check = ["usr/bin/checkisomd5", "bin/checkisomd5"]
        .iter()
        .any(|p| root.join(p).is_file());
    if !media_check {
        eprintln!("note: the root has no checkisomd5 (package isomd5sum): the boot menu gets no media-check entry");
    }
    interrupt::check()?;

    // Kernel out of the root before squashfs (the root keeps its own copy:
    // an installed system needs it).
    let kernel_copy = work.path.join("vmlinuz");
    fs::copy(&kernel.path, &kernel_copy)
        .with_context(|| format!("copying {}", kernel.path.display()))?;

    // live root
    let squash = work.path.join("root.img");
    let t = Instant::now();
    let compression = spec.root.compression();
    progress.step(format!(
        "making the live root ({} {})",
        spec.root.format.name(),
        compression.name()
    ));
    match spec.root.format {
        RootFormat::Squashfs => squashfs::make(&root, &squash, compression, epoch, true)?,
        RootFormat::Erofs => erofs::make(
            &root,
            &squash,
            compression,
            epoch,
            &image::gpt::derive_guid(&loaded.seed(), "erofs").to_string(),
        )?,
    }
    let squash_size = fs::metadata(&squash).map(|m| m.len()).unwrap_or(0);
    progress.step(format!(
        "live root {} in {:.1} s",
        human_bytes(squash_size),
        t.elapsed().as_secs_f64()
    ));

    // boot menu + ESP
    let title = format!("Start {}", spec.name);
    let cmdline = menu::kernel_cmdline(&spec.label, &spec.kernel_cmdline);
    let persist_label = loaded.persistence_label();
    let grub_menu = menu::GrubMenu {
        title: title.clone(),
        label: spec.label.clone(),
        extra: spec.kernel_cmdline.clone(),
        timeout: spec.boot.timeout,
        ram_overlay_mib: spec.overlay.ram_size.map(|s| s.mib()),
        persistence: persist_label.as_ref().map(|label| menu::PersistBoot {
            label: label.clone(),
            root_partuuid: image::gpt::derive_guid(&loaded.seed(), "root").to_string(),
        }),
        media_check,
    };
    let grub_cfg = work.path.join("grub.cfg");
    let mut esp_files: Vec<esp::EspFile> = Vec::new();
    let mut iso_files: Vec<IsoSource> = Vec::new();
    match &loader {
        EfiLoader::Shim {
            shim,
            grub,
            mm,
            vendor,
        } => {
            fs::write(&grub_cfg, menu::grub_cfg(&grub_menu))
                .with_context(|| format!("writing {}", grub_cfg.display()))?;
            let mut efi = vec![
                ("EFI/BOOT/BOOTX64.EFI".to_string(), shim.clone()),
                ("EFI/BOOT/grubx64.efi".to_string(), grub.clone()),
            ];
            if let Some(mm) = mm {
                efi.push(("EFI/BOOT/mmx64.efi".to_string(), mm.clone()));
            }
            // grub reads its built-in prefix (/EFI/<vendor>) first, then the
            // folder it was started from.
            efi.push(("EFI/BOOT/grub.cfg".to_string(), grub_cfg.clone()));
            efi.push((format!("EFI/{vendor}/grub.cfg"), grub_cfg.clone()));
            for (dest, src) in &efi {
                // The loaders are read out of the root now: the root folder
                // may be removed before the image is written.
                esp_files.push(esp::EspFile {
                    dest: dest.clone(),
                    content: esp::EspContent::Bytes(
                        fs::read(src).with_context(|| format!("reading {}", src.display()))?,
                    ),
                });
                // The same files in the ISO tree: on a CD, grub's $cmdpath
                // is the ISO9660 volume, not the El Torito image.
                if dest.starts_with("EFI/BOOT/") {
                    let staged = work.path.join("iso").join(dest);
                    fs::create_dir_all(staged.parent().unwrap_or(&work.path))
                        .with_context(|| format!("creating {}", staged.display()))?;
                    if staged != *src {
                        fs::copy(src, &staged)
                            .with_context(|| format!("copying {}", src.display()))?;
                    }
                    iso_files.push(IsoSource {
                        iso_path: dest.clone(),
                        source: staged,
                    });
                }
            }
            iso_files.push(IsoSource {
                iso_path: "boot/grub/grub.cfg".into(),
                source: grub_cfg.clone(),
            });
        }
        EfiLoader::SystemdBoot { efi } => {
            if bios_assets.is_some() {
                // The BIOS grub reads /boot/grub/grub.cfg from the ISO tree.
                fs::write(&grub_cfg, menu::grub_cfg(&grub_menu))
                    .with_context(|| format!("writing {}", grub_cfg.display()))?;
                iso_files.push(IsoSource {
                    iso_path: "boot/grub/grub.cfg".into(),
                    source: grub_cfg.clone(),
                });
            }
            esp_files.push(esp::EspFile {
                dest: "EFI/BOOT/BOOTX64.EFI".into(),
                content: esp::EspContent::Bytes(
                    fs::read(efi).with_context(|| format!("reading {}", efi.display()))?,
                ),
            });
            esp_files.push(esp::EspFile {
                dest: "loader/loader.conf".into(),
                content: esp::EspContent::Bytes(
                    menu::systemd_boot_loader_conf(spec.boot.timeout).into_bytes(),
                ),
            });
            esp_files.push(esp::EspFile {
                dest: "loader/entries/undercloud-live.conf".into(),
                content: esp::EspContent::Bytes(
                    menu::systemd_boot_entry(&title, &cmdline).into_bytes(),
                ),
            });
            esp_files.push(esp::EspFile {
                dest: menu::ESP_KERNEL.into(),
                content: esp::EspContent::Path(kernel_copy.clone()),
            });
            esp_files.push(esp::EspFile {
                dest: menu::ESP_INITRD.into(),
                content: esp::EspContent::Path(initrd.clone()),
            });
        }
    }
    for (dest, src) in &extra_esp {
        if esp_files.iter().any(|f| f.dest.eq_ignore_ascii_case(dest)) {
            anyhow::bail!("esp_files: {dest} would replace a boot loader file");
        }
        esp_files.push(esp::EspFile {
            dest: dest.clone(),
            content: esp::EspContent::Path(src.clone()),
        });
    }
    let esp_img = work.path.join("efiboot.img");
    let esp_report = esp::write_esp(
        &esp_files,
        &esp::EspOptions {
            label: "UCL-ESP".into(),
            volume_id: spec::derive_u32(&loaded.seed(), "esp"),
            epoch,
            extra_bytes: 0,
        },
        &esp_img,
    )?;
    progress.step(format!(
        "ESP {} ({})",
        human_bytes(esp_report.size),
        esp_report.fat_type
    ));
    // The root folder is no longer needed (loaders are read, the squashfs
    // is made); free its space before the image copy adds to the disk use.
    if !opts.keep_workdir {
        chroot::remove_tree(&root)?;
    }

    iso_files.push(IsoSource {
        iso_path: "images/efiboot.img".into(),
        source: esp_img,
    });
    iso_files.push(IsoSource {
        iso_path: menu::ISO_KERNEL.into(),
        source: kernel_copy,
    });
    iso_files.push(IsoSource {
        iso_path: menu::ISO_INITRD.into(),
        source: initrd,
    });
    let root_iso_path = spec.root.format.iso_path();
    iso_files.push(IsoSource {
        iso_path: root_iso_path.into(),
        source: squash,
    });
    if let Some(b) = &bios_assets {
        iso_files.push(IsoSource {
            iso_path: bios::ISO_ELTORITO.into(),
            source: b.eltorito.clone(),
        });
    }
    let persistence = match (&spec.persistence, &persist_label) {
        (Some(p), Some(label)) => {
            let img = work.path.join("persistence.img");
            ext4::make_persistence(
                &img,
                p.size.0,
                label,
                &image::gpt::derive_guid(&loaded.seed(), "persistence-fs").to_string(),
                epoch,
            )?;
            progress.step(format!(
                "persistence partition {} (ext4, label {label})",
                human_bytes(p.size.0)
            ));
            Some(img)
        }
        _ => None,
    };

    // image
    let t = Instant::now();
    progress.step(format!("writing {}", output.display()));
    let report = image::write_hybrid(
        &HybridSpec {
            volume_label: spec.label.clone(),
            epoch,
            seed: loaded.seed(),
            files: iso_files,
            esp: "images/efiboot.img".into(),
            root: Some(root_iso_path.into()),
            bios_boot: bios_assets.as_ref().map(|_| image::BiosBoot {
                iso_path: bios::ISO_ELTORITO.into(),
                boot_info_table: true,
                grub2_boot_info: true,
            }),
            mbr_code: bios_assets.as_ref().map(|b| b.mbr_code.clone()),
            persistence,
            implant_md5: true,
        },
        &partial.path,
    )?;
    interrupt::check()?;
    {
        let f = fs::File::open(&partial.path)
            .with_context(|| format!("opening {}", partial.path.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", partial.path.display()))?;
    }
    fs::rename(&partial.path, &output).with_context(|| {
        format!(
            "renaming {} to {}",
            partial.path.display(),
            output.display()
        )
    })?;
    let mut partial = partial;
    partial.done = true;
    progress.step(format!(
        "image written in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    drop(work);
    Ok(BuildReport {
        output,
        size: report.size,
        seconds: started.elapsed().as_secs_f64(),
        kernel: kernel.version,
        bios: bios_assets.is_some(),
        md5: report.md5,
    })
}

/// An erofs root compressed with lzma needs a kernel built with
/// CONFIG_EROFS_FS_ZIP_LZMA (Debian 12's is not): fail the build, not the boot.
/// Copies the running program to /usr/bin/undercloud-live in the root.
fn install_self(exe: &std::path::Path, root: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bin = root.join("usr/bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let dest = bin.join("undercloud-live");
    let tmp = bin.join(".undercloud-live.tmp");
    fs::copy(exe, &tmp).with_context(|| format!("copying {} into the image", exe.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    fs::rename(&tmp, &dest).with_context(|| format!("creating {}", dest.display()))?;
    Ok(())
}

fn check_erofs_kernel(root: &std::path::Path, kver: &str, comp: spec::Compression) -> Result<()> {
    let config = root.join("boot").join(format!("config-{kver}"));
    let Ok(text) = fs::read_to_string(&config) else {
        return Ok(()); // no config to read: trust the spec
    };
    let need = match comp {
        spec::Compression::Lzma => "CONFIG_EROFS_FS_ZIP_LZMA=y",
        _ => "CONFIG_EROFS_FS_ZIP=y",
    };
    if !text.lines().any(|l| l.trim() == need) {
        anyhow::bail!(
            "kernel {kver} cannot read an erofs root compressed with {} ({} lacks {need}): choose another root.compression",
            comp.name(),
            config.display()
        );
    }
    Ok(())
}
