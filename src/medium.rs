//! The live medium: which disk the running live system was booted from,
//! and the files on its EFI system partition.
//!
//! Operators configure a stick on any OS by editing files on its ESP (the
//! only partition Windows and macOS will show them), so the live session
//! reads its configuration from there. The FAT is read in place through the
//! GPT, read-only and without mounting: the same code works on a USB stick
//! (/dev/sda), a virtio disk and a CD (/dev/sr0, where Linux sees no
//! partitions but the bytes, GPT included, are the same).

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::inspect;
use crate::write::devices::{self, Sysfs};

#[derive(Clone, Debug, Serialize)]
pub struct Medium {
    /// The whole disk (or image file) the live system came from.
    pub disk: PathBuf,
    /// How it was found: the `root=` argument or the mount it came from.
    pub found_by: String,
    /// Byte range of the ESP on `disk`.
    pub esp_offset: u64,
    pub esp_bytes: u64,
}

/// Where discovery looks; tests point it at a fake tree.
#[derive(Clone, Debug)]
pub struct Roots {
    pub proc: PathBuf,
    pub dev: PathBuf,
    pub sysfs: Sysfs,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: PathBuf::from("/proc"),
            dev: PathBuf::from("/dev"),
            sysfs: Sysfs::default(),
        }
    }
}

impl Medium {
    /// The live medium of the running system, or `None` when it was not
    /// booted as a live image (no `root=live:` on its command line).
    pub fn discover() -> Result<Option<Medium>> {
        Self::discover_in(&Roots::default())
    }

    pub fn discover_in(roots: &Roots) -> Result<Option<Medium>> {
        let Some((device, found_by)) = live_device(roots)? else {
            return Ok(None);
        };
        let disk = whole_disk(&device, roots)?;
        let mut m = Self::open(&disk)?;
        m.found_by = found_by;
        Ok(Some(m))
    }

    /// A device or image file named explicitly.
    pub fn open(path: &Path) -> Result<Medium> {
        let i = inspect::inspect(path)?;
        let esp = i
            .partitions
            .iter()
            .find(|p| crate::image::gpt::is_esp_type(&p.type_guid))
            .with_context(|| {
                format!(
                    "{} has no EFI system partition in a GPT: not an undercloud-live medium",
                    path.display()
                )
            })?;
        Ok(Medium {
            disk: path.to_path_buf(),
            found_by: "named on the command line".into(),
            esp_offset: esp.offset,
            esp_bytes: esp.bytes,
        })
    }

    pub fn disk(&self) -> &Path {
        &self.disk
    }

    /// A file of the ESP (`undercloud.yaml`, `EFI/BOOT/grub.cfg`), or
    /// `None` when the ESP has no such file.
    pub fn read_esp_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let file = crate::io::open_image(&self.disk, "medium")?;
        inspect::read_fat_file(&file, self.esp_offset, self.esp_bytes, path)
            .with_context(|| format!("reading the ESP of {}", self.disk.display()))
    }
}

/// The device named by `root=live:...` (dmsquash-live's syntax), else the
/// device mounted at /run/initramfs/live.
fn live_device(roots: &Roots) -> Result<Option<(PathBuf, String)>> {
    let cmdline_path = roots.proc.join("cmdline");
    let cmdline = fs::read_to_string(&cmdline_path)
        .with_context(|| format!("reading {}", cmdline_path.display()))?;
    let Some(arg) = cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("root="))
        .next_back()
    else {
        return Ok(None);
    };
    let Some(spec) = arg.strip_prefix("live:") else {
        return Ok(None);
    };
    if let Some(dev) = resolve_spec(spec, &roots.dev) {
        return Ok(Some((dev, format!("root=live:{spec}"))));
    }
    // The label can be ambiguous or udev may not have named it; the
    // initramfs mounted the medium, so ask the mount table.
    let mountinfo = roots.proc.join("self/mountinfo");
    if let Ok(text) = fs::read_to_string(&mountinfo) {
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let Some(sep) = fields.iter().position(|f| *f == "-") else {
                continue;
            };
            if fields.get(4) == Some(&"/run/initramfs/live") {
                if let Some(src) = fields.get(sep + 2) {
                    return Ok(Some((
                        PathBuf::from(src),
                        "the mount at /run/initramfs/live".into(),
                    )));
                }
            }
        }
    }
    bail!(
        "the live medium {spec} (root=live:{spec}) is not among the devices: is it still attached?"
    )
}

fn resolve_spec(spec: &str, dev: &Path) -> Option<PathBuf> {
    let (dir, key) = if let Some(l) = spec.strip_prefix("CDLABEL=") {
        ("by-label", l)
    } else if let Some(l) = spec.strip_prefix("LABEL=") {
        ("by-label", l)
    } else if let Some(u) = spec.strip_prefix("PARTUUID=") {
        ("by-partuuid", u)
    } else if let Some(u) = spec.strip_prefix("UUID=") {
        ("by-uuid", u)
    } else if let Some(p) = spec.strip_prefix("/dev/") {
        return fs::canonicalize(dev.join(p)).ok();
    } else {
        return None;
    };
    // udev escapes spaces and slashes in labels as \x20 / \x2f.
    let key = key.replace(' ', "\\x20").replace('/', "\\x2f");
    let link = dev.join("disk").join(dir).join(&key);
    fs::canonicalize(&link)
        .ok()
        .or_else(|| fs::canonicalize(dev.join("disk").join(dir).join(key.to_lowercase())).ok())
}

/// The disk a (partition) device belongs to.
fn whole_disk(device: &Path, roots: &Roots) -> Result<PathBuf> {
    let meta = fs::metadata(device).with_context(|| format!("examining {}", device.display()))?;
    if !meta.file_type().is_block_device() {
        // A loop-mounted image file (a test, or an ISO on a file system).
        return Ok(device.to_path_buf());
    }
    use std::os::unix::fs::MetadataExt;
    let id = devices::dev_id(meta.rdev());
    let name = roots
        .sysfs
        .disk_name_of(id)
        .with_context(|| format!("{} is not in sysfs", device.display()))?;
    Ok(roots.dev.join(name))
}

/// The text `medium show` prints.
pub fn render(m: &Medium) -> String {
    format!(
        "live medium: {}\nfound by:    {}\nESP:         {} bytes at offset {}\n",
        m.disk.display(),
        m.found_by,
        m.esp_bytes,
        m.esp_offset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn roots(tmp: &Path, cmdline: &str) -> Roots {
        fs::create_dir_all(tmp.join("proc/self")).unwrap();
        fs::create_dir_all(tmp.join("dev/disk/by-label")).unwrap();
        fs::create_dir_all(tmp.join("dev/disk/by-partuuid")).unwrap();
        fs::write(tmp.join("proc/cmdline"), cmdline).unwrap();
        Roots {
            proc: tmp.join("proc"),
            dev: tmp.join("dev"),
            sysfs: Sysfs {
                sys: tmp.join("sys"),
                dev: tmp.join("dev"),
            },
        }
    }

    #[test]
    fn not_a_live_system() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(t.path(), "BOOT_IMAGE=/vmlinuz root=UUID=abc ro quiet\n");
        assert!(live_device(&r).unwrap().is_none());
        let r = roots(t.path(), "quiet\n");
        assert!(live_device(&r).unwrap().is_none());
    }

    #[test]
    fn label_and_partuuid_are_resolved_through_dev_disk() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(
            t.path(),
            "BOOT_IMAGE=/boot/vmlinuz root=live:CDLABEL=UCL-MINIMAL rd.live.image\n",
        );
        fs::write(t.path().join("dev/sr0"), b"").unwrap();
        symlink("../../sr0", t.path().join("dev/disk/by-label/UCL-MINIMAL")).unwrap();
        let (dev, how) = live_device(&r).unwrap().unwrap();
        assert_eq!(dev, fs::canonicalize(t.path().join("dev/sr0")).unwrap());
        assert_eq!(how, "root=live:CDLABEL=UCL-MINIMAL");

        let r = roots(
            t.path(),
            "root=live:PARTUUID=1234-ab rd.live.overlay=LABEL=X\n",
        );
        fs::write(t.path().join("dev/vda2"), b"").unwrap();
        symlink("../../vda2", t.path().join("dev/disk/by-partuuid/1234-ab")).unwrap();
        let (dev, _) = live_device(&r).unwrap().unwrap();
        assert!(dev.ends_with("vda2"));
    }

    #[test]
    fn labels_with_spaces_use_udev_escapes() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(t.path(), "root=live:LABEL=My/Stick\n");
        fs::write(t.path().join("dev/sdb"), b"").unwrap();
        symlink("../../sdb", t.path().join("dev/disk/by-label/My\\x2fStick")).unwrap();
        assert!(live_device(&r).unwrap().unwrap().0.ends_with("sdb"));
    }

    #[test]
    fn falls_back_to_the_initramfs_mount() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(t.path(), "root=live:CDLABEL=GONE\n");
        fs::write(
            t.path().join("proc/self/mountinfo"),
            "22 1 0:21 / / rw - overlay LiveOS_rootfs rw\n\
             30 22 11:0 / /run/initramfs/live ro,relatime - iso9660 /dev/sr0 ro\n",
        )
        .unwrap();
        let (dev, how) = live_device(&r).unwrap().unwrap();
        assert_eq!(dev, PathBuf::from("/dev/sr0"));
        assert!(how.contains("/run/initramfs/live"));
    }

    #[test]
    fn a_missing_medium_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let r = roots(t.path(), "root=live:CDLABEL=GONE\n");
        let e = live_device(&r).unwrap_err().to_string();
        assert!(
            e.contains("CDLABEL=GONE") && e.contains("not among the devices"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_gpt_is_not_a_medium() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("blank.img");
        fs::write(&f, vec![0u8; 1 << 20]).unwrap();
        let e = format!("{:#}", Medium::open(&f).unwrap_err());
        assert!(e.contains("no EFI system partition"), "{e}");
    }
}
