//! `install-packages` inside the root: diskimage-builder's command for
//! hooks that install packages themselves (`install-packages -m bootloader
//! grub-pc`, ramdisk's `install-packages busybox`). dib's distro elements
//! put it in /usr/local/bin at pre-install.d `01` (install-bin) and leave it
//! in the image; here the base stands for those elements, so ours goes to
//! the same place before the first phase inside the root runs, and stays.
//!
//! It is a bash script made for the root's package manager, with the same
//! command lines as the built-in package steps (`PackageManager`), and the
//! set's pkg-maps for this distro and release written into it for `-m`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::buildenv::shell_quote;
use super::packages::{self, PackageManager};
use super::pkgmap::PkgMap;
use super::plan::Context;
use super::{tree, ElementSet};

/// Where the command goes in the root.
pub const INSTALL_PACKAGES: &str = "usr/local/bin/install-packages";

const BODY: &str = include_str!("lib/install-packages");

/// Ends each pkg-map table in the script; a table line always holds a tab,
/// so none can be this.
const MAP_END: &str = "UCL_PKG_MAP_END";

/// The script for `set` on `cx`'s distro.
pub fn install_packages(set: &ElementSet, cx: &Context) -> Result<String> {
    let pm = packages::manager(cx.distro);
    let mut s = String::from(
        "#!/bin/bash\n# install-packages, made by undercloud-live for this root's package\n# manager and elements.\n\n",
    );
    s.push_str(&manager_functions(pm));
    s.push_str(&map_function(set, cx)?);
    s.push('\n');
    s.push_str(BODY);
    Ok(s)
}

/// `argv` as a shell command line.
fn words(argv: &[String]) -> String {
    argv.iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn manager_functions(pm: PackageManager) -> String {
    let mut s = String::new();
    if pm == PackageManager::Apt {
        // A hook's shell may not have it; apt must never ask.
        s.push_str("export DEBIAN_FRONTEND=noninteractive\n");
    }
    let _ = writeln!(
        s,
        "_ucl_install() {{ {} \"$@\"; }}",
        words(&pm.install(&[]))
    );
    let _ = writeln!(
        s,
        "_ucl_remove() {{ {} \"$@\"; }}",
        words(&pm.uninstall(&[]))
    );
    let _ = writeln!(s, "_ucl_upgrade() {{ {}; }}", words(&pm.upgrade()));
    let _ = writeln!(s, "_ucl_refresh() {{ {}; }}", words(&pm.refresh()));
    let glob = shell_quote(pm.metadata_glob().unwrap_or(""));
    let _ = writeln!(s, "_ucl_metadata_glob() {{ echo {glob}; }}");
    s
}

/// `_ucl_map ELEMENT`: prints ELEMENT's effective pkg-map as
/// `name<TAB>packages` lines; fails for an element without one.
fn map_function(set: &ElementSet, cx: &Context) -> Result<String> {
    let mut s = String::from("_ucl_map() {\n    case \"$1\" in\n");
    for el in &set.elements {
        let Some(map) = PkgMap::load(&el.dir, cx.distro.name(), &cx.release)
            .with_context(|| format!("element {:?}", el.name))?
        else {
            continue;
        };
        let _ = writeln!(
            s,
            "        {})\n            cat <<'{MAP_END}'",
            shell_quote(&el.name)
        );
        for (name, pkgs) in map.entries() {
            // A name a package manager could take never holds these; a
            // line with one could not be read back as one entry.
            let bad = |t: &str| t.chars().any(|c| c.is_control());
            if bad(name) || bad(pkgs) || name.is_empty() || name.contains(' ') {
                continue;
            }
            let _ = writeln!(s, "{name}\t{pkgs}");
        }
        let _ = writeln!(s, "{MAP_END}\n            ;;");
    }
    s.push_str("        *) return 2 ;;\n    esac\n}\n");
    Ok(s)
}

/// Put the script into `root`.
pub fn install(root: &Path, script: &str) -> Result<()> {
    tree::write_in_root(root, Path::new(INSTALL_PACKAGES), script, 0o755)
        .context("installing install-packages into the root")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elements::{Chain, Element};
    use crate::spec::Distro;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    /// The script for an element `el` with a pkg-map, and a fake apt-get
    /// that logs its arguments; returns (folder, script).
    fn setup(t: &Path) -> std::path::PathBuf {
        let el = t.join("el");
        fs::create_dir_all(&el).unwrap();
        fs::write(
            el.join("pkg-map"),
            r#"{"distro": {"debian": {"greeting": "hello", "pair": "a b", "gone": ""}},
                "family": {"redhat": {"greeting": "hello-rpm"}}}"#,
        )
        .unwrap();
        let set = ElementSet {
            elements: vec![Element {
                name: "el".into(),
                dir: el,
                deps: vec![],
                provides: vec![],
                chain: Chain::root("el"),
            }],
            ..Default::default()
        };
        let cx = Context::new(Distro::Debian, "bookworm", "image", t);
        let bin = t.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let script = bin.join("install-packages");
        fs::write(&script, install_packages(&set, &cx).unwrap()).unwrap();
        let fake = bin.join("apt-get");
        fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$*\" >> {}/calls\n", t.display()),
        )
        .unwrap();
        for p in [&script, &fake] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        bin
    }

    fn call(t: &Path, bin: &Path, args: &[&str]) -> (i32, String) {
        let _ = fs::remove_file(t.join("calls"));
        let out = Command::new(bin.join("install-packages"))
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        let calls = fs::read_to_string(t.join("calls")).unwrap_or_default();
        // The update only when this host has no lists: leave it out.
        let calls = calls
            .lines()
            .filter(|l| *l != "-q update")
            .collect::<Vec<_>>()
            .join("\n");
        (out.status.code().unwrap_or(-1), calls)
    }

    #[test]
    fn installs_removes_and_translates_like_dib() {
        let t = tempfile::tempdir().unwrap();
        let bin = setup(t.path());
        let apt = "-q -y --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold";
        let (rc, calls) = call(t.path(), &bin, &["vim", "curl"]);
        assert_eq!((rc, calls), (0, format!("{apt} install vim curl")));
        let (rc, calls) = call(t.path(), &bin, &["-m", "el", "greeting", "pair", "gone"]);
        assert_eq!((rc, calls), (0, format!("{apt} install hello a b")));
        let (rc, calls) = call(t.path(), &bin, &["-e", "vim"]);
        assert_eq!((rc, calls), (0, "-q -y remove vim".to_string()));
        // Mapped to nothing: nothing to do.
        assert_eq!(
            call(t.path(), &bin, &["-m", "el", "gone"]),
            (0, String::new())
        );
    }

    #[test]
    fn refuses_what_dib_refuses_and_options_as_names() {
        let t = tempfile::tempdir().unwrap();
        let bin = setup(t.path());
        // A name the map lacks, an element without a map (dib's pkg-map
        // fails for both), a name that would be an option.
        assert_eq!(call(t.path(), &bin, &["-m", "el", "vim"]).0, 1);
        assert_eq!(call(t.path(), &bin, &["-m", "other", "vim"]).0, 1);
        assert_eq!(
            call(t.path(), &bin, &["--", "-oAPT::x=1"]),
            (1, String::new())
        );
        assert_eq!(call(t.path(), &bin, &["-z"]).0, 1);
    }
}
