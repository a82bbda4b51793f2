//! Builds hybrid images with `write_hybrid` and checks them with independent
//! readers: sgdisk (GPT), xorriso and isoinfo (ISO 9660, Rock Ridge,
//! El Torito), fsck.fat (the ESP as cut out of the disk view).

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use common::tool_path;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use undercloud_live::image::{
    write_hybrid, BiosBoot, HybridReport, HybridSpec, IsoSource, VolumeLabel,
};

const EPOCH: i64 = 1_700_000_000;

fn have(tool: &str) -> bool {
    tool_path(tool).is_some()
}

/// Runs an installed tool; returns (success, raw stdout, stdout + stderr as text).
fn run_raw(tool: &str, args: &[&str]) -> (bool, Vec<u8>, String) {
    let exe = tool_path(tool).unwrap_or_else(|| panic!("{tool} not installed"));
    let out = Command::new(&exe)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), out.stdout, text)
}

fn run(tool: &str, args: &[&str]) -> (bool, String) {
    let (ok, _, text) = run_raw(tool, args);
    (ok, text)
}

/// Whether every tool is installed: a check left out says so, and fails
/// under `UCL_REQUIRE_ALL`.
fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools.iter().filter(|t| !have(t)).collect();
    common::require(missing.is_empty(), &format!("{missing:?} not installed"))
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A small FAT image holding EFI/BOOT/BOOTX64.EFI, made with fatfs.
fn make_esp(path: &Path, loader: &[u8]) {
    let mut f = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.set_len(8 << 20).unwrap();
    fatfs::format_volume(&mut f, fatfs::FormatVolumeOptions::new()).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
        {
            let boot = fs
                .root_dir()
                .create_dir("EFI")
                .unwrap()
                .create_dir("BOOT")
                .unwrap();
            boot.create_file("BOOTX64.EFI")
                .unwrap()
                .write_all(loader)
                .unwrap();
        }
        fs.unmount().unwrap();
    }
    drop(f);
    // fatfs 0.3.6 writes long-name entries in front of "." and ".." of every
    // directory it creates (rafalh/rust-fatfs#117), which fsck.fat reports.
    // Let dosfstools repair that in the fixture, so that the fsck check below
    // tests our writer and not the crate.
    if have("fsck.fat") {
        let (_, out) = run("fsck.fat", &["-a", path.to_str().unwrap()]);
        let (ok, after) = run("fsck.fat", &["-n", path.to_str().unwrap()]);
        assert!(
            ok,
            "fixture ESP still broken after fsck.fat -a:\n{out}\n{after}"
        );
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    spec: HybridSpec,
    /// iso_path -> expected contents
    expected: BTreeMap<String, Vec<u8>>,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();

    let loader = pseudo_random(70_001, 1);
    let mut expected = BTreeMap::new();
    let esp_path = src.join("efiboot.img");
    make_esp(&esp_path, &loader);
    expected.insert(
        "images/efiboot.img".to_string(),
        fs::read(&esp_path).unwrap(),
    );
    expected.insert("EFI/BOOT/BOOTX64.EFI".to_string(), loader);
    expected.insert(
        "EFI/BOOT/grub.cfg".to_string(),
        b"search --label UCLIVE\nlinux /boot/vmlinuz root=live:CDLABEL=UCLIVE\n".to_vec(),
    );
    expected.insert("LiveOS/squashfs.img".to_string(), pseudo_random(3 << 20, 2));
    expected.insert(
        "Deep/Nested/MixedCase/ReadMe.TXT".to_string(),
        b"upper".to_vec(),
    );
    expected.insert(
        "Deep/Nested/mixedcase/readme.txt".to_string(),
        b"lower".to_vec(),
    );
    expected.insert(
        "Deep/a-rather-long-file-name-beyond-thirty-characters.data".to_string(),
        pseudo_random(12_345, 3),
    );
    expected.insert(
        format!("Deep/{}.txt", "n".repeat(200)),
        b"long name".to_vec(),
    );
    expected.insert("Deep/.hidden".to_string(), b"dot".to_vec());
    expected.insert("empty.txt".to_string(), Vec::new());

    let mut files = Vec::new();
    for (i, (iso_path, data)) in expected.iter().enumerate() {
        let host = src.join(format!("f{i}"));
        fs::write(&host, data).unwrap();
        files.push(IsoSource {
            iso_path: iso_path.clone(),
            source: host,
        });
    }
    let spec = HybridSpec {
        volume_label: VolumeLabel::new("UCLIVE-TEST_1").unwrap(),
        epoch: EPOCH,
        seed: "image-layout-test".to_string(),
        files,
        esp: "images/efiboot.img".to_string(),
        root: Some("LiveOS/squashfs.img".to_string()),
        bios_boot: None,
        mbr_code: None,
        persistence: None,
        implant_md5: false,
    };
    Fixture {
        _dir: tmp,
        dir,
        spec,
        expected,
    }
}

fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).unwrap();
    buf
}

fn check_report(img: &Path, report: &HybridReport, fx: &Fixture) {
    let len = fs::metadata(img).unwrap().len();
    assert_eq!(len, report.size);
    assert_eq!(len % 2048, 0);
    let (esp_off, esp_len) = report.esp;
    assert_eq!(esp_off % (1 << 20), 0, "ESP starts on 1 MiB");
    assert_eq!(esp_len, fx.expected["images/efiboot.img"].len() as u64);
    let (root_off, root_len) = report.root.unwrap();
    assert_eq!(root_off % (1 << 20), 0, "root starts on 1 MiB");
    assert_eq!(root_len, 3 << 20);
    assert_eq!(
        read_range(img, root_off, root_len),
        fx.expected["LiveOS/squashfs.img"]
    );
    assert_eq!(
        read_range(img, esp_off, esp_len),
        fx.expected["images/efiboot.img"]
    );
    // The ISO volume space covers the whole file (PVD bytes 80..84, LE).
    let pvd = read_range(img, 16 * 2048, 2048);
    assert_eq!(&pvd[1..6], b"CD001");
    let space = u32::from_le_bytes(pvd[80..84].try_into().unwrap());
    assert_eq!(u64::from(space) * 2048, len);
}

#[test]
fn hybrid_image_reads_back_with_independent_tools() {
    let fx = fixture();
    let img = fx.dir.join("live.iso");
    let report = write_hybrid(&fx.spec, &img).unwrap();
    check_report(&img, &report, &fx);
    let img_s = img.to_str().unwrap();

    // Reproducible: a second write is byte-identical.
    let img2 = fx.dir.join("again.iso");
    let report2 = write_hybrid(&fx.spec, &img2).unwrap();
    assert_eq!(report, report2);
    assert!(
        fs::read(&img).unwrap() == fs::read(&img2).unwrap(),
        "two writes differ"
    );
    // The order in which files are listed does not matter either.
    let mut reordered = fx.spec.clone();
    reordered.files.reverse();
    let report3 = write_hybrid(&reordered, &img2).unwrap();
    assert_eq!(report, report3);
    assert!(
        fs::read(&img).unwrap() == fs::read(&img2).unwrap(),
        "file order changed the image"
    );

    if tools_present(&["sgdisk"]) {
        let (ok, out) = run("sgdisk", &["-v", img_s]);
        assert!(ok && out.contains("No problems found"), "sgdisk -v:\n{out}");
        assert!(!out.to_lowercase().contains("warning"), "sgdisk -v:\n{out}");

        let (ok, out) = run("sgdisk", &["-p", img_s]);
        assert!(ok, "sgdisk -p:\n{out}");
        let guid = report.disk_guid.to_string().to_uppercase();
        assert!(
            out.contains(&format!("Disk identifier (GUID): {guid}")),
            "{out}"
        );
        let rows: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|w| w.len() >= 6 && w[0].parse::<u32>().is_ok() && w[1].parse::<u64>().is_ok())
            .collect();
        assert_eq!(rows.len(), 2, "{out}");
        let expect_row =
            |row: &Vec<&str>, n: &str, (off, len): (u64, u64), code: &str, name: &str| {
                assert_eq!(row[0], n);
                assert_eq!(row[1].parse::<u64>().unwrap(), off / 512, "{out}");
                assert_eq!(
                    row[2].parse::<u64>().unwrap(),
                    (off + len) / 512 - 1,
                    "{out}"
                );
                assert_eq!(row[5], code, "{out}");
                assert_eq!(row[6], name, "{out}");
            };
        expect_row(&rows[0], "1", report.esp, "EF00", "ESP");
        expect_row(&rows[1], "2", report.root.unwrap(), "8304", "root");

        let (ok, out) = run("sgdisk", &["-i", "2", img_s]);
        assert!(ok, "{out}");
        assert!(
            out.contains("Partition GUID code: 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
            "{out}"
        );
        let (ok, out) = run("sgdisk", &["-i", "1", img_s]);
        assert!(ok, "{out}");
        assert!(
            out.contains("Partition GUID code: C12A7328-F81F-11D2-BA4B-00A0C93EC93B"),
            "{out}"
        );
    }

    if tools_present(&["xorriso"]) {
        let (ok, out) = run("xorriso", &["-indev", img_s, "-report_el_torito", "plain"]);
        assert!(ok, "xorriso -report_el_torito:\n{out}");
        let entries: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("El Torito boot img"))
            .collect();
        assert_eq!(entries.len(), 1, "{out}");
        let w: Vec<&str> = entries[0].split_whitespace().collect();
        // "El Torito boot img : 1 UEFI y none 0x0000 0x00 16384 LBA"
        assert!(w.contains(&"UEFI"), "{out}");
        assert_eq!(
            w.last().unwrap().parse::<u64>().unwrap(),
            report.esp.0 / 2048,
            "{out}"
        );
        assert_eq!(
            w[w.len() - 2].parse::<u64>().unwrap(),
            report.esp.1 / 512,
            "{out}"
        );

        // Every file comes back byte-identical under its mixed-case name.
        let out_dir = fx.dir.join("xorriso-out");
        let (ok, out) = run(
            "xorriso",
            &[
                "-osirrox",
                "on",
                "-indev",
                img_s,
                "-extract",
                "/",
                out_dir.to_str().unwrap(),
            ],
        );
        assert!(ok, "xorriso -extract:\n{out}");
        assert!(!out.contains("FAILURE") && !out.contains("SORRY"), "{out}");
        for (iso_path, data) in &fx.expected {
            let got = fs::read(out_dir.join(iso_path))
                .unwrap_or_else(|e| panic!("{iso_path} not extracted: {e}\n{out}"));
            assert!(got == *data, "{iso_path} differs after extraction");
        }
        assert_eq!(fs::read(out_dir.join("boot.catalog")).unwrap().len(), 2048);
        // Rock Ridge modes: 0644 files, 0755 directories.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| fs::metadata(out_dir.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("LiveOS/squashfs.img"), 0o644);
        assert_eq!(mode("LiveOS"), 0o755);
        assert_eq!(mode("Deep/Nested/mixedcase"), 0o755);
        // RR timestamps are the epoch.
        let mtime = fs::metadata(out_dir.join("LiveOS/squashfs.img"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(
            mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            EPOCH as u64
        );
    }

    if tools_present(&["isoinfo"]) {
        let (ok, out) = run("isoinfo", &["-d", "-i", img_s]);
        assert!(ok, "{out}");
        assert!(out.contains("Volume id: UCLIVE-TEST_1"), "{out}");
        assert!(
            out.contains("Rock Ridge signatures version 1 found"),
            "{out}"
        );
        assert!(out.contains("El Torito"), "{out}");
        for path in [
            "/LiveOS/squashfs.img",
            "/EFI/BOOT/BOOTX64.EFI",
            "/Deep/Nested/MixedCase/ReadMe.TXT",
        ] {
            let (ok, stdout, text) = run_raw("isoinfo", &["-R", "-i", img_s, "-x", path]);
            assert!(ok, "{text}");
            assert!(
                stdout == fx.expected[&path[1..]],
                "isoinfo -R -x {path} differs"
            );
        }
        // Plain ISO 9660 names (no Rock Ridge) are d-characters, unique.
        let (ok, out) = run("isoinfo", &["-f", "-i", img_s]);
        assert!(ok, "{out}");
        assert!(out.contains("/LIVEOS/SQUASHFS.IMG;1"), "{out}");
        assert!(out.contains("/DEEP/NESTED/MIXEDCASE"), "{out}");
        assert!(out.contains("/DEEP/NESTED/MIXEDCASE_1"), "{out}");
    }

    if tools_present(&["grub-fstest"]) {
        // GRUB's own iso9660 driver, which reads grub.cfg and the kernel at
        // boot, must see the Rock Ridge names too (grub-common ships it).
        let (ok, out) = run("grub-fstest", &[img_s, "ls", "(loop0)"]);
        assert!(ok && out.contains("Label `UCLIVE-TEST_1'"), "{out}");
        let (ok, out) = run("grub-fstest", &[img_s, "ls", "(loop0)/Deep/Nested"]);
        assert!(
            ok && out.contains("MixedCase/") && out.contains("mixedcase/"),
            "{out}"
        );
        let (ok, out) = run("grub-fstest", &[img_s, "ls", "(loop0)/EFI/BOOT"]);
        assert!(
            ok && out.contains("BOOTX64.EFI") && out.contains("grub.cfg"),
            "{out}"
        );
        for f in &fx.spec.files {
            if fx.expected[&f.iso_path].is_empty() {
                continue; // grub-fstest cmp cannot read an empty host file
            }
            let inside = format!("(loop0)/{}", f.iso_path);
            let (ok, out) = run(
                "grub-fstest",
                &[img_s, "cmp", &inside, f.source.to_str().unwrap()],
            );
            assert!(ok, "grub-fstest cmp {inside}:\n{out}");
        }
        // And GRUB finds the ESP through the GPT.
        let (ok, out) = run("grub-fstest", &[img_s, "ls", "(loop0,gpt1)"]);
        let start = format!("Partition start at {}KiB", report.esp.0 / 1024);
        assert!(
            ok && out.contains("Filesystem type fat") && out.contains(&start),
            "{out}"
        );
    }

    if tools_present(&["fsck.fat"]) {
        // The fixture itself must be clean, or the next check proves nothing.
        let source = &fx
            .spec
            .files
            .iter()
            .find(|f| f.iso_path == fx.spec.esp)
            .unwrap()
            .source;
        let (ok, out) = run("fsck.fat", &["-n", source.to_str().unwrap()]);
        assert!(ok, "fsck.fat -n on the source ESP:\n{out}");
        let (off, len) = report.esp;
        let esp = fx.dir.join("esp-cut.img");
        fs::write(&esp, read_range(&img, off, len)).unwrap();
        let (ok, out) = run("fsck.fat", &["-n", esp.to_str().unwrap()]);
        assert!(ok, "fsck.fat -n:\n{out}");
    }
}

#[test]
fn bios_and_uefi_entries() {
    let mut fx = fixture();
    let bios = pseudo_random(30_000, 9);
    let host = fx.dir.join("src").join("eltorito.img");
    fs::write(&host, &bios).unwrap();
    fx.spec.files.push(IsoSource {
        iso_path: "boot/grub/i386-pc/eltorito.img".to_string(),
        source: host,
    });
    fx.spec.bios_boot = Some(BiosBoot {
        iso_path: "boot/grub/i386-pc/eltorito.img".to_string(),
        boot_info_table: true,
        grub2_boot_info: true,
    });
    fx.spec.mbr_code = Some(vec![0xEB; 432]);
    let img = fx.dir.join("bios.iso");
    let report = write_hybrid(&fx.spec, &img).unwrap();
    check_report(&img, &report, &fx);
    let img_s = img.to_str().unwrap();

    // Find the BIOS image through the catalog: boot record -> catalog -> default entry.
    let brvd = read_range(&img, 17 * 2048, 2048);
    assert_eq!(&brvd[7..30], b"EL TORITO SPECIFICATION");
    let cat_lba = u32::from_le_bytes(brvd[0x47..0x4B].try_into().unwrap());
    let cat = read_range(&img, u64::from(cat_lba) * 2048, 2048);
    assert_eq!(cat[1], 0x00, "default entry is BIOS");
    assert_eq!(&cat[38..40], &4u16.to_le_bytes());
    let bios_lba = u32::from_le_bytes(cat[40..44].try_into().unwrap());
    assert_eq!(&cat[64..68], &[0x91, 0xEF, 1, 0]);
    assert_eq!(
        u32::from_le_bytes(cat[104..108].try_into().unwrap()),
        (report.esp.0 / 2048) as u32
    );

    // Boot info table: PVD LBA, own LBA, length, checksum from byte 64.
    let patched = read_range(&img, u64::from(bios_lba) * 2048, bios.len() as u64);
    let le = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
    assert_eq!(le(&patched[8..12]), 16);
    assert_eq!(le(&patched[12..16]), bios_lba);
    assert_eq!(le(&patched[16..20]), bios.len() as u32);
    let sum = bios[64..]
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(w)
        })
        .fold(0u32, u32::wrapping_add);
    assert_eq!(le(&patched[20..24]), sum);
    assert_eq!(&patched[64..2548], &bios[64..2548]);
    // GRUB's boot info (xorriso --grub2-boot-info): where diskboot.img finds
    // the rest of the core, in 512-byte LBAs.
    assert_eq!(
        u64::from_le_bytes(patched[2548..2556].try_into().unwrap()),
        u64::from(bios_lba) * 4 + 5
    );
    assert_eq!(&patched[2556..], &bios[2556..]);

    // MBR: boot code, the GRUB2 core address patch, protective partition.
    let mbr = read_range(&img, 0, 512);
    assert_eq!(&mbr[..432], &[0xEB; 432][..]);
    let core = u64::from_le_bytes(mbr[0x1b0..0x1b8].try_into().unwrap());
    assert_eq!(core, u64::from(bios_lba) * 4 + 4);
    assert_eq!(mbr[446 + 4], 0xEE);
    assert_eq!(&mbr[510..], &[0x55, 0xAA]);

    if tools_present(&["xorriso"]) {
        let (ok, out) = run("xorriso", &["-indev", img_s, "-report_el_torito", "plain"]);
        assert!(ok, "{out}");
        let entries: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("El Torito boot img"))
            .collect();
        assert_eq!(entries.len(), 2, "{out}");
        assert!(entries[0].contains("BIOS"), "{out}");
        assert!(entries[1].contains("UEFI"), "{out}");
    }
    if tools_present(&["sgdisk"]) {
        let (ok, out) = run("sgdisk", &["-v", img_s]);
        assert!(ok && out.contains("No problems found"), "sgdisk -v:\n{out}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let fx = fixture();
    let img = fx.dir.join("bad.iso");

    // A bad volume label cannot reach write_hybrid: it fails as a
    // VolumeLabel is made.
    let e = format!("{:#}", VolumeLabel::new("no spaces allowed").unwrap_err());
    assert!(
        e.contains("\"no spaces allowed\": use 1 to 32 of A-Z"),
        "{e}"
    );

    let mut spec = fx.spec.clone();
    spec.esp = "images/missing.img".to_string();
    let e = format!("{:#}", write_hybrid(&spec, &img).unwrap_err());
    assert!(e.contains("images/missing.img"), "{e}");

    let mut spec = fx.spec.clone();
    spec.files[0].source = fx.dir.join("does-not-exist");
    let e = format!("{:#}", write_hybrid(&spec, &img).unwrap_err());
    assert!(
        e.contains("does-not-exist") && e.contains(&spec.files[0].iso_path),
        "{e}"
    );

    let mut spec = fx.spec.clone();
    spec.files.push(spec.files[0].clone());
    assert!(write_hybrid(&spec, &img).is_err());

    let mut spec = fx.spec.clone();
    spec.mbr_code = Some(vec![0; 512]);
    let e = format!("{:#}", write_hybrid(&spec, &img).unwrap_err());
    assert!(e.contains("440"), "{e}");
}
