//! The hybrid live image's stages: the live initrd (inside the root), the
//! squashfs/erofs live root, the boot menu and ESP, and the ISO9660 + El
//! Torito + GPT image.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::customise::{InRoot, Root};
use super::prepare::{Output, Prepared};
use super::workspace::{Partial, Workspace};
use super::Written;
use crate::boot::{self, bios, loader::EfiLoader, menu};
use crate::fs::{erofs, esp, ext4, squashfs};
use crate::image::gpt::IdRole;
use crate::image::layout::{
    ESP_BOOT_DIR, ESP_INITRD, ESP_ISO_PATH, ESP_KERNEL, ESP_LABEL, ESP_LOADER, ISO_GRUB_CFG,
    ISO_INITRD, ISO_KERNEL, SD_ENTRIES_DIR, SD_ENTRY, SD_LOADER_CONF, SHIM_GRUB_NAME, SHIM_MM_NAME,
};
use crate::image::{self, HybridSpec, IsoSource};
use crate::interrupt;
use crate::progress::{human_bytes, Progress};
use crate::spec::{self, RootFormat};

/// What the live boot needs from inside the root.
pub struct LiveBoot {
    initrd: PathBuf,
    bios: Option<bios::BiosAssets>,
}

/// In the root, after the elements: dracut's live initrd and, when the
/// root has GRUB's i386-pc files, the BIOS El Torito image.
pub fn live_boot(r: &InRoot) -> Result<LiveBoot> {
    let spec = &r.plan.loaded.spec;
    let kver = &r.kernel.version;
    let extra_drivers: &[&str] = match spec.root.format {
        RootFormat::Squashfs => &[],
        RootFormat::Erofs => &["erofs"],
    };
    if spec.root.format == RootFormat::Erofs {
        check_erofs_kernel(r.chroot.root(), kver, spec.root.compression())?;
    }
    let initrd = r.ws.live_initrd();
    super::initrd::live(r, extra_drivers, &initrd)?;
    let bios = match bios::missing(r.chroot.root(), spec.base.distro, bios::Core::ElTorito) {
        None => {
            let assets = bios::make(r.chroot, spec.base.distro, &r.ws.eltorito())?;
            r.progress
                .step("legacy BIOS boot image made with grub-mkimage (i386-pc-eltorito)");
            Some(assets)
        }
        Some(why) => {
            eprintln!("note: {why}: building a UEFI-only image");
            None
        }
    };
    Ok(LiveBoot { initrd, bios })
}

/// From the customised root to the image file.
pub fn write(
    p: &Prepared,
    ws: &Workspace,
    root: Root,
    live: LiveBoot,
    progress: &Progress,
) -> Result<Written> {
    let Output::Hybrid(output) = &p.output else {
        anyhow::bail!("internal: the hybrid stage got a {:?} output", p.output);
    };
    let loader = boot::loader::find(&root.path, p.loaded.spec.base.distro)?;
    let media_check = media_check(&root.path);
    // Kernel out of the root before squashfs (the root keeps its own copy:
    // an installed system needs it).
    fs::copy(&root.kernel.path, ws.kernel())
        .with_context(|| format!("copying {}", root.kernel.path.display()))?;
    make_live_root(p, ws, &root.path, progress)?;
    let mut tree = boot_files(p, ws, &loader, &live, media_check, progress)?;
    // The root folder is no longer needed (loaders are read, the squashfs
    // is made); free its space before the image copy adds to the disk use.
    ws.remove_root()?;
    tree.push(IsoSource {
        iso_path: ESP_ISO_PATH.into(),
        source: ws.esp_image(),
    });
    tree.push(IsoSource {
        iso_path: ISO_KERNEL.into(),
        source: ws.kernel(),
    });
    tree.push(IsoSource {
        iso_path: ISO_INITRD.into(),
        source: live.initrd.clone(),
    });
    tree.push(IsoSource {
        iso_path: p.loaded.spec.root.format.iso_path().into(),
        source: ws.live_root(),
    });
    if let Some(b) = &live.bios {
        tree.push(IsoSource {
            iso_path: crate::image::layout::ISO_ELTORITO.into(),
            source: b.eltorito.clone(),
        });
    }
    let persistence = make_persistence(p, ws, progress)?;
    let (file, md5) = assemble(p, tree, live.bios.as_ref(), persistence, output, progress)?;
    Ok(Written {
        files: vec![file],
        kernel: root.kernel.version,
        bios: live.bios.is_some(),
        md5,
    })
}

/// dracut puts checkisomd5 into the initrd only if the root has it; a
/// check entry without it would fail the boot.
fn media_check(root: &Path) -> bool {
    let yes = ["usr/bin/checkisomd5", "bin/checkisomd5"]
        .iter()
        .any(|p| root.join(p).is_file());
    if !yes {
        eprintln!("note: the root has no checkisomd5 (package isomd5sum): the boot menu gets no media-check entry");
    }
    yes
}

fn make_live_root(p: &Prepared, ws: &Workspace, root: &Path, progress: &Progress) -> Result<()> {
    let spec = &p.loaded.spec;
    let out = ws.live_root();
    let t = Instant::now();
    let compression = spec.root.resolved();
    progress.step(format!(
        "making the live root ({} {}{})",
        spec.root.format.name(),
        compression.0.name(),
        compression
            .1
            .map(|l| format!(" level {l}"))
            .unwrap_or_default()
    ));
    match spec.root.format {
        RootFormat::Squashfs => squashfs::make(root, &out, compression, p.epoch, true)?,
        RootFormat::Erofs => erofs::make(
            root,
            &out,
            compression,
            p.epoch,
            &image::gpt::derive_guid(&p.loaded.seed(), IdRole::Erofs).to_string(),
        )?,
    }
    let size = fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    progress.step(format!(
        "live root {} in {:.1} s",
        human_bytes(size),
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The boot menu, the ESP image (written now) and the ISO tree's boot
/// files.
fn boot_files(
    p: &Prepared,
    ws: &Workspace,
    loader: &EfiLoader,
    live: &LiveBoot,
    media_check: bool,
    progress: &Progress,
) -> Result<Vec<IsoSource>> {
    let spec = &p.loaded.spec;
    let title = format!("Start {}", spec.name);
    let grub_menu = menu::GrubMenu {
        title: title.clone(),
        label: spec.label.clone(),
        extra: spec.kernel_cmdline.clone(),
        timeout: spec.boot.timeout,
        ram_overlay_mib: spec.overlay.ram_size.map(|s| s.mib()),
        persistence: p.loaded.persistence_label().map(|label| menu::PersistBoot {
            label,
            root_partuuid: image::gpt::derive_guid(&p.loaded.seed(), IdRole::Root).to_string(),
        }),
        media_check,
    };
    let (mut esp_files, iso_files) = match loader {
        EfiLoader::Shim {
            shim,
            grub,
            mm,
            vendor,
        } => shim_files(ws, &grub_menu, shim, grub, mm.as_deref(), vendor)?,
        EfiLoader::SystemdBoot { efi } => systemd_boot_files(p, ws, &grub_menu, efi, live)?,
    };
    for (dest, src) in &p.extra_esp {
        if esp_files.iter().any(|f| f.dest.eq_ignore_ascii_case(dest)) {
            anyhow::bail!("esp_files: {dest} would replace a boot loader file");
        }
        esp_files.push(esp::EspFile {
            dest: dest.clone(),
            content: esp::EspContent::Path(src.clone()),
        });
    }
    let report = esp::write_esp(
        &esp_files,
        &esp::EspOptions {
            label: ESP_LABEL.into(),
            volume_id: spec::derive_u32(&p.loaded.seed(), IdRole::Esp),
            epoch: p.epoch,
            extra_bytes: 0,
        },
        &ws.esp_image(),
    )?;
    progress.step(format!(
        "ESP {} ({})",
        human_bytes(report.size),
        report.fat_type
    ));
    Ok(iso_files)
}

fn read_file(p: &Path) -> Result<Vec<u8>> {
    fs::read(p).with_context(|| format!("reading {}", p.display()))
}

/// shim -> grub -> kernel: the distro-signed chain (Secure Boot too).
fn shim_files(
    ws: &Workspace,
    grub_menu: &menu::GrubMenu,
    shim: &Path,
    grub: &Path,
    mm: Option<&Path>,
    vendor: &str,
) -> Result<(Vec<esp::EspFile>, Vec<IsoSource>)> {
    let grub_cfg = ws.grub_cfg();
    fs::write(&grub_cfg, menu::grub_cfg(grub_menu))
        .with_context(|| format!("writing {}", grub_cfg.display()))?;
    // shim loads grubx64.efi and mmx64.efi from its own folder.
    let mut efi = vec![
        (ESP_LOADER.to_string(), shim.to_path_buf()),
        (
            format!("{ESP_BOOT_DIR}/{SHIM_GRUB_NAME}"),
            grub.to_path_buf(),
        ),
    ];
    if let Some(mm) = mm {
        efi.push((format!("{ESP_BOOT_DIR}/{SHIM_MM_NAME}"), mm.to_path_buf()));
    }
    // grub reads its built-in prefix (/EFI/<vendor>) first, then the
    // folder it was started from.
    efi.push((format!("{ESP_BOOT_DIR}/grub.cfg"), grub_cfg.clone()));
    efi.push((format!("EFI/{vendor}/grub.cfg"), grub_cfg.clone()));
    let mut esp_files = Vec::new();
    let mut iso_files = Vec::new();
    for (dest, src) in &efi {
        // The loaders are read out of the root now: the root folder is
        // removed before the image is written.
        esp_files.push(esp::EspFile {
            dest: dest.clone(),
            content: esp::EspContent::Bytes(read_file(src)?),
        });
        // The same files in the ISO tree: on a CD, grub's $cmdpath is the
        // ISO9660 volume, not the El Torito image.
        if Path::new(dest).starts_with(ESP_BOOT_DIR) {
            let staged = ws.iso_tree().join(dest);
            if let Some(dir) = staged.parent() {
                fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            if staged != *src {
                fs::copy(src, &staged).with_context(|| format!("copying {}", src.display()))?;
            }
            iso_files.push(IsoSource {
                iso_path: dest.clone(),
                source: staged,
            });
        }
    }
    iso_files.push(IsoSource {
        iso_path: ISO_GRUB_CFG.into(),
        source: grub_cfg,
    });
    Ok((esp_files, iso_files))
}

/// systemd-boot cannot read ISO9660: kernel and initrd go on the ESP.
fn systemd_boot_files(
    p: &Prepared,
    ws: &Workspace,
    grub_menu: &menu::GrubMenu,
    efi: &Path,
    live: &LiveBoot,
) -> Result<(Vec<esp::EspFile>, Vec<IsoSource>)> {
    let spec = &p.loaded.spec;
    let mut iso_files = Vec::new();
    if live.bios.is_some() {
        // The BIOS grub reads /boot/grub/grub.cfg from the ISO tree.
        let grub_cfg = ws.grub_cfg();
        fs::write(&grub_cfg, menu::grub_cfg(grub_menu))
            .with_context(|| format!("writing {}", grub_cfg.display()))?;
        iso_files.push(IsoSource {
            iso_path: ISO_GRUB_CFG.into(),
            source: grub_cfg,
        });
    }
    let cmdline = menu::kernel_cmdline(&spec.label, &spec.kernel_cmdline);
    let bytes = |s: String| esp::EspContent::Bytes(s.into_bytes());
    let esp_files = vec![
        esp::EspFile {
            dest: ESP_LOADER.into(),
            content: esp::EspContent::Bytes(read_file(efi)?),
        },
        esp::EspFile {
            dest: SD_LOADER_CONF.into(),
            content: bytes(menu::systemd_boot_loader_conf(spec.boot.timeout)),
        },
        esp::EspFile {
            dest: format!("{SD_ENTRIES_DIR}/{SD_ENTRY}"),
            content: bytes(menu::systemd_boot_entry(&grub_menu.title, &cmdline)),
        },
        esp::EspFile {
            dest: ESP_KERNEL.into(),
            content: esp::EspContent::Path(ws.kernel()),
        },
        esp::EspFile {
            dest: ESP_INITRD.into(),
            content: esp::EspContent::Path(live.initrd.clone()),
        },
    ];
    Ok((esp_files, iso_files))
}

fn make_persistence(p: &Prepared, ws: &Workspace, progress: &Progress) -> Result<Option<PathBuf>> {
    let (Some(persist), Some(label)) = (&p.loaded.spec.persistence, p.loaded.persistence_label())
    else {
        return Ok(None);
    };
    let img = ws.persistence();
    ext4::make_persistence(
        &img,
        persist.size.0,
        label.as_str(),
        &image::gpt::derive_guid(&p.loaded.seed(), IdRole::PersistenceFs).to_string(),
        p.epoch,
    )?;
    progress.step(format!(
        "persistence partition {} (ext4, label {label})",
        human_bytes(persist.size.0)
    ));
    Ok(Some(img))
}

/// Writes the image under a temporary name, then renames it.
fn assemble(
    p: &Prepared,
    files: Vec<IsoSource>,
    bios: Option<&bios::BiosAssets>,
    persistence: Option<PathBuf>,
    output: &Path,
    progress: &Progress,
) -> Result<((PathBuf, u64), Option<String>)> {
    let spec = &p.loaded.spec;
    let partial = Partial::new(output)?;
    let t = Instant::now();
    progress.step(format!("writing {}", output.display()));
    let report = image::write_hybrid(
        &HybridSpec {
            volume_label: spec.label.clone(),
            epoch: p.epoch,
            seed: p.loaded.seed(),
            files,
            esp: ESP_ISO_PATH.into(),
            root: Some(spec.root.format.iso_path().into()),
            bios_boot: bios.map(|_| image::BiosBoot {
                iso_path: crate::image::layout::ISO_ELTORITO.into(),
                boot_info_table: true,
                grub2_boot_info: true,
            }),
            mbr_code: bios.map(|b| b.mbr_code.clone()),
            persistence,
            implant_md5: true,
        },
        &partial.path,
    )?;
    interrupt::check()?;
    let file = partial.commit()?;
    progress.step(format!(
        "image written in {:.1} s",
        t.elapsed().as_secs_f64()
    ));
    Ok((file, report.md5))
}

/// An erofs root compressed with lzma needs a kernel built with
/// CONFIG_EROFS_FS_ZIP_LZMA (Debian 12's is not): fail the build, not the boot.
fn check_erofs_kernel(root: &Path, kver: &str, comp: spec::Compression) -> Result<()> {
    let config = root.join("boot").join(format!("config-{kver}"));
    // A kernel config is ~250 KiB; the base image is not trusted to keep it
    // a small regular file.
    let Ok(text) = crate::io::read_text_bounded(&config, 16 * crate::io::MIB, "kernel config")
    else {
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
