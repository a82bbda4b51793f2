//! Fedora: bases from its composes, dnf, shim-x64 and grub2-efi-x64 for
//! Secure Boot.

use super::{BaseSource, BiosGrub, ConfigFiles, EfiChain, Facts, PackageManager};

pub(super) const FACTS: Facts = Facts {
    name: "fedora",
    arch: "x86_64",
    release_key: "VERSION_ID",
    packages: PackageManager::Dnf,
    base: BaseSource::Compose,
    dib_elements: &["fedora", "fedora-minimal", "fedora-container"],
    // shim-x64 and grub2-efi-x64 install into the ESP tree
    // (/boot/efi/EFI/fedora); Fedora 41+ can also keep the payload under
    // /usr/lib/efi/<package>/<version>/EFI/fedora for bootupd.
    efi: EfiChain {
        shim: &[
            "boot/efi/EFI/fedora/shimx64.efi",
            "usr/lib/efi/shim/*/EFI/fedora/shimx64.efi",
        ],
        // The CD variant first (grub2-efi-x64-cdboot, what lorax installs
        // as EFI/BOOT/grubx64.efi on Fedora's own media): it has the
        // iso9660 and CD-boot modules built in. shim starts it under the
        // name grubx64.efi.
        grub: &[
            "boot/efi/EFI/fedora/gcdx64.efi",
            "usr/lib/efi/grub2-cdboot/*/EFI/fedora/gcdx64.efi",
            "boot/efi/EFI/fedora/grubx64.efi",
            "usr/lib/efi/grub2/*/EFI/fedora/grubx64.efi",
        ],
        mm: &[
            "boot/efi/EFI/fedora/mmx64.efi",
            "usr/lib/efi/shim/*/EFI/fedora/mmx64.efi",
        ],
        vendor: "fedora",
        grub_package: "grub2-efi-x64",
        shim_packages: "shim-x64 and grub2-efi-x64",
        systemd_boot_package: "systemd-boot-unsigned",
    },
    bios: BiosGrub {
        mkimage: "usr/bin/grub2-mkimage",
        package: "grub2-pc-modules and grub2-tools",
    },
    grub_dir: "grub2",
    kernel_install_runs_dracut: true,
    config: ConfigFiles {
        locale: None,
        x_keyboard: None,
        timezone_name: None,
    },
    unreachable_hint: "build the Debian image instead (`make image BASE=debian`), ",
};
