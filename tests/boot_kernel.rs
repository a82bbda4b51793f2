//! `undercloud-live boot NAME.kernel`: direct kernel boot of a netboot
//! ramdisk (Ironic's naming, NAME.initramfs beside the kernel), with no
//! boot drive.
//!
//! The kernel is the test base's; the initramfs is made here at run time
//! from busybox-static, cpio and zstd: a shell `/init` that prints what it
//! found on the kernel command line and powers off, or one that exits (a
//! kernel panic, which `panic=-1` and `-no-reboot` turn into QEMU exiting).
//! Each boot takes about 11 s under TCG.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use common::*;

/// `/init` for the marker boot. The marker is assembled from the kernel
/// command line, so the kernel's own "Kernel command line:" log line (which
/// shows `ucl.test=...`) cannot match it.
const INIT_MARKER: &str = r#"#!/bin/busybox sh
# The archive holds no /dev/console (making one needs root): mount devtmpfs
# and take the console from it.
/bin/busybox mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox mount -t proc proc /proc
for a in $(/bin/busybox cat /proc/cmdline); do
  case $a in ucl.test=*) v=${a#ucl.test=} ;; esac
done
echo "ucl-kernel-test: append=$v"
/bin/busybox poweroff -f
"#;

/// `/init` that exits: "Attempted to kill init!", a kernel panic.
const INIT_EXIT: &str = "#!/bin/busybox sh\nexit 3\n";

/// A statically linked busybox (one without a PT_INTERP program header:
/// the initramfs has no libraries), or `None`.
fn static_busybox() -> Option<PathBuf> {
    let found = [
        "/bin/busybox",
        "/usr/bin/busybox",
        "/usr/sbin/busybox",
        "/sbin/busybox",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())?;
    let elf = fs::read(&found).ok()?;
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    if elf.len() < 64 || &elf[..5] != b"\x7fELF\x02" {
        return None;
    }
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let dynamic = (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        elf.get(at..at + 4) == Some(&3u32.to_le_bytes()[..]) // PT_INTERP
    });
    if dynamic {
        eprintln!(
            "{} is dynamically linked: install busybox-static",
            found.display()
        );
        return None;
    }
    Some(found)
}

fn require_tools() {
    let mut missing: Vec<&str> = ["cpio", "zstd", "qemu-system-x86_64"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if static_busybox().is_none() {
        missing.push("busybox-static");
    }
    // scripts/install-deps installs them all: a missing one is a broken
    // set-up, not a reason to pass.
    assert!(
        missing.is_empty(),
        "{} not installed (run scripts/install-deps)",
        missing.join(", ")
    );
}

/// The test base's kernel, extracted once per test run.
fn base_kernel() -> &'static Path {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL.get_or_init(|| {
        let base = test_base();
        let dir = scratch("boot-kernel-base");
        // --occurrence=1: stop at the first match instead of reading the
        // whole archive (the kernel is near its start).
        let ok = Command::new("tar")
            .arg("-xJf")
            .arg(base.join("rootfs.tar.xz"))
            .args(["-C"])
            .arg(&dir)
            .args(["--wildcards", "--occurrence=1", "./boot/vmlinuz-*"])
            .status()
            .expect("running tar")
            .success();
        assert!(ok, "extracting ./boot/vmlinuz-* from the test base");
        let kernel = fs::read_dir(dir.join("boot"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinuz-")
            })
            .expect("a vmlinuz-* in the test base");
        kernel
    })
}

/// `dir/NAME.kernel` and `dir/NAME.initramfs` (zstd-compressed newc cpio of
/// busybox and `init`), as a ramdisk build lays them out.
fn ramdisk(dir: &Path, name: &str, init: &str) -> PathBuf {
    let root = dir.join(format!("{name}-root"));
    for d in ["bin", "dev", "proc", "sys"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(static_busybox().unwrap(), root.join("bin/busybox")).unwrap();
    fs::write(root.join("init"), init).unwrap();
    let ok = Command::new("chmod")
        .args(["755", "init", "bin/busybox"])
        .current_dir(&root)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let initramfs = dir.join(format!("{name}.initramfs"));
    let ok = Command::new("bash")
        .arg("-c")
        .arg("set -o pipefail; find . | cpio -o -H newc -R 0:0 --quiet | zstd -q -o \"$1\"")
        .arg("bash")
        .arg(&initramfs)
        .current_dir(&root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "packing {}", initramfs.display());
    let kernel = dir.join(format!("{name}.kernel"));
    fs::copy(base_kernel(), &kernel).unwrap();
    kernel
}

#[test]
#[ignore = "boots QEMU with the test base kernel (make test runs it)"]
fn ramdisk_boots_directly_to_marker() {
    require_tools();
    let dir = scratch("boot-kernel-marker");
    let kernel = ramdisk(&dir, "ramdisk", INIT_MARKER);
    let log = dir.join("console.log");
    let t = Instant::now();
    let out = run(bin()
        .arg("boot")
        .arg(&kernel)
        .args(["--append", "ucl.test=from-append"])
        .args(["--expect", "ucl-kernel-test: append=from-append"])
        .args(["--accel", "tcg", "--timeout", "120"])
        .arg("--log")
        .arg(&log));
    eprintln!("direct kernel boot to the marker: {:?}", t.elapsed());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("==> found \"ucl-kernel-test: append=from-append\" after"),
        "{stderr}"
    );
    let console = fs::read_to_string(&log).unwrap();
    // SeaBIOS by default (it prints its banner on our serial port), our
    // fixed arguments first, then --append.
    assert!(console.contains("SeaBIOS"), "{console}");
    assert!(
        console.contains("Kernel command line: console=ttyS0,115200 panic=-1 ucl.test=from-append"),
        "{console}"
    );
    assert!(console.contains("Run /init as init process"), "{console}");
}

#[test]
#[ignore = "boots QEMU with the test base kernel (make test runs it)"]
fn ramdisk_panic_ends_the_boot() {
    require_tools();
    let dir = scratch("boot-kernel-panic");
    let kernel = ramdisk(&dir, "broken", INIT_EXIT);
    let t = Instant::now();
    let out = run(bin()
        .arg("boot")
        .arg("--kernel")
        .arg(&kernel)
        .arg("--initrd")
        .arg(dir.join("broken.initramfs"))
        .args([
            "--expect",
            "never printed",
            "--accel",
            "tcg",
            "--timeout",
            "120",
        ]));
    assert!(!out.status.success());
    // Seen and reported at once, not after the timeout.
    assert!(t.elapsed().as_secs() < 90, "{:?}", t.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_default();
    assert!(first.contains("broken.kernel with initrd "), "{stderr}");
    assert!(first.contains(": kernel panic after "), "{stderr}");
    // The panic's reason is in that line, though the register dump after
    // it fills the console lines shown below.
    assert!(first.contains(" s (Attempted to kill init!"), "{stderr}");
}

/// Mistakes are one line each and start no QEMU (no kernel needed).
#[test]
fn kernel_argument_mistakes() {
    let dir = scratch("boot-kernel-mistakes");
    let kernel = dir.join("ipa.kernel");
    fs::write(&kernel, b"not really a kernel").unwrap();
    let error = |args: &[&str]| {
        let out = run(bin().arg("boot").args(args).current_dir(&dir));
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        stderr
    };
    let e = error(&["ipa.kernel"]);
    assert!(
        e.contains("ipa.initramfs not found beside ipa.kernel"),
        "{e}"
    );
    let e = error(&["live.iso", "--kernel", "ipa.kernel"]);
    assert!(e.contains("not both"), "{e}");
    let e = error(&["live.iso", "--initrd", "x.img"]);
    assert!(e.contains("--initrd x.img needs --kernel"), "{e}");
    let e = error(&["--initrd", "x.img"]);
    assert!(e.contains("--initrd x.img needs --kernel"), "{e}");
    let e = error(&[
        "--kernel",
        "ipa.kernel",
        "--initrd",
        "x.img",
        "--as",
        "disk",
    ]);
    assert!(e.contains("--as disk attaches an image"), "{e}");
    let e = error(&[]);
    assert!(e.contains("nothing to boot"), "{e}");

    // Too little memory for the ramdisk: refused before QEMU starts.
    let initramfs = dir.join("ipa.initramfs");
    fs::File::create(&initramfs)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    if have("qemu-system-x86_64") {
        let e = error(&["ipa.kernel", "--memory", "1024"]);
        assert!(e.contains("needs about 1712 MiB"), "{e}");
        assert!(e.trim_end().ends_with("use --memory 1792"), "{e}");
    }
}
