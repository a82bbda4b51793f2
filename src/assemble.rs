//! `undercloud-live assemble`: the image stage on its own. From a staged ISO
//! tree and a folder of ESP contents, write the FAT ESP and the hybrid
//! ISO/GPT image, with no base, elements or dracut involved. Useful to repack
//! a customised tree, and the command `make bench` times against the
//! xorriso + mkfs.fat + mtools recipe on the same inputs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fs::esp;
use crate::image::layout::{ESP_ISO_PATH, ESP_LABEL};
use crate::image::{self, HybridSpec, IsoSource, VolumeLabel};
use crate::spec;

#[derive(Clone, Debug)]
pub struct AssembleOptions {
    /// Folder whose files become the ISO9660 tree.
    pub tree: PathBuf,
    /// Folder whose files become the EFI system partition.
    pub esp_dir: PathBuf,
    /// ISO volume label, checked first (`VolumeLabel`).
    pub label: String,
    /// ISO path of the live root inside `tree` (GPT partition 2), if any.
    pub root: Option<String>,
    pub output: PathBuf,
    pub seed: Option<String>,
    /// Embed the media checksum (`verify`, rd.live.check).
    pub media_checksum: bool,
    /// Every timestamp written (None: SOURCE_DATE_EPOCH, else now).
    pub epoch: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct AssembleReport {
    pub size: u64,
    pub files: usize,
    pub esp_fat: String,
}

/// A symbolic link in a tree: what it stands for. A link may name
/// another file of the same tree; one leading out of it would put a host
/// file (`/etc/shadow`) into the image, and one to a folder may loop.
fn follow_link(real_base: &Path, p: &Path) -> Result<fs::Metadata> {
    let target = fs::canonicalize(p)
        .with_context(|| format!("{}: a symbolic link that leads nowhere", p.display()))?;
    if !target.starts_with(real_base) {
        bail!(
            "{}: a symbolic link out of {} (to {}); only the tree's own files go into an image",
            p.display(),
            real_base.display(),
            target.display()
        );
    }
    let m = fs::metadata(&target).with_context(|| format!("reading {}", target.display()))?;
    if m.is_dir() {
        bail!(
            "{}: a symbolic link to a folder; put the folder itself in the tree",
            p.display()
        );
    }
    Ok(m)
}

/// Every regular file under `dir`, as (relative path with '/', host path),
/// sorted so that the result does not depend on directory order.
fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    /// `real_base`: `base` with its links resolved, once for the walk.
    fn inner(
        base: &Path,
        real_base: &Path,
        dir: &Path,
        out: &mut Vec<(String, PathBuf)>,
    ) -> Result<()> {
        let rd = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for e in rd {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let p = e.path();
            let m = fs::symlink_metadata(&p).with_context(|| format!("reading {}", p.display()))?;
            let m = if m.file_type().is_symlink() {
                follow_link(real_base, &p)?
            } else {
                m
            };
            if m.is_dir() {
                inner(base, real_base, &p, out)?;
            } else if m.is_file() {
                let rel = p
                    .strip_prefix(base)
                    .with_context(|| format!("{} is outside {}", p.display(), base.display()))?;
                let rel = rel
                    .to_str()
                    .with_context(|| format!("{}: file names must be UTF-8", p.display()))?;
                out.push((rel.to_string(), p));
            } else {
                bail!(
                    "{}: only files and folders can go into an image",
                    p.display()
                );
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    let real_base = fs::canonicalize(dir).with_context(|| format!("reading {}", dir.display()))?;
    inner(dir, &real_base, dir, &mut out)?;
    out.sort();
    Ok(out)
}

pub fn assemble(opts: &AssembleOptions) -> Result<AssembleReport> {
    let label = VolumeLabel::new(opts.label.as_str())?;
    let epoch = match opts.epoch {
        Some(e) => e,
        None => spec::source_date_epoch()?,
    };
    let tree = walk(&opts.tree)?;
    if tree.iter().any(|(rel, _)| rel == ESP_ISO_PATH) {
        bail!(
            "{}: {ESP_ISO_PATH} is made from --esp-dir and must not be in the tree",
            opts.tree.display()
        );
    }
    if let Some(root) = &opts.root {
        if !tree.iter().any(|(rel, _)| rel == root) {
            bail!("root {root:?} is not a file in {}", opts.tree.display());
        }
    }
    let esp_files: Vec<esp::EspFile> = walk(&opts.esp_dir)?
        .into_iter()
        .map(|(rel, p)| esp::EspFile {
            dest: rel,
            content: esp::EspContent::Path(p),
        })
        .collect();
    if esp_files.is_empty() {
        bail!("{}: the ESP folder is empty", opts.esp_dir.display());
    }

    let out_dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = opts
        .output
        .file_name()
        .with_context(|| format!("output {} has no file name", opts.output.display()))?
        .to_string_lossy()
        .into_owned();
    let pid = std::process::id();
    let esp_img = Temp(out_dir.join(format!(".{name}.esp-{pid}")));
    let partial = Temp(out_dir.join(format!(".{name}.partial-{pid}")));
    let seed = opts.seed.clone().unwrap_or_else(|| label.to_string());
    let esp_report = esp::write_esp(
        &esp_files,
        &esp::EspOptions {
            label: ESP_LABEL.into(),
            volume_id: spec::derive_u32(&seed, crate::image::gpt::IdRole::Esp),
            epoch,
            extra_bytes: 0,
        },
        &esp_img.0,
    )?;

    let mut files: Vec<IsoSource> = tree
        .into_iter()
        .map(|(iso_path, source)| IsoSource { iso_path, source })
        .collect();
    let count = files.len() + 1;
    files.push(IsoSource {
        iso_path: ESP_ISO_PATH.into(),
        source: esp_img.0.clone(),
    });
    let report = image::write_hybrid(
        &HybridSpec {
            volume_label: label,
            epoch,
            seed,
            files,
            esp: ESP_ISO_PATH.into(),
            root: opts.root.clone(),
            bios_boot: None,
            mbr_code: None,
            persistence: None,
            // On by default: `verify` and the boot menu's media check read it.
            implant_md5: opts.media_checksum,
        },
        &partial.0,
    )?;
    fs::File::open(&partial.0)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", partial.0.display()))?;
    fs::rename(&partial.0, &opts.output)
        .with_context(|| format!("renaming to {}", opts.output.display()))?;
    Ok(AssembleReport {
        size: report.size,
        files: count,
        esp_fat: esp_report.fat_type,
    })
}

/// A scratch file removed when dropped (after a rename it is simply gone).
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_out_of_the_tree_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("sub")).unwrap();
        fs::write(tree.join("a.txt"), b"a").unwrap();
        fs::write(t.path().join("secret"), b"host file").unwrap();
        std::os::unix::fs::symlink("../a.txt", tree.join("sub/inside")).unwrap();
        let files = walk(&tree).unwrap();
        assert_eq!(
            files.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(),
            ["a.txt", "sub/inside"]
        );
        std::os::unix::fs::symlink(t.path().join("secret"), tree.join("out")).unwrap();
        let err = format!("{:#}", walk(&tree).unwrap_err());
        assert!(err.contains("a symbolic link out of"), "{err}");
        fs::remove_file(tree.join("out")).unwrap();
        std::os::unix::fs::symlink("..", tree.join("sub/loop")).unwrap();
        let err = format!("{:#}", walk(&tree).unwrap_err());
        assert!(err.contains("a symbolic link to a folder"), "{err}");
    }

    #[test]
    fn assembles_a_tree_and_cleans_up() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("tree");
        let espd = t.path().join("esp");
        fs::create_dir_all(tree.join("LiveOS")).unwrap();
        fs::create_dir_all(espd.join("EFI/BOOT")).unwrap();
        fs::write(tree.join("LiveOS/squashfs.img"), vec![7u8; 4096]).unwrap();
        fs::write(espd.join("EFI/BOOT/BOOTX64.EFI"), b"MZ fake loader").unwrap();
        let out = t.path().join("out.iso");
        let opts = AssembleOptions {
            tree: tree.clone(),
            esp_dir: espd.clone(),
            label: "UCL-TEST".into(),
            root: Some("LiveOS/squashfs.img".into()),
            output: out.clone(),
            seed: None,
            media_checksum: true,
            // Two assemblies must not straddle a second.
            epoch: Some(1_700_000_000),
        };
        let r = assemble(&opts).unwrap();
        assert_eq!(r.size, fs::metadata(&out).unwrap().len());
        assert_eq!(r.files, 2);
        // Only the output is left in its folder: no ESP or partial scratch.
        let names: Vec<String> = fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        // The checksum computed alongside the copy is the one a check
        // computes from the finished image.
        assert!(matches!(
            crate::image::isomd5::check(&out).unwrap(),
            crate::image::isomd5::Check::Good { .. }
        ));

        // Without the media checksum: the same image but for the field.
        let plain = t.path().join("plain.iso");
        assemble(&AssembleOptions {
            output: plain.clone(),
            media_checksum: false,
            ..opts.clone()
        })
        .unwrap();
        let (a, b) = (fs::read(&out).unwrap(), fs::read(&plain).unwrap());
        let file = fs::File::open(&plain).unwrap();
        let (pvd, _, desc) = crate::image::isomd5::find_pvd(&file, &plain).unwrap();
        assert!(crate::image::isomd5::read_embedded(&desc).is_none());
        let field = pvd as usize + crate::image::iso9660::APPLICATION_USE;
        let len = crate::image::iso9660::APPLICATION_USE_LEN;
        assert_eq!(a.len(), b.len());
        assert_eq!(a[..field], b[..field]);
        assert_eq!(a[field + len..], b[field + len..]);
        assert_ne!(a[field..field + len], b[field..field + len]);

        let bad = AssembleOptions {
            root: Some("LiveOS/nope.img".into()),
            output: t.path().join("bad.iso"),
            ..opts
        };
        let e = format!("{:#}", assemble(&bad).unwrap_err());
        assert!(e.contains("nope.img"), "{e}");
        assert!(!t.path().join("bad.iso").exists());
    }
}
