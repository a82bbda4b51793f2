//! Ctrl-C during a build: the hook is killed, the build stops with an error,
//! and no output file, work folder or mount is left behind.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn sigint_during_a_hook_cleans_up() {
    let base = test_base();
    let dir = scratch("interrupt");
    let spec = dir.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "name: slow\nlabel: UCL-SLOW\nbase:\n  distro: debian\n  release: bookworm\n  path: {}\nelements: [slow-hook]\nelements_path: [{}]\n",
            base.join("rootfs.tar.xz").display(),
            repo().join("tests/fixtures/elements").display()
        ),
    )
    .unwrap();
    let out = dir.join("slow.iso");
    let work = dir.join("work");
    let sums = std::fs::read_to_string(base.join("SHA256SUMS")).unwrap();
    let sha = sums.split_whitespace().next().unwrap().to_string();
    let mut child = bin()
        .arg("build")
        .arg(&spec)
        .arg("--output")
        .arg(&out)
        .arg("--workdir")
        .arg(&work)
        .arg("--base-sha256")
        .arg(&sha)
        .arg("--base")
        .arg(base.join("rootfs.tar.xz"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Hook output goes to stdout, our progress to stderr: wait for the hook.
    let stdout = child.stdout.take().unwrap();
    let started = Instant::now();
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(l)) if l.contains("slow hook started") => break,
            Some(_) => {}
            None => panic!("build ended before the hook started"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "hook never started"
        );
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let t = Instant::now();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "took {:?} to stop",
        t.elapsed()
    );
    assert!(stderr.contains("error: interrupted"), "{stderr}");
    assert!(!out.exists(), "output left behind");
    assert!(!work.exists(), "work folder left behind");
    assert!(mounts_under(&dir).is_empty(), "mounts left behind");
}
