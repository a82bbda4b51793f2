//! The parts of dib's hook environment that name folders of one run and
//! shell functions: `TMP_BUILD_DIR` (with the root reachable at
//! `$TMP_BUILD_DIR/mnt`, where dib mounts it), `TMP_IMAGE_DIR`, `_LIB` (our
//! own versions of the dib library functions elements call) and the
//! exported `die` and `get_image_element_array` functions.
//!
//! Without these, an outside hook writing `$TMP_BUILD_DIR/mnt/etc/x` (as
//! ironic-python-agent-builder's do) would write the build host's
//! `/mnt/etc/x`, and hooks that walk `get_image_element_array` (modprobe,
//! dracut-regenerate) would silently do nothing.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::ElementSet;

/// Our `_LIB` files: what elements source from dib's `lib/` folder (or
/// copy into the root and source there, as dib's ramdisk-base does with
/// all but `die`). `ramdisk-functions` only stops the hook with a note:
/// dib's ramdisk builders need much more of dib than a library file.
const LIB_FILES: &[(&str, &str)] = &[
    ("die", include_str!("lib/die")),
    ("common-defaults", include_str!("lib/common-defaults")),
    ("common-functions", include_str!("lib/common-functions")),
    ("img-defaults", include_str!("lib/img-defaults")),
    ("img-functions", include_str!("lib/img-functions")),
    ("ramdisk-defaults", include_str!("lib/ramdisk-defaults")),
    ("ramdisk-functions", include_str!("lib/ramdisk-functions")),
];

/// Programs for hooks outside the root, last on their PATH.
const BIN_FILES: &[(&str, &str)] = &[("sudo", include_str!("lib/sudo"))];

/// dib's `die`, as the body bash imports an exported function from.
const DIE_FUNCTION: &str = r#"() {  local status=$?;
 set +o xtrace;
 echo "$@";
 exit "$status"
}"#;

/// One run's folders, removed when dropped (unless something is still
/// mounted in them: then they stay, with a warning).
#[derive(Debug)]
pub struct BuildDirs {
    top: PathBuf,
}

impl BuildDirs {
    /// Make the folders in the temporary folder (dib uses `$TMP_DIR` or
    /// /tmp the same way): `build/` with `mnt` (a symlink to `root`: dib's
    /// hooks only use it as a path) and `hooks` (to `hooks`, dib's
    /// TMP_HOOKS_PATH there), `image/`, `lib/` and `bin/`.
    pub fn new(root: &Path, hooks: &Path) -> Result<BuildDirs> {
        let top = tempfile::Builder::new()
            .prefix("undercloud-live-hooks-")
            .tempdir()
            .context("creating the hooks' build folder")?
            .keep();
        let dirs = BuildDirs { top };
        dirs.fill(root, hooks)
            .with_context(|| format!("preparing {}", dirs.top.display()))?;
        Ok(dirs)
    }

    fn fill(&self, root: &Path, hooks: &Path) -> Result<()> {
        for d in [self.build(), self.image(), self.lib(), self.bin()] {
            fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        // The top folder is private to us; hooks run as root and other
        // users may need to read what they leave in the build folder.
        fs::set_permissions(&self.top, fs::Permissions::from_mode(0o755))
            .context("setting the folder's mode")?;
        std::os::unix::fs::symlink(root, self.build().join("mnt"))
            .context("linking mnt to the root")?;
        std::os::unix::fs::symlink(hooks, self.build().join("hooks"))
            .context("linking hooks to the staged elements")?;
        for (name, text) in LIB_FILES {
            let p = self.lib().join(name);
            fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        }
        for (name, text) in BIN_FILES {
            let p = self.bin().join(name);
            fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755))
                .with_context(|| format!("setting mode of {}", p.display()))?;
        }
        Ok(())
    }

    /// dib's TMP_BUILD_DIR.
    pub fn build(&self) -> PathBuf {
        self.top.join("build")
    }

    /// dib's TMP_IMAGE_DIR.
    pub fn image(&self) -> PathBuf {
        self.top.join("image")
    }

    /// dib's _LIB.
    pub fn lib(&self) -> PathBuf {
        self.top.join("lib")
    }

    /// Programs hooks outside the root find last on their PATH (`sudo`
    /// for hosts without one).
    pub fn bin(&self) -> PathBuf {
        self.top.join("bin")
    }

    /// The variables naming the folders.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("TMP_BUILD_DIR".into(), self.build().display().to_string()),
            ("TMP_IMAGE_DIR".into(), self.image().display().to_string()),
            ("_LIB".into(), self.lib().display().to_string()),
        ]
    }
}

/// The folder variables while planning, when no run has folders: dib
/// exports them before it sources environment.d, and files use them
/// (ironic-python-agent-podman's names `$TMP_BUILD_DIR/mnt/etc/...`), so
/// under `set -u` they must be set. They name folders in the planning
/// sandbox's own empty /tmp, which do not exist.
pub fn planning_dirs_env() -> Vec<(String, String)> {
    let top = Path::new("/tmp/undercloud-live-plan");
    vec![
        (
            "TMP_BUILD_DIR".into(),
            top.join("build").display().to_string(),
        ),
        (
            "TMP_IMAGE_DIR".into(),
            top.join("image").display().to_string(),
        ),
        ("_LIB".into(), top.join("lib").display().to_string()),
    ]
}

impl Drop for BuildDirs {
    fn drop(&mut self) {
        // remove_tree refuses while a hook's mount is left inside: deleting
        // through it would empty whatever it mounted.
        if let Err(e) = crate::chroot::remove_tree(&self.top) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// `text` as one single-quoted shell word.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r#"'\''"#))
}

/// The name bash gives an exported function's variable.
pub fn exported_function(name: &str) -> String {
    format!("BASH_FUNC_{name}%%")
}

/// The exported functions every dib hook can call: `die`, and
/// `get_image_element_array`, which prints the set as `[name]=path ...`
/// for `eval declare -A image_elements=($(get_image_element_array))`.
pub fn functions(set: &ElementSet) -> Vec<(String, String)> {
    let array: String = set
        .elements
        .iter()
        .map(|e| format!("[{}]={} ", e.name, e.dir.display()))
        .collect();
    // Quoted so that a folder name cannot end the function's body.
    let body = format!("() {{  printf '%s\\n' {}\n}}", shell_quote(&array));
    vec![
        (exported_function("die"), DIE_FUNCTION.to_string()),
        (exported_function("get_image_element_array"), body),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elements::{Chain, Element};
    use std::process::Command;

    fn set(els: &[(&str, &str)]) -> ElementSet {
        ElementSet {
            elements: els
                .iter()
                .map(|(n, d)| Element {
                    name: n.to_string(),
                    dir: PathBuf::from(d),
                    deps: vec![],
                    provides: vec![],
                    chain: Chain::root(n),
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Run a bash snippet with `env` only.
    fn bash(env: &[(String, String)], script: &str) -> std::process::Output {
        Command::new("/bin/bash")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().cloned())
            .arg("-c")
            .arg(script)
            .output()
            .unwrap()
    }

    #[test]
    fn element_array_and_die_reach_a_hook() {
        let s = set(&[("a", "/e/a"), ("b", "/e/b")]);
        let out = bash(
            &functions(&s),
            r#"eval declare -A els=($(get_image_element_array))
for k in $(printf '%s\n' "${!els[@]}" | sort); do echo "$k=${els[$k]}"; done
false || die "it failed""#,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, "a=/e/a\nb=/e/b\nit failed\n");
        assert_eq!(out.status.code(), Some(1));
        // A folder name cannot end the function's body (what a hook then
        // does with the text is the hook's: dib's evaluates it).
        let s = set(&[("q", "/e/it's }; $(x)")]);
        let out = bash(&functions(&s), "get_image_element_array");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "[q]=/e/it's }; $(x) \n"
        );
    }

    #[test]
    fn folders_link_the_root_and_carry_the_library() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        let top;
        {
            let dirs = BuildDirs::new(&root, &root.join("tmp/in_target.d")).unwrap();
            top = dirs.top.clone();
            let env = dirs.env();
            let out = bash(
                &env,
                r#"echo x > "$TMP_BUILD_DIR/mnt/etc/x"
[ -d "$TMP_IMAGE_DIR" ] && echo image
. "$_LIB/img-functions"
mkdir -p "$TMP_BUILD_DIR/mnt/boot"
touch "$TMP_BUILD_DIR/mnt/etc/debian_version"
for f in vmlinuz-6.1.0-9-amd64 vmlinuz-6.1.0-10-amd64 initrd.img-6.1.0-9-amd64 initrd.img-6.1.0-10-amd64; do
  touch "$TMP_BUILD_DIR/mnt/boot/$f"
done
select_boot_kernel_initrd "$TMP_BUILD_DIR/mnt"
echo "$KERNEL $RAMDISK"
type die >/dev/null && echo die"#,
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                text,
                "image\nvmlinuz-6.1.0-10-amd64 initrd.img-6.1.0-10-amd64\ndie\n",
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(fs::read_to_string(root.join("etc/x")).unwrap(), "x\n");
        }
        // Gone when dropped; the root (behind the link) is untouched.
        assert!(!top.exists());
        assert!(root.join("etc/x").exists());
    }

    #[test]
    fn sudo_stand_in_runs_the_command() {
        let t = tempfile::tempdir().unwrap();
        let dirs = BuildDirs::new(t.path(), t.path()).unwrap();
        let sudo = dirs.bin().join("sudo");
        let run = |args: &[&str]| Command::new(&sudo).args(args).output().unwrap();
        let out = run(&["-E", "-H", "--", "echo", "as", "root"]);
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "as root\n");
        } else {
            assert!(!out.status.success());
        }
        // What it cannot stand in for is an error, not a silent run.
        for bad in [&["-u", "nobody", "id"][..], &[]] {
            let out = run(bad);
            assert!(!out.status.success(), "{bad:?}");
            assert!(out.stdout.is_empty(), "{bad:?}");
        }
    }

    #[test]
    fn quoting_survives_quotes() {
        let out = bash(&[], &format!("printf %s {}", shell_quote("a'b $x")));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a'b $x");
    }

    /// The defaults files give dib's values under `set -eu` (hooks source
    /// them so), keep what was set before, and work from a copy in another
    /// folder (dib's ramdisk-base copies them into the root);
    /// ramdisk-functions stops the hook with one line.
    #[test]
    fn defaults_files_and_ramdisk_functions() {
        let t = tempfile::tempdir().unwrap();
        let dirs = BuildDirs::new(t.path(), t.path()).unwrap();
        let copy = t.path().join("ramdisk-build");
        fs::create_dir(&copy).unwrap();
        for (name, _) in LIB_FILES {
            fs::copy(dirs.lib().join(name), copy.join(name)).unwrap();
        }
        let env = vec![
            ("_LIB".to_string(), copy.display().to_string()),
            ("IMAGE_NAME".to_string(), "mine".to_string()),
            ("ARCH".to_string(), "amd64".to_string()),
        ];
        let out = bash(
            &env,
            r#"set -eu -o pipefail
. "$_LIB/img-defaults"
. "$_LIB/ramdisk-defaults"
echo "$ARCH $FS_TYPE $IMAGE_TYPE $IMAGE_NAME $DIB_NO_TMPFS $DIB_MIN_TMPFS $RAMDISK_ELEMENT [$MODULE_ROOT]"
case ":$PATH:" in *:/usr/sbin:*) echo sbin ;; esac
. "$_LIB/ramdisk-functions"
echo not reached"#,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // img-defaults ran common-defaults first: its DIB_NO_TMPFS (0)
        // stays, as under dib when both are sourced in this order.
        assert_eq!(
            stdout, "amd64 ext4 qcow2 mine 0 2 ramdisk []\nsbin\n",
            "{stderr}"
        );
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("ipa-ramdisk") && stderr.contains("format: ramdisk"),
            "{stderr}"
        );
    }
}
