//! What differs between the base distributions, one file per distribution
//! (`debian.rs`, `fedora.rs`), as mkosi keeps one class per distribution.
//!
//! Each file is one [`Facts`] value: names, the package manager, dib's
//! distro elements, where its packages put the boot loaders and what they
//! are called, its configuration-file conventions. The pipeline asks
//! `distro.facts()` instead of branching on `Distro::Debian` and
//! `Distro::Fedora`; adding a distribution means a new file here, its
//! fetcher in `fetch/`, and nothing else that matches on the enum.

mod debian;
mod fedora;
pub mod packages;

use anyhow::{bail, Result};
use serde::Deserialize;

pub use packages::PackageManager;

/// Distributions whose package manager and boot-file locations we know.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distro {
    Fedora,
    Debian,
}

impl Distro {
    /// Every distribution, in the order os-release detection tries them.
    pub const ALL: [Distro; 2] = [Distro::Fedora, Distro::Debian];

    pub fn facts(self) -> &'static Facts {
        match self {
            Distro::Fedora => &fedora::FACTS,
            Distro::Debian => &debian::FACTS,
        }
    }

    /// os-release's ID and dib's `DISTRO_NAME`.
    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// The architecture name the distro's packages use (dib's `ARCH`).
    pub fn arch(self) -> &'static str {
        self.facts().arch
    }
}

/// One distribution's differences from the others.
pub struct Facts {
    pub name: &'static str,
    pub arch: &'static str,
    /// The os-release field that holds the release as a spec names it
    /// (`base.release`): Debian's code name, Fedora's number.
    pub release_key: &'static str,
    pub packages: PackageManager,
    /// How a base is made when the spec gives no archive (`fetch/`).
    pub base: BaseSource,
    /// diskimage-builder's elements for this distribution: a dib command
    /// line names one (`disk-image-create vm debian-minimal ...`), and the
    /// spec's base stands for all of them.
    pub dib_elements: &'static [&'static str],
    pub efi: EfiChain,
    pub bios: BiosGrub,
    /// GRUB's folder under /boot on an installed root (`grub.cfg` is in it).
    pub grub_dir: &'static str,
    /// The kernel package runs `kernel-install add`, whose dracut plugin
    /// makes an initramfs the image never uses (see `build::initrd`).
    pub kernel_install_runs_dracut: bool,
    pub config: ConfigFiles,
    /// Said when the base's mirror cannot be reached, before the generic
    /// ways around it ("" for none).
    pub unreachable_hint: &'static str,
}

/// How a distribution's base root is obtained without an archive of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaseSource {
    /// The cloud image of a compose, verified by the compose's signed
    /// CHECKSUM (`base.compose`).
    Compose,
    /// debootstrap from a mirror, with `base.include` packages.
    Debootstrap,
}

/// Where the distribution's packages put the signed EFI binaries, in
/// preference order (a `*` matches one folder level, the newest wins),
/// and the packages to name when they are missing.
pub struct EfiChain {
    pub shim: &'static [&'static str],
    pub grub: &'static [&'static str],
    /// MokManager, which shim starts when a key enrolment is pending.
    pub mm: &'static [&'static str],
    /// The folder name grub's built-in prefix uses (`/EFI/<vendor>`).
    pub vendor: &'static str,
    pub grub_package: &'static str,
    pub shim_packages: &'static str,
    pub systemd_boot_package: &'static str,
}

/// The distribution's grub-mkimage (a path in the root) and the package
/// with GRUB's i386-pc modules.
pub struct BiosGrub {
    pub mkimage: &'static str,
    pub package: &'static str,
}

/// Configuration files beyond the systemd ones every distribution reads
/// (`/etc/locale.conf`, `/etc/vconsole.conf`, `/etc/localtime`), paths
/// relative to the root.
pub struct ConfigFiles {
    /// A second locale file with `LANG=` (Debian's /etc/default/locale).
    pub locale: Option<&'static str>,
    /// The X keyboard file console-setup and X read.
    pub x_keyboard: Option<&'static str>,
    /// A file holding the time zone's name.
    pub timezone_name: Option<&'static str>,
}

/// The distribution and release an os-release text names: its ID, or an
/// ID_LIKE entry (Rocky's "rhel centos fedora", Ubuntu's "debian").
pub fn from_os_release(text: &str) -> Result<(Distro, String)> {
    let get = |k: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
            .unwrap_or_default()
    };
    let ids = format!("{} {}", get("ID"), get("ID_LIKE"));
    let Some(distro) = Distro::ALL
        .into_iter()
        .find(|d| ids.split_whitespace().any(|i| i == d.name()))
    else {
        let known: Vec<&str> = Distro::ALL.iter().map(|d| d.name()).collect();
        bail!(
            "os-release ID {:?} is none of {} (nor like them)",
            get("ID"),
            known.join(", ")
        );
    };
    Ok((distro, get(distro.facts().release_key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_by_id_and_id_like() {
        let d = from_os_release("NAME=\"Debian\"\nID=debian\nVERSION_CODENAME=trixie\n").unwrap();
        assert_eq!(d, (Distro::Debian, "trixie".into()));
        let d = from_os_release("ID=fedora\nVERSION_ID=42\n").unwrap();
        assert_eq!(d, (Distro::Fedora, "42".into()));
        let d = from_os_release("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID='9.4'\n")
            .unwrap();
        assert_eq!(d, (Distro::Fedora, "9.4".into()));
        let d = from_os_release("ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n").unwrap();
        assert_eq!(d, (Distro::Debian, "noble".into()));
        let e = from_os_release("ID=arch\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "os-release ID \"arch\" is none of fedora, debian (nor like them)"
        );
    }

    #[test]
    fn every_distro_names_itself_and_its_manager() {
        for d in Distro::ALL {
            let f = d.facts();
            assert!(f.dib_elements.contains(&f.name), "{}", f.name);
            assert!(f.efi.vendor == f.name);
            assert!(f.bios.mkimage.starts_with("usr/bin/"));
        }
        assert_eq!(Distro::Debian.facts().packages, PackageManager::Apt);
        assert_eq!(Distro::Fedora.facts().packages, PackageManager::Dnf);
    }
}
