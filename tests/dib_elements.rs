//! diskimage-builder's and ironic-python-agent-builder's own elements, from
//! their PyPI releases (tests/common/upstream.rs), planned the way their
//! users name them: `disk-image-create`'s command line shape, the
//! agent ramdisk's element set. Plans only: no root, no image.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::upstream::{dib_elements, ipa_builder_elements};
use common::*;

fn elements(args: &[&str], path: &[PathBuf]) -> Output {
    elements_env(args, path, &[])
}

/// `elements ARGS` with these variables set too.
fn elements_env(args: &[&str], path: &[PathBuf], vars: &[(&str, &str)]) -> Output {
    let mut cmd = bin();
    cmd.envs(vars.iter().copied());
    cmd.arg("elements").args(args);
    for p in path {
        cmd.arg("--elements-path").arg(p);
    }
    cmd.args(["--distro", "debian", "--release", "trixie"])
        .env_remove("ELEMENTS_PATH");
    let out = cmd.output().unwrap();
    eprintln!(
        "$ elements {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The hook names of one phase in `elements plan` text output.
fn phase<'a>(plan: &'a str, header: &str) -> Vec<&'a str> {
    plan.split(&format!("\n{header}"))
        .nth(1)
        .unwrap_or("")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

#[test]
fn a_disk_image_create_command_line_plans_with_dibs_elements() {
    let dib = dib_elements();
    let args = [
        "plan",
        "vm",
        "debian-minimal",
        "devuser",
        "growroot",
        "modprobe",
        "dynamic-login",
        "runtime-ssh-host-keys",
    ];
    let out = elements(&args, std::slice::from_ref(&dib));
    assert!(out.status.success());
    let plan = text(&out.stdout);
    assert!(
        plan.starts_with(
            "elements: vm devuser growroot modprobe dynamic-login runtime-ssh-host-keys openssh-server\n"
        ),
        "{plan}"
    );
    // dib's helper elements are on the path, and run once: as ours
    // (dib-init-system's units at its hook's position, 20).
    assert_eq!(
        phase(&plan, "install.d (inside):"),
        [
            "01-package-installs",
            "10-install-static-files",
            "20-install-init-scripts",
            "50-devuser",
            "70-enable-dynamic-login-services",
            "80-modprobe-blacklist"
        ]
    );
    assert!(
        plan.contains("install sudo cloud-utils e2fsprogs openssh-client openssh-server"),
        "{plan}"
    );
    assert!(!plan.contains("package-installs/"), "{plan}");
    // The units growroot, dynamic-login and runtime-ssh-host-keys enable.
    assert!(
        plan.contains("init-scripts/systemd/ of growroot dynamic-login runtime-ssh-host-keys"),
        "{plan}"
    );

    let out = elements(&["deps", "vm", "debian-minimal"], &[dib]);
    let deps = text(&out.stdout);
    for (name, by) in [
        ("debian-minimal", "provided by debian (the base)"),
        ("block-device", "provided by undercloud-live"),
        ("bootloader", "provided by undercloud-live"),
    ] {
        assert!(
            deps.lines().any(|l| l.starts_with(name) && l.contains(by)),
            "{name} {by}:\n{deps}"
        );
    }
}

#[test]
fn the_agent_ramdisk_elements_plan() {
    let path = [ipa_builder_elements(), dib_elements()];
    let out = elements(
        &[
            "plan",
            "-e",
            "ironic-python-agent-ramdisk",
            "-e",
            "debian-minimal",
        ],
        &path,
    );
    assert!(out.status.success());
    let plan = text(&out.stdout);
    assert!(
        plan.starts_with("elements: ironic-python-agent-ramdisk ironic-python-agent-ramdisk-base "),
        "{plan}"
    );
    let post = phase(&plan, "post-install.d (inside):");
    assert!(post.contains(&"80-ironic-python-agent-ramdisk"), "{plan}");
    // environment.d of both trees was sourced (in the sandbox): the
    // packages dib's pkg-map and `when:` filters chose for Debian.
    let install = plan
        .lines()
        .find(|l| l.trim_start().starts_with("01-package-installs") && l.contains(" install "))
        .unwrap_or_default();
    for p in ["qemu-utils", "python3-venv", "isc-dhcp-client"] {
        assert!(install.split_whitespace().any(|w| w == p), "{p}: {install}");
    }
    for header in ["pre-install.d (inside):", "install.d (inside):"] {
        let hooks = phase(&plan, header);
        let once = hooks
            .iter()
            .filter(|h| h.ends_with("package-installs"))
            .count();
        assert_eq!(once, 1, "{header} {hooks:?}");
    }
    // svc-map needs dib-python (built in): python3 for its link.
    let pre = plan
        .lines()
        .find(|l| l.trim_start().starts_with("10-package-installs"))
        .unwrap_or_default();
    assert!(pre.split_whitespace().any(|w| w == "python3"), "{pre}");
    // install-types: the source-install folders' hooks (the default type)
    // run in install.d; the package-install list is not installed.
    let hooks = phase(&plan, "install.d (inside):");
    for h in ["40-glean", "60-ironic-python-agent-ramdisk-install"] {
        assert!(hooks.contains(&h), "{h}: {hooks:?}");
    }
    assert!(
        plan.contains("install-types: install.d/ironic-python-agent-ramdisk-source-install of ironic-python-agent-ramdisk-base linked into install.d (DIB_DEFAULT_INSTALLTYPE=source)"),
        "{plan}"
    );
    assert!(!install
        .split_whitespace()
        .any(|w| w == "ironic-python-agent"));
}

/// ironic-python-agent-builder's documented switch to the agent's
/// package: DIB_INSTALLTYPE_<folder prefix> picks the package-install
/// folder, whose deprecated package list dib installs at install.d `01`.
#[test]
fn the_agent_from_packages_through_install_types() {
    let path = [ipa_builder_elements(), dib_elements()];
    let out = elements_env(
        &[
            "plan",
            "-e",
            "ironic-python-agent-ramdisk",
            "-e",
            "debian-minimal",
        ],
        &path,
        &[("DIB_INSTALLTYPE_ironic_python_agent_ramdisk", "package")],
    );
    assert!(out.status.success());
    let plan = text(&out.stdout);
    let hooks = phase(&plan, "install.d (inside):");
    assert!(
        !hooks.contains(&"60-ironic-python-agent-ramdisk-install"),
        "{hooks:?}"
    );
    assert!(hooks.contains(&"40-glean"), "{hooks:?}");
    let install = plan
        .lines()
        .find(|l| l.trim_start().starts_with("01-package-installs") && l.contains(" install "))
        .unwrap_or_default();
    assert!(
        install
            .split_whitespace()
            .any(|w| w == "ironic-python-agent"),
        "{install}"
    );
    assert!(
        plan.contains("(DIB_INSTALLTYPE_ironic_python_agent_ramdisk=package)"),
        "{plan}"
    );
}

/// Every environment.d file of both trees sources cleanly under dib's
/// `set -eu -o pipefail`, with its element planned for Debian (elements
/// that make another distribution's root are refused before, as they
/// should be).
#[test]
fn every_environment_d_of_both_trees_sources_under_set_u() {
    let path = [ipa_builder_elements(), dib_elements()];
    let mut planned = 0;
    for tree in &path {
        let mut names: Vec<String> = std::fs::read_dir(tree)
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("environment.d").is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let out = elements(&["plan", &name], &path);
            let err = text(&out.stderr);
            if err.contains("makes its own operating system") {
                continue;
            }
            assert!(out.status.success(), "{name}: {err}");
            planned += 1;
        }
    }
    // 60 elements have environment.d; all but the other distros' plan.
    assert!(planned >= 25, "{planned}");
}

#[test]
fn another_distributions_element_is_refused_and_x_leaves_one_out() {
    let dib = dib_elements();
    let out = elements(&["plan", "vm", "ubuntu"], std::slice::from_ref(&dib));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "makes its own operating system, but this build's root is the spec's debian base"
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    let out = elements(
        &["deps", "devuser", "growroot", "-x", "growroot"],
        std::slice::from_ref(&dib),
    );
    assert!(out.status.success());
    let deps = text(&out.stdout);
    assert!(deps.starts_with("devuser "), "{deps}");
    assert!(
        deps.lines()
            .any(|l| l.starts_with("growroot") && l.contains("left out (--exclude-element)")),
        "{deps}"
    );
    assert!(!deps.contains("growroot/"), "{deps}");
}

#[test]
fn a_failing_environment_d_file_is_named_with_what_it_said() {
    let dir = scratch("envd-fails");
    let el = dir.join("elements/breaks");
    std::fs::create_dir_all(el.join("environment.d")).unwrap();
    std::fs::write(el.join("environment.d/10-fine"), "export FINE=1\n").unwrap();
    std::fs::write(
        el.join("environment.d/20-breaks"),
        "echo about to fail\necho DIB_FOO must be set >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::write(el.join("package-installs.yaml"), "hello:\n").unwrap();
    let out = elements(&["plan", "breaks"], &[dir.join("elements")]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "error: element \"breaks\": environment.d/20-breaks failed (exit status: 3): about to fail; DIB_FOO must be set\n"
    );
}

/// dib-run-parts sources environment.d under `set -eu` and `set -o
/// pipefail`: a file reading an unset variable stops dib's build, and the
/// plan names its element and file.
#[test]
fn an_unset_variable_in_environment_d_fails_as_under_dib() {
    let dir = scratch("envd-unset");
    let el = dir.join("elements/unset");
    std::fs::create_dir_all(el.join("environment.d")).unwrap();
    std::fs::write(
        el.join("environment.d/10-unset"),
        "export UCL_X=${DIB_UCL_NEVER_SET_ANYWHERE}\n",
    )
    .unwrap();
    let out = elements(&["plan", "unset"], &[dir.join("elements")]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.starts_with(
            "error: element \"unset\": environment.d/10-unset failed (exit status: 1): "
        ) && err.contains("DIB_UCL_NEVER_SET_ANYWHERE: unbound variable"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // A failing command in a pipeline is a failure too (pipefail).
    std::fs::write(
        el.join("environment.d/10-unset"),
        "export UCL_X=$(false | cat)\nfalse | cat\necho never\n",
    )
    .unwrap();
    let out = elements(&["plan", "unset"], &[dir.join("elements")]);
    assert!(!out.status.success());
    assert!(
        !text(&out.stderr).contains("never"),
        "{}",
        text(&out.stderr)
    );
}
