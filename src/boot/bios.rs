//! Legacy BIOS boot: GRUB's i386-pc El Torito image, made with the base's
//! own grub-mkimage inside the build root, and GRUB's `boot_hybrid.img` as
//! MBR code so the same image boots from a USB stick under BIOS.
//!
//! The recipe (measured here under SeaBIOS, CD and USB): `grub-mkimage -O
//! i386-pc-eltorito -p /boot/grub` with the modules below built in (nothing
//! is loaded at run time: the image carries no module folder), placed as the
//! first El Torito entry with a boot info table; `boot_hybrid.img` patched
//! with the image's LBA (see `image::HybridSpec::mbr_code`). grub then reads
//! the same `/boot/grub/grub.cfg` the UEFI grub reads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::chroot::Chroot;
use crate::spec::Distro;

/// Which BIOS core GRUB makes: the live image's El Torito core (CD and,
/// through boot_hybrid.img, USB) or an installed disk's core in its BIOS
/// boot partition, which reads the root filesystem named by its GRUB module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Core {
    ElTorito,
    Disk { fs_module: &'static str },
}

/// Modules every core has built in (nothing is loaded at run time: neither
/// core carries a module folder): disk access (biosdisk, GPT and MBR), the
/// Linux loader, finding the root by UUID, the serial console, and what
/// the grub.cfg scripts use (test for `if`, echo).
const SHARED_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "normal",
    "search",
    "search_fs_uuid",
    "linux",
    "configfile",
    "serial",
    "terminal",
    "test",
    "echo",
];

/// The modules built into `core`. The El Torito core adds the CD's
/// filesystem, ext2 and label search for the persistence partition, and
/// regexp to tell a CD from a stick; a disk core adds its root's filesystem.
pub fn modules(core: Core) -> Vec<&'static str> {
    let mut m = vec!["biosdisk"];
    match core {
        Core::ElTorito => m.extend(["iso9660", "ext2", "search_label", "regexp"]),
        Core::Disk { fs_module } => m.push(fs_module),
    }
    m.extend(SHARED_MODULES);
    m
}

/// The BIOS boot files taken from the root.
#[derive(Debug, Clone)]
pub struct BiosAssets {
    /// The El Torito core image (outside the root).
    pub eltorito: PathBuf,
    /// boot_hybrid.img's first 440 bytes (the rest of its 512 would cover
    /// the disk signature and the partition table).
    pub mbr_code: Vec<u8>,
}

/// Both distros install the i386-pc modules here (Fedora's grub2-pc-modules
/// uses /usr/lib/grub/i386-pc as well).
pub const MODULE_DIR: &str = "usr/lib/grub/i386-pc";

/// The MBR code `core` is started by: boot_hybrid.img leaves room for the
/// hybrid image's partition table, boot.img loads a core from disk sectors.
fn boot_image(core: Core) -> &'static str {
    match core {
        Core::ElTorito => "boot_hybrid.img",
        Core::Disk { .. } => "boot.img",
    }
}

/// Why a root cannot make `core`, naming the package; `None` if it can.
/// The one BIOS probe: the live image, the disk output and the installer
/// all ask it.
pub fn missing(root: &Path, distro: Distro, core: Core) -> Option<String> {
    let t = &distro.facts().bios;
    let have = root.join(t.mkimage).is_file()
        && root.join(MODULE_DIR).join("biosdisk.mod").is_file()
        && root.join(MODULE_DIR).join(boot_image(core)).is_file();
    if have {
        None
    } else {
        Some(format!(
            "the root has no i386-pc GRUB (add package {} for legacy BIOS boot)",
            t.package
        ))
    }
}

/// The grub-mkimage command line, run inside the root.
pub fn mkimage_argv(distro: Distro, inner_out: &str) -> Vec<String> {
    let mut argv = vec![
        format!("/{}", distro.facts().bios.mkimage),
        "-O".into(),
        "i386-pc-eltorito".into(),
        "-d".into(),
        format!("/{MODULE_DIR}"),
        "-p".into(),
        "/boot/grub".into(),
        "-o".into(),
        inner_out.into(),
    ];
    argv.extend(modules(Core::ElTorito).iter().map(|m| m.to_string()));
    argv
}

/// Builds the El Torito image in the root and moves it to `out`; reads
/// boot_hybrid.img. The caller checked `missing` first.
pub fn make(chroot: &Chroot, distro: Distro, out: &Path) -> Result<BiosAssets> {
    let root = chroot.root();
    let inner = "/var/tmp/undercloud-live-eltorito.img";
    chroot.run(
        &mkimage_argv(distro, inner),
        &[],
        "grub-mkimage (i386-pc-eltorito) in the build root",
    )?;
    super::move_file(&root.join(inner.trim_start_matches('/')), out)?;
    let hybrid = root.join(MODULE_DIR).join("boot_hybrid.img");
    let code = std::fs::read(&hybrid).with_context(|| format!("reading {}", hybrid.display()))?;
    if code.len() < 440 {
        anyhow::bail!(
            "{} is {} bytes, shorter than MBR boot code",
            hybrid.display(),
            code.len()
        );
    }
    Ok(BiosAssets {
        eltorito: out.to_path_buf(),
        mbr_code: code[..440].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkimage_builds_an_eltorito_core_with_the_prefix() {
        let a = mkimage_argv(Distro::Debian, "/var/tmp/x.img").join(" ");
        assert!(a.starts_with(
            "/usr/bin/grub-mkimage -O i386-pc-eltorito -d /usr/lib/grub/i386-pc -p /boot/grub -o /var/tmp/x.img biosdisk iso9660"
        ));
        assert!(a.contains(" ext2 ") && a.ends_with(" echo"));
        assert!(mkimage_argv(Distro::Fedora, "/o")[0].ends_with("grub2-mkimage"));
    }

    #[test]
    fn missing_names_the_package_and_each_core_needs_its_boot_image() {
        let t = tempfile::tempdir().unwrap();
        let disk = Core::Disk { fs_module: "ext2" };
        let m = missing(t.path(), Distro::Debian, Core::ElTorito).unwrap();
        assert!(m.contains("grub-pc-bin"), "{m}");
        let m = missing(t.path(), Distro::Fedora, disk).unwrap();
        assert!(m.contains("grub2-pc-modules"), "{m}");
        let put = |f: &str| {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        put("usr/bin/grub-mkimage");
        put("usr/lib/grub/i386-pc/biosdisk.mod");
        put("usr/lib/grub/i386-pc/boot_hybrid.img");
        assert!(missing(t.path(), Distro::Debian, Core::ElTorito).is_none());
        assert!(missing(t.path(), Distro::Debian, disk).is_some());
        assert!(
            missing(t.path(), Distro::Fedora, Core::ElTorito).is_some(),
            "Fedora's grub2-mkimage is not there"
        );
        put("usr/lib/grub/i386-pc/boot.img");
        assert!(missing(t.path(), Distro::Debian, disk).is_none());
    }

    #[test]
    fn each_core_has_the_shared_modules_and_its_own() {
        let eltorito = modules(Core::ElTorito);
        let disk = modules(Core::Disk { fs_module: "xfs" });
        for m in ["biosdisk", "part_gpt", "linux", "search_fs_uuid", "serial"] {
            assert!(eltorito.contains(&m) && disk.contains(&m), "{m}");
        }
        assert!(eltorito.contains(&"iso9660") && !disk.contains(&"iso9660"));
        assert!(disk.contains(&"xfs") && !eltorito.contains(&"xfs"));
    }
}
