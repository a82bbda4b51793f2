//! The slow inputs several suites share, made once and kept in the cache
//! (the Debian test base, the deploy ramdisk, the deploy disk image, the
//! undercloud image), the build command on the test base, and a fake root
//! for `undercloud configure`. In one place so that every suite builds
//! them the same way and under the same cache keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::env::{bin, repo, run};
use super::fs::scratch;
use super::http::{serve, Mode, Server};

/// The Debian test base folder (rootfs.tar.xz + SHA256SUMS): $UCL_TEST_BASE,
/// else made (or found in its cache) by scripts/make-test-base.
pub fn test_base() -> PathBuf {
    if let Some(d) = std::env::var_os("UCL_TEST_BASE") {
        return PathBuf::from(d);
    }
    let out = Command::new(repo().join("scripts/make-test-base"))
        .output()
        .expect("running scripts/make-test-base");
    assert!(
        out.status.success(),
        "scripts/make-test-base failed (the end-to-end tests need root and debootstrap):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("make-test-base printed its folder")
            .trim(),
    )
}

/// `undercloud-live build SPEC` of the base `server` serves, written to
/// `out`, with the given cache and work folders; callers add what differs
/// (SOURCE_DATE_EPOCH, --keep-workdir).
pub fn build_command(
    spec: &Path,
    server: &Server,
    out: &Path,
    cache: &Path,
    work: &Path,
) -> Command {
    let mut cmd = bin();
    cmd.arg("build")
        .arg(spec)
        .arg("--output")
        .arg(out)
        .arg("--base")
        .arg(server.url("rootfs.tar.xz"))
        .arg("--base-checksum-url")
        .arg(server.url("SHA256SUMS"))
        .arg("--cache-dir")
        .arg(cache)
        .arg("--workdir")
        .arg(work);
    cmd
}

/// A fake root with what `undercloud configure` needs: the two accounts
/// and iPXE.
pub fn configure_root(root: &Path) {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nironic:x:0:0::/var/lib/ironic:/bin/false\nstack:x:0:0::/home/stack:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/shadow"),
        "root::1::::::\nironic:!:1::::::\nstack:!:1::::::\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::create_dir_all(root.join("usr/lib/ipxe")).unwrap();
    std::fs::write(root.join("usr/lib/ipxe/undionly.kpxe"), b"kpxe").unwrap();
    std::fs::write(root.join("usr/lib/ipxe/ipxe.efi"), b"efi").unwrap();
}

/// The cache tests keep slow fixtures in: the tool's own default.
pub fn cache_root() -> PathBuf {
    undercloud_live::cache::default_cache_dir()
}

/// Every file under `dir`, sorted, as (relative path, mode, bytes).
fn files(dir: &Path, out: &mut BTreeMap<String, (u32, Vec<u8>)>, base: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out, base);
        } else {
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let mode = e.metadata().unwrap().permissions().mode();
            out.insert(rel, (mode, std::fs::read(&p).unwrap()));
        }
    }
}

/// The key of the ramdisk's inputs: the spec and the element.
pub fn inputs_key(spec: &Path, element: &Path) -> String {
    let mut h = Sha256::new();
    h.update(b"ipa-ramdisk test v1\0");
    h.update(std::fs::read(spec).unwrap());
    let mut all = BTreeMap::new();
    files(element, &mut all, element);
    for (name, (mode, bytes)) in all {
        h.update(format!("\0{name}\0{mode:o}\0{}\0", bytes.len()).as_bytes());
        h.update(&bytes);
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// The built ramdisk's prefix (`.kernel` + `.initramfs`), from the cache or
/// built now.
/// (tests/ipa_ramdisk.rs boots it; the undercloud tests carry it.)
pub fn ipa_ramdisk() -> PathBuf {
    let spec = repo().join("kickstart/ipa-ramdisk-debian.yaml");
    let key = inputs_key(&spec, &repo().join("overlays/ipa-ramdisk"));
    let cache = cache_root();
    let dir = cache.join("ipa-ramdisk").join(&key);
    let prefix = dir.join("ipa");
    if prefix.with_extension("kernel").is_file() && prefix.with_extension("initramfs").is_file() {
        println!("ramdisk from the cache: {}", dir.display());
        return prefix;
    }
    let scratch = scratch("ipa-ramdisk-build");
    let t = Instant::now();
    let o = run(bin()
        .arg("build")
        .arg(&spec)
        .arg("--output")
        .arg(scratch.join("out/ipa"))
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--workdir")
        .arg(scratch.join("work"))
        .arg("--log")
        .arg(scratch.join("build.log")));
    assert!(
        o.status.success(),
        "building {} failed (needs root and the Debian mirror); log: {}",
        spec.display(),
        scratch.join("build.log").display()
    );
    let size = std::fs::metadata(scratch.join("out/ipa.initramfs"))
        .unwrap()
        .len();
    println!(
        "ramdisk built in {:.0} s: initramfs {} MiB",
        t.elapsed().as_secs_f64(),
        size >> 20
    );
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(scratch.join("out"), &dir).unwrap_or_else(|e| {
        // Another file system: copy.
        eprintln!("rename into the cache failed ({e}); copying");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["ipa.kernel", "ipa.initramfs"] {
            std::fs::copy(scratch.join("out").join(f), dir.join(f)).unwrap();
        }
    });
    prefix
}

/// An output of a slow build kept under `<cache>/<kind>/<key>/`, the key
/// made of every input: the files and folders named (contents, names and
/// modes) and this program (it goes into images and decides their bytes).
/// Only the newest key of a kind is kept. `make` writes the output into the
/// folder it is given; the result is that folder.
pub fn cached_build(kind: &str, inputs: &[PathBuf], make: impl FnOnce(&Path)) -> PathBuf {
    let mut h = Sha256::new();
    h.update(format!("{kind} v1\0").as_bytes());
    h.update(std::fs::read(env!("CARGO_BIN_EXE_undercloud-live")).unwrap());
    for input in inputs {
        let mut all = BTreeMap::new();
        if input.is_dir() {
            files(input, &mut all, input);
        } else {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(input).unwrap().permissions().mode();
            all.insert(String::new(), (mode, std::fs::read(input).unwrap()));
        }
        h.update(format!("\0{}\0", input.display()).as_bytes());
        for (name, (mode, bytes)) in all {
            h.update(format!("\0{name}\0{mode:o}\0{}\0", bytes.len()).as_bytes());
            h.update(&bytes);
        }
    }
    let key = hex::encode(h.finalize())[..16].to_string();
    let kind_dir = cache_root().join(kind);
    let dir = kind_dir.join(&key);
    if dir.join(".complete").is_file() {
        println!("{kind} from the cache: {}", dir.display());
        return dir;
    }
    let tmp = kind_dir.join(format!(".{key}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    make(&tmp);
    std::fs::write(tmp.join(".complete"), b"").unwrap();
    // Older keys of this kind are dead weight.
    for e in std::fs::read_dir(&kind_dir).unwrap().flatten() {
        if e.path() != tmp {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    std::fs::rename(&tmp, &dir).unwrap();
    dir
}

/// The marker image as a `format: disk` qcow2
/// (tests/fixtures/specs/minimal.yaml on the test base): what the
/// provisioning test deploys.
pub fn deploy_disk_image() -> PathBuf {
    let base = test_base();
    let spec = repo().join("tests/fixtures/specs/minimal.yaml");
    let dir = cached_build(
        "deploy-disk",
        &[
            spec.clone(),
            repo().join("tests/fixtures/elements/marker-hello"),
            repo().join("tests/fixtures/elements/marker"),
            base.join("SHA256SUMS"),
        ],
        |out| {
            let server = serve(&base, Mode::Normal);
            let work = scratch("deploy-disk-build");
            let t = Instant::now();
            let o = run(build_command(
                &spec,
                &server,
                &out.join("marker.qcow2"),
                &cache_root(),
                &work.join("work"),
            )
            .args(["--format", "disk"]));
            assert!(o.status.success(), "building the deploy disk image failed");
            println!(
                "deploy disk image built in {:.0} s",
                t.elapsed().as_secs_f64()
            );
            let _ = std::fs::remove_dir_all(&work);
        },
    );
    dir.join("marker.qcow2")
}

/// The undercloud test image (tests/fixtures/specs/undercloud.yaml: Debian
/// trixie debootstrapped from the mirror, the shipped elements and kickstart, the
/// deploy ramdisk through extra_files), shared by the tests that boot it:
/// each boots a sparse copy, since booting writes to its persistence.
pub fn undercloud_image() -> PathBuf {
    let ipa = ipa_ramdisk();
    let spec = repo().join("tests/fixtures/specs/undercloud.yaml");
    let staged = repo().join("target/test-images");
    let dir = cached_build(
        "undercloud-image",
        &[
            spec.clone(),
            repo().join("tests/fixtures/specs/undercloud-esp.yaml"),
            repo().join("tests/fixtures/specs/undercloud-nodes.yaml"),
            repo().join("overlays"),
            repo().join("kickstart/undercloud-live.ks"),
            repo().join("kickstart/undercloud-live-debian-map.yaml"),
            ipa.with_extension("kernel"),
            ipa.with_extension("initramfs"),
        ],
        |out| {
            // Where the spec's extra_files expect the deploy ramdisk.
            std::fs::create_dir_all(&staged).unwrap();
            for ext in ["kernel", "initramfs"] {
                std::fs::copy(ipa.with_extension(ext), staged.join(format!("ipa.{ext}"))).unwrap();
            }
            let work = scratch("undercloud-image-build");
            let t = Instant::now();
            let o = run(bin()
                .arg("build")
                .arg(&spec)
                .arg("--output")
                .arg(out.join("undercloud.img"))
                .arg("--cache-dir")
                .arg(cache_root())
                .arg("--workdir")
                .arg(work.join("work")));
            assert!(
                o.status.success(),
                "building {} failed (needs root and the Debian mirror)",
                spec.display()
            );
            // When this build installed the packages (its package layer was
            // not in the cache), the kernel package was configured and its
            // hook made no /boot/initrd.img (INITRD=No): the live initrd is
            // the only one.
            let log = std::fs::read_to_string(out.join("undercloud.img.log")).unwrap();
            let restored = log
                .lines()
                .any(|l| l.contains("package layer") && l.contains("from the cache"));
            if !restored {
                assert!(
                    log.contains("Setting up linux-image-"),
                    "no kernel installed?"
                );
            }
            assert!(
                !log.contains("Generating /boot/initrd.img"),
                "a package trigger built /boot/initrd.img during the build"
            );
            println!(
                "undercloud image built in {:.0} s: {} MiB",
                t.elapsed().as_secs_f64(),
                std::fs::metadata(out.join("undercloud.img")).unwrap().len() >> 20
            );
            let _ = std::fs::remove_dir_all(&work);
        },
    );
    dir.join("undercloud.img")
}
