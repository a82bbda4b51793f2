//! The build's work folder, with one name for every path in it, and the
//! output files written under temporary names until they are complete.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::BuildOptions;
use crate::chroot;

/// The work folder: removed when dropped (unless kept), refusing while
/// anything is mounted inside it.
pub struct Workspace {
    dir: PathBuf,
    keep: bool,
}

impl Workspace {
    /// `--workdir`, else a folder named after the spec and this process in
    /// the temporary folder; emptied first, with `root/` made.
    pub fn create(opts: &BuildOptions, name: &str) -> Result<Workspace> {
        let dir = match &opts.workdir {
            Some(w) => w.clone(),
            None => {
                std::env::temp_dir().join(format!("undercloud-live-{name}-{}", std::process::id()))
            }
        };
        if dir.exists() {
            chroot::remove_tree(&dir)?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let ws = Workspace {
            dir,
            keep: opts.keep_workdir,
        };
        let root = ws.root();
        fs::create_dir(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(ws)
    }

    /// The root being customised.
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// Where generated elements (the kickstart's) are written.
    pub fn elements(&self) -> PathBuf {
        self.dir.join("elements")
    }

    /// The live initrd dracut makes.
    pub fn live_initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    /// GRUB's i386-pc El Torito image.
    pub fn eltorito(&self) -> PathBuf {
        self.dir.join("eltorito.img")
    }

    /// The kernel, copied out of the root before it is packed.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The squashfs or erofs live root.
    pub fn live_root(&self) -> PathBuf {
        self.dir.join("root.img")
    }

    pub fn grub_cfg(&self) -> PathBuf {
        self.dir.join("grub.cfg")
    }

    /// Files staged for the ISO9660 tree.
    pub fn iso_tree(&self) -> PathBuf {
        self.dir.join("iso")
    }

    /// The ESP's FAT image (also the El Torito UEFI image).
    pub fn esp_image(&self) -> PathBuf {
        self.dir.join("efiboot.img")
    }

    pub fn persistence(&self) -> PathBuf {
        self.dir.join("persistence.img")
    }

    /// A raw disk image before it becomes qcow2.
    pub fn raw_disk(&self) -> PathBuf {
        self.dir.join("disk.raw")
    }

    /// Frees the root's space once nothing needs it any more.
    pub fn remove_root(&self) -> Result<()> {
        if self.keep {
            return Ok(());
        }
        chroot::remove_tree(&self.root())
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("note: work folder kept at {}", self.dir.display());
        } else if let Err(e) = chroot::remove_tree(&self.dir) {
            eprintln!("warning: {e:#}");
        }
    }
}

/// An output file written under a hidden temporary name beside its final
/// one, renamed only by `commit`; removed on every other exit path.
pub struct Partial {
    pub path: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl Partial {
    pub fn new(dest: &Path) -> Result<Partial> {
        let name = dest
            .file_name()
            .with_context(|| format!("output {} has no file name", dest.display()))?
            .to_string_lossy()
            .into_owned();
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(Partial {
            path: dir.join(format!(".{name}.partial-{}", std::process::id())),
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    /// Syncs the file and gives it its final name; returns its size.
    pub fn commit(mut self) -> Result<(PathBuf, u64)> {
        let f = fs::File::open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        let size = f
            .metadata()
            .with_context(|| format!("reading {}", self.path.display()))?
            .len();
        fs::rename(&self.path, &self.dest).with_context(|| {
            format!(
                "renaming {} to {}",
                self.path.display(),
                self.dest.display()
            )
        })?;
        self.done = true;
        Ok((self.dest.clone(), size))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}
