//! Elements applied with `elements apply --target DIR` to the Debian test
//! base, unpacked once per test run: no image, no dracut, no boot. Each test
//! works on its own overlay of that root, mounted in a private mount
//! namespace, so tests neither see nor disturb each other and nothing stays
//! mounted on the host.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use common::*;

/// The test base unpacked once (kept between runs, keyed by its checksum).
fn base_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = test_base();
        let sums = std::fs::read_to_string(base.join("SHA256SUMS")).unwrap();
        let key = &sums.split_whitespace().next().unwrap()[..16];
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("test-base-root-{key}"));
        let done = dir.join(".complete");
        if !done.exists() {
            let t = Instant::now();
            let _ = std::fs::remove_dir_all(&dir);
            let root = dir.join("root");
            std::fs::create_dir_all(&root).unwrap();
            undercloud_live::rootfs::unpack::unpack(
                &base.join("rootfs.tar.xz"),
                &root,
                &undercloud_live::progress::Progress::silent(),
            )
            .expect("unpacking the test base");
            std::fs::write(&done, "").unwrap();
            println!(
                "unpacked the test base in {:.0} s",
                t.elapsed().as_secs_f64()
            );
        }
        dir.join("root")
    })
}

struct Applied {
    out: Output,
    stdout: String,
    stderr: String,
    /// What `after` printed, run in the same namespace with $ROOT set.
    after: String,
}

/// Run `undercloud-live elements apply --target ROOT args...` on a fresh
/// overlay of the base root, then the shell snippet `after` (with `$ROOT`).
fn apply(name: &str, args: &[&str], env: &[(&str, &str)], after: &str) -> Applied {
    let lower = base_root();
    let d = scratch(&format!("apply-{name}"));
    for sub in ["upper", "work", "merged"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let merged = d.join("merged");
    let script = format!(
        r#"mount -t overlay overlay -o lowerdir={lower},upperdir={upper},workdir={work} {merged} || exit 90
"$@"; rc=$?
echo "---after---"
ROOT={merged}
{after}
exit $rc"#,
        lower = lower.display(),
        upper = d.join("upper").display(),
        work = d.join("work").display(),
        merged = merged.display(),
    );
    let t = Instant::now();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "bash",
        "-c",
        &script,
        "bash",
    ])
    .arg(env!("CARGO_BIN_EXE_undercloud-live"))
    .args(["elements", "apply", "--target"])
    .arg(&merged)
    .arg("--elements-path")
    .arg(repo().join("tests/fixtures/elements"))
    .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running unshare");
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (stdout, after) = all
        .split_once("---after---\n")
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .unwrap_or((all.clone(), String::new()));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- stdout\n{stdout}--- stderr\n{stderr}--- after\n{after}");
    println!("apply {name}: {:.1} s", t.elapsed().as_secs_f64());
    Applied {
        out,
        stdout,
        stderr,
        after,
    }
}

fn section(after: &str, n: usize) -> Vec<&str> {
    after.split("===\n").nth(n).unwrap_or("").lines().collect()
}

#[test]
#[ignore = "needs root: applies elements to the test base in a chroot (make test runs it)"]
fn every_phase_in_dib_order_with_environment_static_and_bin() {
    let log = scratch("apply-log").join("apply.log");
    let a = apply(
        "phases",
        &[
            "-e",
            "phases-all",
            "-e",
            "provider",
            "--log",
            &log.display().to_string(),
        ],
        &[("DIB_UCL_CALLER", "passed")],
        r#"cat $ROOT/var/log/ucl-phases; echo ===
cat $ROOT/var/log/ucl-env; echo ===
ls -A $ROOT/tmp; echo ===
cat $ROOT/etc/ucl-static-file"#,
    );
    assert!(a.out.status.success(), "apply failed:\n{}", a.stderr);
    // Every phase in dib's order, inside or outside as dib runs it; run-parts
    // order is sort -n (9-b before 10-a); dotted and non-executable names
    // never run; block-device.d is skipped; environment.d is sourced in
    // sort -n order (5-first.bash, then 10-phases-all) before every hook.
    let inside = "env=sourced order=5-10";
    let want = [
        "root.d 50-record outside target=set env=sourced".to_string(),
        "extra-data.d 50-record outside target=set env=sourced".to_string(),
        format!("pre-install.d 50-record inside {inside}"),
        format!("install.d 9-b inside {inside}"),
        format!("install.d 10-a inside {inside}"),
        "install.d 60-provider inside".to_string(),
        format!("post-install.d 50-record inside {inside}"),
        "post-root.d 50-record outside target=set env=sourced".to_string(),
        "pre-finalise.d 50-record outside target=set env=sourced".to_string(),
        format!("finalise.d 50-record inside {inside}"),
        "cleanup.d 50-record outside target=set env=sourced".to_string(),
    ];
    assert_eq!(section(&a.after, 0), want);
    assert!(a.stderr.contains("block-device.d: skipped"), "{}", a.stderr);

    // dib's environment inside the root, the caller's DIB_* variables, data
    // an outside hook left in TMP_HOOKS_PATH, bin/ and static/ in place.
    let env = section(&a.after, 1);
    for want in [
        "DISTRO_NAME=debian",
        "DIB_RELEASE=bookworm",
        "ARCH=amd64",
        "DIB_INIT_SYSTEM=systemd",
        "IMAGE_NAME=image",
        "IMAGE_ELEMENT=phases-all provider",
        "TMP_HOOKS_PATH=/tmp/in_target.d",
        "DIB_DEBUG_TRACE=0",
        "DIB_UCL_CALLER=passed",
        "TARGET_ROOT=unset",
        "extra-data=left by extra-data.d",
        "bin=ucl-bin-tool ran",
        "static=from static/",
    ] {
        assert!(env.contains(&want), "{want} missing from {env:#?}");
    }
    assert!(
        env.iter().any(|l| l.starts_with("DIB_IMAGE_CACHE=/")),
        "{env:#?}"
    );
    // The staged hooks are gone; the static file is the element's.
    assert!(
        !section(&a.after, 2).contains(&"in_target.d"),
        "{}",
        a.after
    );
    assert_eq!(section(&a.after, 3), ["from static/"]);

    // Hook output is streamed with element and phase, and logged.
    let line = "[phases-all install.d/9-b] hook 9-b says hello";
    assert!(a.stdout.contains(line), "{}", a.stdout);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains(line), "{logged}");
    assert!(logged.contains("==> install.d: "), "{logged}");
}

#[test]
#[ignore = "needs root: applies elements to the test base in a chroot (make test runs it)"]
fn packages_with_filters_pkg_map_and_uninstall() {
    let a = apply(
        "packages",
        &["-e", "pkgs"],
        &[],
        r#"cat $ROOT/var/log/ucl-packages; echo ===
for b in /usr/bin/hello /usr/bin/figlet /usr/games/sl; do
  if [ -e $ROOT$b ]; then echo "$b present"; else echo "$b absent"; fi
done"#,
    );
    assert!(a.out.status.success(), "apply failed:\n{}", a.stderr);
    // figlet (pre-install.d) and hello (install.d, pkg-map's name for
    // "greeting") are there while install.d runs; the `when` package too.
    assert_eq!(
        section(&a.after, 0),
        ["install.d hello=/usr/bin/hello figlet=/usr/bin/figlet sl=/usr/games/sl"]
    );
    // figlet was removed again in post-install.d.
    assert_eq!(
        section(&a.after, 1),
        [
            "/usr/bin/hello present",
            "/usr/bin/figlet absent",
            "/usr/games/sl present"
        ]
    );
    // One package-manager call per phase, at dib's positions.
    assert!(a
        .stdout
        .contains("[package-installs pre-install.d/10-package-installs]"));
    assert!(a
        .stdout
        .contains("[package-installs post-install.d/95-package-uninstalls]"));
}

#[test]
#[ignore = "needs root: applies elements to the test base in a chroot (make test runs it)"]
fn dib_hooks_find_their_environment_tools_and_units() {
    let a = apply(
        "dib-compat",
        &["-e", "dib-compat"],
        &[],
        r#"cat $ROOT/etc/ucl-build-dir; echo ===
cat $ROOT/etc/ucl-outside-facts; echo ===
cat $ROOT/var/log/ucl-compat-inside; echo ===
ls $ROOT/etc/ucl-conf.d; echo ===
ls $ROOT/usr/lib/systemd/system/ucl-compat.service >/dev/null && echo unit=yes
[ -e $ROOT/usr/games/sl ] && echo sl_after=yes || echo sl_after=no
[ -x $ROOT/usr/local/bin/install-packages ] && echo tool=yes
[ -x $ROOT/usr/local/bin/pkg-map ] && echo pkg_map=yes
echo "dib_python=$(readlink $ROOT/usr/local/bin/dib-python)"; echo ===
cat $ROOT/var/log/ucl-compat-install-type"#,
    );
    assert!(a.out.status.success(), "apply failed:\n{}", a.stderr);
    // Every outside phase wrote the root through $TMP_BUILD_DIR/mnt, and
    // none the build host's /mnt.
    assert_eq!(
        section(&a.after, 0),
        ["root.d", "pre-finalise.d", "cleanup.d"]
    );
    assert!(!Path::new("/mnt/etc/ucl-build-dir").exists());
    let facts = section(&a.after, 1);
    for want in [
        "image_dir=yes",
        "elements_path=set",
        "python=set",
        "lib=function function",
        "die=function",
        "in_target=root.d",
    ] {
        assert!(facts.contains(&want), "{want} missing from {facts:#?}");
    }
    // The run's folders are gone afterwards.
    let build_dir = facts
        .iter()
        .find_map(|l| l.strip_prefix("build_dir="))
        .expect("build_dir recorded");
    assert!(!Path::new(build_dir).exists(), "{build_dir} left behind");
    // install-packages -m translated through pkg-map; the deprecated list
    // installed figlet, and sl until the end of install.d.
    assert_eq!(
        section(&a.after, 2),
        [
            "hello=/usr/bin/hello",
            "figlet=/usr/bin/figlet",
            "sl_during=yes",
            "build_dir=set",
            "functions=function function",
            // dib's pkg-map in the root (a name mapped to "" gives nothing,
            // --missing-ok passes vim through); dib-python runs python3.
            "pkg_map=hello vim ",
            "dib_python=3"
        ]
    );
    // get_image_element_array found the element's files.
    assert_eq!(section(&a.after, 3), ["compat.conf"]);
    assert_eq!(
        section(&a.after, 4),
        [
            "unit=yes",
            "sl_after=no",
            "tool=yes",
            "pkg_map=yes",
            "dib_python=/usr/bin/python3"
        ]
    );
    // install-types linked the source-install folder (the default type)
    // into install.d: its hook ran from there and found its data file.
    assert_eq!(section(&a.after, 5), ["install_type=source from install.d"]);
    let plan = cli(&["elements", "plan", "-e", "dib-compat"]);
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains("install-types: install.d/dib-compat-source-install of dib-compat linked into install.d (DIB_DEFAULT_INSTALLTYPE=source)")
            && plan.contains("dib-compat-source-install/70-install-type"),
        "{plan}"
    );
}

/// diskimage-builder's own elements (its PyPI release) as their users name
/// them: what the erofs boot test checks in a booted image, here in the
/// root (the user, the units dib-init-system installs and the hooks
/// enable, modprobe's blacklist and an element's modprobe.d file).
#[test]
#[ignore = "needs root: applies elements to the test base in a chroot (make test runs it)"]
fn dibs_own_elements_do_their_work() {
    let dib = common::upstream::dib_elements();
    let dib = dib.display().to_string();
    let a = apply(
        "dib-real",
        &[
            "--elements-path",
            &dib,
            "-e",
            "dib-compat",
            "-e",
            "devuser",
            "-e",
            "growroot",
            "-e",
            "runtime-ssh-host-keys",
            "-e",
            "modprobe",
            "-e",
            "dynamic-login",
        ],
        &[("DIB_MODPROBE_BLACKLIST", "pcspkr floppy")],
        r#"for u in growroot ssh-keygen dynamic-login; do
  [ -e $ROOT/usr/lib/systemd/system/$u.service ] && echo "$u unit"
  ls $ROOT/etc/systemd/system/*.wants/$u.service >/dev/null 2>&1 && echo "$u enabled"
done; echo ===
cat $ROOT/etc/modprobe.d/blacklist.conf; echo ===
ls $ROOT/etc/modprobe.d/ucl-compat.conf >/dev/null && echo conf=yes
grep -c '^devuser:' $ROOT/etc/passwd"#,
    );
    assert!(a.out.status.success(), "apply failed:\n{}", a.stderr);
    assert_eq!(
        section(&a.after, 0),
        [
            "growroot unit",
            "growroot enabled",
            "ssh-keygen unit",
            "ssh-keygen enabled",
            "dynamic-login unit",
            "dynamic-login enabled"
        ]
    );
    assert_eq!(
        section(&a.after, 1),
        ["blacklist pcspkr", "blacklist floppy"]
    );
    assert_eq!(section(&a.after, 2), ["conf=yes", "1"]);
}

#[test]
#[ignore = "needs root: applies elements to the test base in a chroot (make test runs it)"]
fn failing_hook_stops_and_names_element_phase_script_and_status() {
    let a = apply(
        "fails",
        &["-e", "fails"],
        &[],
        "ls -A $ROOT/tmp; echo ===; cat $ROOT/var/log/ucl-phases 2>/dev/null",
    );
    assert!(!a.out.status.success());
    assert!(
        a.stderr
            .contains("error: element \"fails\": hook install.d/50-fail failed (exit status: 3)"),
        "{}",
        a.stderr
    );
    assert!(a.stdout.contains("[fails install.d/50-fail] about to fail"));
    assert!(
        section(&a.after, 1).is_empty(),
        "a hook ran after the failure"
    );
    assert!(
        !section(&a.after, 0).contains(&"in_target.d"),
        "staged hooks left"
    );
}

fn cli(args: &[&str]) -> Output {
    run(bin()
        .args(args)
        .arg("--elements-path")
        .arg(repo().join("tests/fixtures/elements"))
        .args(["--distro", "debian", "--release", "bookworm"]))
}

#[test]
fn plan_deps_and_show_without_a_root() {
    let o = cli(&[
        "elements",
        "plan",
        "-e",
        "phases-all",
        "-e",
        "provider",
        "-e",
        "pkgs",
    ]);
    assert!(o.status.success());
    let plan = String::from_utf8_lossy(&o.stdout);
    // Built-in helpers at dib's positions among the elements' hooks.
    let install: Vec<&str> = plan
        .split("install.d (inside):\n")
        .nth(2)
        .unwrap_or("")
        .lines()
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        install,
        [
            "01-package-installs",
            "9-b",
            "10-a",
            "10-install-static-files",
            "40-env",
            "50-check-packages",
            "60-provider"
        ],
        "{plan}"
    );
    assert!(plan.contains("01-install-bin"), "{plan}");
    assert!(plan.contains("install hello sl"), "{plan}");

    let o = cli(&["elements", "plan", "-e", "pkgs", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["phases"][2]["phase"], "pre-install.d");
    assert_eq!(v["phases"][2]["steps"][0]["packages"][0], "figlet");

    let o = cli(&["elements", "deps", "-e", "phases-all", "-e", "provider"]);
    let deps = String::from_utf8_lossy(&o.stdout);
    assert!(
        deps.contains("provides-me") && deps.contains("provided by provider"),
        "{deps}"
    );
    assert!(
        deps.contains("install-static") && deps.contains("built in"),
        "{deps}"
    );

    let o = cli(&["elements", "show", "pkgs", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["element"]["name"], "pkgs");
}

#[test]
fn planning_runs_environment_d_in_a_sandbox() {
    let dir = scratch("plan-sandbox");
    let host = dir.join("host-only");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("secret"), "not for elements").unwrap();
    let el = dir.join("elements/hostile");
    std::fs::create_dir_all(el.join("environment.d")).unwrap();
    std::fs::write(el.join("data"), "from the element").unwrap();
    // Tries to change the host and to read what it should not see; what
    // it learns goes into variables that `when:` filters show. Attempts
    // that fail are allowed to (`|| true`): the file is sourced under
    // `set -e`, as under dib.
    let probe = format!(
        r#"for v in SAW_HOST_PROCESS SAW_HOST_FILE REACHED_HOST_PORT READ_ELEMENT READ_ETC WROTE_TMP; do export $v=0; done
touch {host}/pwned /etc/ucl-pwned {el}/pwned 2>/dev/null || true
echo x > /dev/shm/ucl-pwned 2>/dev/null || true
kill -0 {parent} 2>/dev/null && export SAW_HOST_PROCESS=1
[ -e {host}/secret ] && export SAW_HOST_FILE=1
(echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && export REACHED_HOST_PORT=1
[ "$(cat {el}/data)" = "from the element" ] && export READ_ELEMENT=1
[ -r /etc/os-release ] && export READ_ETC=1
echo scratch > /tmp/ok && [ "$(cat /tmp/ok)" = scratch ] && export WROTE_TMP=1
"#,
        host = host.display(),
        el = el.display(),
        parent = std::process::id(),
        port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            std::mem::forget(l);
            port
        },
    );
    std::fs::write(el.join("environment.d/10-probe"), probe).unwrap();
    let mut yaml = String::new();
    for v in [
        "SAW_HOST_PROCESS",
        "SAW_HOST_FILE",
        "REACHED_HOST_PORT",
        "READ_ELEMENT",
        "READ_ETC",
        "WROTE_TMP",
    ] {
        yaml.push_str(&format!("pkg-{v}:\n  when: {v}=1\n"));
    }
    std::fs::write(el.join("package-installs.yaml"), yaml).unwrap();
    let o = run(bin()
        .args(["elements", "plan", "-e", "hostile", "--elements-path"])
        .arg(dir.join("elements"))
        .args(["--distro", "debian", "--release", "bookworm"]));
    assert!(o.status.success());
    let plan = String::from_utf8_lossy(&o.stdout);
    let installed: Vec<&str> = plan
        .lines()
        .filter_map(|l| l.split_once(" install ").map(|(_, names)| names))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(
        installed,
        ["pkg-READ_ELEMENT", "pkg-READ_ETC", "pkg-WROTE_TMP"],
        "{plan}"
    );
    for p in [
        host.join("pwned"),
        el.join("pwned"),
        "/etc/ucl-pwned".into(),
        "/dev/shm/ucl-pwned".into(),
    ] {
        assert!(!p.exists(), "{} was written from the sandbox", p.display());
    }
}

#[test]
fn duplicate_hook_and_conflict_are_errors_a_cycle_a_warning() {
    let o = cli(&["elements", "plan", "-e", "dup-a", "-e", "dup-b"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        e.contains("install.d 50-same") && e.contains("\"dup-a\"") && e.contains("\"dup-b\""),
        "{e}"
    );

    let d = scratch("elements-graph");
    let mk = |name: &str, file: &str, text: &str| {
        std::fs::create_dir_all(d.join(name)).unwrap();
        std::fs::write(d.join(name).join(file), text).unwrap();
    };
    mk("loop-a", "element-deps", "loop-b\n");
    mk("loop-b", "element-deps", "loop-a\n");
    mk("db-one", "element-provides", "db\n");
    mk("db-two", "element-provides", "db\n");
    let graph = |els: &[&str]| -> Output {
        let mut c = bin();
        c.args([
            "elements",
            "deps",
            "--distro",
            "debian",
            "--release",
            "bookworm",
        ])
        .arg("--elements-path")
        .arg(&d);
        for e in els {
            c.args(["-e", e]);
        }
        run(&mut c)
    };
    // dib accepts cycles (tripleo-image-elements has them): so do we.
    let o = graph(&["loop-a"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("warning: element dependency cycle: loop-a -> loop-b -> loop-a"),
        "{out}"
    );
    let o = graph(&["db-one", "db-two"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("\"db\" is provided by both \"db-one\" and \"db-two\""),
        "{e}"
    );
}
