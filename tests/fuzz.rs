//! A mutation fuzzer over every parser that reads bytes someone else made:
//! kickstarts, specs, undercloud.yaml, nodes.yaml, hybrid images (GPT,
//! ISO9660, El Torito, the ESP's FAT: `inspect` and `verify`), tar
//! archives (plain and xz) and cpio ramdisks. It starts from real inputs
//! (the repository's own kickstarts and specs; images, archives and
//! ramdisks made here by the same code paths the product uses) and mutates
//! them: bit flips, interesting integers, inserted, deleted, repeated and
//! spliced ranges, truncation.
//!
//! It fails on a panic (the input is saved and named), on an input that
//! takes longer than `UCL_FUZZ_HANG_SECONDS` (default 20: a hang; the
//! process stops with the input saved), and on memory past 4 GiB (the
//! address-space limit makes the allocation fail). `make test` runs each
//! target for `UCL_FUZZ_SECONDS` (default 3); `make fuzz` for longer
//! (docs/fuzzing.md). `UCL_FUZZ_SEED` replays a run.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::repo;

/// What a target does with one input. Errors are fine: only panics,
/// hangs and runaway memory are failures.
type Run = Box<dyn Fn(&[u8], &Path)>;

struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    run: Run,
    /// Inputs larger than this are cut (images stay images).
    max_len: usize,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Integers parsers trip on: sizes, counts, offsets at their edges.
const INTERESTING: &[u32] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x200,
    0x800,
    0x1000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_fffe,
    0xffff_ffff,
];

fn mutate(rng: &mut StdRng, input: &mut Vec<u8>, seeds: &[Vec<u8>], max_len: usize) {
    for _ in 0..rng.gen_range(1..=8) {
        let len = input.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = rng.gen();
            }
            2 if len >= 4 => {
                let i = rng.gen_range(0..=len - 4);
                let v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
                let bytes = if rng.gen() {
                    v.to_le_bytes()
                } else {
                    v.to_be_bytes()
                };
                input[i..i + 4].copy_from_slice(&bytes);
            }
            3 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=64);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(i..i, bytes);
            }
            4 if len > 1 => {
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=256)).min(len);
                input.drain(a..b);
            }
            5 if len > 1 => {
                // Repeat a range: nested structures, loops.
                let a = rng.gen_range(0..len);
                let b = (a + rng.gen_range(1..=512)).min(len);
                let copy = input[a..b].to_vec();
                let at = rng.gen_range(0..=len);
                input.splice(at..at, copy);
            }
            6 if len > 0 => {
                input.truncate(rng.gen_range(0..len));
            }
            7 => {
                // Splice in a piece of another seed.
                let other = &seeds[rng.gen_range(0..seeds.len())];
                if !other.is_empty() {
                    let a = rng.gen_range(0..other.len());
                    let b = (a + rng.gen_range(1..=1024)).min(other.len());
                    let at = rng.gen_range(0..=len);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            _ if len > 0 => {
                // Overwrite a range with a copy of another part of itself.
                let a = rng.gen_range(0..len);
                let b = rng.gen_range(0..len);
                let n = rng.gen_range(1..=64).min(len - a).min(len - b);
                let copy = input[a..a + n].to_vec();
                input[b..b + n].copy_from_slice(&copy);
            }
            _ => {}
        }
    }
    input.truncate(max_len);
}

/// Stops the process when one input runs too long: a hang cannot be
/// caught, only reported.
struct Watchdog {
    started_ms: Arc<AtomicU64>,
    busy: Arc<AtomicBool>,
    current: Arc<Mutex<(String, Vec<u8>)>>,
    t0: Instant,
}

impl Watchdog {
    fn start(limit: Duration, out: PathBuf) -> Watchdog {
        let w = Watchdog {
            started_ms: Arc::new(AtomicU64::new(0)),
            busy: Arc::new(AtomicBool::new(false)),
            current: Arc::new(Mutex::new((String::new(), Vec::new()))),
            t0: Instant::now(),
        };
        let (started, busy, current, t0) = (
            w.started_ms.clone(),
            w.busy.clone(),
            w.current.clone(),
            w.t0,
        );
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = t0.elapsed().as_millis() as u64;
            if busy.load(Ordering::SeqCst)
                && now.saturating_sub(started.load(Ordering::SeqCst)) > limit.as_millis() as u64
            {
                let (name, input) = current.lock().map(|c| c.clone()).unwrap_or_default();
                let file = out.join(format!("{name}-hang.bin"));
                let _ = std::fs::write(&file, &input);
                eprintln!(
                    "fuzz: {name}: one input ran longer than {limit:?} (a hang); it is saved in {}",
                    file.display()
                );
                std::process::exit(1);
            }
        });
        w
    }

    fn enter(&self, name: &str, input: &[u8]) {
        if let Ok(mut c) = self.current.lock() {
            c.0 = name.to_string();
            c.1.clear();
            c.1.extend_from_slice(input);
        }
        self.started_ms
            .store(self.t0.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.busy.store(true, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.busy.store(false, Ordering::SeqCst);
    }
}

/// The address-space limit: an input that makes a parser allocate
/// gigabytes fails the allocation instead of filling the machine.
fn limit_memory() {
    use nix::sys::resource::{setrlimit, Resource};
    let limit = 4u64 << 30;
    setrlimit(Resource::RLIMIT_AS, limit, limit).expect("setrlimit(RLIMIT_AS)");
}

fn read(p: impl AsRef<Path>) -> Vec<u8> {
    let p = repo().join(p);
    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn text_targets() -> Vec<Target> {
    use undercloud_live::undercloud::config::Config;
    use undercloud_live::undercloud::nodes::NodesFile;
    let kickstarts = vec![
        read("kickstart/undercloud-live.ks"),
        read("tests/fixtures/kickstart/live-base.ks"),
        read("tests/fixtures/kickstart/live-repo.ks"),
        read("tests/fixtures/kickstart/undercloud-spin.ks"),
    ];
    let specs: Vec<Vec<u8>> = [
        "kickstart/undercloud-live-debian.yaml",
        "kickstart/undercloud-live-fedora.yaml",
        "kickstart/ipa-ramdisk-debian.yaml",
        "tests/fixtures/specs/minimal.yaml",
        "tests/fixtures/specs/install.yaml",
        "tests/fixtures/specs/undercloud.yaml",
    ]
    .iter()
    .map(read)
    .collect();
    vec![
        Target {
            name: "kickstart",
            seeds: kickstarts,
            max_len: 1 << 16,
            run: Box::new(|b, dir| {
                let text = String::from_utf8_lossy(b);
                // %include names resolve against the kickstart's folder: an
                // empty scratch folder, so mutations cannot reach real files
                // except by absolute path.
                let _ = undercloud_live::kickstart::parse_str(&text, &dir.join("fuzz.ks"));
            }),
        },
        Target {
            name: "spec",
            seeds: specs,
            max_len: 1 << 16,
            run: Box::new(|b, _| {
                let _ = undercloud_live::spec::parse(&String::from_utf8_lossy(b));
            }),
        },
        Target {
            name: "undercloud.yaml",
            seeds: vec![read(
                "overlays/undercloud-config/static/etc/undercloud/undercloud.yaml",
            )],
            max_len: 1 << 16,
            run: Box::new(|b, _| {
                let _ = Config::parse(&String::from_utf8_lossy(b), "fuzz");
            }),
        },
        Target {
            name: "nodes.yaml",
            seeds: vec![read("tests/fixtures/specs/undercloud-nodes.yaml")],
            max_len: 1 << 16,
            run: Box::new(|b, _| {
                let _ = NodesFile::parse(&String::from_utf8_lossy(b), "fuzz");
            }),
        },
    ]
}

/// A small hybrid image made by `assemble`, the product's own writer.
fn image_seed(dir: &Path) -> Vec<u8> {
    use undercloud_live::assemble::{assemble, AssembleOptions};
    let tree = dir.join("tree");
    let esp = dir.join("esp");
    std::fs::create_dir_all(tree.join("LiveOS")).unwrap();
    std::fs::create_dir_all(esp.join("EFI/BOOT")).unwrap();
    std::fs::write(tree.join("LiveOS/squashfs.img"), vec![0x5a; 64 << 10]).unwrap();
    std::fs::write(tree.join("README"), b"fuzz seed\n").unwrap();
    std::fs::write(esp.join("EFI/BOOT/BOOTX64.EFI"), b"MZ not a loader").unwrap();
    std::fs::write(esp.join("undercloud.yaml"), b"image_server: {port: 8090}\n").unwrap();
    let out = dir.join("seed.img");
    assemble(&AssembleOptions {
        tree,
        esp_dir: esp,
        label: "UCL-FUZZ".into(),
        root: Some("LiveOS/squashfs.img".into()),
        output: out.clone(),
        seed: None,
        media_checksum: true,
        epoch: Some(1_700_000_000),
    })
    .expect("assembling the seed image");
    std::fs::read(&out).unwrap()
}

/// Mutations of an image are spread over the places readers look:
/// sectors 0-63 (MBR, GPT, ISO descriptors, catalog), the ESP's first
/// sectors, the backup GPT at the end. Applied to a copy of the seed.
fn image_targets(dir: &Path) -> Vec<Target> {
    let seed = image_seed(&dir.join("seed"));
    let max = seed.len() + (1 << 20);
    let file = dir.join("image.img");
    let f2 = file.clone();
    vec![
        Target {
            name: "inspect",
            seeds: vec![seed.clone()],
            max_len: max,
            run: Box::new(move |b, _| {
                std::fs::write(&file, b).unwrap();
                if let Ok(i) = undercloud_live::inspect::inspect(&file) {
                    let _ = undercloud_live::inspect::render(&i);
                }
            }),
        },
        Target {
            name: "verify",
            seeds: vec![seed],
            max_len: max,
            run: Box::new(move |b, _| {
                std::fs::write(&f2, b).unwrap();
                let _ = undercloud_live::inspect::verify(&f2);
            }),
        },
    ]
}

fn tar_seed() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        b.append_data(&mut h, name, data).unwrap();
    };
    add("./", tar::EntryType::Directory, b"", None);
    add("./etc/", tar::EntryType::Directory, b"", None);
    add(
        "./etc/os-release",
        tar::EntryType::Regular,
        b"ID=debian\n",
        None,
    );
    add(
        "./etc/link",
        tar::EntryType::Symlink,
        b"",
        Some("os-release"),
    );
    add(
        "./etc/hard",
        tar::EntryType::Link,
        b"",
        Some("./etc/os-release"),
    );
    add("./usr/lib/x", tar::EntryType::Regular, &[7u8; 3000], None);
    b.into_inner().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = liblzma::write::XzEncoder::new(&mut out, 1);
    e.write_all(data).unwrap();
    e.finish().unwrap();
    out
}

fn archive_targets(dir: &Path) -> Vec<Target> {
    use undercloud_live::fs::cpio::{pack, summarize, Compression, PackOptions};
    let tar = tar_seed();
    let tarxz = xz(&tar);
    let tree = dir.join("cpio-tree");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), b"ID=debian\n").unwrap();
    std::os::unix::fs::symlink("lib/systemd/systemd", tree.join("init")).unwrap();
    let mut cpios = Vec::new();
    for (i, c) in [Compression::None, Compression::Zstd { level: 3 }]
        .into_iter()
        .enumerate()
    {
        let out = dir.join(format!("seed-{i}.cpio"));
        pack(
            &tree,
            &out,
            &PackOptions {
                epoch: Some(1_700_000_000),
                compression: c,
                limit: None,
            },
        )
        .expect("packing the cpio seed");
        cpios.push(std::fs::read(&out).unwrap());
    }
    let archive = dir.join("archive");
    let cpio_file = dir.join("ramdisk");
    vec![
        Target {
            name: "tar",
            seeds: vec![tar, tarxz],
            max_len: 1 << 20,
            run: Box::new(move |b, scratch| {
                std::fs::write(&archive, b).unwrap();
                let dest = scratch.join("unpacked");
                let _ = std::fs::remove_dir_all(&dest);
                std::fs::create_dir_all(&dest).unwrap();
                let progress = undercloud_live::progress::Progress::new(true);
                let _ = undercloud_live::rootfs::unpack::unpack(&archive, &dest, &progress);
            }),
        },
        Target {
            name: "cpio",
            seeds: cpios,
            max_len: 1 << 20,
            run: Box::new(move |b, _| {
                std::fs::write(&cpio_file, b).unwrap();
                let _ = summarize(&cpio_file);
            }),
        },
    ]
}

#[test]
fn parsers_survive_mutated_inputs() {
    limit_memory();
    let seconds = env_u64("UCL_FUZZ_SECONDS", 3);
    let seed = env_u64("UCL_FUZZ_SEED", 0x75636c);
    let dir = common::scratch("fuzz");
    // In the target folder cargo uses (CARGO_TARGET_DIR too), beside tmp/.
    let failures = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("fuzz-failures");
    std::fs::create_dir_all(&failures).unwrap();
    let dog = Watchdog::start(
        Duration::from_secs(env_u64("UCL_FUZZ_HANG_SECONDS", 20)),
        failures.clone(),
    );
    let mut targets = text_targets();
    targets.extend(image_targets(&dir));
    targets.extend(archive_targets(&dir));
    let only = std::env::var("UCL_FUZZ_TARGET").ok();
    let mut panicked = Vec::new();
    for t in targets
        .iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == t.name))
    {
        let mut rng = StdRng::seed_from_u64(seed ^ t.name.len() as u64);
        let scratch = dir.join(format!("run-{}", t.name.replace('.', "-")));
        std::fs::create_dir_all(&scratch).unwrap();
        let t0 = Instant::now();
        let mut tried = 0u64;
        // The seeds as they are, then mutations of them.
        let mut queue: Vec<Vec<u8>> = t.seeds.clone();
        while t0.elapsed() < Duration::from_secs(seconds) || !queue.is_empty() {
            let input = queue.pop().unwrap_or_else(|| {
                let mut i = t.seeds[rng.gen_range(0..t.seeds.len())].clone();
                mutate(&mut rng, &mut i, &t.seeds, t.max_len);
                i
            });
            dog.enter(t.name, &input);
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&input, &scratch)));
            dog.leave();
            tried += 1;
            if result.is_err() {
                let file = failures.join(format!("{}-panic-{tried}.bin", t.name));
                std::fs::write(&file, &input).unwrap();
                panicked.push(format!("{}: {}", t.name, file.display()));
                break;
            }
        }
        println!(
            "fuzz {}: {tried} inputs in {:.1} s",
            t.name,
            t0.elapsed().as_secs_f64()
        );
    }
    assert!(
        panicked.is_empty(),
        "parsers panicked on these inputs (saved):\n{}",
        panicked.join("\n")
    );
}
