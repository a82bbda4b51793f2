//! Debian: debootstrap'ed bases, apt, shim-signed and
//! grub-efi-amd64-signed for Secure Boot.

use super::{BaseSource, BiosGrub, ConfigFiles, EfiChain, Facts, PackageManager};

pub(super) const FACTS: Facts = Facts {
    name: "debian",
    arch: "amd64",
    release_key: "VERSION_CODENAME",
    packages: PackageManager::Apt,
    base: BaseSource::Debootstrap,
    dib_elements: &[
        "debian",
        "debian-minimal",
        "debian-upstream",
        "debian-systemd",
    ],
    efi: EfiChain {
        // shim-signed ships the binary under a versioned name reached by a
        // symlink (followed inside the root).
        shim: &[
            "usr/lib/shim/shimx64.efi.signed",
            "usr/lib/shim/shimx64.efi.signed.latest",
        ],
        grub: &["usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"],
        mm: &["usr/lib/shim/mmx64.efi.signed", "usr/lib/shim/mmx64.efi"],
        vendor: "debian",
        grub_package: "grub-efi-amd64-signed",
        shim_packages: "shim-signed and grub-efi-amd64-signed",
        systemd_boot_package: "systemd-boot-efi",
    },
    bios: BiosGrub {
        mkimage: "usr/bin/grub-mkimage",
        package: "grub-pc-bin",
    },
    grub_dir: "grub",
    // Debian's kernel hooks honour INITRD=No instead.
    kernel_install_runs_dracut: false,
    config: ConfigFiles {
        locale: Some("etc/default/locale"),
        x_keyboard: Some("etc/default/keyboard"),
        timezone_name: Some("etc/timezone"),
    },
    unreachable_hint: "",
};
