//! Micro-benchmarks of the image writers (`cargo bench --bench writers`,
//! run by `make bench`, never by `make test`): the ISO9660/El Torito
//! writer on a metadata-heavy tree and on a bulk file, the media checksum,
//! the GPT and the FAT ESP. Scratch files go to /dev/shm when it exists, so
//! the writers are measured rather than a disk.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use divan::Bencher;
use tempfile::TempDir;
use undercloud_live::fs::esp::{self, EspContent, EspFile, EspOptions};
use undercloud_live::image::gpt::{self, PartitionSpec};
use undercloud_live::image::{write_hybrid, HybridSpec, IsoSource, VolumeLabel};

fn main() {
    divan::main();
}

fn scratch() -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("a scratch folder in /dev/shm")
    } else {
        tempfile::tempdir().expect("a scratch folder")
    }
}

/// A tree of `files` small files in folders of 50, plus an ESP image, as
/// the sources of a hybrid image.
fn tree(dir: &Path, files: usize, big: u64) -> Vec<IsoSource> {
    let mut out = Vec::new();
    for i in 0..files {
        let rel = format!("usr/share/doc/pkg{}/file-{i}.txt", i / 50);
        let src = dir.join(format!("src-{i}"));
        fs::write(&src, format!("file {i}\n").repeat(i % 40 + 1)).expect("a source file");
        out.push(IsoSource {
            iso_path: rel,
            source: src,
        });
    }
    if big > 0 {
        let src = dir.join("root.img");
        let chunk: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut data = Vec::with_capacity(big as usize);
        while (data.len() as u64) < big {
            data.extend_from_slice(&chunk);
        }
        fs::write(&src, &data).expect("the root image");
        out.push(IsoSource {
            iso_path: "LiveOS/squashfs.img".into(),
            source: src,
        });
    }
    let esp_src = dir.join("efiboot.img");
    fs::write(&esp_src, vec![0u8; 1 << 20]).expect("an esp image");
    out.push(IsoSource {
        iso_path: "images/efiboot.img".into(),
        source: esp_src,
    });
    out
}

fn spec(files: Vec<IsoSource>, root: bool, md5: bool) -> HybridSpec {
    HybridSpec {
        volume_label: VolumeLabel::new("UCL-BENCH").unwrap(),
        epoch: 1_700_000_000,
        seed: "bench".into(),
        files,
        esp: "images/efiboot.img".into(),
        root: root.then(|| "LiveOS/squashfs.img".into()),
        bios_boot: None,
        mbr_code: None,
        persistence: None,
        implant_md5: md5,
    }
}

/// The ISO writer on metadata: directory records, Rock Ridge, path tables
/// for a tree of N small files (a root's /usr/share/doc in miniature).
#[divan::bench(args = [100, 1000, 5000], sample_count = 10)]
fn iso_tree(bencher: Bencher, files: usize) {
    let dir = scratch();
    let s = spec(tree(dir.path(), files, 0), false, false);
    let out: PathBuf = dir.path().join("out.iso");
    bencher.bench_local(|| write_hybrid(&s, &out).expect("the image"));
}

/// The ISO writer on bulk data: a 64 MiB root image copied in, with and
/// without the media checksum (the checksum reads the volume back).
#[divan::bench(args = [false, true], sample_count = 10)]
fn iso_64mib_root(bencher: Bencher, md5: bool) {
    let dir = scratch();
    let s = spec(tree(dir.path(), 10, 64 << 20), true, md5);
    let out = dir.path().join("out.iso");
    bencher
        .counter(divan::counter::BytesCount::new(64usize << 20))
        .bench_local(|| write_hybrid(&s, &out).expect("the image"));
}

/// The GPT writer: primary and backup tables of a 4 GiB (sparse) image.
#[divan::bench(sample_count = 20)]
fn gpt_4gib(bencher: Bencher) {
    let dir = scratch();
    let path = dir.path().join("disk.img");
    let file = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("the disk image");
    file.set_len(4 << 30).expect("sizing the disk image");
    let parts = vec![
        PartitionSpec {
            name: "ESP".into(),
            type_guid: gpt::esp_type(),
            guid: gpt::derive_guid("bench", gpt::IdRole::Esp),
            first_lba: 2048,
            last_lba: 2048 + 16383,
        },
        PartitionSpec {
            name: "root".into(),
            type_guid: gpt::root_x86_64_type(),
            guid: gpt::derive_guid("bench", gpt::IdRole::Root),
            first_lba: 20480,
            last_lba: (4 << 21) - 4096,
        },
    ];
    let mbr = gpt::protective_mbr(4 << 30, None, [1, 2, 3, 4]).expect("the protective mbr");
    let guid = gpt::derive_guid("bench", gpt::IdRole::Disk);
    bencher.bench_local(|| {
        let mut f = file.try_clone().expect("the disk image");
        gpt::write_gpt(&mut f, &path, guid, &parts, &mbr).expect("the gpt");
    });
}

/// The FAT ESP writer: a shim + GRUB + MokManager sized set (about 6 MiB)
/// and a kernel + initrd sized one (about 60 MiB, a FAT32 volume).
#[divan::bench(args = [6, 60], sample_count = 10)]
fn fat_esp(bencher: Bencher, mib: usize) {
    let dir = scratch();
    let out = dir.path().join("esp.img");
    let part = (mib << 20) / 4;
    let files: Vec<EspFile> = [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/BOOT/grubx64.efi",
        "EFI/BOOT/mmx64.efi",
        "boot/initrd.img",
    ]
    .iter()
    .enumerate()
    .map(|(i, dest)| EspFile {
        dest: (*dest).into(),
        content: EspContent::Bytes(vec![i as u8 + 1; part]),
    })
    .collect();
    let opts = EspOptions {
        label: "UCL-ESP".into(),
        volume_id: 0x1234_5678,
        epoch: 1_700_000_000,
        extra_bytes: 0,
    };
    bencher
        .counter(divan::counter::BytesCount::new(mib << 20))
        .bench_local(|| esp::write_esp(&files, &opts, &out).expect("the esp"));
}
