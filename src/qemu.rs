//! Boot an image under QEMU and watch its serial console.
//!
//! `boot` starts `qemu-system-x86_64` with the image as a CD, USB stick or
//! disk (raw, or qcow2 when the file says so), or with a kernel and
//! initramfs that QEMU loads itself (a netboot ramdisk: no boot drive at
//! all), streams the guest's first serial port to a log file and/or stdout,
//! and returns when an expected text appears (or, with no text, when the
//! guest powers off). A kernel panic, a firmware that finds nothing to boot,
//! QEMU exiting early or a timeout are errors carrying the last console lines.
//!
//! Measured on the development machine (Debian 12, QEMU 7.2, OVMF 2022.11):
//! - `/dev/kvm` opens read-write, but OVMF under KVM stops at once with
//!   "KVM internal error. Suberror: 1 … emulation failure" on stderr, and
//!   QEMU does *not* exit: the VM just sits paused. So stderr is watched
//!   and, with `Accel::Auto`, the boot is restarted under TCG. SeaBIOS does
//!   run under KVM here, though slower than under TCG.
//! - Under TCG OVMF prints its first `BdsDxe:` line after about 4 s; its
//!   built-in UEFI shell runs a `startup.nsh` from a FAT disk after about
//!   8.5 s (the shell waits 5 s for a key first). SeaBIOS reaches
//!   "No bootable device." in 0.1 s.
//! - SeaBIOS writes nothing to the serial port unless told to through the
//!   fw_cfg file `etc/sercon-port` (a binary little-endian port number).
//!
//! QEMU is never left running: it is killed (its whole process group) on
//! every way out of `boot`, including panics that unwind, and it gets
//! SIGKILL from the kernel if this process dies first (PR_SET_PDEATHSIG), so
//! Ctrl-C or a plain `kill` of this tool takes QEMU with it.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use crate::system::{process, tool};
use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How the image is attached to the virtual machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Media {
    /// A CD-ROM drive (AHCI), always read-only.
    Cdrom,
    /// A removable USB mass-storage stick on an xHCI controller.
    Usb,
    /// A virtio disk.
    Disk,
}

impl fmt::Display for Media {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Media::Cdrom => "cdrom",
            Media::Usb => "usb",
            Media::Disk => "disk",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// OVMF without Secure Boot.
    Uefi,
    /// OVMF with Secure Boot enforced and Microsoft's keys enrolled, so
    /// distribution-signed shim, grub and kernels boot.
    UefiSecure,
    /// SeaBIOS (legacy BIOS), QEMU's default firmware.
    Bios,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if `/dev/kvm` opens read-write and KVM really runs the guest;
    /// otherwise (or after KVM fails once) TCG.
    Auto,
    Kvm,
    Tcg,
}

/// What the guest boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// An image file attached as `media`; the firmware boots from it.
    Image { image: PathBuf, media: Media },
    /// Direct kernel boot: QEMU loads the kernel and initramfs itself (as a
    /// boot loader would) and attaches no boot drive.
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        /// Appended to the command line after [`KERNEL_CMDLINE`].
        append: Option<String>,
    },
}

/// What every direct kernel boot's command line starts with: the console on
/// the serial port we watch, and a panic that reboots at once, which
/// `-no-reboot` turns into QEMU exiting (a panic alone leaves QEMU running).
pub const KERNEL_CMDLINE: &str = "console=ttyS0,115200 panic=-1";

impl Boot {
    /// From the `boot` command's arguments: an image, or `NAME.kernel` (its
    /// `NAME.initramfs` beside it), or `--kernel` with an optional
    /// `--initrd`. `media` is `--as`, only for images. Every wrong
    /// combination is a one-line error.
    pub fn choose(
        image: Option<PathBuf>,
        media: Option<Media>,
        kernel: Option<PathBuf>,
        initrd: Option<PathBuf>,
        append: Option<String>,
    ) -> Result<Boot> {
        let kernel = match (image, kernel) {
            (Some(image), Some(kernel)) => bail!(
                "give an image ({}) or --kernel {}, not both",
                image.display(),
                kernel.display()
            ),
            (Some(image), None) if image.extension().is_some_and(|e| e == "kernel") => image,
            (Some(image), None) => {
                if let Some(initrd) = initrd {
                    bail!(
                        "--initrd {} needs --kernel (or a NAME.kernel instead of the image {})",
                        initrd.display(),
                        image.display()
                    );
                }
                if append.is_some() {
                    bail!(
                        "--append is for a kernel (NAME.kernel or --kernel), not the image {}",
                        image.display()
                    );
                }
                return Ok(Boot::Image {
                    image,
                    media: media.unwrap_or(Media::Cdrom),
                });
            }
            (None, Some(kernel)) => kernel,
            (None, None) => {
                if let Some(initrd) = initrd {
                    bail!("--initrd {} needs --kernel FILE", initrd.display());
                }
                bail!("nothing to boot: give an image, a NAME.kernel or --kernel FILE");
            }
        };
        if let Some(media) = media {
            bail!(
                "--as {media} attaches an image; a kernel ({}) is booted directly, with no boot drive",
                kernel.display()
            );
        }
        let initrd = match initrd {
            Some(initrd) => Some(initrd),
            None if kernel.extension().is_some_and(|e| e == "kernel") => {
                let beside = kernel.with_extension("initramfs");
                if !beside.exists() {
                    bail!(
                        "{} not found beside {} (Ironic's naming: NAME.kernel + NAME.initramfs; or give --initrd FILE)",
                        beside.display(),
                        kernel.display()
                    );
                }
                Some(beside)
            }
            None => None,
        };
        Ok(Boot::Kernel {
            kernel,
            initrd,
            append,
        })
    }

    /// SeaBIOS for a kernel: QEMU's linuxboot option ROM starts it at once,
    /// where OVMF spends several seconds under TCG before it runs the
    /// kernel's EFI stub (both work, so the firmware stays selectable; a
    /// busybox ramdisk reached its marker here in 5.7 s under SeaBIOS and
    /// 11.3 s under OVMF). UEFI for an image: the hybrid image's main path.
    pub fn default_firmware(&self) -> Firmware {
        match self {
            Boot::Image { .. } => Firmware::Uefi,
            Boot::Kernel { .. } => Firmware::Bios,
        }
    }

    /// The kernel's whole command line (`None` for an image).
    pub fn cmdline(&self) -> Option<String> {
        match self {
            Boot::Image { .. } => None,
            Boot::Kernel { append, .. } => Some(match append.as_deref().map(str::trim) {
                Some(extra) if !extra.is_empty() => format!("{KERNEL_CMDLINE} {extra}"),
                _ => KERNEL_CMDLINE.to_owned(),
            }),
        }
    }
}

/// For messages: "IMG as usb", "kernel K with initrd I".
impl fmt::Display for Boot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Boot::Image { image, media } => write!(f, "{} as {media}", image.display()),
            Boot::Kernel { kernel, initrd, .. } => {
                write!(f, "kernel {}", kernel.display())?;
                match initrd {
                    Some(initrd) => write!(f, " with initrd {}", initrd.display()),
                    None => Ok(()),
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct BootOptions {
    pub boot: Boot,
    pub firmware: Firmware,
    /// Text to wait for on the serial console; `None` waits for the guest to
    /// power off.
    pub expect: Option<String>,
    /// For each attempt (a boot restarted under TCG gets the full time again).
    pub timeout: Duration,
    pub memory_mib: u32,
    pub cpus: u32,
    pub accel: Accel,
    /// File to receive the raw console output (created or truncated).
    pub log: Option<PathBuf>,
    /// Stream the console to stdout as it arrives.
    pub echo: bool,
    /// `false`: the image is opened with snapshot=on (CD: read-only), so the
    /// guest's writes never reach it.
    pub writable: bool,
    /// Extra virtio disks (raw or qcow2), attached writable after the image.
    pub extra_drives: Vec<PathBuf>,
    /// TCP ports forwarded from the host's 127.0.0.1 into the guest. Empty:
    /// the guest has no network card at all; otherwise one virtio NIC on
    /// QEMU's user-mode network (the guest gets 10.0.2.15 by DHCP).
    pub forwards: Vec<Forward>,
    /// Point-to-point Ethernet links to another VM, each one more virtio
    /// NIC ahead of the user-mode one (so the guest names it first): frames
    /// go as UDP between 127.0.0.1 ports, never onto a host interface. The
    /// provisioning network of a test bed.
    pub links: Vec<Link>,
}

/// `LOCALPORT:PEERPORT`: a NIC whose frames are UDP datagrams from
/// 127.0.0.1:LOCALPORT to 127.0.0.1:PEERPORT (QEMU's socket netdev; the
/// peer is another QEMU, or a libvirt domain's `<interface type='udp'>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub local: u16,
    pub peer: u16,
}

impl std::str::FromStr for Link {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Link> {
        let bad = || {
            anyhow::anyhow!(
                "--link {s:?}: expected LOCALPORT:PEERPORT such as 40001:40002 (UDP on 127.0.0.1)"
            )
        };
        let (l, p) = s.split_once(':').ok_or_else(bad)?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        let link = Link {
            local: port(l)?,
            peer: port(p)?,
        };
        if link.local == link.peer {
            return Err(anyhow::anyhow!("--link {s:?}: the two ports must differ"));
        }
        Ok(link)
    }
}

/// `HOSTPORT:GUESTPORT`: host 127.0.0.1:HOSTPORT reaches the guest's GUESTPORT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub host: u16,
    pub guest: u16,
}

impl std::str::FromStr for Forward {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Forward> {
        let bad =
            || anyhow::anyhow!("--forward {s:?}: expected HOSTPORT:GUESTPORT such as 16385:6385");
        let (h, g) = s.split_once(':').ok_or_else(bad)?;
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad);
        Ok(Forward {
            host: port(h)?,
            guest: port(g)?,
        })
    }
}

impl BootOptions {
    /// `image` attached as `media`; otherwise as [`BootOptions::booting`].
    pub fn new(image: impl Into<PathBuf>, media: Media) -> BootOptions {
        BootOptions::booting(Boot::Image {
            image: image.into(),
            media,
        })
    }

    /// The boot's default firmware, no marker, 10 minutes, 2 GiB, 2 CPUs,
    /// automatic acceleration, no log, no echo, image untouched, no extra
    /// drives, no network.
    pub fn booting(boot: Boot) -> BootOptions {
        BootOptions {
            firmware: boot.default_firmware(),
            boot,
            expect: None,
            timeout: Duration::from_secs(600),
            memory_mib: 2048,
            cpus: 2,
            accel: Accel::Auto,
            log: None,
            echo: false,
            writable: false,
            extra_drives: Vec::new(),
            forwards: Vec::new(),
            links: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootOutcome {
    /// The expected text appeared this long after QEMU started (the
    /// attempt that succeeded, if KVM failed first).
    Marker { elapsed: Duration },
    /// No text was expected and the guest powered off (or rebooted: with
    /// `-no-reboot` QEMU exits either way).
    PoweredOff { elapsed: Duration },
}

/// How long to wait for the end of the marker's line once the marker is seen.
const MARKER_LINE_GRACE: Duration = Duration::from_secs(2);
const QEMU: &str = "qemu-system-x86_64";

/// Finds `qemu-system-x86_64` on PATH (or RHEL's `/usr/libexec/qemu-kvm`).
pub fn find_qemu() -> Result<PathBuf> {
    if let Some(found) = tool::find(QEMU) {
        return Ok(found);
    }
    let rhel = Path::new("/usr/libexec/qemu-kvm");
    if tool::is_executable(rhel) {
        return Ok(rhel.to_path_buf());
    }
    bail!("{QEMU} not found: install package qemu-system-x86 (Debian) or qemu-system-x86-core (Fedora)")
}

/// Code and variables-template pairs, in order of preference. Each pair must
/// come from the same build (the sizes of code and vars go together).
const OVMF_PLAIN: &[(&str, &str)] = &[
    // Debian 12+, Ubuntu: 4 MiB builds.
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    // Fedora, RHEL (edk2-ovmf).
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.fd",
    ),
    // Older Debian/Ubuntu: 2 MiB builds.
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

/// Secure Boot code with variables that have Microsoft's keys enrolled.
const OVMF_SECURE: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
    ),
    (
        "/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd",
        "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.secboot.fd",
        "/usr/share/OVMF/OVMF_VARS.ms.fd",
    ),
];

/// Finds OVMF's code and variables template: `(code, vars)`.
pub fn find_ovmf(secure: bool) -> Result<(PathBuf, PathBuf)> {
    find_ovmf_in(Path::new("/"), secure)
}

fn find_ovmf_in(root: &Path, secure: bool) -> Result<(PathBuf, PathBuf)> {
    let pairs = if secure { OVMF_SECURE } else { OVMF_PLAIN };
    let under = |p: &str| root.join(p.trim_start_matches('/'));
    for (code, vars) in pairs {
        let (code, vars) = (under(code), under(vars));
        if code.is_file() && vars.is_file() {
            return Ok((code, vars));
        }
    }
    let looked: Vec<&str> = pairs.iter().map(|(code, _)| *code).collect();
    bail!(
        "OVMF {}firmware not found (looked for {}): install package ovmf (Debian) or edk2-ovmf (Fedora)",
        if secure { "Secure Boot " } else { "" },
        looked.join(", ")
    )
}

/// Set once KVM has failed in this process, so later boots go straight to TCG
/// instead of paying for a failed KVM start each time.
static KVM_BROKEN: AtomicBool = AtomicBool::new(false);

fn kvm_opens() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Engine {
    Kvm,
    Tcg,
}

/// Boots `opts.boot` and watches the console; see the module docs.
pub fn boot(opts: &BootOptions) -> Result<BootOutcome> {
    let qemu = find_qemu()?;
    boot_with(&qemu, opts)
}

fn boot_with(qemu: &Path, opts: &BootOptions) -> Result<BootOutcome> {
    check_options(opts)?;
    let formats = Formats::sniff(opts)?;
    let engine = match opts.accel {
        Accel::Tcg => Engine::Tcg,
        Accel::Kvm => {
            if !kvm_opens() {
                bail!("KVM requested but /dev/kvm cannot be opened read-write");
            }
            Engine::Kvm
        }
        Accel::Auto if kvm_opens() && !KVM_BROKEN.load(Ordering::Relaxed) => Engine::Kvm,
        Accel::Auto => Engine::Tcg,
    };
    let mut sinks = Sinks::open(opts)?;
    match attempt(qemu, opts, &formats, engine, &mut sinks)? {
        Attempt::Done(outcome) => Ok(outcome),
        Attempt::KvmBroken(reason) if opts.accel == Accel::Auto => {
            KVM_BROKEN.store(true, Ordering::Relaxed);
            let note = format!("KVM failed here ({reason}); booting again under TCG");
            eprintln!("undercloud-live: {note}");
            sinks.note(&note)?;
            match attempt(qemu, opts, &formats, Engine::Tcg, &mut sinks)? {
                Attempt::Done(outcome) => Ok(outcome),
                // Unreachable in practice: TCG attempts never report KVM trouble.
                Attempt::KvmBroken(reason) => bail!("{reason}"),
            }
        }
        // `attempt` only asks for a retry under `Accel::Auto`.
        Attempt::KvmBroken(reason) => bail!("{reason}"),
    }
}

/// A file QEMU reads as a whole (image, kernel, initramfs): it must exist
/// and not be a folder. Returns its size.
fn input_file(what: &str, path: &Path) -> Result<u64> {
    let meta = fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if meta.is_dir() {
        bail!("{what} {} is a directory", path.display());
    }
    Ok(meta.len())
}

fn check_options(opts: &BootOptions) -> Result<()> {
    match &opts.boot {
        Boot::Image { image, .. } => {
            input_file("boot image", image)?;
        }
        Boot::Kernel { kernel, initrd, .. } => {
            input_file("kernel", kernel)?;
            if let Some(initrd) = initrd {
                let size = input_file("initramfs", initrd)?;
                check_ramdisk_memory(initrd, size, opts.memory_mib)?;
            }
        }
    }
    for drive in &opts.extra_drives {
        fs::metadata(drive).with_context(|| format!("extra drive {}", drive.display()))?;
    }
    if opts.expect.as_deref() == Some("") {
        bail!("the text to wait for on the console is empty");
    }
    if opts.memory_mib < 64 || opts.cpus == 0 {
        bail!(
            "a VM needs at least 64 MiB and 1 CPU (got {} MiB, {} CPUs)",
            opts.memory_mib,
            opts.cpus
        );
    }
    Ok(())
}

/// Guest memory a ramdisk of `compressed` bytes needs, in MiB. A netboot
/// ramdisk is the whole root as one compressed cpio: while the kernel
/// unpacks it, memory holds the compressed file (1x) and the unpacked
/// files (assumed 3x: what gzip, xz and zstd typically achieve on a root of
/// programs and libraries), and the unpacked files stay in memory for the
/// whole boot (the root is a tmpfs). On top, 512 MiB for the kernel, systemd
/// and the services. A guest below this dies while unpacking or soon after,
/// with out-of-memory kills or "Initramfs unpacking failed" far from the
/// cause; so it is refused before QEMU starts. The rule is a floor: a root
/// that compresses better than 3x needs more.
pub fn ramdisk_memory_mib(compressed: u64) -> u64 {
    (4 * compressed).div_ceil(crate::io::MIB) + 512
}

/// What a root of `unpacked` bytes needs: the kernel unpacks the
/// initramfs into a tmpfs that may fill at most half the memory, so twice
/// the root, plus 512 MiB for the kernel, systemd and the services.
pub fn unpacked_memory_mib(unpacked: u64) -> u64 {
    (2 * unpacked).div_ceil(crate::io::MIB) + 512
}

fn check_ramdisk_memory(initrd: &Path, size: u64, memory_mib: u32) -> Result<()> {
    // Read the archive through when it is one we can read (a second or so
    // for a few hundred MiB): a root that compresses well needs more than
    // the compressed size suggests. Otherwise the rule of thumb.
    let need = match crate::fs::cpio::summarize(initrd) {
        Ok(summary) => unpacked_memory_mib(summary.bytes).max(ramdisk_memory_mib(size)),
        Err(_) => ramdisk_memory_mib(size),
    };
    if u64::from(memory_mib) < need {
        // Suggest a round amount: the next multiple of 256 MiB.
        let suggest = need.div_ceil(256) * 256;
        bail!(
            "initramfs {} is {} MiB compressed; unpacked in guest memory it needs about {need} MiB, more than the {memory_mib} MiB given: use --memory {suggest}",
            initrd.display(),
            size.div_ceil(crate::io::MIB)
        );
    }
    Ok(())
}

/// How QEMU reads a drive's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DiskFormat {
    Raw,
    Qcow2,
}

/// The first bytes of every qcow2 (version 2 and 3) file.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

impl DiskFormat {
    /// qcow2 when the file starts with qcow2's magic, raw otherwise (a file
    /// shorter than the magic included). Only files given to this tool are
    /// sniffed, before each boot.
    ///
    /// A qcow2 that names a backing file is refused: QEMU would open that
    /// host file for the guest, and a writable raw drive's guest could have
    /// written such a header itself to reach any file on the host at the
    /// next boot.
    fn sniff(path: &Path) -> Result<DiskFormat> {
        let mut head = Vec::with_capacity(16);
        File::open(path)
            .and_then(|f| f.take(16).read_to_end(&mut head))
            .with_context(|| format!("reading {}", path.display()))?;
        if !head.starts_with(QCOW2_MAGIC) {
            return Ok(DiskFormat::Raw);
        }
        // Bytes 8..16: the backing file name's offset, big-endian; 0 = none.
        let backing = head
            .get(8..16)
            .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
        if backing != 0 {
            bail!(
                "{} is a qcow2 image with a backing file: refused (QEMU would give the guest a host file); flatten it with qemu-img convert first",
                path.display()
            );
        }
        Ok(DiskFormat::Qcow2)
    }

    fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// The format of the boot image (if any) and of each extra drive, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Formats {
    image: DiskFormat,
    extra: Vec<DiskFormat>,
}

impl Formats {
    fn sniff(opts: &BootOptions) -> Result<Formats> {
        let image = match &opts.boot {
            Boot::Image { image, .. } => DiskFormat::sniff(image)?,
            Boot::Kernel { .. } => DiskFormat::Raw,
        };
        let extra = opts
            .extra_drives
            .iter()
            .map(|d| DiskFormat::sniff(d))
            .collect::<Result<_>>()?;
        Ok(Formats { image, extra })
    }
}

/// The firmware part of one QEMU run, with its per-run files.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FirmwareArgs {
    Uefi {
        code: PathBuf,
        /// A fresh copy of the vars template: the guest writes to it.
        vars: PathBuf,
        secure: bool,
    },
    Bios {
        /// fw_cfg file holding the serial port for SeaBIOS's console.
        sercon: PathBuf,
    },
}

fn prepare_firmware(firmware: Firmware, scratch: &Path) -> Result<FirmwareArgs> {
    match firmware {
        Firmware::Uefi | Firmware::UefiSecure => {
            let secure = firmware == Firmware::UefiSecure;
            let (code, template) = find_ovmf(secure)?;
            let vars = scratch.join("OVMF_VARS.fd");
            fs::copy(&template, &vars)
                .with_context(|| format!("copying {} to {}", template.display(), vars.display()))?;
            // The template is often read-only and the copy keeps its mode;
            // QEMU must write to it.
            fs::set_permissions(&vars, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("making {} writable", vars.display()))?;
            Ok(FirmwareArgs::Uefi { code, vars, secure })
        }
        Firmware::Bios => {
            let sercon = scratch.join("sercon-port");
            fs::write(&sercon, 0x3f8u16.to_le_bytes())
                .with_context(|| format!("writing {}", sercon.display()))?;
            Ok(FirmwareArgs::Bios { sercon })
        }
    }
}

/// `key=PATH` with QEMU's option escaping (a comma is written twice).
fn path_opt(key: &str, path: &Path) -> OsString {
    let mut out = format!("{key}=").into_bytes();
    for &b in path.as_os_str().as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

fn with_suffix(mut opt: OsString, suffix: &str) -> OsString {
    opt.push(suffix);
    opt
}

/// The QEMU command line for one run (without the program name). Pure, so
/// each media/firmware/accel combination is unit tested.
fn qemu_args(
    opts: &BootOptions,
    formats: &Formats,
    engine: Engine,
    firmware: &FirmwareArgs,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));

    let secure = matches!(firmware, FirmwareArgs::Uefi { secure: true, .. });
    let accel = match engine {
        Engine::Kvm => "kvm",
        Engine::Tcg => "tcg",
    };
    // Secure Boot's variable store is only protected from the OS in SMM.
    let smm = if secure { ",smm=on" } else { "" };
    push(&["-machine", &format!("q35{smm},accel={accel}")]);
    // "max" under TCG gives x86-64-v2 and later features that some
    // distributions require (RHEL 9 userland will not start on qemu64).
    push(&[
        "-cpu",
        match engine {
            Engine::Kvm => "host",
            Engine::Tcg => "max",
        },
    ]);
    push(&["-m", &opts.memory_mib.to_string()]);
    push(&["-smp", &opts.cpus.to_string()]);
    push(&["-display", "none", "-no-reboot"]);
    for (i, l) in opts.links.iter().enumerate() {
        // Both ends on loopback: the link reaches only the peer VM.
        push(&[
            "-netdev",
            &format!(
                "socket,id=link{i},udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
                l.peer, l.local
            ),
        ]);
        push(&["-device", &format!("virtio-net-pci,netdev=link{i}")]);
    }
    if opts.forwards.is_empty() && opts.links.is_empty() {
        push(&["-nic", "none"]);
    } else if !opts.forwards.is_empty() {
        // Bound to the host's loopback only: a test VM's services are not
        // offered to the network the host is on. A -netdev/-device pair,
        // not -nic: QEMU creates -nic cards before any -device, and the
        // links must come first on the PCI bus.
        let fwd: String = opts
            .forwards
            .iter()
            .map(|f| format!(",hostfwd=tcp:127.0.0.1:{}-:{}", f.host, f.guest))
            .collect();
        push(&["-netdev", &format!("user,id=user0{fwd}")]);
        push(&["-device", "virtio-net-pci,netdev=user0"]);
    }
    // The guest's ttyS0 is our stdout; nothing else may write there.
    push(&["-monitor", "none", "-serial", "stdio"]);

    match firmware {
        FirmwareArgs::Uefi { code, vars, .. } => {
            args.push("-drive".into());
            args.push(path_opt(
                "if=pflash,format=raw,unit=0,readonly=on,file",
                code,
            ));
            args.push("-drive".into());
            args.push(path_opt("if=pflash,format=raw,unit=1,file", vars));
            if secure {
                args.push("-global".into());
                args.push("driver=cfi.pflash01,property=secure,value=on".into());
            }
        }
        FirmwareArgs::Bios { sercon } => {
            args.push("-fw_cfg".into());
            args.push(path_opt("name=etc/sercon-port,file", sercon));
        }
    }

    let snapshot = if opts.writable { "" } else { ",snapshot=on" };
    let format = formats.image.name();
    match &opts.boot {
        Boot::Image {
            image,
            media: Media::Cdrom,
        } => {
            args.push("-drive".into());
            args.push(with_suffix(
                path_opt("file", image),
                &format!(",media=cdrom,readonly=on,format={format}"),
            ));
        }
        Boot::Image {
            image,
            media: Media::Usb,
        } => {
            args.push("-device".into());
            args.push("qemu-xhci".into());
            args.push("-drive".into());
            args.push(with_suffix(
                path_opt("if=none,id=stick,file", image),
                &format!(",format={format}{snapshot}"),
            ));
            args.push("-device".into());
            args.push("usb-storage,drive=stick,removable=on".into());
        }
        Boot::Image {
            image,
            media: Media::Disk,
        } => {
            args.push("-drive".into());
            args.push(with_suffix(
                path_opt("file", image),
                &format!(",if=virtio,format={format}{snapshot}"),
            ));
        }
        Boot::Kernel { kernel, initrd, .. } => {
            // Plain file arguments, not QEMU option lists: no comma escaping.
            args.push("-kernel".into());
            args.push(kernel.into());
            if let Some(initrd) = initrd {
                args.push("-initrd".into());
                args.push(initrd.into());
            }
            args.push("-append".into());
            args.push(opts.boot.cmdline().unwrap_or_default().into());
        }
    }
    for (i, drive) in opts.extra_drives.iter().enumerate() {
        let format = formats.extra.get(i).copied().unwrap_or(DiskFormat::Raw);
        args.push("-drive".into());
        args.push(with_suffix(
            path_opt("file", drive),
            &format!(",if=virtio,format={}", format.name()),
        ));
    }
    args
}

/// A private scratch directory for one run's firmware files, removed on drop.
struct Scratch(PathBuf);

const SCRATCH_PREFIX: &str = "undercloud-live-qemu-";

impl Scratch {
    fn new() -> Result<Scratch> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        remove_stale_scratch(&base);
        for _ in 0..1000 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!("{SCRATCH_PREFIX}{}-{n}", std::process::id()));
            match fs::create_dir(&dir) {
                Ok(()) => {
                    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                        .with_context(|| format!("securing {}", dir.display()))?;
                    return Ok(Scratch(dir));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        bail!("no free scratch directory name in {}", base.display())
    }
}

/// A run killed by a signal cannot remove its scratch directory (QEMU dies
/// with it, see `Qemu::spawn`); the next run removes those whose process is
/// gone.
fn remove_stale_scratch(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(SCRATCH_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Where console bytes go besides our own buffers.
struct Sinks {
    log: Option<(PathBuf, File)>,
    echo: bool,
}

impl Sinks {
    fn open(opts: &BootOptions) -> Result<Sinks> {
        let log = match &opts.log {
            Some(path) => {
                let file = File::create(path)
                    .with_context(|| format!("creating console log {}", path.display()))?;
                Some((path.clone(), file))
            }
            None => None,
        };
        Ok(Sinks {
            log,
            echo: opts.echo,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some((path, file)) = &mut self.log {
            file.write_all(bytes)
                .with_context(|| format!("writing console log {}", path.display()))?;
        }
        if self.echo {
            let mut out = io::stdout().lock();
            // A closed stdout (e.g. `| head`) should not abort a boot: stop echoing.
            if out.write_all(bytes).and_then(|()| out.flush()).is_err() {
                self.echo = false;
            }
        }
        Ok(())
    }

    /// A line of our own in the log, e.g. why the boot restarted.
    fn note(&mut self, text: &str) -> Result<()> {
        if let Some((path, file)) = &mut self.log {
            writeln!(file, "\n--- undercloud-live: {text} ---")
                .with_context(|| format!("writing console log {}", path.display()))?;
        }
        Ok(())
    }
}

/// QEMU's process, killed with its whole process group when dropped.
struct Qemu {
    child: Child,
    status: Option<ExitStatus>,
}

impl Qemu {
    fn spawn(qemu: &Path, args: &[OsString]) -> Result<Qemu> {
        let mut cmd = Command::new(qemu);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // A kill reaches anything QEMU (or a wrapper script standing in
        // for it) starts, and QEMU dies with us.
        process::own_group_dying_with_us(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", qemu.display()))?;
        Ok(Qemu {
            child,
            status: None,
        })
    }

    /// Kills QEMU (if it still runs) and reaps it.
    fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let pid = Pid::from_raw(self.child.id() as i32);
        // Not yet reaped, so the group id cannot have been reused.
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = self.child.kill();
        let status = match self.child.wait() {
            Ok(status) => status,
            // Only if already reaped elsewhere; nothing more to wait for.
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(9),
        };
        self.status = Some(status);
        status
    }

    /// Waits up to `grace` for QEMU to exit by itself, then kills it.
    fn finish(&mut self, grace: Duration) -> ExitStatus {
        let until = Instant::now() + grace;
        while self.status.is_none() && Instant::now() < until {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // Reaped: anything left in its process group still goes.
                    self.status = Some(status);
                    return status;
                }
                Ok(None) => thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        self.stop()
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Event {
    Console(Vec<u8>),
    ConsoleEnd,
    Stderr(String),
    StderrEnd,
}

fn read_console(mut from: impl Read, to: Sender<Event>) {
    let mut buf = vec![0u8; 8192];
    loop {
        // What came, at once: the console is watched as it prints.
        match crate::io::read_some(&mut from, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.send(Event::Console(buf[..n].to_vec())).is_err() {
                    return;
                }
            }
        }
    }
    let _ = to.send(Event::ConsoleEnd);
}

fn read_stderr(from: impl Read, to: Sender<Event>) {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                if to.send(Event::Stderr(text)).is_err() {
                    return;
                }
            }
        }
    }
    let _ = to.send(Event::StderrEnd);
}

/// Finds a byte string in a stream that arrives in chunks, across chunk
/// boundaries, keeping only the last `len - 1` bytes between calls.
#[derive(Debug)]
struct Needle {
    pattern: Vec<u8>,
    carry: Vec<u8>,
}

impl Needle {
    fn new(pattern: &str) -> Needle {
        Needle {
            pattern: pattern.as_bytes().to_vec(),
            carry: Vec::new(),
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> bool {
        let n = self.pattern.len();
        if n == 0 {
            return true;
        }
        let mut hay = std::mem::take(&mut self.carry);
        hay.extend_from_slice(chunk);
        let found = hay.windows(n).any(|w| w == self.pattern.as_slice());
        self.carry = hay[hay.len().saturating_sub(n - 1)..].to_vec();
        found
    }
}

const PANIC: &str = "Kernel panic - not syncing";
/// The last line of a kernel panic report.
const PANIC_END: &str = "---[ end Kernel panic";
/// SeaBIOS and OVMF giving up: nothing will change after these.
const NOTHING_TO_BOOT: [&str; 2] = [
    "No bootable device.",
    "No bootable option or device was found",
];
/// After a panic, keep reading this long for the rest of its report.
const PANIC_GRACE: Duration = Duration::from_secs(3);
/// After "nothing to boot", collect the lines that follow.
const SHORT_GRACE: Duration = Duration::from_millis(700);
/// After a KVM error: the register dump follows in the same burst, and the
/// boot is usually restarted, so do not linger.
const KVM_GRACE: Duration = Duration::from_millis(200);

fn is_kvm_failure(stderr_line: &str) -> bool {
    stderr_line.contains("KVM internal error") || stderr_line.contains("emulation failure")
}

/// The last bytes of the console, for error messages.
#[derive(Default)]
struct Tail {
    buf: Vec<u8>,
    cut: bool,
}

impl Tail {
    const KEEP: usize = 64 * 1024;

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 2 * Self::KEEP {
            self.buf.drain(..self.buf.len() - Self::KEEP);
            self.cut = true;
        }
    }

    /// Whether a newline follows the last occurrence of `marker`.
    fn marker_line_complete(&self, marker: &str) -> bool {
        let m = marker.as_bytes();
        if m.is_empty() {
            return true;
        }
        match self.buf.windows(m.len()).rposition(|w| w == m) {
            Some(pos) => self.buf[pos + m.len()..].contains(&b'\n'),
            None => true,
        }
    }

    /// What the last kernel panic line says after "not syncing: ", e.g.
    /// "Attempted to kill init! exitcode=0x00000300".
    fn panic_reason(&self) -> Option<String> {
        let text = strip_ansi(&String::from_utf8_lossy(&self.buf));
        // The report's closing line repeats it, in brackets: take its first line.
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains(PANIC) && !l.contains(PANIC_END))?;
        let (_, reason) = line.split_once(PANIC)?;
        let reason = reason.trim_start_matches(':').trim();
        (!reason.is_empty()).then(|| clip(reason, 120))
    }

    /// The last `n` non-trailing lines, escape sequences removed.
    fn lines(&self, n: usize) -> Vec<String> {
        let text = strip_ansi(&String::from_utf8_lossy(&self.buf));
        let mut lines: Vec<&str> = text.lines().collect();
        if self.cut && !lines.is_empty() {
            // Starts mid-line, perhaps mid escape sequence.
            lines.remove(0);
        }
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|l| clip(l.trim_end(), 300))
            .collect()
    }
}

fn clip(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_owned(),
    }
}

/// Console text without terminal control: CSI and OSC sequences and other
/// escapes removed, carriage returns and control characters dropped. A
/// cursor-position sequence becomes a line break, because firmware (OVMF)
/// positions the cursor instead of printing newlines.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, then one final byte.
                    let mut last = None;
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            last = Some(c);
                            break;
                        }
                    }
                    if matches!(last, Some('H' | 'f')) && !out.is_empty() && !out.ends_with('\n') {
                        out.push('\n');
                    }
                }
                Some(']') => {
                    // Operating system command: up to BEL or ESC \.
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
                    // ESC, intermediates, final: e.g. "ESC ( B".
                    for c in chars.by_ref() {
                        if !('\u{20}'..='\u{2f}').contains(&c) {
                            break;
                        }
                    }
                }
                // Two-character escapes such as "ESC c" (reset).
                _ => {}
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

enum Attempt {
    Done(BootOutcome),
    /// KVM could not run the guest; the reason is for the user.
    KvmBroken(String),
}

/// Why an attempt stopped without success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Panic,
    NothingToBoot,
    Kvm,
}

/// One QEMU run: spawn, watch, stop. `Err` is a failed boot (or setup).
fn attempt(
    qemu: &Path,
    opts: &BootOptions,
    formats: &Formats,
    engine: Engine,
    sinks: &mut Sinks,
) -> Result<Attempt> {
    // Only `Accel::Auto` falls back; a forced KVM failure is a failed boot.
    let kvm_retry = engine == Engine::Kvm && opts.accel == Accel::Auto;
    let scratch = Scratch::new()?;
    let firmware = prepare_firmware(opts.firmware, &scratch.0)?;
    let args = qemu_args(opts, formats, engine, &firmware);

    let start = Instant::now();
    let mut vm = Qemu::spawn(qemu, &args)?;
    let (tx, rx) = mpsc::channel();
    // The readers end on EOF, which killing QEMU guarantees; they are not
    // joined so that a stray holder of the pipes can never hang us.
    if let Some(out) = vm.child.stdout.take() {
        let tx = tx.clone();
        thread::spawn(move || read_console(out, tx));
    }
    if let Some(err) = vm.child.stderr.take() {
        let tx = tx.clone();
        thread::spawn(move || read_stderr(err, tx));
    }
    drop(tx);

    let mut watch = Watch {
        opts,
        engine,
        start,
        tail: Tail::default(),
        stderr: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let result = watch.run(&rx, sinks, &mut vm);
    // Time of the marker (or the failure), not of the clean-up after it;
    // `run` already noted the marker's time if it waited for the line's end.
    if watch.elapsed == Duration::ZERO {
        watch.elapsed = start.elapsed();
    }
    let status = vm.stop();
    // Collect what QEMU said while dying (a KVM dump, an error).
    watch.drain(&rx, sinks);

    match result? {
        Watched::Marker => Ok(Attempt::Done(BootOutcome::Marker {
            elapsed: watch.elapsed,
        })),
        Watched::Stopped(Stop::Kvm) if kvm_retry => Ok(Attempt::KvmBroken(
            "KVM internal error / emulation failure".to_owned(),
        )),
        Watched::Stopped(Stop::Kvm) => Err(watch.failure(&format!(
            "KVM internal error (emulation failure) after {} s; TCG does not have this problem",
            watch.secs()
        ))),
        Watched::Stopped(Stop::Panic) => {
            // Its reason, in the summary: the register dump after it pushes
            // the panic line itself out of the last console lines.
            let reason = match watch.tail.panic_reason() {
                Some(reason) => format!(" ({reason})"),
                None => String::new(),
            };
            Err(watch.failure(&format!("kernel panic after {} s{reason}", watch.secs())))
        }
        Watched::Stopped(Stop::NothingToBoot) => Err(watch.failure(&format!(
            "firmware found nothing to boot after {} s",
            watch.secs()
        ))),
        Watched::Timeout => Err(watch.failure(&match &opts.expect {
            Some(text) => format!(
                "timed out after {} s waiting for {text:?}",
                opts.timeout.as_secs()
            ),
            None => format!(
                "timed out after {} s waiting for the guest to power off",
                opts.timeout.as_secs()
            ),
        })),
        Watched::Exited => {
            if status.success() && opts.expect.is_none() {
                Ok(Attempt::Done(BootOutcome::PoweredOff {
                    elapsed: watch.elapsed,
                }))
            } else if kvm_retry && !status.success() {
                Ok(Attempt::KvmBroken(format!(
                    "qemu exited with {status} under KVM"
                )))
            } else if status.success() {
                Err(watch.failure(&format!(
                    "the guest stopped (qemu exited) after {} s, before {:?} appeared",
                    watch.secs(),
                    opts.expect.as_deref().unwrap_or_default()
                )))
            } else {
                Err(watch.failure(&format!("qemu failed ({status}) after {} s", watch.secs())))
            }
        }
    }
}

enum Watched {
    Marker,
    Stopped(Stop),
    Timeout,
    /// QEMU closed its output: it exited by itself.
    Exited,
}

struct Watch<'a> {
    opts: &'a BootOptions,
    engine: Engine,
    start: Instant,
    tail: Tail,
    stderr: Vec<String>,
    /// Set when watching ends.
    elapsed: Duration,
}

impl Watch<'_> {
    fn run(&mut self, rx: &Receiver<Event>, sinks: &mut Sinks, vm: &mut Qemu) -> Result<Watched> {
        let deadline = self.start + self.opts.timeout;
        let mut marker = self.opts.expect.as_deref().map(Needle::new);
        let mut panic = Needle::new(PANIC);
        let mut panic_end = Needle::new(PANIC_END);
        let mut nothing = NOTHING_TO_BOOT.map(Needle::new);
        let (mut panicked, mut panic_ended) = (false, false);
        // A stop decided but delayed to collect the lines that explain it.
        let mut stopping: Option<(Instant, Stop)> = None;
        let (mut console_open, mut stderr_open) = (true, true);
        // When the marker was seen but its line is not complete yet: the
        // rest of that line usually carries facts from the guest, and the
        // log (and whoever reads it) should have it whole.
        let mut marker_seen: Option<Instant> = None;

        while console_open || stderr_open {
            let now = Instant::now();
            if marker_seen.is_some_and(|at| now >= at + MARKER_LINE_GRACE) {
                return Ok(Watched::Marker);
            }
            if let Some((at, stop)) = stopping {
                if now >= at {
                    return Ok(Watched::Stopped(stop));
                }
            }
            if now >= deadline {
                return Ok(Watched::Timeout);
            }
            let until = stopping.map_or(deadline, |(at, _)| at.min(deadline));
            let wait = (until - now).min(Duration::from_millis(250));
            match rx.recv_timeout(wait) {
                Ok(Event::Console(chunk)) => {
                    sinks.write(&chunk)?;
                    self.tail.push(&chunk);
                    if marker_seen.is_some() {
                        if chunk.contains(&b'\n') {
                            return Ok(Watched::Marker);
                        }
                        continue;
                    }
                    if marker.as_mut().is_some_and(|m| m.feed(&chunk)) {
                        if self
                            .tail
                            .marker_line_complete(self.opts.expect.as_deref().unwrap_or(""))
                        {
                            return Ok(Watched::Marker);
                        }
                        self.elapsed = self.start.elapsed();
                        marker_seen = Some(now);
                        continue;
                    }
                    panicked |= panic.feed(&chunk);
                    panic_ended |= panic_end.feed(&chunk);
                    if panicked && panic_ended {
                        return Ok(Watched::Stopped(Stop::Panic));
                    }
                    let gave_up = nothing
                        .iter_mut()
                        .fold(false, |any, n| n.feed(&chunk) | any);
                    if stopping.is_none() {
                        if panicked {
                            stopping = Some((now + PANIC_GRACE, Stop::Panic));
                        } else if gave_up {
                            stopping = Some((now + SHORT_GRACE, Stop::NothingToBoot));
                        }
                    }
                }
                Ok(Event::Stderr(line)) => {
                    if is_kvm_failure(&line) && !matches!(stopping, Some((_, Stop::Kvm))) {
                        // QEMU stays alive, paused, after this: never wait for it.
                        stopping = Some((now + KVM_GRACE, Stop::Kvm));
                    }
                    self.push_stderr(line);
                }
                Ok(Event::ConsoleEnd) => console_open = false,
                Ok(Event::StderrEnd) => stderr_open = false,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Output closed: QEMU exited (or is about to). Let it finish.
        vm.finish(Duration::from_secs(5));
        if marker_seen.is_some() {
            return Ok(Watched::Marker);
        }
        Ok(match stopping {
            Some((_, stop)) => Watched::Stopped(stop),
            None if panicked => Watched::Stopped(Stop::Panic),
            None => Watched::Exited,
        })
    }

    fn push_stderr(&mut self, line: String) {
        // Our own SeaBIOS console setting triggers this warning every time.
        if line.contains("externally provided fw_cfg item names") || line.is_empty() {
            return;
        }
        self.stderr.push(line);
        if self.stderr.len() > 200 {
            self.stderr.drain(..100);
        }
    }

    /// Takes in what is left after QEMU is gone (readers hit EOF quickly).
    fn drain(&mut self, rx: &Receiver<Event>, sinks: &mut Sinks) {
        let until = Instant::now() + Duration::from_millis(500);
        let mut open = 2;
        while open > 0 {
            let Some(wait) = until.checked_duration_since(Instant::now()) else {
                break;
            };
            match rx.recv_timeout(wait) {
                Ok(Event::Console(chunk)) => {
                    let _ = sinks.write(&chunk);
                    self.tail.push(&chunk);
                }
                Ok(Event::Stderr(line)) => self.push_stderr(line),
                Ok(Event::ConsoleEnd | Event::StderrEnd) => open -= 1,
                Err(_) => break,
            }
        }
    }

    fn secs(&self) -> u64 {
        self.elapsed.as_secs()
    }

    /// A failed boot: the one-line summary as the outer message, the console
    /// and QEMU's stderr as the cause (shown by `{:#}` and `{:?}`).
    fn failure(&self, what: &str) -> anyhow::Error {
        let summary = format!("boot of {}: {what}", self.opts.boot);
        let mut detail = String::from("last console lines:");
        let lines = self.tail.lines(25);
        if lines.is_empty() {
            detail.push_str(" (none)");
        }
        for line in lines {
            detail.push_str("\n  ");
            detail.push_str(&line);
        }
        if !self.stderr.is_empty() {
            detail.push_str("\nqemu stderr:");
            // The first lines say what went wrong (a KVM dump is a headline
            // and then registers), the last ones how it ended.
            let (head, tail) = (5, 10);
            let n = self.stderr.len();
            for (i, line) in self.stderr.iter().enumerate() {
                if i == head && n > head + tail {
                    detail.push_str(&format!("\n  … {} lines …", n - head - tail));
                }
                if i < head || i >= n.saturating_sub(tail) {
                    detail.push_str("\n  ");
                    detail.push_str(&clip(line, 300));
                }
            }
        }
        if self.engine == Engine::Kvm {
            detail.push_str("\n(accelerated with KVM)");
        }
        anyhow!(detail).context(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::testing::require;

    #[test]
    fn marker_line_completion() {
        let mut t = Tail::default();
        t.push(b"boot...\nMARK rootf");
        assert!(!t.marker_line_complete("MARK"));
        t.push(b"s=overlay\n");
        assert!(t.marker_line_complete("MARK"));
        t.push(b"MARK again");
        assert!(!t.marker_line_complete("MARK"));
    }

    fn strs(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    fn joined(args: &[OsString]) -> String {
        strs(args).join(" ")
    }

    fn uefi(secure: bool) -> FirmwareArgs {
        FirmwareArgs::Uefi {
            code: "/fw/CODE.fd".into(),
            vars: "/tmp/s/VARS.fd".into(),
            secure,
        }
    }

    /// Every drive raw, as sniffing finds for files without qcow2's magic.
    fn raw(opts: &BootOptions) -> Formats {
        Formats {
            image: DiskFormat::Raw,
            extra: vec![DiskFormat::Raw; opts.extra_drives.len()],
        }
    }

    #[test]
    fn command_line_cdrom_uefi_tcg() {
        let opts = BootOptions::new("/img/live.iso", Media::Cdrom);
        let args = qemu_args(&opts, &raw(&opts), Engine::Tcg, &uefi(false));
        assert_eq!(
            joined(&args),
            "-machine q35,accel=tcg -cpu max -m 2048 -smp 2 -display none -no-reboot \
             -nic none -monitor none -serial stdio \
             -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd \
             -drive if=pflash,format=raw,unit=1,file=/tmp/s/VARS.fd \
             -drive file=/img/live.iso,media=cdrom,readonly=on,format=raw"
        );
    }

    #[test]
    fn command_line_usb_secure_kvm() {
        let mut opts = BootOptions::new("/img/live.iso", Media::Usb);
        opts.memory_mib = 3072;
        opts.cpus = 1;
        let args = joined(&qemu_args(&opts, &raw(&opts), Engine::Kvm, &uefi(true)));
        assert!(args.starts_with("-machine q35,smm=on,accel=kvm -cpu host -m 3072 -smp 1 "));
        assert!(args.contains(" -global driver=cfi.pflash01,property=secure,value=on "));
        assert!(args.ends_with(
            "-device qemu-xhci -drive if=none,id=stick,file=/img/live.iso,format=raw,snapshot=on \
             -device usb-storage,drive=stick,removable=on"
        ));
    }

    #[test]
    fn command_line_disk_bios_writable_extra_drives() {
        let mut opts = BootOptions::new("/img/disk.raw", Media::Disk);
        opts.writable = true;
        opts.extra_drives = vec!["/t/a.raw".into(), "/t/b,c.raw".into()];
        let fw = FirmwareArgs::Bios {
            sercon: "/tmp/s/sercon-port".into(),
        };
        let args = strs(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &fw));
        assert!(!args.iter().any(|a| a.contains("pflash")));
        let has = |pair: [&str; 2]| args.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1]);
        assert!(has([
            "-fw_cfg",
            "name=etc/sercon-port,file=/tmp/s/sercon-port"
        ]));
        assert!(has(["-drive", "file=/img/disk.raw,if=virtio,format=raw"]));
        assert!(has(["-drive", "file=/t/a.raw,if=virtio,format=raw"]));
        // QEMU's escaping: a comma in a path is doubled.
        assert!(has(["-drive", "file=/t/b,,c.raw,if=virtio,format=raw"]));
        // The boot image comes before the extra drives.
        let pos = |s: &str| args.iter().position(|a| a.contains(s)).unwrap();
        assert!(pos("disk.raw") < pos("a.raw"));
    }

    #[test]
    fn forwards_give_a_user_network_on_loopback() {
        let mut opts = BootOptions::new("/img/live.iso", Media::Cdrom);
        let args = strs(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &uefi(false)));
        let has = |args: &[String], pair: [&str; 2]| {
            args.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1])
        };
        assert!(has(&args, ["-nic", "none"]));
        opts.forwards = vec!["16385:6385".parse().unwrap(), "2222:22".parse().unwrap()];
        let args = strs(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &uefi(false)));
        assert!(has(
            &args,
            [
                "-netdev",
                "user,id=user0,hostfwd=tcp:127.0.0.1:16385-:6385,hostfwd=tcp:127.0.0.1:2222-:22"
            ]
        ));
        assert!(has(&args, ["-device", "virtio-net-pci,netdev=user0"]));
        assert!(!has(&args, ["-nic", "none"]));
        for bad in ["6385", "0:6385", "a:b", "70000:1", "1:2:3"] {
            let e = bad.parse::<Forward>().unwrap_err();
            assert!(format!("{e}").contains("HOSTPORT:GUESTPORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn links_are_loopback_udp_nics_named_first() {
        let mut opts = BootOptions::new("/img/live.iso", Media::Cdrom);
        opts.links = vec!["40001:40002".parse().unwrap()];
        let args = strs(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &uefi(false)));
        let has = |pair: [&str; 2]| args.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1]);
        assert!(has([
            "-netdev",
            "socket,id=link0,udp=127.0.0.1:40002,localaddr=127.0.0.1:40001"
        ]));
        assert!(has(["-device", "virtio-net-pci,netdev=link0"]));
        // A link alone: no user-mode card, and not "-nic none" either.
        assert!(!args.iter().any(|a| a == "-nic"), "{args:?}");
        opts.forwards = vec!["16385:6385".parse().unwrap()];
        let args = strs(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &uefi(false)));
        let pos = |s: &str| args.iter().position(|a| a.contains(s)).unwrap();
        assert!(pos("netdev=link0") < pos("netdev=user0"));
        for bad in ["40001", "0:1", "a:b", "5:5", "1:2:3"] {
            let e = bad.parse::<Link>().unwrap_err();
            assert!(format!("{e}").contains("--link"), "{bad}: {e}");
        }
    }

    #[test]
    fn snapshot_unless_writable() {
        let mut opts = BootOptions::new("/img/x", Media::Disk);
        let fw = uefi(false);
        assert!(joined(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &fw))
            .contains("format=raw,snapshot=on"));
        opts.writable = true;
        assert!(!joined(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &fw)).contains("snapshot"));
        // A CD is read-only whatever `writable` says.
        opts.boot = Boot::Image {
            image: "/img/x".into(),
            media: Media::Cdrom,
        };
        assert!(joined(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &fw))
            .contains("readonly=on,format=raw"));
    }

    fn kernel_opts(initrd: Option<&str>, append: Option<&str>) -> BootOptions {
        BootOptions::booting(Boot::Kernel {
            kernel: "/r/ipa,1.kernel".into(),
            initrd: initrd.map(PathBuf::from),
            append: append.map(str::to_owned),
        })
    }

    #[test]
    fn command_line_kernel_bios_tcg() {
        let opts = kernel_opts(Some("/r/ipa,1.initramfs"), Some("rd.debug  ipa-debug=1 "));
        assert_eq!(opts.firmware, Firmware::Bios);
        let fw = FirmwareArgs::Bios {
            sercon: "/tmp/s/sercon-port".into(),
        };
        let args = strs(&qemu_args(&opts, &raw(&opts), Engine::Tcg, &fw));
        assert_eq!(
            args.join(" "),
            "-machine q35,accel=tcg -cpu max -m 2048 -smp 2 -display none -no-reboot \
             -nic none -monitor none -serial stdio \
             -fw_cfg name=etc/sercon-port,file=/tmp/s/sercon-port \
             -kernel /r/ipa,1.kernel -initrd /r/ipa,1.initramfs \
             -append console=ttyS0,115200 panic=-1 rd.debug  ipa-debug=1"
        );
        // One argument each: file names are not QEMU option lists (no
        // doubled comma), the command line is one string.
        assert!(args.contains(&"/r/ipa,1.kernel".to_owned()));
        assert!(args.contains(&"console=ttyS0,115200 panic=-1 rd.debug  ipa-debug=1".to_owned()));
        assert!(!args.contains(&"-drive".to_owned()));
    }

    #[test]
    fn command_line_kernel_uefi_no_initrd_extra_drive() {
        let mut opts = kernel_opts(None, None);
        opts.firmware = Firmware::Uefi;
        opts.extra_drives = vec!["/t/target.qcow2".into()];
        let formats = Formats {
            image: DiskFormat::Raw,
            extra: vec![DiskFormat::Qcow2],
        };
        let args = joined(&qemu_args(&opts, &formats, Engine::Tcg, &uefi(false)));
        assert!(args.contains(" -drive if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd "));
        assert!(
            args.ends_with(
                " -kernel /r/ipa,1.kernel -append console=ttyS0,115200 panic=-1 \
                 -drive file=/t/target.qcow2,if=virtio,format=qcow2"
            ),
            "{args}"
        );
        assert!(!args.contains("-initrd"));
        // Blank --append: the fixed part only.
        let opts = kernel_opts(None, Some("  "));
        assert_eq!(opts.boot.cmdline().unwrap(), KERNEL_CMDLINE);
        assert_eq!(BootOptions::new("/x", Media::Usb).boot.cmdline(), None);
    }

    #[test]
    fn command_line_qcow2_image_keeps_snapshot() {
        let qcow2 = Formats {
            image: DiskFormat::Qcow2,
            extra: vec![DiskFormat::Raw],
        };
        let mut opts = BootOptions::new("/img/disk.qcow2", Media::Disk);
        opts.extra_drives = vec!["/t/blank.raw".into()];
        let args = strs(&qemu_args(&opts, &qcow2, Engine::Tcg, &uefi(false)));
        let has = |pair: [&str; 2]| args.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1]);
        assert!(has([
            "-drive",
            "file=/img/disk.qcow2,if=virtio,format=qcow2,snapshot=on"
        ]));
        assert!(has(["-drive", "file=/t/blank.raw,if=virtio,format=raw"]));
        opts.writable = true;
        let args = joined(&qemu_args(&opts, &qcow2, Engine::Tcg, &uefi(false)));
        assert!(args.contains("file=/img/disk.qcow2,if=virtio,format=qcow2 "));
        let opts = BootOptions::new("/img/disk.qcow2", Media::Usb);
        let args = joined(&qemu_args(&opts, &qcow2, Engine::Tcg, &uefi(false)));
        assert!(args.contains("id=stick,file=/img/disk.qcow2,format=qcow2,snapshot=on "));
    }

    #[test]
    fn qcow2_is_sniffed_from_the_magic() {
        let dir = tempfile::tempdir().unwrap();
        let put = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, bytes).unwrap();
            p
        };
        // A qcow2 version 3 header's start: magic, version, backing offset.
        let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
        header.resize(512, 0);
        let qcow2 = put("a.qcow2", &header);
        assert_eq!(DiskFormat::sniff(&qcow2).unwrap(), DiskFormat::Qcow2);
        // The name does not matter, only the bytes.
        assert_eq!(
            DiskFormat::sniff(&put("b.qcow2", &[0; 512])).unwrap(),
            DiskFormat::Raw
        );
        assert_eq!(
            DiskFormat::sniff(&put("c.img", b"QFI")).unwrap(),
            DiskFormat::Raw
        );
        assert_eq!(
            DiskFormat::sniff(&put("d.img", b"")).unwrap(),
            DiskFormat::Raw
        );
        let err = DiskFormat::sniff(&dir.path().join("none")).unwrap_err();
        assert!(format!("{err:#}").contains("none"), "{err:#}");
        let mut backed = header.clone();
        backed[8..16].copy_from_slice(&512u64.to_be_bytes());
        let err = DiskFormat::sniff(&put("f.qcow2", &backed)).unwrap_err();
        assert!(format!("{err:#}").contains("backing file"), "{err:#}");

        let raw = put("e.raw", &[0; 512]);
        let mut opts = BootOptions::new(&qcow2, Media::Disk);
        opts.extra_drives = vec![raw.clone(), qcow2.clone()];
        assert_eq!(
            Formats::sniff(&opts).unwrap(),
            Formats {
                image: DiskFormat::Qcow2,
                extra: vec![DiskFormat::Raw, DiskFormat::Qcow2],
            }
        );
        // A kernel boot has no image to sniff; its extra drives are sniffed.
        let mut opts = kernel_opts(None, None);
        opts.extra_drives = vec![qcow2];
        assert_eq!(
            Formats::sniff(&opts).unwrap().extra,
            vec![DiskFormat::Qcow2]
        );

        // What qemu-img itself writes, when it is installed.
        if Command::new("qemu-img").arg("--version").output().is_ok() {
            let made = dir.path().join("made.qcow2");
            let ok = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2"])
                .arg(&raw)
                .arg(&made)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            assert_eq!(DiskFormat::sniff(&made).unwrap(), DiskFormat::Qcow2);
        }
    }

    #[test]
    fn ramdisk_memory_rule() {
        use crate::io::MIB;
        // A 545 MiB root (the deploy ramdisk) needs 1602 MiB: its tmpfs
        // may fill half the memory.
        assert_eq!(unpacked_memory_mib(545 * MIB), 1602);
        assert_eq!(ramdisk_memory_mib(0), 512);
        assert_eq!(ramdisk_memory_mib(1), 513);
        assert_eq!(ramdisk_memory_mib(100 * MIB), 912);
        // An IPA-sized ramdisk (~400 MB) does not fit the default 2 GiB.
        assert_eq!(ramdisk_memory_mib(400 * MIB), 2112);
        let p = Path::new("/r/ipa.initramfs");
        assert!(check_ramdisk_memory(p, 100 * MIB, 912).is_ok());
        let err = check_ramdisk_memory(p, 400 * MIB, 2048)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "initramfs /r/ipa.initramfs is 400 MiB compressed; unpacked in guest memory it needs \
             about 2112 MiB, more than the 2048 MiB given: use --memory 2304"
        );
    }

    #[test]
    fn kernel_boot_checks_before_qemu_starts() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("ipa.kernel");
        let initrd = dir.path().join("ipa.initramfs");
        fs::write(&kernel, b"k").unwrap();
        // Sparse: 600 MiB without using the space.
        File::create(&initrd).unwrap().set_len(600 << 20).unwrap();
        let mut opts = BootOptions::booting(Boot::Kernel {
            kernel: kernel.clone(),
            initrd: Some(initrd.clone()),
            append: None,
        });
        // /bin/false would fail differently: the memory check comes first.
        let err = boot_with(Path::new("/bin/false"), &opts).unwrap_err();
        assert!(err.to_string().ends_with("use --memory 3072"), "{err}");
        opts.boot = Boot::Kernel {
            kernel: dir.path().join("missing.kernel"),
            initrd: None,
            append: None,
        };
        let err = boot_with(Path::new("/bin/false"), &opts).unwrap_err();
        assert!(format!("{err:#}").starts_with("kernel "), "{err:#}");
        assert!(format!("{err:#}").contains("missing.kernel"), "{err:#}");
        opts.boot = Boot::Kernel {
            kernel,
            initrd: Some(dir.path().to_path_buf()),
            append: None,
        };
        let err = boot_with(Path::new("/bin/false"), &opts).unwrap_err();
        assert!(err.to_string().ends_with("is a directory"), "{err}");
    }

    #[test]
    fn choose_what_to_boot() {
        let dir = tempfile::tempdir().unwrap();
        let kernel = dir.path().join("ipa.kernel");
        let beside = dir.path().join("ipa.initramfs");
        fs::write(&kernel, b"k").unwrap();
        let some = |p: &Path| Some(p.to_path_buf());
        let err = |r: Result<Boot>| r.unwrap_err().to_string();

        // An image: --as defaults to a CD.
        assert_eq!(
            Boot::choose(Some("x.iso".into()), None, None, None, None).unwrap(),
            Boot::Image {
                image: "x.iso".into(),
                media: Media::Cdrom
            }
        );
        assert_eq!(
            Boot::choose(
                some(Path::new("d.qcow2")),
                Some(Media::Disk),
                None,
                None,
                None
            )
            .unwrap(),
            Boot::Image {
                image: "d.qcow2".into(),
                media: Media::Disk
            }
        );
        // NAME.kernel: the initramfs beside it is required ...
        let e = err(Boot::choose(some(&kernel), None, None, None, None));
        assert!(
            e.starts_with(&format!(
                "{} not found beside {}",
                beside.display(),
                kernel.display()
            )),
            "{e}"
        );
        assert!(e.contains("--initrd FILE"), "{e}");
        // ... and found.
        fs::write(&beside, b"i").unwrap();
        let want = Boot::Kernel {
            kernel: kernel.clone(),
            initrd: some(&beside),
            append: Some("a=1".into()),
        };
        assert_eq!(
            Boot::choose(some(&kernel), None, None, None, Some("a=1".into())).unwrap(),
            want
        );
        // --kernel NAME.kernel finds it too; --initrd overrides it.
        assert_eq!(
            Boot::choose(None, None, some(&kernel), None, Some("a=1".into())).unwrap(),
            want
        );
        assert_eq!(
            Boot::choose(None, None, some(&kernel), Some("o.img".into()), None).unwrap(),
            Boot::Kernel {
                kernel: kernel.clone(),
                initrd: Some("o.img".into()),
                append: None,
            }
        );
        // Any other kernel name: an initramfs only when given.
        assert_eq!(
            Boot::choose(None, None, Some("vmlinuz".into()), None, None).unwrap(),
            Boot::Kernel {
                kernel: "vmlinuz".into(),
                initrd: None,
                append: None,
            }
        );

        // The wrong combinations, one line each.
        let e = err(Boot::choose(
            Some("x.iso".into()),
            None,
            Some("vmlinuz".into()),
            None,
            None,
        ));
        assert_eq!(e, "give an image (x.iso) or --kernel vmlinuz, not both");
        let e = err(Boot::choose(
            Some("x.iso".into()),
            None,
            None,
            Some("i".into()),
            None,
        ));
        assert_eq!(
            e,
            "--initrd i needs --kernel (or a NAME.kernel instead of the image x.iso)"
        );
        let e = err(Boot::choose(None, None, None, Some("i".into()), None));
        assert_eq!(e, "--initrd i needs --kernel FILE");
        let e = err(Boot::choose(
            Some("x.iso".into()),
            None,
            None,
            None,
            Some("a".into()),
        ));
        assert!(e.starts_with("--append is for a kernel"), "{e}");
        let e = err(Boot::choose(
            some(&kernel),
            Some(Media::Disk),
            None,
            None,
            None,
        ));
        assert!(
            e.starts_with("--as disk attaches an image; a kernel ("),
            "{e}"
        );
        let e = err(Boot::choose(
            None,
            Some(Media::Usb),
            Some("vmlinuz".into()),
            None,
            None,
        ));
        assert!(e.starts_with("--as usb attaches an image"), "{e}");
        let e = err(Boot::choose(None, None, None, None, None));
        assert!(e.starts_with("nothing to boot"), "{e}");
    }

    #[test]
    fn needle_across_chunks() {
        let mut n = Needle::new("login:");
        assert!(!n.feed(b"Debian GNU/Linux 12 host ttyS0\r\n\r\nhost lo"));
        assert!(!n.feed(b"gi"));
        assert!(n.feed(b"n: "));
        let mut n = Needle::new("abc");
        assert!(!n.feed(b"a"));
        assert!(!n.feed(b"b"));
        assert!(n.feed(b"c"));
        let mut n = Needle::new("abc");
        assert!(!n.feed(b"ab"));
        assert!(!n.feed(b"xc"));
        assert!(n.feed(b"zzabcz"));
        // Carry stays bounded.
        let mut n = Needle::new("marker");
        n.feed(&[b'x'; 10_000]);
        assert_eq!(n.carry.len(), 5);
    }

    #[test]
    fn strips_escape_sequences() {
        let raw = "\u{1b}[2J\u{1b}[01;01H\u{1b}[=3h\u{1b}[2J\u{1b}[01;01HBdsDxe: loading\r\n\
                   \u{1b}[1m\u{1b}[33m\u{1b}[40mShell> \u{1b}[0m\u{1b}[37m\u{1b}[40mecho\r\n\
                   \u{1b}]0;title\u{7}\u{1b}(Bok \u{1b}cdone\u{8}";
        assert_eq!(strip_ansi(raw), "BdsDxe: loading\nShell> echo\nok done");
        // Cursor positioning separates OVMF's repeated prompts.
        assert_eq!(
            strip_ansi("\u{1b}[09;01HPress ESC in 2\u{1b}[09;01HPress ESC in 1"),
            "Press ESC in 2\nPress ESC in 1"
        );
        assert_eq!(strip_ansi("plain\ttext\n"), "plain\ttext\n");
    }

    #[test]
    fn tail_keeps_last_lines() {
        let mut tail = Tail::default();
        for i in 0..40 {
            tail.push(format!("\u{1b}[32mline {i}\u{1b}[0m\r\n").as_bytes());
        }
        tail.push(b"\r\n\r\n");
        let lines = tail.lines(25);
        assert_eq!(lines.len(), 25);
        assert_eq!(lines[0], "line 15");
        assert_eq!(lines[24], "line 39");
        // Bounded, and a cut first line is dropped.
        let mut tail = Tail::default();
        for _ in 0..5000 {
            tail.push(b"0123456789abcdefghij0123456789abcdefghij\n");
        }
        assert!(tail.buf.len() <= 2 * Tail::KEEP);
        assert!(tail
            .lines(25)
            .iter()
            .all(|l| l == "0123456789abcdefghij0123456789abcdefghij"));
    }

    #[test]
    fn panic_and_kvm_detection() {
        let mut n = Needle::new(PANIC);
        assert!(!n.feed(b"[    2.1] Kernel pa"));
        assert!(n.feed(b"nic - not syncing: VFS: Unable to mount root fs\r\n"));
        assert!(is_kvm_failure("KVM internal error. Suberror: 1"));
        assert!(is_kvm_failure("emulation failure"));
        assert!(!is_kvm_failure(
            "qemu-system-x86_64: warning: host doesn't support requested feature"
        ));
    }

    #[test]
    fn ovmf_search_debian_and_fedora() {
        let root = tempfile::tempdir().unwrap();
        let err = find_ovmf_in(root.path(), false).unwrap_err().to_string();
        assert!(err.contains("ovmf") && err.contains("edk2-ovmf"), "{err}");
        let fedora = root.path().join("usr/share/edk2/ovmf");
        fs::create_dir_all(&fedora).unwrap();
        for f in [
            "OVMF_CODE.fd",
            "OVMF_VARS.fd",
            "OVMF_CODE.secboot.fd",
            "OVMF_VARS.secboot.fd",
        ] {
            fs::write(fedora.join(f), b"").unwrap();
        }
        assert_eq!(
            find_ovmf_in(root.path(), false).unwrap(),
            (fedora.join("OVMF_CODE.fd"), fedora.join("OVMF_VARS.fd"))
        );
        assert_eq!(
            find_ovmf_in(root.path(), true).unwrap(),
            (
                fedora.join("OVMF_CODE.secboot.fd"),
                fedora.join("OVMF_VARS.secboot.fd")
            )
        );
        // Debian's 4 MiB build wins when both are present.
        let debian = root.path().join("usr/share/OVMF");
        fs::create_dir_all(&debian).unwrap();
        for f in ["OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"] {
            fs::write(debian.join(f), b"").unwrap();
        }
        assert_eq!(
            find_ovmf_in(root.path(), true).unwrap().1,
            debian.join("OVMF_VARS_4M.ms.fd")
        );
    }

    #[test]
    fn missing_image_is_named() {
        let opts = BootOptions::new("/nonexistent/live.iso", Media::Cdrom);
        let err = boot_with(Path::new("/bin/false"), &opts).unwrap_err();
        assert!(
            format!("{err:#}").contains("/nonexistent/live.iso"),
            "{err:#}"
        );
    }

    // ---- With a stand-in for QEMU: a shell script that prints a console. ----

    fn fake_qemu(dir: &Path, body: &str) -> PathBuf {
        let path = dir.join("fake-qemu");
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn fake_opts(dir: &Path) -> BootOptions {
        let image = dir.join("image.raw");
        fs::write(&image, b"").unwrap();
        let mut opts = BootOptions::new(image, Media::Usb);
        opts.firmware = Firmware::Bios;
        opts.accel = Accel::Tcg;
        opts.timeout = Duration::from_secs(20);
        opts
    }

    /// Processes whose command line mentions `needle` (our unique temp path).
    fn processes_mentioning(needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
                let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if text.contains(needle) {
                    found.push(format!("{}: {text}", entry.file_name().to_string_lossy()));
                }
            }
        }
        found
    }

    #[test]
    fn fake_marker_split_across_writes_and_killed() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(
            dir.path(),
            "printf 'booting\\r\\nUNDERCLOUD-'; sleep 0.3; printf 'READY\\r\\n'; exec sleep 60",
        );
        let mut opts = fake_opts(dir.path());
        opts.expect = Some("UNDERCLOUD-READY".to_owned());
        opts.log = Some(dir.path().join("console.log"));
        let t = Instant::now();
        let outcome = boot_with(&qemu, &opts).unwrap();
        assert!(
            matches!(outcome, BootOutcome::Marker { elapsed } if elapsed < Duration::from_secs(10))
        );
        assert!(t.elapsed() < Duration::from_secs(10));
        let log = fs::read_to_string(dir.path().join("console.log")).unwrap();
        assert_eq!(log, "booting\r\nUNDERCLOUD-READY\r\n");
        // The stand-in got its arguments, and is gone (sleep was exec'd).
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    }

    #[test]
    fn fake_panic_reports_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(
            dir.path(),
            "i=0; while [ $i -lt 40 ]; do echo \"[    1.$i] early line $i\"; i=$((i+1)); done\n\
             printf '\\033[31m[    2.0] Kernel panic - not syncing: VFS: Unable to mount root fs\\033[0m\\r\\n'\n\
             echo '[    2.1] CPU: 0 PID: 1 Comm: swapper'\n\
             echo '[    2.2] ---[ end Kernel panic - not syncing: VFS ]---'\n\
             exec sleep 60",
        );
        let mut opts = fake_opts(dir.path());
        opts.expect = Some("login:".to_owned());
        let t = Instant::now();
        let err = boot_with(&qemu, &opts).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10));
        let summary = err.to_string();
        assert!(summary.starts_with("boot of "), "{summary}");
        assert!(
            summary.ends_with("as usb: kernel panic after 0 s (VFS: Unable to mount root fs)"),
            "{summary}"
        );
        let full = format!("{err:#}");
        assert!(
            full.contains("\n  [    2.0] Kernel panic - not syncing: VFS"),
            "{full}"
        );
        assert!(full.contains("end Kernel panic"), "{full}");
        assert!(!full.contains('\u{1b}'), "{full}");
        assert!(
            !full.contains("early line 17\n"),
            "more than 25 lines: {full}"
        );
        assert!(full.contains("early line 18\n"), "{full}");
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    }

    #[test]
    fn fake_kernel_boot_names_kernel_and_initrd() {
        let dir = tempfile::tempdir().unwrap();
        // The stand-in prints its arguments: the kernel command line arrives whole.
        let qemu = fake_qemu(
            dir.path(),
            "for a in \"$@\"; do echo \"arg: $a\"; done\n\
             echo '[    0.9] Kernel panic - not syncing: Out of memory and no killable processes...'\n\
             exit 0",
        );
        let kernel = dir.path().join("ipa.kernel");
        let initrd = dir.path().join("ipa.initramfs");
        fs::write(&kernel, b"k").unwrap();
        fs::write(&initrd, b"i").unwrap();
        let mut opts = BootOptions::booting(Boot::Kernel {
            kernel: kernel.clone(),
            initrd: Some(initrd.clone()),
            append: Some("ipa-debug=1".to_owned()),
        });
        opts.accel = Accel::Tcg;
        opts.timeout = Duration::from_secs(20);
        opts.expect = Some("login:".to_owned());
        let err = boot_with(&qemu, &opts).unwrap_err();
        let full = format!("{err:#}");
        assert_eq!(
            err.to_string(),
            format!(
                "boot of kernel {} with initrd {}: kernel panic after 0 s \
                 (Out of memory and no killable processes...)",
                kernel.display(),
                initrd.display()
            ),
            "{full}"
        );
        assert!(
            full.contains("arg: console=ttyS0,115200 panic=-1 ipa-debug=1\n"),
            "{full}"
        );
        assert!(!full.contains("arg: -drive"), "{full}");
    }

    #[test]
    fn fake_timeout_and_early_exit() {
        let dir = tempfile::tempdir().unwrap();
        let qemu = fake_qemu(dir.path(), "echo 'still booting'; exec sleep 60");
        let mut opts = fake_opts(dir.path());
        opts.expect = Some("login:".to_owned());
        opts.timeout = Duration::from_secs(1);
        let err = boot_with(&qemu, &opts).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("as usb: timed out after 1 s waiting for \"login:\""),
            "{err}"
        );
        assert!(format!("{err:#}").contains("still booting"));
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());

        let qemu = fake_qemu(
            dir.path(),
            "echo 'guest output'; echo 'qemu: bad thing' >&2; exit 1",
        );
        opts.timeout = Duration::from_secs(20);
        let err = boot_with(&qemu, &opts).unwrap_err();
        let full = format!("{err:#}");
        assert!(err.to_string().contains("qemu failed"), "{full}");
        assert!(
            full.contains("qemu: bad thing") && full.contains("guest output"),
            "{full}"
        );

        // Clean exit without a marker expected: the guest powered off.
        let qemu = fake_qemu(dir.path(), "echo 'reboot: Power down'; exit 0");
        opts.expect = None;
        assert!(matches!(
            boot_with(&qemu, &opts).unwrap(),
            BootOutcome::PoweredOff { .. }
        ));
        // ... but with a marker expected, that is an error.
        opts.expect = Some("login:".to_owned());
        let err = boot_with(&qemu, &opts).unwrap_err();
        assert!(
            err.to_string().contains("before \"login:\" appeared"),
            "{err}"
        );
    }

    #[test]
    fn fake_kvm_failure_is_detected_not_waited_for() {
        if !require(kvm_opens(), "/dev/kvm cannot be opened") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Like QEMU here: the error on stderr, then the VM just sits paused.
        let qemu = fake_qemu(
            dir.path(),
            "echo 'KVM internal error. Suberror: 1' >&2; echo 'emulation failure' >&2; exec sleep 60",
        );
        let mut opts = fake_opts(dir.path());
        opts.accel = Accel::Kvm;
        opts.expect = Some("login:".to_owned());
        let t = Instant::now();
        let err = boot_with(&qemu, &opts).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            err.to_string()
                .contains("as usb: KVM internal error (emulation failure) after 0 s"),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("qemu stderr:\n  KVM internal error. Suberror: 1"));
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    }

    // ---- Real QEMU, firmware only (no OS image needed). ----

    fn real_qemu() -> Option<PathBuf> {
        match find_qemu() {
            Ok(q) => Some(q),
            Err(e) => {
                require(false, &e.to_string());
                None
            }
        }
    }

    fn blank_disk(dir: &Path) -> PathBuf {
        let image = dir.join("blank.raw");
        fs::write(&image, vec![0u8; 1 << 20]).unwrap();
        image
    }

    #[test]
    #[ignore = "boots QEMU under TCG (make test runs it)"]
    fn real_seabios_marker_then_cleanup() {
        let Some(qemu) = real_qemu() else { return };
        let dir = tempfile::tempdir().unwrap();
        let mut opts = BootOptions::new(blank_disk(dir.path()), Media::Disk);
        opts.firmware = Firmware::Bios;
        opts.accel = Accel::Tcg;
        opts.memory_mib = 256;
        opts.timeout = Duration::from_secs(30);
        opts.expect = Some("SeaBIOS (version".to_owned());
        let outcome = boot_with(&qemu, &opts).unwrap();
        assert!(matches!(outcome, BootOutcome::Marker { .. }), "{outcome:?}");
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());

        // The same firmware with nothing bootable: an error at once, not a timeout.
        opts.expect = Some("login:".to_owned());
        let t = Instant::now();
        let err = boot_with(&qemu, &opts).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
        assert!(
            err.to_string()
                .contains("as disk: firmware found nothing to boot"),
            "{err:#}"
        );
        assert!(
            format!("{err:#}").contains("No bootable device."),
            "{err:#}"
        );
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    }

    #[test]
    #[ignore = "boots QEMU under TCG (make test runs it)"]
    fn real_ovmf_auto_accel_marker_and_timeout() {
        let Some(qemu) = real_qemu() else { return };
        if !require(find_ovmf(false).is_ok(), "no OVMF") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut opts = BootOptions::new(blank_disk(dir.path()), Media::Usb);
        opts.memory_mib = 512;
        opts.cpus = 1;
        // Auto: here KVM fails under OVMF and the boot restarts under TCG.
        opts.accel = Accel::Auto;
        opts.timeout = Duration::from_secs(30);
        opts.expect = Some("BdsDxe".to_owned());
        opts.log = Some(dir.path().join("console.log"));
        let t = Instant::now();
        let outcome = boot_with(&qemu, &opts).unwrap();
        eprintln!("OVMF to BdsDxe: {outcome:?}, {:?} in all", t.elapsed());
        assert!(matches!(outcome, BootOutcome::Marker { .. }));
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());

        // OVMF then waits at its shell forever: a timeout with its lines.
        opts.expect = Some("NEVER-PRINTED".to_owned());
        // Long enough for OVMF's first lines even with other guests
        // sharing the two cores (they took 7 s then).
        opts.timeout = Duration::from_secs(15);
        opts.log = None;
        let err = boot_with(&qemu, &opts).unwrap_err();
        let full = format!("{err:#}");
        assert!(
            err.to_string()
                .ends_with("as usb: timed out after 15 s waiting for \"NEVER-PRINTED\""),
            "{full}"
        );
        assert!(full.contains("BdsDxe"), "{full}");
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    }

    /// An ESP from `fs::esp` as a disk: OVMF reads it and its UEFI shell
    /// runs `startup.nsh`, which prints a marker and powers off.
    #[test]
    #[ignore = "boots QEMU under TCG (make test runs it)"]
    fn real_ovmf_reads_our_esp() {
        use crate::fs::esp::{write_esp, EspContent, EspFile, EspOptions};
        let Some(qemu) = real_qemu() else { return };
        if !require(find_ovmf(false).is_ok(), "no OVMF") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("esp.img");
        // The marker is assembled by the shell, so the echoed command line
        // ("echo ESP-READ-%M%") cannot match it.
        let script = "set M OK\r\necho ESP-READ-%M%\r\nreset -s\r\n";
        let files = [
            EspFile {
                dest: "startup.nsh".to_owned(),
                content: EspContent::Bytes(script.as_bytes().to_vec()),
            },
            EspFile {
                dest: "EFI/BOOT/readme.txt".to_owned(),
                content: EspContent::Bytes(b"hello".to_vec()),
            },
        ];
        let esp = EspOptions {
            label: "TESTESP".to_owned(),
            volume_id: 1,
            epoch: 0,
            extra_bytes: 0,
        };
        write_esp(&files, &esp, &image).unwrap();
        let before = fs::read(&image).unwrap();

        let mut opts = BootOptions::new(&image, Media::Disk);
        opts.memory_mib = 512;
        opts.cpus = 1;
        opts.accel = Accel::Tcg;
        opts.timeout = Duration::from_secs(40);
        opts.expect = Some("ESP-READ-OK".to_owned());
        let outcome = boot_with(&qemu, &opts).unwrap();
        eprintln!("OVMF shell ran startup.nsh: {outcome:?}");

        // No marker: `reset -s` powers the guest off.
        opts.expect = None;
        let outcome = boot_with(&qemu, &opts).unwrap();
        assert!(
            matches!(outcome, BootOutcome::PoweredOff { .. }),
            "{outcome:?}"
        );
        // snapshot=on: the image is untouched.
        assert!(fs::read(&image).unwrap() == before);
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    }

    #[test]
    #[ignore = "boots QEMU under TCG (make test runs it)"]
    fn real_secure_boot_refuses_unsigned_shell() {
        let Some(qemu) = real_qemu() else { return };
        if !require(find_ovmf(true).is_ok(), "no Secure Boot OVMF") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut opts = BootOptions::new(blank_disk(dir.path()), Media::Cdrom);
        opts.firmware = Firmware::UefiSecure;
        opts.memory_mib = 512;
        opts.cpus = 1;
        opts.accel = Accel::Tcg;
        opts.timeout = Duration::from_secs(40);
        // Proves enforcement: OVMF's own shell is not signed by Microsoft.
        opts.expect = Some("Security Violation".to_owned());
        let outcome = boot_with(&qemu, &opts).unwrap();
        eprintln!("Secure Boot refusal: {outcome:?}");
        assert!(processes_mentioning(&dir.path().display().to_string()).is_empty());
    }
}
