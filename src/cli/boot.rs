//! `boot`: an image or a kernel in QEMU.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::{lib_parser, Ctx};
use crate::qemu;

#[derive(Args)]
pub struct BootArgs {
    /// The image; or NAME.kernel, booted directly with the
    /// NAME.initramfs beside it (a netboot ramdisk).
    image: Option<PathBuf>,
    /// How the image is attached [default: cdrom].
    #[arg(long = "as", value_enum)]
    media: Option<qemu::Media>,
    /// Boot this kernel directly (QEMU loads it; no boot drive).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// The initramfs for --kernel.
    #[arg(long, value_name = "FILE")]
    initrd: Option<PathBuf>,
    /// More kernel command line, after "console=ttyS0,115200 panic=-1".
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Option<String>,
    /// [default: uefi for an image, bios for a kernel]
    #[arg(long, value_enum)]
    firmware: Option<qemu::Firmware>,
    /// Succeed as soon as this text appears on the serial console.
    #[arg(long)]
    expect: Option<String>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 2048)]
    memory: u32,
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    /// Accelerator: auto uses KVM only where it really works.
    #[arg(long, value_enum, default_value_t = qemu::Accel::Auto)]
    accel: qemu::Accel,
    /// Also write the console to this file.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Let the guest write to the image (default: changes are discarded).
    #[arg(long)]
    writable: bool,
    /// Attach this raw or qcow2 file as one more virtio disk, writable
    /// (repeatable; e.g. a blank disk to install to).
    #[arg(long = "disk")]
    disks: Vec<PathBuf>,
    /// Forward host 127.0.0.1:HOSTPORT to the guest's GUESTPORT (TCP,
    /// repeatable); gives the guest a user-mode network card.
    #[arg(
        long = "forward",
        value_name = "HOSTPORT:GUESTPORT",
        value_parser = lib_parser(str::parse::<qemu::Forward>)
    )]
    forwards: Vec<qemu::Forward>,
    /// A network card on a point-to-point link to another VM: Ethernet
    /// frames as UDP from 127.0.0.1:LOCALPORT to 127.0.0.1:PEERPORT
    /// (repeatable; comes before the --forward card, so the guest
    /// names it first). For a provisioning network in a test bed.
    #[arg(
        long = "link",
        value_name = "LOCALPORT:PEERPORT",
        value_parser = lib_parser(str::parse::<qemu::Link>)
    )]
    links: Vec<qemu::Link>,
}

impl BootArgs {
    /// The library's options; `echo`: stream the console to stdout.
    /// Fails when the image and kernel options do not go together.
    fn options(self, echo: bool) -> Result<qemu::BootOptions> {
        let boot = qemu::Boot::choose(
            self.image,
            self.media,
            self.kernel,
            self.initrd,
            self.append,
        )?;
        Ok(qemu::BootOptions {
            firmware: self.firmware.unwrap_or_else(|| boot.default_firmware()),
            boot,
            expect: self.expect,
            timeout: Duration::from_secs(self.timeout),
            memory_mib: self.memory,
            cpus: self.cpus,
            accel: self.accel,
            log: self.log,
            echo,
            writable: self.writable,
            extra_drives: self.disks,
            forwards: self.forwards,
            links: self.links,
        })
    }

    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let opts = self.options(!ctx.quiet)?;
        let outcome = qemu::boot(&opts)?;
        if ctx.quiet {
            return Ok(());
        }
        match outcome {
            qemu::BootOutcome::Marker { elapsed } => eprintln!(
                "==> found {:?} after {:.1} s",
                opts.expect.unwrap_or_default(),
                elapsed.as_secs_f64()
            ),
            qemu::BootOutcome::PoweredOff { elapsed } => {
                eprintln!("==> guest powered off after {:.1} s", elapsed.as_secs_f64())
            }
        }
        Ok(())
    }
}
