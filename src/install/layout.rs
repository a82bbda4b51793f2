//! The target's partitions, and the order their table is written in.
//!
//! The disk is wiped first and its partition table written only as the
//! very last step: until then the partitions are reached through loop
//! devices over their byte ranges (`PartLoop`), which needs no partition
//! support from the kernel and no udev. A disk without a table boots
//! nowhere, so a failure at any point leaves nothing that looks bootable;
//! `wipe_table` zeroes both table areas again in case the failure came
//! while the table was being written.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use gpt::partition_types::{self, Type};
use uuid::Uuid;

use super::disk::Ids;
use crate::image::gpt::{protective_mbr, write_gpt, IdRole, PartitionSpec};
use crate::image::layout::{BIOS_BOOT_SIZE, DISK_ALIGN, LBA};
use crate::io::MIB;
use crate::system::command::Task;

/// Room the GPT needs at each end, rounded to the partition alignment.
const EDGE: u64 = DISK_ALIGN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Esp,
    BiosBoot,
    Swap,
    Root,
}

impl Role {
    /// The seeded identity of the partition.
    pub fn id_role(self) -> IdRole {
        match self {
            Role::Esp => IdRole::Esp,
            Role::BiosBoot => IdRole::BiosBoot,
            Role::Swap => IdRole::SwapPart,
            Role::Root => IdRole::RootPart,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Part {
    pub role: Role,
    /// GPT partition number (1-based).
    pub number: u32,
    pub guid: Uuid,
    /// Byte offset and length.
    pub start: u64,
    pub size: u64,
}

#[derive(Clone, Debug)]
pub struct Layout {
    pub disk_guid: Uuid,
    pub disk_size: u64,
    pub parts: Vec<Part>,
}

/// 16 random bytes as a version 4 UUID.
pub fn random_uuid() -> Result<Uuid> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .context("reading /dev/urandom")?;
    Ok(uuid::Builder::from_random_bytes(b).into_uuid())
}

/// Bytes the layout itself takes besides the root and swap.
pub fn overhead(esp: u64, bios: bool) -> u64 {
    2 * EDGE + esp + if bios { BIOS_BOOT_SIZE } else { 0 }
}

impl Layout {
    /// ESP first, then BIOS boot, swap, and the root over the rest.
    pub fn plan(
        disk_size: u64,
        esp: u64,
        bios: bool,
        swap: Option<u64>,
        ids: &Ids,
    ) -> Result<Layout> {
        let align = |n: u64| n.div_ceil(DISK_ALIGN) * DISK_ALIGN;
        let mut parts = Vec::new();
        let mut at = EDGE;
        let add = |role: Role, size: u64, parts: &mut Vec<Part>, at: &mut u64| -> Result<()> {
            parts.push(Part {
                role,
                number: parts.len() as u32 + 1,
                guid: ids.uuid(role.id_role())?,
                start: *at,
                size: align(size),
            });
            *at += align(size);
            Ok(())
        };
        add(Role::Esp, esp, &mut parts, &mut at)?;
        if bios {
            add(Role::BiosBoot, BIOS_BOOT_SIZE, &mut parts, &mut at)?;
        }
        if let Some(s) = swap {
            add(Role::Swap, s, &mut parts, &mut at)?;
        }
        // The backup GPT takes the last 33 sectors; keep the root's end
        // on a MiB boundary below them.
        let end = (disk_size.saturating_sub(EDGE) / DISK_ALIGN) * DISK_ALIGN;
        if end <= at + 64 * MIB {
            bail!(
                "{} MiB leave no room for a root after {} MiB of ESP, boot and swap partitions",
                disk_size / MIB,
                at / MIB
            );
        }
        add(Role::Root, end - at, &mut parts, &mut at)?;
        Ok(Layout {
            disk_guid: ids.uuid(IdRole::Disk)?,
            disk_size,
            parts,
        })
    }

    pub fn get(&self, role: Role) -> Option<&Part> {
        self.parts.iter().find(|p| p.role == role)
    }

    fn specs(&self) -> Vec<PartitionSpec> {
        self.parts
            .iter()
            .map(|p| {
                let (name, ty): (&str, Type) = match p.role {
                    Role::Esp => ("ESP", partition_types::EFI),
                    Role::BiosBoot => ("BIOS boot", partition_types::BIOS),
                    Role::Swap => ("swap", partition_types::LINUX_SWAP),
                    Role::Root => ("root", partition_types::LINUX_ROOT_X64),
                };
                PartitionSpec {
                    name: name.into(),
                    type_guid: ty,
                    guid: p.guid,
                    first_lba: p.start / LBA,
                    last_lba: (p.start + p.size) / LBA - 1,
                }
            })
            .collect()
    }

    /// Writes the partition table, with MBR boot code when BIOS is wanted,
    /// and asks the kernel to read it.
    pub fn write_table(&self, dev: &Path, mbr_code: Option<&[u8]>) -> Result<()> {
        let mut f = open_rw(dev)?;
        let g = self.disk_guid.as_bytes();
        let mbr = protective_mbr(self.disk_size, mbr_code, [g[0], g[1], g[2], g[3]])?;
        write_gpt(&mut f, dev, self.disk_guid, &self.specs(), &mbr)?;
        f.sync_all()
            .with_context(|| format!("flushing {}", dev.display()))?;
        reread(&f);
        Ok(())
    }
}

fn open_rw(dev: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .with_context(|| format!("opening {}", dev.display()))
}

/// Asks the kernel to read the table again, so the partitions appear in a
/// live session at once. Best effort: a kernel without partition support
/// (or a disk that stays busy) still has the right table on disk.
fn reread(f: &File) {
    let _ = crate::system::blockdev::reread_partitions(f);
}

/// A loop device over one partition's bytes, detached on drop.
pub struct PartLoop {
    pub dev: PathBuf,
}

impl PartLoop {
    pub fn new(disk: &Path, part: &Part) -> Result<PartLoop> {
        let losetup = crate::system::tool::require("losetup", "util-linux")?;
        let out = Task::new(
            format!("losetup over {} at byte {}", disk.display(), part.start),
            Command::new(losetup)
                .args(["--find", "--show", "--offset"])
                .arg(part.start.to_string())
                .arg("--sizelimit")
                .arg(part.size.to_string())
                .arg(disk),
        )
        .read_text()?;
        let dev = PathBuf::from(out.trim());
        Ok(PartLoop { dev })
    }
}

impl Drop for PartLoop {
    fn drop(&mut self) {
        // Not a Task: this runs while an error or an interrupt unwinds,
        // and a Task refuses to start (or kills its child) once a signal
        // arrived; a loop device left attached would keep the disk busy.
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Zeroes `len` bytes at `offset`.
fn zero(f: &File, dev: &Path, offset: u64, len: u64) -> Result<()> {
    let buf = vec![0u8; len as usize];
    f.write_all_at(&buf, offset)
        .with_context(|| format!("wiping {} at byte {offset}", dev.display()))
}

/// Zeroes the first and last MiB (MBR, both GPTs, old signatures) before
/// anything else is written.
pub fn wipe_disk(dev: &Path, size: u64) -> Result<()> {
    let f = open_rw(dev)?;
    zero(&f, dev, 0, EDGE.min(size))?;
    if size > EDGE {
        zero(&f, dev, size - EDGE, EDGE)?;
    }
    f.sync_all()
        .with_context(|| format!("flushing {}", dev.display()))?;
    reread(&f);
    Ok(())
}

/// After a failure: no partition table (in case the failure came while it
/// was written), and the ESP's start zeroed too.
pub fn wipe_table(dev: &Path, layout: &Layout) -> Result<()> {
    let f = open_rw(dev)?;
    zero(&f, dev, 0, 34 * LBA)?;
    zero(&f, dev, layout.disk_size - 33 * LBA, 33 * LBA)?;
    if let Some(esp) = layout.get(Role::Esp) {
        zero(&f, dev, esp.start, MIB)?;
    }
    f.sync_all()
        .with_context(|| format!("flushing {}", dev.display()))?;
    reread(&f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::layout::DEFAULT_ESP_SIZE;

    #[test]
    fn plan_orders_and_aligns() {
        let l = Layout::plan(
            4 << 30,
            DEFAULT_ESP_SIZE,
            true,
            Some(512 * MIB),
            &Ids::Random,
        )
        .unwrap();
        let roles: Vec<Role> = l.parts.iter().map(|p| p.role).collect();
        assert_eq!(roles, [Role::Esp, Role::BiosBoot, Role::Swap, Role::Root]);
        assert_eq!(l.parts[0].start, MIB);
        for w in l.parts.windows(2) {
            assert_eq!(w[0].start + w[0].size, w[1].start);
        }
        let root = l.get(Role::Root).unwrap();
        assert_eq!(root.number, 4);
        assert_eq!(root.start % MIB, 0);
        assert_eq!(root.start + root.size, (4 << 30) - MIB);
        let l = Layout::plan(1 << 30, DEFAULT_ESP_SIZE, false, None, &Ids::Random).unwrap();
        assert_eq!(l.get(Role::Root).unwrap().number, 2);
        assert!(l.get(Role::BiosBoot).is_none());
    }

    #[test]
    fn plan_refuses_a_disk_with_no_room() {
        let e = Layout::plan(300 * MIB, DEFAULT_ESP_SIZE, true, None, &Ids::Random).unwrap_err();
        assert!(format!("{e:#}").contains("no room"), "{e:#}");
    }

    #[test]
    fn table_types() {
        let l = Layout::plan(1 << 30, DEFAULT_ESP_SIZE, true, None, &Ids::Random).unwrap();
        let last = l.specs();
        assert_eq!(last[0].type_guid, partition_types::EFI);
        assert_eq!(last[1].type_guid, partition_types::BIOS);
    }
}
