//! The first stage: everything that can be checked without work is checked
//! here, so a typo or a missing tool costs a second, not a download.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{BuildOptions, BuildReport, Written};
use crate::elements::{
    run::OutputLog,
    select::{self, Selected},
};
use crate::fs::{erofs, ext4, squashfs};
use crate::kickstart;
use crate::progress::Progress;
use crate::spec::{self, LoadedSpec, OutputFormat, RootFormat};
use crate::system::tool;

/// Where the build's result goes, per format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// One hybrid image file.
    Hybrid(PathBuf),
    /// `PREFIX.kernel` and `PREFIX.initramfs`.
    Ramdisk { prefix: PathBuf },
    /// A raw (`qcow2: false`) or qcow2 disk image.
    Disk { path: PathBuf, qcow2: bool },
}

impl Output {
    /// The output path a build names from `--output`, the spec's
    /// `output:` or the spec's name. A ramdisk's prefix drops `.kernel`,
    /// `.initramfs` or an image suffix; a disk image named `.qcow2` is
    /// qcow2, anything else raw (an `.iso` name becomes `.raw`).
    pub fn new(format: OutputFormat, given: Option<PathBuf>, name: &str) -> Output {
        match format {
            OutputFormat::Hybrid => {
                Output::Hybrid(given.unwrap_or_else(|| PathBuf::from(format!("{name}.iso"))))
            }
            OutputFormat::Ramdisk => {
                let p = given.unwrap_or_else(|| PathBuf::from(name));
                let prefix = match p.extension().and_then(|e| e.to_str()) {
                    Some("kernel" | "initramfs" | "iso" | "img" | "raw" | "qcow2") => {
                        p.with_extension("")
                    }
                    _ => p,
                };
                Output::Ramdisk { prefix }
            }
            OutputFormat::Disk => {
                let p = given.unwrap_or_else(|| PathBuf::from(format!("{name}.raw")));
                match p.extension().and_then(|e| e.to_str()) {
                    Some("qcow2") => Output::Disk {
                        path: p,
                        qcow2: true,
                    },
                    Some("iso") => Output::Disk {
                        path: p.with_extension("raw"),
                        qcow2: false,
                    },
                    _ => Output::Disk {
                        path: p,
                        qcow2: false,
                    },
                }
            }
        }
    }

    /// The file the build log is named after.
    pub fn main_file(&self) -> PathBuf {
        match self {
            Output::Hybrid(p) => p.clone(),
            Output::Ramdisk { prefix } => with_suffix(prefix, ".kernel"),
            Output::Disk { path, .. } => path.clone(),
        }
    }

    pub fn dir(&self) -> PathBuf {
        match self.main_file().parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

/// `prefix` + `suffix`, kept as a path (a prefix may hold dots).
pub fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A spec whose inputs were all found and checked.
pub struct Prepared {
    pub loaded: LoadedSpec,
    pub format: OutputFormat,
    pub epoch: i64,
    /// The element set and the kickstart.
    pub selected: Selected,
    /// ESP path -> source file, from the spec's `esp_files`.
    pub extra_esp: Vec<(String, PathBuf)>,
    /// Path in the root -> source file, from the spec's `extra_files`.
    pub extra_root: Vec<(String, PathBuf)>,
    /// This program, to be put into the image (spec `installer: true`).
    pub installer: Option<PathBuf>,
    pub output: Output,
    pub cache_dir: PathBuf,
    /// Build stages come from and go to the cache (not `--no-cache`).
    pub use_cache: bool,
    pub log_path: PathBuf,
    pub spec_file: PathBuf,
    pub offline: bool,
}

pub fn prepare(opts: &BuildOptions) -> Result<Prepared> {
    let mut loaded = load_spec(opts)?;
    let selected = select::select(&selection(opts, &loaded), loaded.spec.base.distro)?;
    if let Some((ks, _)) = &selected.kickstart {
        kickstart::translate::apply_bootloader(&mut loaded.spec, ks);
    }
    let spec = &loaded.spec;
    let format = opts.format.unwrap_or(spec.format);
    let epoch = spec::source_date_epoch()?;
    let extra_esp = resolve_files("esp_files", &spec.esp_files, &loaded)?;
    let extra_root = resolve_files("extra_files", &spec.extra_files, &loaded)?;
    let installer = if spec.installer {
        Some(std::env::current_exe().context("finding this program to put into the image")?)
    } else {
        None
    };
    let given = opts
        .output
        .clone()
        .or_else(|| spec.output.as_ref().map(|o| loaded.resolve(o)));
    let output = Output::new(format, given, &spec.name);
    check_tools(&loaded, format, &output)?;
    let out_dir = output.dir();
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let main = output.main_file();
    let file_name = main
        .file_name()
        .with_context(|| format!("output {} has no file name", main.display()))?
        .to_string_lossy()
        .into_owned();
    let log_path = opts
        .log
        .clone()
        .unwrap_or_else(|| out_dir.join(format!("{file_name}.log")));
    Ok(Prepared {
        format,
        epoch,
        selected,
        extra_esp,
        extra_root,
        installer,
        output,
        cache_dir: opts
            .cache_dir
            .clone()
            .unwrap_or_else(crate::cache::default_cache_dir),
        use_cache: !opts.no_cache,
        log_path,
        spec_file: opts.spec.clone(),
        offline: opts.offline,
        loaded,
    })
}

/// The spec, with `--persistent-size` applied.
fn load_spec(opts: &BuildOptions) -> Result<LoadedSpec> {
    let mut loaded = LoadedSpec::load(&opts.spec)?;
    if let Some(c) = opts.compression {
        loaded.spec.root.compression = Some(c);
        spec::validate_root(&loaded.spec.root).context("--compression")?;
    }
    if let Some(size) = opts.persistent_size {
        let p = loaded
            .spec
            .persistence
            .get_or_insert(spec::Persistence { size, label: None });
        p.size = size;
        spec::validate_persistence(p, loaded.spec.root.format)
            .with_context(|| format!("--persistent-size for spec {}", opts.spec.display()))?;
    }
    Ok(loaded)
}

/// What the spec and the command line choose: `--elements-path` before
/// the spec's folders, `--kickstart` (and its package map) over the spec's.
fn selection(opts: &BuildOptions, loaded: &LoadedSpec) -> select::Request {
    let spec = &loaded.spec;
    let mut path: Vec<PathBuf> = opts.elements_path.clone();
    path.extend(spec.elements_path.iter().map(|p| loaded.resolve(p)));
    select::Request {
        elements: spec.elements.clone(),
        exclude: opts.exclude_elements.clone(),
        path: select::elements_path(path),
        kickstart: opts
            .kickstart
            .clone()
            .or_else(|| spec.kickstart.as_ref().map(|p| loaded.resolve(p))),
        kickstart_package_map: opts.kickstart_package_map.clone().or_else(|| {
            spec.kickstart_package_map
                .as_ref()
                .map(|p| loaded.resolve(p))
        }),
    }
}

/// The external programs this build will need, each named with the
/// package that provides it.
fn check_tools(loaded: &LoadedSpec, format: OutputFormat, output: &Output) -> Result<()> {
    let spec = &loaded.spec;
    tool::require("chroot", "coreutils")?;
    tool::require("bash", "bash")?;
    match format {
        OutputFormat::Hybrid => {
            match spec.root.format {
                RootFormat::Squashfs => squashfs::check_tool()?,
                RootFormat::Erofs => erofs::check_tool()?,
            }
            if spec.persistence.is_some() {
                ext4::check_tools()?;
            }
        }
        OutputFormat::Ramdisk => {}
        OutputFormat::Disk => {
            crate::install::format::check_tools(crate::install::config::Filesystem::Ext4, false)?;
            tool::require("losetup", "util-linux")?;
            tool::require("cp", "coreutils")?;
            if let Output::Disk { qcow2: true, path } = output {
                if tool::find("qemu-img").is_none() {
                    bail!(
                        "{} is a qcow2 image, which needs qemu-img: install package qemu-utils (Fedora: qemu-img), or name the output .raw",
                        path.display()
                    );
                }
            }
        }
    }
    Ok(())
}

impl Prepared {
    /// The build log, opened with the build's first line.
    pub fn open_log(&self, progress: &Progress) -> Result<OutputLog> {
        let log = OutputLog::new(Some(&self.log_path), !progress.is_quiet())?;
        log.note(&format!(
            "building {} ({}) from {}",
            self.output.main_file().display(),
            self.format.name(),
            self.spec_file.display()
        ));
        for w in self.selected.warnings(self.loaded.spec.base.distro) {
            eprintln!("warning: {w}");
            log.note(&format!("warning: {w}"));
        }
        Ok(log)
    }

    pub fn report(&self, w: Written, started: Instant) -> BuildReport {
        BuildReport {
            format: self.format,
            output: self.output.main_file(),
            size: w.files.iter().map(|(_, s)| s).sum(),
            files: w.files,
            seconds: started.elapsed().as_secs_f64(),
            kernel: w.kernel,
            bios: w.bios,
            md5: w.md5,
        }
    }
}

/// A spec's map of destination -> source file (`esp_files`, `extra_files`)
/// with the sources resolved against the spec's folder; each must be a
/// readable file. `key` names the map in errors.
fn resolve_files(
    key: &str,
    files: &std::collections::BTreeMap<String, PathBuf>,
    loaded: &LoadedSpec,
) -> Result<Vec<(String, PathBuf)>> {
    files
        .iter()
        .map(|(dest, src)| {
            let src = loaded.resolve(src);
            if !src.is_file() {
                bail!("{key}: {dest}: {} is not a readable file", src.display());
            }
            Ok((dest.clone(), src))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names() {
        let p = |s: &str| Some(PathBuf::from(s));
        assert_eq!(
            Output::new(OutputFormat::Hybrid, None, "uc"),
            Output::Hybrid("uc.iso".into())
        );
        assert_eq!(
            Output::new(OutputFormat::Ramdisk, p("out/ipa.kernel"), "uc"),
            Output::Ramdisk {
                prefix: "out/ipa".into()
            }
        );
        assert_eq!(
            Output::new(OutputFormat::Ramdisk, p("out/ipa.v1"), "uc"),
            Output::Ramdisk {
                prefix: "out/ipa.v1".into()
            }
        );
        assert_eq!(
            Output::new(OutputFormat::Ramdisk, None, "uc").main_file(),
            PathBuf::from("uc.kernel")
        );
        assert_eq!(
            Output::new(OutputFormat::Disk, p("d/x.qcow2"), "uc"),
            Output::Disk {
                path: "d/x.qcow2".into(),
                qcow2: true
            }
        );
        assert_eq!(
            Output::new(OutputFormat::Disk, p("d/x.iso"), "uc"),
            Output::Disk {
                path: "d/x.raw".into(),
                qcow2: false
            }
        );
        assert_eq!(
            Output::new(OutputFormat::Disk, None, "uc").dir(),
            PathBuf::from(".")
        );
    }
}
