//! Bad input gets a one-line error naming the culprit, a non-zero exit, no
//! output file and no mounts left behind.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const SPEC: &str = "\
name: bad
label: UCL-BAD
base:
  distro: debian
  release: bookworm
  path: base.tar.gz
elements: [marker]
elements_path: [ELEMENTS]
";

struct Case {
    dir: PathBuf,
    out: PathBuf,
    work: PathBuf,
}

fn case(name: &str, spec: &str) -> Case {
    let dir = scratch(&format!("bad-{name}"));
    let elements = repo().join("tests/fixtures/elements");
    std::fs::write(
        dir.join("spec.yaml"),
        spec.replace("ELEMENTS", &elements.display().to_string()),
    )
    .unwrap();
    Case {
        out: dir.join("out.iso"),
        work: dir.join("work"),
        dir,
    }
}

fn build(c: &Case, extra: &[&str]) -> Output {
    run(build_args(&mut bin(), c).args(extra))
}

/// `--quiet build` of the case's spec into its output, work and cache.
fn build_args<'a>(cmd: &'a mut std::process::Command, c: &Case) -> &'a mut std::process::Command {
    cmd.arg("--quiet")
        .arg("build")
        .arg(c.dir.join("spec.yaml"))
        .arg("--output")
        .arg(&c.out)
        .arg("--workdir")
        .arg(&c.work)
        .arg("--cache-dir")
        .arg(c.dir.join("cache"))
}

/// The common promises of every failure.
fn assert_clean_failure(c: &Case, o: &Output, culprit: &str) {
    assert!(!o.status.success(), "build should have failed");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(
        lines[0].contains(culprit),
        "error does not name {culprit:?}: {stderr}"
    );
    assert!(!c.out.exists(), "output file left behind");
    let leftovers: Vec<_> = std::fs::read_dir(&c.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "partial output left: {leftovers:?}");
    assert!(!c.work.exists(), "work folder left behind");
    assert!(mounts_under(&c.dir).is_empty(), "mounts left behind");
}

/// A small valid tar.gz to serve as a base.
fn small_base(dir: &Path) -> PathBuf {
    let p = dir.join("base.tar.gz");
    let f = std::fs::File::create(&p).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(6);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "etc/hostname", &b"hello\n"[..])
        .unwrap();
    b.into_inner().unwrap().finish().unwrap();
    p
}

fn sha256_of(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

#[test]
fn unknown_spec_key() {
    let c = case(
        "key",
        &SPEC.replace("elements: [marker]", "elements: [marker]\ncolour: blue"),
    );
    let o = build(&c, &[]);
    assert_clean_failure(&c, &o, "colour");
    assert!(String::from_utf8_lossy(&o.stderr).contains("spec.yaml"));
}

/// A label the image cannot carry fails the spec's load, in one line
/// naming the value and the rule, before any work starts.
#[test]
fn bad_volume_label() {
    for (name, label, culprit) in [
        (
            "label-lower",
            "ucl-bad",
            "\"ucl-bad\": use 1 to 32 of A-Z, 0-9",
        ),
        ("label-long", &"A".repeat(33), "use 1 to 32 of A-Z, 0-9"),
    ] {
        let c = case(name, &SPEC.replace("UCL-BAD", label));
        let o = build(&c, &[]);
        assert_clean_failure(&c, &o, culprit);
        assert!(String::from_utf8_lossy(&o.stderr).contains("spec.yaml"));
    }
}

#[test]
fn missing_element() {
    let c = case(
        "element",
        &SPEC.replace("[marker]", "[marker, no-such-element]"),
    );
    let o = build(&c, &[]);
    assert_clean_failure(&c, &o, "no-such-element");
}

#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn wrong_sha256() {
    let c = case("sha", SPEC);
    let base = small_base(&c.dir);
    let server = serve(&c.dir, Mode::Normal);
    let wrong = "0".repeat(64);
    let o = build(
        &c,
        &[
            "--base",
            &server.url("base.tar.gz"),
            "--base-sha256",
            &wrong,
        ],
    );
    assert_clean_failure(&c, &o, "checksum mismatch");
    assert!(base.is_file());
    // Nothing unverified was kept in the cache.
    let cached = walk(&c.dir.join("cache"));
    assert!(cached.iter().all(|p| !p.ends_with(&wrong)), "{cached:?}");
}

#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn truncated_download() {
    let c = case("truncated", SPEC);
    let base = small_base(&c.dir);
    let server = serve(&c.dir, Mode::Truncate);
    let sum = sha256_of(&base);
    let o = build(
        &c,
        &["--base", &server.url("base.tar.gz"), "--base-sha256", &sum],
    );
    assert_clean_failure(&c, &o, "truncated");
}

#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn tar_entry_leaving_the_root() {
    let c = case("dotdot", SPEC);
    let p = c.dir.join("evil.tar");
    // The tar crate refuses to write "..", so the header name is set raw.
    let mut data = Vec::new();
    {
        let mut b = tar::Builder::new(&mut data);
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..12].copy_from_slice(b"../escape-me");
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"evil"[..]).unwrap();
        b.finish().unwrap();
    }
    std::fs::write(&p, &data).unwrap();
    let sum = sha256_of(&p);
    let o = build(&c, &["--base", p.to_str().unwrap(), "--base-sha256", &sum]);
    assert_clean_failure(&c, &o, "../escape-me");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn unknown_output_format() {
    let c = case("format", &format!("{SPEC}format: floppy\n"));
    let o = build(&c, &[]);
    assert_clean_failure(&c, &o, "floppy");
    let o = build(&case("format-cli", SPEC), &["--format", "floppy"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("use hybrid, ramdisk or disk"));
}

#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn qcow2_without_qemu_img() {
    let mut c = case("qcow2", SPEC);
    c.out = c.dir.join("out.qcow2");
    small_base(&c.dir);
    // A PATH with what a build needs but qemu-img.
    let bin_dir = c.dir.join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    for tool in ["bash", "cp", "chroot", "losetup", "mkfs.ext4"] {
        let found = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, bin_dir.join(tool)).unwrap();
    }
    let o = run(bin()
        .env("PATH", &bin_dir)
        .arg("--quiet")
        .arg("build")
        .arg(c.dir.join("spec.yaml"))
        .args(["--format", "disk", "--output"])
        .arg(&c.out)
        .arg("--workdir")
        .arg(&c.work)
        .arg("--cache-dir")
        .arg(c.dir.join("cache")));
    assert_clean_failure(&c, &o, "qemu-img");
    assert!(String::from_utf8_lossy(&o.stderr).contains("qemu-utils"));
}

/// A mirror that cannot be reached is one line naming the ways around it,
/// at once (no back-off), with nothing left in the cache or beside the
/// output: a name that does not resolve, and a port that refuses.
#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn unreachable_mirror_fails_fast() {
    for (name, mirror) in [
        ("dns", "http://mirror.invalid/fedora"),
        ("refused", "http://127.0.0.1:1/fedora"),
    ] {
        let c = case(
            &format!("mirror-{name}"),
            &format!(
                "name: bad\nlabel: UCL-BAD\nbase:\n  distro: fedora\n  release: \"43\"\n  mirror: {mirror}\nelements: [marker]\nelements_path: [ELEMENTS]\n"
            ),
        );
        let t = std::time::Instant::now();
        let o = build(&c, &[]);
        let secs = t.elapsed().as_secs_f64();
        assert!(secs < 5.0, "{name}: took {secs:.1} s");
        assert_clean_failure(&c, &o, "cannot reach");
        let stderr = String::from_utf8_lossy(&o.stderr);
        for hint in ["make image BASE=debian", "base.mirror", "--base FILE"] {
            assert!(stderr.contains(hint), "{name}: no {hint:?} in: {stderr}");
        }
        let leftovers: Vec<PathBuf> = walk(&c.dir.join("cache"))
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
        assert!(leftovers.is_empty(), "{name}: cache holds {leftovers:?}");
        let beside: Vec<String> = std::fs::read_dir(&c.dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("out") || n.starts_with(".out"))
            .collect();
        assert!(
            beside.is_empty(),
            "{name}: left beside the output: {beside:?}"
        );
    }
}

/// Runs `cmd`, killing it if it has not finished within 30 s: a command
/// that opens a FIFO with a plain open would wait forever for a writer.
fn run_bounded(cmd: &mut std::process::Command) -> Output {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running undercloud-live");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{cmd:?} blocked for 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!("$ {cmd:?}\n{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A FIFO, a character device and a directory named where a file is read
/// get a one-line error saying what they are, at once.
#[test]
fn special_files_are_refused() {
    let dir = scratch("bad-special-files");
    let fifo = dir.join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let base = small_base(&dir);
    for (path, is) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
        (dir.as_path(), "a directory"),
    ] {
        let cases: Vec<Vec<std::ffi::OsString>> = vec![
            vec![
                "fetch".into(),
                base.clone().into(),
                "--checksum-url".into(),
                path.into(),
                "--cache-dir".into(),
                dir.join("cache").into(),
                "--offline".into(),
            ],
            vec!["inspect".into(), path.into()],
            vec!["verify".into(), path.into()],
            vec![
                "write".into(),
                path.into(),
                dir.join("target").into(),
                "--to-file".into(),
                "--yes".into(),
            ],
        ];
        for args in cases {
            let o = run_bounded(bin().arg("--quiet").args(&args));
            assert!(!o.status.success(), "{args:?} should have failed");
            let stderr = String::from_utf8_lossy(&o.stderr);
            let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
            assert_eq!(
                lines.len(),
                1,
                "{args:?}: expected one line, got:\n{stderr}"
            );
            assert!(lines[0].contains(is), "{args:?}: {stderr}");
        }
    }
}

/// A spec larger than any real one (1 MiB) is refused before parsing.
#[test]
#[ignore = "needs root: builds in a chroot (make test runs it)"]
fn oversized_spec() {
    let padding = "# padding padding padding padding padding padding padding\n";
    let spec = format!("{SPEC}{}", padding.repeat((1 << 20) / padding.len() + 1));
    let c = case("oversized-spec", &spec);
    let o = build(&c, &[]);
    assert_clean_failure(&c, &o, "1 MiB limit");
}

/// `build` as an ordinary user: a mistake in the spec is named first, as
/// it is for root; a good spec then gets one line saying build needs root,
/// not "are you root?" from the mount namespace it could not make.
#[test]
fn as_an_ordinary_user_spec_mistakes_come_before_asking_for_root() {
    use std::os::unix::fs::PermissionsExt;
    // Root runs the binary as nobody (setpriv, util-linux); anyone else
    // runs it as themselves.
    let as_user = |c: &Case| -> Output {
        let mut cmd = if is_root() {
            let mut s = std::process::Command::new("setpriv");
            s.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(env!("CARGO_BIN_EXE_undercloud-live"));
            s
        } else {
            bin()
        };
        run(build_args(&mut cmd, c))
    };
    let open = |c: &Case| {
        std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    };
    let bad = case(
        "user-key",
        &SPEC.replace("elements: [marker]", "elements: [marker]\ncolour: blue"),
    );
    open(&bad);
    let o = as_user(&bad);
    assert_clean_failure(&bad, &o, "colour");
    let good = case("user-good", SPEC);
    small_base(&good.dir);
    open(&good);
    let o = as_user(&good);
    assert_clean_failure(&good, &o, "build needs root");
}
