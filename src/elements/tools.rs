//! dib's commands for hooks inside the root, in its /usr/local/bin:
//!
//! * `install-packages` (`install-packages -m bootloader grub-pc`,
//!   ramdisk's `install-packages busybox`);
//! * `pkg-map` (`pkg-map --element ramdisk dhcp_client`), which
//!   install-packages -m calls as dib's does;
//! * `dib-python`, a link to the root's python3.
//!
//! dib's distro elements put install-packages there at pre-install.d `01`
//! (install-bin) and leave it in the image, its pkg-map element puts
//! pkg-map there the same way, its dib-python element makes the link at
//! pre-install.d `01`; here the base stands for those elements, so ours go
//! to the same places before the first phase inside the root runs, and
//! stay.
//!
//! install-packages is a bash script made for the root's package manager,
//! with the same command lines as the built-in package steps
//! (`PackageManager`). pkg-map is a POSIX sh script (the root may have no
//! python, which dib's pkg-map is written in) with the set's pkg-maps,
//! resolved by `PkgMap` for this distro and release, written into it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::buildenv::shell_quote;
use super::pkgmap::PkgMap;
use super::plan::Context;
use super::{tree, ElementSet};
use crate::distro::PackageManager;

/// Where install-packages goes in the root.
pub const INSTALL_PACKAGES: &str = "usr/local/bin/install-packages";

/// Where pkg-map goes in the root.
pub const PKG_MAP: &str = "usr/local/bin/pkg-map";

/// Where the dib-python link goes in the root, and what it names: every
/// distro we build has python3 there (dib links whatever `command -v
/// python3` finds, which is this on Debian and Fedora).
pub const DIB_PYTHON: (&str, &str) = ("usr/local/bin/dib-python", "/usr/bin/python3");

const INSTALL_PACKAGES_BODY: &str = include_str!("lib/install-packages");
const PKG_MAP_BODY: &str = include_str!("lib/pkg-map");

/// Ends each pkg-map table in the script; a table line always holds a tab,
/// so none can be this.
const MAP_END: &str = "UCL_PKG_MAP_END";

/// The scripts for `set` on `cx`'s distro, with where each goes in the
/// root.
pub fn scripts(set: &ElementSet, cx: &Context) -> Result<Vec<(&'static str, String)>> {
    Ok(vec![
        (INSTALL_PACKAGES, install_packages(cx)),
        (PKG_MAP, pkg_map(set, cx)?),
    ])
}

/// install-packages for `cx`'s distro.
pub fn install_packages(cx: &Context) -> String {
    let pm = cx.distro.facts().packages;
    let mut s = String::from(
        "#!/bin/bash\n# install-packages, made by undercloud-live for this root's package\n# manager.\n\n",
    );
    s.push_str(&manager_functions(pm));
    s.push('\n');
    s.push_str(INSTALL_PACKAGES_BODY);
    s
}

/// pkg-map for `set` on `cx`'s distro and release.
pub fn pkg_map(set: &ElementSet, cx: &Context) -> Result<String> {
    let mut s = String::from(
        "#!/bin/sh\n# pkg-map, made by undercloud-live for this root's distro, release and\n# elements.\n\n",
    );
    let _ = writeln!(
        s,
        "_ucl_distro() {{ echo {}; }}",
        shell_quote(cx.distro.name())
    );
    let _ = writeln!(s, "_ucl_release() {{ echo {}; }}", shell_quote(&cx.release));
    s.push_str(&map_function(set, cx)?);
    s.push('\n');
    s.push_str(PKG_MAP_BODY);
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

/// `_ucl_map ELEMENT` (POSIX sh): prints ELEMENT's effective pkg-map as
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

/// Put the scripts and the dib-python link into `root`. With
/// `keep_existing`, a file already there stays (going on from the package
/// layer, where an element's own bin/ copy may have replaced ours).
pub fn install(root: &Path, scripts: &[(&str, String)], keep_existing: bool) -> Result<()> {
    let there = |rel: &str| {
        tree::resolve_in_root(root, Path::new(rel))
            .is_ok_and(|p| std::fs::symlink_metadata(p).is_ok())
    };
    for (rel, text) in scripts {
        if keep_existing && there(rel) {
            continue;
        }
        tree::write_in_root(root, Path::new(rel), text, 0o755)
            .with_context(|| format!("installing /{rel} into the root"))?;
    }
    let (link, target) = DIB_PYTHON;
    if !(keep_existing && there(link)) {
        tree::symlink_in_root(root, Path::new(link), Path::new(target))
            .context("linking dib-python to the root's python3")?;
    }
    Ok(())
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
        let fake = bin.join("apt-get");
        fs::write(
            &fake,
            format!("#!/bin/sh\necho \"$*\" >> {}/calls\n", t.display()),
        )
        .unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        // The root's layout: bin stands for its /usr/local/bin.
        let root = t.join("root");
        install(&root, &scripts(&set, &cx).unwrap(), false).unwrap();
        for (rel, _) in scripts(&set, &cx).unwrap() {
            let name = Path::new(rel).file_name().unwrap();
            fs::copy(root.join(rel), bin.join(name)).unwrap();
        }
        assert_eq!(
            fs::read_link(root.join(DIB_PYTHON.0)).unwrap(),
            Path::new("/usr/bin/python3")
        );
        bin
    }

    /// `pkg-map ARGS` from `bin`: (status, stdout, stderr).
    fn pkg_map_run(bin: &Path, args: &[&str]) -> (i32, String, String) {
        let out = Command::new("/bin/sh")
            .arg(bin.join("pkg-map"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// dib's pkg-map interface: --element, --missing-ok, --prefix, options
    /// after names, its statuses (1: no mapping, 2: no pkg-map).
    #[test]
    fn pkg_map_answers_as_dibs_does() {
        let t = tempfile::tempdir().unwrap();
        let bin = setup(t.path());
        let ok = |args: &[&str], want: &str| {
            let (rc, out, err) = pkg_map_run(&bin, args);
            assert_eq!((rc, out.as_str()), (0, want), "{args:?}: {err}");
        };
        ok(
            &["--element", "el", "greeting", "pair", "gone"],
            "hello\na b\n",
        );
        ok(&["greeting", "--element=el", "--prefix", "P:"], "P:hello\n");
        ok(
            &["--element", "el", "--missing-ok", "vim", "greeting"],
            "vim\nhello\n",
        );
        ok(&["--element", "none", "--missing-ok", "vim"], "vim\n");
        ok(
            &[
                "--element",
                "el",
                "--distro",
                "debian",
                "--release",
                "bookworm",
                "--",
                "pair",
            ],
            "a b\n",
        );
        let (rc, _, err) = pkg_map_run(&bin, &["--element", "el", "vim"]);
        assert_eq!(rc, 1);
        assert!(
            err.contains("el has no valid mapping for package vim"),
            "{err}"
        );
        let (rc, _, err) = pkg_map_run(&bin, &["--element", "none", "vim"]);
        assert_eq!(rc, 2);
        assert!(
            err.contains("Required pkg-map for none element does not exist"),
            "{err}"
        );
        // What the maps cannot answer is an error, never a wrong answer.
        for bad in [
            &["--element", "el", "--distro", "fedora", "greeting"][..],
            &["--pkg-map", "/x.json", "greeting"],
            &["greeting"],
            &["--element", "el", "--bogus", "greeting"],
        ] {
            let (rc, out, _) = pkg_map_run(&bin, bad);
            assert_eq!((rc, out.as_str()), (1, ""), "{bad:?}");
        }
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
