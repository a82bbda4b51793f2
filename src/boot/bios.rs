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

/// Modules built into the core image: disk and filesystem access for CD
/// (iso9660 via biosdisk) and USB (GPT), finding the volume and the
/// persistence partition by label (ext2), the Linux loader, and what the
/// shared grub.cfg's script uses (test for `if`, regexp to tell a CD, echo).
pub const MODULES: &[&str] = &[
    "biosdisk",
    "iso9660",
    "part_gpt",
    "part_msdos",
    "ext2",
    "normal",
    "search",
    "search_label",
    "search_fs_uuid",
    "linux",
    "configfile",
    "serial",
    "terminal",
    "test",
    "regexp",
    "echo",
];

/// Where the core image is placed in the ISO tree.
pub const ISO_ELTORITO: &str = "boot/grub/i386-pc/eltorito.img";

/// The BIOS boot files taken from the root.
#[derive(Debug, Clone)]
pub struct BiosAssets {
    /// The El Torito core image (outside the root).
    pub eltorito: PathBuf,
    /// boot_hybrid.img's first 440 bytes (the rest of its 512 would cover
    /// the disk signature and the partition table).
    pub mbr_code: Vec<u8>,
}

struct Tools {
    mkimage: &'static str,
    package: &'static str,
}

fn tools(distro: Distro) -> Tools {
    match distro {
        Distro::Debian => Tools {
            mkimage: "usr/bin/grub-mkimage",
            package: "grub-pc-bin",
        },
        Distro::Fedora => Tools {
            mkimage: "usr/bin/grub2-mkimage",
            package: "grub2-pc-modules and grub2-tools",
        },
    }
}

/// Both distros install the i386-pc modules here (Fedora's grub2-pc-modules
/// uses /usr/lib/grub/i386-pc as well).
const MODULE_DIR: &str = "usr/lib/grub/i386-pc";

/// Why a root cannot make a BIOS image, naming the package; `None` if it can.
pub fn missing(root: &Path, distro: Distro) -> Option<String> {
    let t = tools(distro);
    let have = root.join(t.mkimage).is_file()
        && root.join(MODULE_DIR).join("biosdisk.mod").is_file()
        && root.join(MODULE_DIR).join("boot_hybrid.img").is_file();
    if have {
        None
    } else {
        Some(format!(
            "the base has no i386-pc GRUB (add package {} for legacy BIOS boot)",
            t.package
        ))
    }
}

/// The grub-mkimage command line, run inside the root.
pub fn mkimage_argv(distro: Distro, inner_out: &str) -> Vec<String> {
    let mut argv = vec![
        format!("/{}", tools(distro).mkimage),
        "-O".into(),
        "i386-pc-eltorito".into(),
        "-d".into(),
        format!("/{MODULE_DIR}"),
        "-p".into(),
        "/boot/grub".into(),
        "-o".into(),
        inner_out.into(),
    ];
    argv.extend(MODULES.iter().map(|m| m.to_string()));
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
    fn missing_names_the_package() {
        let t = tempfile::tempdir().unwrap();
        let m = missing(t.path(), Distro::Debian).unwrap();
        assert!(m.contains("grub-pc-bin"), "{m}");
        let m = missing(t.path(), Distro::Fedora).unwrap();
        assert!(m.contains("grub2-pc-modules"), "{m}");
        for f in [
            "usr/bin/grub-mkimage",
            "usr/lib/grub/i386-pc/biosdisk.mod",
            "usr/lib/grub/i386-pc/boot_hybrid.img",
        ] {
            let p = t.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        assert!(missing(t.path(), Distro::Debian).is_none());
    }
}
