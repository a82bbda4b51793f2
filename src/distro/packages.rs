//! The two package managers our bases use, as the command lines and paths
//! the build needs from them. A distribution names its manager in its
//! facts; code that differs by package manager (repository files, group
//! and module support, docs exclusion) asks the manager, not the distro, so
//! a new apt- or dnf-based distribution gets it without a new branch.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageManager {
    Apt,
    Dnf,
}

impl PackageManager {
    /// Command lines (run inside the root) that refresh metadata, install
    /// and remove packages.
    pub fn refresh(self) -> Vec<String> {
        match self {
            PackageManager::Apt => argv("apt-get -q update"),
            PackageManager::Dnf => argv("dnf -y makecache"),
        }
    }

    pub fn install(self, pkgs: &[String]) -> Vec<String> {
        let mut v = match self {
            // Recommends would pull in a desktop's worth of packages; dib's
            // Debian elements turn them off the same way.
            PackageManager::Apt => argv(
                "apt-get -q -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold install",
            ),
            PackageManager::Dnf => argv("dnf -y --setopt=install_weak_deps=False install"),
        };
        v.extend(pkgs.iter().cloned());
        v
    }

    /// Upgrade every installed package (dib's `install-packages -u`).
    pub fn upgrade(self) -> Vec<String> {
        match self {
            PackageManager::Apt => argv(
                "apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade",
            ),
            PackageManager::Dnf => argv("dnf -y upgrade"),
        }
    }

    /// A glob inside the root that matches nothing until the metadata has
    /// been fetched (apt has none in a fresh or cleaned root; dnf fetches
    /// its own when needed).
    pub fn metadata_glob(self) -> Option<&'static str> {
        match self {
            PackageManager::Apt => Some("/var/lib/apt/lists/*_Packages*"),
            PackageManager::Dnf => None,
        }
    }

    pub fn uninstall(self, pkgs: &[String]) -> Vec<String> {
        let mut v = match self {
            PackageManager::Apt => argv("apt-get -q -y remove"),
            PackageManager::Dnf => argv("dnf -y remove"),
        };
        v.extend(pkgs.iter().cloned());
        v
    }

    /// The downloaded package files: gone before the package layer is
    /// cached (they are most of its size and no later step needs them).
    pub fn downloads(self) -> &'static [&'static str] {
        match self {
            PackageManager::Apt => &["var/cache/apt/archives"],
            PackageManager::Dnf => &["var/cache/dnf", "var/cache/libdnf5"],
        }
    }

    /// Caches and logs a live image should not carry; removing them also
    /// keeps two builds of the same inputs byte-identical.
    pub fn leftovers(self) -> &'static [&'static str] {
        match self {
            PackageManager::Apt => &[
                "var/cache/apt/archives",
                "var/cache/apt/pkgcache.bin",
                "var/cache/apt/srcpkgcache.bin",
                "var/lib/apt/lists",
                "var/log/apt",
                "var/log/dpkg.log",
                "var/log/alternatives.log",
                "var/cache/ldconfig/aux-cache",
                "var/cache/debconf/config.dat-old",
                "var/cache/debconf/templates.dat-old",
                "var/lib/dpkg/status-old",
            ],
            PackageManager::Dnf => &[
                "var/cache/dnf",
                "var/cache/libdnf5",
                "var/log/dnf.log",
                "var/log/dnf.librepo.log",
                "var/log/dnf.rpm.log",
                "var/log/dnf5.log",
                "var/cache/ldconfig/aux-cache",
            ],
        }
    }
}

impl PackageManager {
    /// The program name, for messages.
    pub fn program(self) -> &'static str {
        match self {
            PackageManager::Apt => "apt-get",
            PackageManager::Dnf => "dnf",
        }
    }

    /// dnf installs comps groups (`@core`) and switches module streams;
    /// apt has neither.
    pub fn has_groups_and_modules(self) -> bool {
        self == PackageManager::Dnf
    }

    /// Where the manager reads extra repository definitions.
    pub fn repo_folder(self) -> &'static str {
        match self {
            PackageManager::Apt => "/etc/apt/sources.list.d",
            PackageManager::Dnf => "/etc/yum.repos.d",
        }
    }
}

fn argv(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}
