//! The EFI loader chain taken from the root.
//!
//! With the distro's signed shim and grub (each distribution's paths and
//! package names are its `distro::Facts`) the image boots under Secure Boot
//! with Microsoft's keys. Without shim we fall back to systemd-boot, which
//! needs the kernel and initrd on the ESP itself.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::elements::tree::resolve_in_root_follow;
use crate::spec::Distro;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EfiLoader {
    Shim {
        shim: PathBuf,
        grub: PathBuf,
        /// MokManager, which shim starts when a key enrolment is pending.
        mm: Option<PathBuf>,
        /// The folder name grub's built-in prefix uses (`/EFI/<vendor>`).
        vendor: &'static str,
    },
    SystemdBoot {
        efi: PathBuf,
    },
}

const SYSTEMD_BOOT: &[&str] = &[
    "usr/lib/systemd/boot/efi/systemd-bootx64.efi.signed",
    "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
];

/// First existing file among `patterns` (a `*` matches one folder level;
/// several matches: the highest name, i.e. the newest version).
fn first(root: &Path, patterns: &[&str]) -> Result<Option<PathBuf>> {
    for pat in patterns {
        if let Some((before, after)) = pat.split_once("/*/") {
            let dir = resolve_in_root_follow(root, Path::new(before))?;
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort_by(|a, b| super::kernel::version_cmp(a, b));
            for n in names.iter().rev() {
                let p = resolve_in_root_follow(root, &Path::new(before).join(n).join(after))?;
                if p.is_file() {
                    return Ok(Some(p));
                }
            }
        } else {
            let p = resolve_in_root_follow(root, Path::new(pat))?;
            if p.is_file() {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

pub fn find(root: &Path, distro: Distro) -> Result<EfiLoader> {
    let loc = &distro.facts().efi;
    let shim = first(root, loc.shim)?;
    let grub = first(root, loc.grub)?;
    match (shim, grub) {
        (Some(shim), Some(grub)) => Ok(EfiLoader::Shim {
            shim,
            grub,
            mm: first(root, loc.mm)?,
            vendor: loc.vendor,
        }),
        (Some(_), None) => bail!(
            "the root has shim but no signed grub: add package {} to an element",
            loc.grub_package
        ),
        (None, _) => match first(root, SYSTEMD_BOOT)? {
            Some(efi) => Ok(EfiLoader::SystemdBoot { efi }),
            None => bail!(
                "no EFI boot loader in the root: add packages {} (Secure Boot capable) or {}",
                loc.shim_packages,
                loc.systemd_boot_package
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn touch(root: &Path, rel: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, rel).unwrap();
    }

    #[test]
    fn debian_signed_chain() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        // shim-signed ships the binary under a versioned name reached by a
        // symlink; it must be followed inside the root.
        touch(r, "usr/lib/shim/shimx64.efi.signed.latest");
        symlink(
            "/usr/lib/shim/shimx64.efi.signed.latest",
            r.join("usr/lib/shim/shimx64.efi.signed"),
        )
        .unwrap();
        touch(r, "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed");
        touch(r, "usr/lib/shim/mmx64.efi.signed");
        let l = find(r, Distro::Debian).unwrap();
        assert_eq!(
            l,
            EfiLoader::Shim {
                shim: r.join("usr/lib/shim/shimx64.efi.signed.latest"),
                grub: r.join("usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"),
                mm: Some(r.join("usr/lib/shim/mmx64.efi.signed")),
                vendor: "debian",
            }
        );
    }

    #[test]
    fn fedora_esp_tree_and_usr_lib_efi() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        touch(r, "usr/lib/efi/shim/15.6-2/EFI/fedora/shimx64.efi");
        touch(r, "usr/lib/efi/shim/15.8-3/EFI/fedora/shimx64.efi");
        touch(r, "usr/lib/efi/shim/15.8-3/EFI/fedora/mmx64.efi");
        touch(r, "boot/efi/EFI/fedora/grubx64.efi");
        match find(r, Distro::Fedora).unwrap() {
            EfiLoader::Shim {
                shim,
                grub,
                mm,
                vendor,
            } => {
                assert_eq!(
                    shim,
                    r.join("usr/lib/efi/shim/15.8-3/EFI/fedora/shimx64.efi")
                );
                assert_eq!(grub, r.join("boot/efi/EFI/fedora/grubx64.efi"));
                assert!(mm.is_some());
                assert_eq!(vendor, "fedora");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fedora_prefers_the_cd_grub() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        touch(r, "boot/efi/EFI/fedora/shimx64.efi");
        touch(r, "boot/efi/EFI/fedora/grubx64.efi");
        touch(r, "boot/efi/EFI/fedora/gcdx64.efi");
        match find(r, Distro::Fedora).unwrap() {
            EfiLoader::Shim { grub, .. } => {
                assert_eq!(grub, r.join("boot/efi/EFI/fedora/gcdx64.efi"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn systemd_boot_without_shim() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        touch(r, "usr/lib/systemd/boot/efi/systemd-bootx64.efi");
        assert!(matches!(
            find(r, Distro::Fedora).unwrap(),
            EfiLoader::SystemdBoot { .. }
        ));
    }

    #[test]
    fn nothing_names_the_packages() {
        let t = tempfile::tempdir().unwrap();
        let e = format!("{:#}", find(t.path(), Distro::Debian).unwrap_err());
        assert!(
            e.contains("shim-signed") && e.contains("systemd-boot-efi"),
            "{e}"
        );
        touch(t.path(), "boot/efi/EFI/fedora/shimx64.efi");
        let e = format!("{:#}", find(t.path(), Distro::Fedora).unwrap_err());
        assert!(e.contains("grub2-efi-x64"), "{e}");
    }
}
