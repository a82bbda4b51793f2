//! The image specification: a YAML file describing one image.
//!
//! Parsed with serde-saphyr (serde_yaml is deprecated upstream). Unknown keys
//! and wrong types are errors naming the key and the file. Relative paths in
//! a spec are relative to the spec file's directory, so a spec and its
//! elements can move together.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::distro::BaseSource;
pub use crate::distro::Distro;
use crate::image::layout::{EROFS_ROOT, SQUASHFS_ROOT};
pub use crate::image::{PersistLabel, VolumeLabel};

/// The live root's filesystem. dracut's dmsquash-live loop-mounts either.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RootFormat {
    /// /LiveOS/squashfs.img, the format every live-booting dracut knows.
    #[default]
    Squashfs,
    /// /LiveOS/rootfs.img: dracut 059 only mounts squashfs.img as squashfs,
    /// but mounts a rootfs.img with whatever filesystem it holds.
    Erofs,
}

impl RootFormat {
    pub fn name(self) -> &'static str {
        match self {
            RootFormat::Squashfs => "squashfs",
            RootFormat::Erofs => "erofs",
        }
    }

    /// Where the root image lives in the ISO tree.
    pub fn iso_path(self) -> &'static str {
        match self {
            RootFormat::Squashfs => SQUASHFS_ROOT,
            RootFormat::Erofs => EROFS_ROOT,
        }
    }

    /// The compressor and level of a preset (None: the default).
    pub fn preset(self, p: Option<Preset>) -> Compressor {
        match (self, p) {
            // zstd reads fast at boot at every level; the level only
            // trades build time for size.
            (RootFormat::Squashfs, None) => (Compression::Zstd, Some(SQUASHFS_ZSTD_LEVEL)),
            // zstd 1 beats lz4 in time and size on a real root.
            (RootFormat::Squashfs, Some(Preset::Fastest)) => (Compression::Zstd, Some(1)),
            (RootFormat::Squashfs, Some(Preset::Smallest)) => (Compression::Xz, None),
            // Every erofs-capable kernel reads lz4; lz4hc packs it tighter
            // at build time only. lzma would be smaller, but Debian 12's
            // kernel cannot read it.
            (RootFormat::Erofs, None) => (Compression::Lz4hc, None),
            (RootFormat::Erofs, Some(Preset::Fastest)) => (Compression::Lz4, None),
            (RootFormat::Erofs, Some(Preset::Smallest)) => (Compression::Lz4hc, Some(12)),
        }
    }

    fn allows(self, c: Compression) -> bool {
        use Compression::*;
        match self {
            RootFormat::Squashfs => matches!(c, Zstd | Xz | Gzip | Lz4),
            RootFormat::Erofs => matches!(c, Lz4 | Lz4hc | Lzma),
        }
    }
}

/// Root filesystem compressors: squashfs takes zstd, xz, gzip, lz4; erofs
/// takes lz4, lz4hc, lzma.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Xz,
    Gzip,
    Lz4,
    Lz4hc,
    Lzma,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Lz4hc => "lz4hc",
            Compression::Lzma => "lzma",
        }
    }
}

/// What the last stage of `build` writes. Everything before it (fetch,
/// unpack, elements, kickstart) is the same for all three.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// The live image: one file that is a GPT disk and an ISO9660 volume.
    #[default]
    Hybrid,
    /// A netboot ramdisk: `NAME.kernel` + `NAME.initramfs` (the whole root
    /// as a compressed cpio, systemd as /init), as Ironic names them.
    Ramdisk,
    /// A deployable whole-disk image (raw or qcow2): GPT, ESP, BIOS boot,
    /// an ext4 root that grows to fill its disk on the first boot.
    Disk,
}

impl OutputFormat {
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Hybrid => "hybrid",
            OutputFormat::Ramdisk => "ramdisk",
            OutputFormat::Disk => "disk",
        }
    }

    pub fn parse(text: &str) -> Result<OutputFormat> {
        match text {
            "hybrid" => Ok(OutputFormat::Hybrid),
            "ramdisk" => Ok(OutputFormat::Ramdisk),
            "disk" => Ok(OutputFormat::Disk),
            other => bail!("format {other:?}: use hybrid, ramdisk or disk"),
        }
    }
}

/// `format: ramdisk` settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RamdiskOptions {
    /// zstd (default: fast to pack and to unpack at boot) or xz (smaller).
    #[serde(default)]
    pub compression: Option<Compression>,
    /// The largest initramfs the build may write: a netboot ramdisk lives
    /// in the node's RAM (unpacked, several times this) and crosses the
    /// provisioning network at every boot.
    #[serde(default = "default_ramdisk_max")]
    pub max_size: ByteSize,
}

impl Default for RamdiskOptions {
    fn default() -> Self {
        RamdiskOptions {
            compression: None,
            max_size: default_ramdisk_max(),
        }
    }
}

fn default_ramdisk_max() -> ByteSize {
    ByteSize(1 << 30)
}

/// `format: disk` settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DiskOptions {
    /// The whole image's size. Default: what the root holds plus
    /// `headroom`, the ESP and the GPT; a size too small for that is an
    /// error. The root grows to fill a larger disk on its first boot.
    #[serde(default)]
    pub size: Option<ByteSize>,
    /// Free space left in the root file system (default 256 MiB).
    #[serde(default)]
    pub headroom: Option<ByteSize>,
}

/// A size in bytes, written as a number of bytes or with a unit:
/// `1GiB`, `512MiB`, `64M` (binary units; `K`, `M`, `G`, `T` mean KiB..TiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .with_context(|| format!("size {text:?}: expected a number with an optional unit"))?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "K" | "KiB" | "k" => 10,
            "M" | "MiB" => 20,
            "G" | "GiB" => 30,
            "T" | "TiB" => 40,
            other => bail!("size {text:?}: unknown unit {other:?} (use KiB, MiB, GiB or TiB)"),
        };
        n.checked_mul(1u64 << shift)
            .map(ByteSize)
            .with_context(|| format!("size {text:?} is too large"))
    }

    pub fn mib(self) -> u64 {
        self.0.div_ceil(1 << 20)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Number(u64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Number(n) => Ok(ByteSize(n)),
            Repr::Text(t) => {
                ByteSize::parse(&t).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
            }
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Base {
    pub distro: Distro,
    /// Release name or number (`bookworm`, `43`): `DIB_RELEASE` for elements.
    pub release: String,
    /// http(s):// or file:// URL of a rootfs archive.
    #[serde(default)]
    pub url: Option<String>,
    /// Local rootfs archive (relative to the spec's directory).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Expected sha256 of the archive.
    #[serde(default)]
    pub sha256: Option<String>,
    /// A SHA256SUMS or Fedora CHECKSUM file that lists the archive.
    #[serde(default)]
    pub checksum_url: Option<String>,
    /// Without url/path: the Fedora mirror (Container Base derived from
    /// `release`) or the Debian mirror debootstrap uses.
    #[serde(default)]
    pub mirror: Option<String>,
    /// Fedora compose id (`1.6`) of the derived Container Base; known
    /// releases have a default (see fetch::fedora).
    #[serde(default)]
    pub compose: Option<String>,
    /// Debian without url/path: extra packages for debootstrap --include.
    #[serde(default)]
    pub include: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RootOptions {
    #[serde(default)]
    pub format: RootFormat,
    /// `zstd`, `zstd:19`, `{algorithm: zstd, level: 19}`, or a preset:
    /// `fastest` | `smallest`. Default: see `RootFormat::preset`.
    #[serde(default)]
    pub compression: Option<RootCompression>,
}

impl RootOptions {
    pub fn compression(&self) -> Compression {
        self.resolved().0
    }

    /// The compressor and its level (None: the tool's own default).
    pub fn resolved(&self) -> Compressor {
        match self.compression {
            None => self.format.preset(None),
            Some(RootCompression::Preset(p)) => self.format.preset(Some(p)),
            Some(RootCompression::Explicit { algorithm, level }) => (
                algorithm,
                level.or_else(|| default_level(self.format, algorithm)),
            ),
        }
    }
}

/// A compressor and its level (None: the compressing tool's default).
pub type Compressor = (Compression, Option<u32>);

/// `root.compression` (and `build --compression`): a compressor, with a
/// level or not, or a preset naming one for the root's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootCompression {
    Preset(Preset),
    Explicit {
        algorithm: Compression,
        level: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The shortest build (an operator iterating on elements).
    Fastest,
    /// The smallest image every kernel that boots it can read.
    Smallest,
}

impl RootCompression {
    pub fn parse(text: &str) -> Result<RootCompression> {
        let t = text.trim();
        match t {
            "fastest" => return Ok(RootCompression::Preset(Preset::Fastest)),
            "smallest" => return Ok(RootCompression::Preset(Preset::Smallest)),
            _ => {}
        }
        let (name, level) = match t.split_once(':') {
            Some((n, l)) => (
                n,
                Some(l.parse::<u32>().with_context(|| {
                    format!("compression {text:?}: the level after ':' is not a number")
                })?),
            ),
            None => (t, None),
        };
        let algorithm = match name {
            "zstd" => Compression::Zstd,
            "xz" => Compression::Xz,
            "gzip" => Compression::Gzip,
            "lz4" => Compression::Lz4,
            "lz4hc" => Compression::Lz4hc,
            "lzma" => Compression::Lzma,
            _ => bail!(
                "compression {text:?}: use fastest, smallest, or zstd, xz, gzip, lz4 (squashfs) / lz4, lz4hc, lzma (erofs), with :LEVEL where the compressor has levels"
            ),
        };
        Ok(RootCompression::Explicit { algorithm, level })
    }
}

impl<'de> Deserialize<'de> for RootCompression {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Full {
                algorithm: String,
                #[serde(default)]
                level: Option<u32>,
            },
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => RootCompression::parse(&t),
            Raw::Full { algorithm, level } => {
                RootCompression::parse(&algorithm).and_then(|c| match (c, level) {
                    (RootCompression::Explicit { algorithm, .. }, Some(l)) => {
                        Ok(RootCompression::Explicit {
                            algorithm,
                            level: Some(l),
                        })
                    }
                    (c, None) => Ok(c),
                    (RootCompression::Preset(_), Some(_)) => {
                        bail!("compression: a preset ({algorithm}) takes no level")
                    }
                })
            }
        }
        .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// The level a compressor gets when the spec names it without one.
fn default_level(format: RootFormat, c: Compression) -> Option<u32> {
    match (format, c) {
        (RootFormat::Squashfs, Compression::Zstd) => Some(SQUASHFS_ZSTD_LEVEL),
        _ => None,
    }
}

/// zstd's level for squashfs when none is given. On the undercloud root
/// (docs/benchmarks.md, "Rebuild") level 6 packs within 1% of level 15 in
/// a sixth of the time; past it each level costs more than it saves.
pub const SQUASHFS_ZSTD_LEVEL: u32 = 6;

/// Which compressors have levels, and their range, per root format.
fn level_range(format: RootFormat, c: Compression) -> Option<(u32, u32)> {
    match (format, c) {
        (RootFormat::Squashfs, Compression::Zstd) => Some((1, 22)),
        (RootFormat::Squashfs, Compression::Gzip) => Some((1, 9)),
        (RootFormat::Erofs, Compression::Lz4hc) => Some((0, 12)),
        (RootFormat::Erofs, Compression::Lzma) => Some((0, 9)),
        _ => None,
    }
}

pub fn validate_root(root: &RootOptions) -> Result<()> {
    let (c, level) = root.resolved();
    if !root.format.allows(c) {
        bail!(
            "root.compression {} does not go with root.format {} (squashfs: zstd, xz, gzip, lz4; erofs: lz4, lz4hc, lzma)",
            c.name(),
            root.format.name()
        );
    }
    if let Some(l) = level {
        match level_range(root.format, c) {
            Some((lo, hi)) if (lo..=hi).contains(&l) => {}
            Some((lo, hi)) => bail!(
                "root.compression {}:{l}: the level must be {lo} to {hi}",
                c.name()
            ),
            None => bail!(
                "root.compression {}: {} has no levels in {}",
                c.name(),
                c.name(),
                root.format.name()
            ),
        }
    }
    Ok(())
}

/// A persistent overlay: an ext4 partition appended to the image (GPT
/// partition 3) that dracut mounts as the live root's upper layer.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Persistence {
    pub size: ByteSize,
    /// ext4 label (default: derived from `label`).
    #[serde(default)]
    pub label: Option<PersistLabel>,
}

/// The overlay that holds changes when there is no persistence.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// `rd.live.overlay.size`: how much may change in RAM.
    #[serde(default)]
    pub ram_size: Option<ByteSize>,
}

/// Smallest persistence partition: ext4 with a journal needs a few MiB to
/// be useful at all.
pub const MIN_PERSISTENCE: u64 = 16 << 20;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BootMenu {
    /// Seconds the menu waits before booting the default entry.
    #[serde(default = "default_menu_timeout")]
    pub timeout: u32,
}

impl Default for BootMenu {
    fn default() -> Self {
        BootMenu {
            timeout: default_menu_timeout(),
        }
    }
}

fn default_menu_timeout() -> u32 {
    5
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Image name: `IMAGE_NAME` for elements, default output file name.
    pub name: String,
    /// ISO volume label, also `root=live:CDLABEL=` on the kernel command
    /// line; checked as it is parsed.
    pub label: VolumeLabel,
    pub base: Base,
    #[serde(default)]
    pub elements: Vec<String>,
    /// Folders searched for elements, earlier entries win.
    #[serde(default)]
    pub elements_path: Vec<PathBuf>,
    /// Added to the kernel command line after the live arguments.
    #[serde(default)]
    pub kernel_cmdline: Vec<String>,
    #[serde(default)]
    pub root: RootOptions,
    #[serde(default)]
    pub boot: BootMenu,
    #[serde(default)]
    pub persistence: Option<Persistence>,
    #[serde(default)]
    pub overlay: Overlay,
    /// Output image path (relative to the spec's directory).
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Seed for GUIDs and volume serials; defaults to name + label so that
    /// two specs never share disk GUIDs by accident.
    #[serde(default)]
    pub seed: Option<String>,
    /// A kickstart applied after `elements` (relative to the spec's folder).
    #[serde(default)]
    pub kickstart: Option<PathBuf>,
    /// Package names of the kickstart's distro mapped to the base's.
    #[serde(default)]
    pub kickstart_package_map: Option<PathBuf>,
    /// Put this tool into the image as /usr/bin/undercloud-live (for
    /// `install`, `status` and `medium` in the live session).
    #[serde(default = "default_true")]
    pub installer: bool,
    /// Extra files on the ESP: ESP path -> source file (relative to the
    /// spec's folder). Operators edit them on any OS after writing a stick.
    #[serde(default)]
    pub esp_files: std::collections::BTreeMap<String, PathBuf>,
    /// Files put into the root before the elements run: absolute path in
    /// the image -> source file (relative to the spec's folder), as mkosi's
    /// ExtraTrees. The undercloud carries its deploy ramdisk this way.
    #[serde(default)]
    pub extra_files: std::collections::BTreeMap<String, PathBuf>,
    /// What `build` writes: hybrid (default), ramdisk or disk.
    #[serde(default)]
    pub format: OutputFormat,
    #[serde(default)]
    pub ramdisk: RamdiskOptions,
    #[serde(default)]
    pub disk: DiskOptions,
}

fn default_true() -> bool {
    true
}

/// A spec together with where it came from.
#[derive(Clone, Debug)]
pub struct LoadedSpec {
    pub spec: Spec,
    pub file: PathBuf,
    pub dir: PathBuf,
}

impl LoadedSpec {
    pub fn load(file: &Path) -> Result<Self> {
        // A spec is a hand-written page of YAML; 1 MiB is far beyond any
        // real one and keeps a mistaken path (an image, /dev/zero) cheap.
        let text = crate::io::read_text_bounded(file, crate::io::MIB, "spec")?;
        let spec = parse(&text).with_context(|| format!("spec {}", file.display()))?;
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        Ok(LoadedSpec {
            spec,
            file: file.to_path_buf(),
            dir,
        })
    }

    /// A path from the spec, made relative to the spec's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The ext4 label of the persistence partition: the spec's, else one
    /// derived from the volume label (`VolumeLabel::persistence`).
    pub fn persistence_label(&self) -> Option<PersistLabel> {
        let p = self.spec.persistence.as_ref()?;
        Some(
            p.label
                .clone()
                .unwrap_or_else(|| self.spec.label.persistence()),
        )
    }

    pub fn seed(&self) -> String {
        self.spec
            .seed
            .clone()
            .unwrap_or_else(|| format!("{}/{}", self.spec.name, self.spec.label))
    }
}

/// Parse and validate a spec. The error is one line: the YAML library's
/// multi-line snippet rendering is folded so a terminal or log shows the key
/// and position on the same line as the file name.
pub fn parse(text: &str) -> Result<Spec> {
    let spec: Spec = serde_saphyr::from_str(text).map_err(|e| anyhow::anyhow!(one_line(&e)))?;
    validate(&spec)?;
    Ok(spec)
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join(" ")
}

fn validate(spec: &Spec) -> Result<()> {
    if spec.name.is_empty()
        || !spec
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!(
            "name {:?}: use letters, digits, '-', '_' and '.' only",
            spec.name
        );
    }
    let b = &spec.base;
    match (&b.url, &b.path) {
        (Some(_), Some(_)) => bail!("base: give either url or path, not both"),
        // Derived: Fedora's Container Base, or debootstrap for Debian.
        (None, None) => {
            if b.sha256.is_some() || b.checksum_url.is_some() {
                bail!("base: sha256 and checksum_url need a url or path");
            }
        }
        _ => {
            for (key, set) in [
                ("mirror", b.mirror.is_some()),
                ("compose", b.compose.is_some()),
                ("include", !b.include.is_empty()),
            ] {
                if set {
                    bail!("base.{key}: only for a base without url or path");
                }
            }
        }
    }
    let source = b.distro.facts().base;
    if b.compose.is_some() && source != BaseSource::Compose {
        bail!("base.compose: only for a distro built from composes (fedora)");
    }
    if !b.include.is_empty() && source != BaseSource::Debootstrap {
        bail!("base.include: only for a distro built by debootstrap (debian)");
    }
    if b.url.is_some() && b.sha256.is_none() && b.checksum_url.is_none() {
        bail!("base: a url needs sha256 or checksum_url, so the download can be verified");
    }
    if let Some(h) = &b.sha256 {
        if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            bail!("base.sha256: {h:?} is not 64 hex digits");
        }
    }
    for e in &spec.elements {
        check_element_name(e).context("elements")?;
    }
    validate_root(&spec.root)?;
    if let Some(p) = &spec.persistence {
        validate_persistence(p, spec.root.format)?;
    }
    for arg in &spec.kernel_cmdline {
        validate_kernel_arg(arg)?;
    }
    for dest in spec.esp_files.keys() {
        validate_esp_path(dest)?;
    }
    for dest in spec.extra_files.keys() {
        validate_root_path(dest)?;
    }
    if let Some(c) = spec.ramdisk.compression {
        if !matches!(c, Compression::Zstd | Compression::Xz) {
            bail!(
                "ramdisk.compression {}: use zstd or xz (what kernels unpack an initramfs with)",
                c.name()
            );
        }
    }
    if spec.ramdisk.max_size.0 < (1 << 20) {
        bail!("ramdisk.max_size: at least 1MiB");
    }
    Ok(())
}

/// A path in the image: absolute, normal, and not in a kernel filesystem.
fn validate_root_path(dest: &str) -> Result<()> {
    let comps: Vec<&str> = dest.split('/').skip(1).collect();
    let bad = !dest.starts_with('/')
        || dest.len() > 4096
        || comps
            .iter()
            .any(|c| c.is_empty() || *c == "." || *c == "..")
        || dest.contains(|c: char| c.is_control())
        || matches!(
            comps.first(),
            Some(&("proc" | "sys" | "dev" | "run" | "tmp"))
        );
    if bad {
        bail!("extra_files: {dest:?} is not a path for a file in the image (absolute, no '.' or '..', not under /proc /sys /dev /run /tmp)");
    }
    Ok(())
}

/// An ESP path must be relative, without `.`/`..`, and spell only what
/// FAT long names allow.
fn validate_esp_path(dest: &str) -> Result<()> {
    let bad = dest.is_empty()
        || dest.starts_with('/')
        || dest.len() > 255
        || dest
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == ".." || c.ends_with('.') || c.ends_with(' '))
        || dest
            .chars()
            .any(|c| c.is_control() || "<>:\"\\|?*".contains(c));
    if bad {
        bail!("esp_files: {dest:?} is not a valid ESP path (relative, '/'-separated, no '.', '..' or any of <>:\"\\|?*)");
    }
    Ok(())
}

pub fn validate_persistence(p: &Persistence, format: RootFormat) -> Result<()> {
    if p.size.0 < MIN_PERSISTENCE {
        bail!(
            "persistence.size: {} bytes is below the minimum of {} MiB",
            p.size.0,
            MIN_PERSISTENCE >> 20
        );
    }
    // dracut 059 reaches a persistent overlay only when the live root is a
    // partition of its own (a squashfs partition); an erofs root is mounted
    // through the ISO9660 volume, which then holds the whole disk so the
    // persistence partition cannot be mounted beside it.
    if format != RootFormat::Squashfs {
        bail!("persistence needs root.format squashfs (dracut cannot mount the persistence partition beside an erofs root read through the ISO volume)");
    }
    Ok(())
}

/// A 32-bit value (volume serials) derived from the spec's seed and a role,
/// so two builds of one spec agree and two specs differ.
pub fn derive_u32(seed: &str, role: crate::image::gpt::IdRole) -> u32 {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{seed}\0{}", role.name()).as_bytes());
    u32::from_le_bytes([h[0], h[1], h[2], h[3]])
}

/// `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
pub fn source_date_epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a non-negative integer")),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)),
    }
}

/// An element name is one folder name on the elements path: letters,
/// digits, `.`, `_`, `-`, `+`, not starting with `.` or `-` (every name in
/// diskimage-builder's and tripleo-image-elements' trees fits). Here, not
/// in `elements`, because specs name elements and `elements` reads specs.
pub fn valid_element_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        && !name.starts_with(['.', '-'])
}

/// One line for a name that is not an element name.
pub fn check_element_name(name: &str) -> Result<()> {
    if !valid_element_name(name) {
        bail!(
            "{name:?} is not an element name (letters, digits, . _ - +; not starting with . or -)"
        );
    }
    Ok(())
}

/// A kernel argument goes into grub.cfg's `linux` line unquoted, where
/// GRUB's script language gives `$` (variables), `;` `|` `&` `<` `>`
/// (command syntax), `#` (comments), quotes and `\` (escapes) a meaning: an
/// argument holding one would run or hide something else at every boot.
pub fn validate_kernel_arg(arg: &str) -> Result<()> {
    const SPECIAL: &[char] = &['$', ';', '|', '&', '<', '>', '#', '"', '\'', '`', '\\'];
    if arg.trim().is_empty() {
        bail!("kernel_cmdline: an empty entry");
    }
    if let Some(c) = arg
        .chars()
        .find(|c| SPECIAL.contains(c) || c.is_control() || !c.is_ascii())
    {
        bail!(
            "kernel_cmdline: {arg:?} holds {c:?}, which GRUB's configuration would interpret (use letters, digits and = , . : / - _ + spaces)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_arguments_grub_would_interpret_are_refused() {
        for good in [
            "console=ttyS0,115200n8",
            "rd.live.overlay=LABEL=P:/x",
            "quiet splash",
            "a+b-c_d",
        ] {
            assert!(validate_kernel_arg(good).is_ok(), "{good}");
        }
        for bad in [
            "x;reboot",
            "#hidden",
            "a=$root",
            "a=\"b\"",
            "a='b'",
            "trailing\\",
            "a\nmenuentry",
            "a|b",
            "`x`",
            "",
        ] {
            let e = validate_kernel_arg(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("kernel_cmdline: ") && !e.contains('\n'),
                "{bad:?}: {e}"
            );
        }
    }

    const GOOD: &str = "\
name: minimal
label: UCL-MINIMAL
base:
  distro: debian
  release: bookworm
  url: http://127.0.0.1:1/rootfs.tar.xz
  checksum_url: http://127.0.0.1:1/SHA256SUMS
elements: [marker]
elements_path: [elements]
kernel_cmdline: [console=ttyS0, panic=-1]
root:
  compression: xz
";

    #[test]
    fn parses_a_full_spec() {
        let s = parse(GOOD).expect("parse");
        assert_eq!(s.base.distro, Distro::Debian);
        assert_eq!(s.root.compression(), Compression::Xz);
        assert_eq!(s.root.format, RootFormat::Squashfs);
        assert!(s.persistence.is_none());
        assert_eq!(s.kernel_cmdline, vec!["console=ttyS0", "panic=-1"]);
        assert_eq!(s.boot.timeout, 5);
        assert_eq!(s.elements, vec!["marker"]);
    }

    #[test]
    fn installer_is_on_unless_turned_off() {
        assert!(parse(GOOD).unwrap().installer);
        let off = GOOD.replace("elements: [marker]", "elements: [marker]\ninstaller: false");
        assert!(!parse(&off).unwrap().installer);
    }

    #[test]
    fn extra_files_are_checked() {
        let ok = GOOD.replace(
            "elements: [marker]",
            "elements: [marker]\nextra_files:\n  /var/lib/ironic/deploy/ipa.kernel: ../target/images/ipa.kernel",
        );
        let s = parse(&ok).unwrap();
        assert_eq!(
            s.extra_files.keys().collect::<Vec<_>>(),
            ["/var/lib/ironic/deploy/ipa.kernel"]
        );
        for bad in [
            "etc/passwd",
            "/var/../etc/x",
            "/proc/x",
            "/dev/sda",
            "/a//b",
            "/",
        ] {
            let spec = GOOD.replace(
                "elements: [marker]",
                &format!("elements: [marker]\nextra_files:\n  {bad:?}: x"),
            );
            let e = format!("{:#}", parse(&spec).unwrap_err());
            assert!(e.contains("extra_files") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn esp_files_are_checked() {
        let ok = GOOD.replace(
            "elements: [marker]",
            "elements: [marker]\nesp_files:\n  undercloud.yaml: conf/undercloud.yaml\n  config/install.yaml: i.yaml",
        );
        let s = parse(&ok).unwrap();
        assert_eq!(
            s.esp_files.keys().collect::<Vec<_>>(),
            vec!["config/install.yaml", "undercloud.yaml"]
        );
        for bad in ["/abs.yaml", "../up.yaml", "a//b", "what?.yaml", "dot.", ""] {
            let spec = GOOD.replace(
                "elements: [marker]",
                &format!("elements: [marker]\nesp_files:\n  {bad:?}: x"),
            );
            let e = format!("{:#}", parse(&spec).unwrap_err());
            assert!(e.contains("esp_files") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_named_on_one_line() {
        let bad = GOOD.replace("elements: [marker]", "elements: [marker]\nflavour: sweet");
        let e = format!("{:#}", parse(&bad).unwrap_err());
        assert!(e.contains("flavour"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let bad = GOOD.replace("  release: bookworm", "  release: bookworm\n  mirorr: x");
        let e = format!("{:#}", parse(&bad).unwrap_err());
        assert!(e.contains("mirorr"), "{e}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let bad = GOOD.replace("elements: [marker]", "elements: 7");
        let e = format!("{:#}", parse(&bad).unwrap_err());
        assert!(e.contains("elements") || e.contains("sequence"), "{e}");
        let bad = GOOD.replace("distro: debian", "distro: gentoo");
        let e = format!("{:#}", parse(&bad).unwrap_err());
        assert!(e.contains("gentoo"), "{e}");
    }

    #[test]
    fn url_needs_a_checksum() {
        let bad = GOOD.replace("  checksum_url: http://127.0.0.1:1/SHA256SUMS\n", "");
        let e = format!("{:#}", parse(&bad).unwrap_err());
        assert!(e.contains("sha256 or checksum_url"), "{e}");
    }

    #[test]
    fn derived_bases() {
        let fedora = GOOD
            .replace("distro: debian", "distro: fedora")
            .replace("release: bookworm", "release: \"43\"")
            .replace("  url: http://127.0.0.1:1/rootfs.tar.xz\n", "")
            .replace("  checksum_url: http://127.0.0.1:1/SHA256SUMS\n", "");
        let s = parse(&fedora).expect("fedora without url");
        assert_eq!(s.base.url, None);
        let with_compose = fedora.replace("release: \"43\"", "release: \"43\"\n  compose: \"1.6\"");
        assert_eq!(
            parse(&with_compose).unwrap().base.compose.as_deref(),
            Some("1.6")
        );
        let debian = GOOD
            .replace("  url: http://127.0.0.1:1/rootfs.tar.xz\n", "")
            .replace(
                "  checksum_url: http://127.0.0.1:1/SHA256SUMS\n",
                "  mirror: http://deb.debian.org/debian\n",
            );
        assert!(parse(&debian).is_ok());
        let e = format!(
            "{:#}",
            parse(&debian.replace("release: bookworm", "release: bookworm\n  compose: \"1.1\""))
                .unwrap_err()
        );
        assert!(e.contains("base.compose"), "{e}");
        let e = format!(
            "{:#}",
            parse(&GOOD.replace("release: bookworm", "release: bookworm\n  mirror: http://m"))
                .unwrap_err()
        );
        assert!(e.contains("base.mirror"), "{e}");
    }

    #[test]
    fn root_format_and_compression_go_together() {
        let erofs = GOOD.replace("  compression: xz", "  format: erofs");
        let s = parse(&erofs).unwrap();
        assert_eq!(s.root.compression(), Compression::Lz4hc);
        assert_eq!(s.root.format.iso_path(), "LiveOS/rootfs.img");
        let bad = GOOD.replace("  compression: xz", "  format: erofs\n  compression: zstd");
        let e = format!("{:#}", parse(&bad).unwrap_err());
        assert!(e.contains("does not go with root.format erofs"), "{e}");
        let bad = GOOD.replace("compression: xz", "compression: lzma");
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn compression_levels_and_presets() {
        let with = |c: &str| parse(&GOOD.replace("compression: xz", c));
        let r = |c: &str| with(c).unwrap().root.resolved();
        assert_eq!(
            r("compression: zstd"),
            (Compression::Zstd, Some(SQUASHFS_ZSTD_LEVEL))
        );
        assert_eq!(r("compression: zstd:19"), (Compression::Zstd, Some(19)));
        assert_eq!(
            r("compression: {algorithm: zstd, level: 6}"),
            (Compression::Zstd, Some(6))
        );
        assert_eq!(r("compression: fastest"), (Compression::Zstd, Some(1)));
        assert_eq!(r("compression: smallest"), (Compression::Xz, None));
        assert_eq!(r("compression: gzip:9"), (Compression::Gzip, Some(9)));
        let erofs =
            |c: &str| parse(&GOOD.replace("  compression: xz", &format!("  format: erofs\n  {c}")));
        assert_eq!(
            erofs("compression: smallest").unwrap().root.resolved(),
            (Compression::Lz4hc, Some(12))
        );
        assert_eq!(
            erofs("compression: fastest").unwrap().root.resolved(),
            (Compression::Lz4, None)
        );
        for (bad, want) in [
            ("compression: zstd:23", "level must be 1 to 22"),
            ("compression: zstd:0", "level must be 1 to 22"),
            ("compression: xz:6", "xz has no levels"),
            ("compression: zstd:x", "not a number"),
            ("compression: quick", "use fastest, smallest"),
            (
                "compression: {algorithm: fastest, level: 3}",
                "takes no level",
            ),
        ] {
            let e = format!("{:#}", with(bad).unwrap_err());
            assert!(e.contains(want), "{bad}: {e}");
        }
        let e = format!("{:#}", erofs("compression: lz4hc:13").unwrap_err());
        assert!(e.contains("0 to 12"), "{e}");
        assert!(RootCompression::parse("lz4").is_ok());
    }

    #[test]
    fn persistence_sizes_and_labels() {
        let p = GOOD.to_string() + "persistence:\n  size: 1GiB\n";
        let s = parse(&p).unwrap();
        assert_eq!(s.persistence.as_ref().unwrap().size, ByteSize(1 << 30));
        let loaded = LoadedSpec {
            spec: s,
            file: PathBuf::from("x.yaml"),
            dir: PathBuf::from("."),
        };
        assert_eq!(
            loaded.persistence_label().unwrap().as_str(),
            "UCL-MINI-PERSIST"
        );
        let n = GOOD.to_string() + "persistence:\n  size: 67108864\n  label: P1\n";
        let p = parse(&n).unwrap().persistence.unwrap();
        assert_eq!(p.size, ByteSize(64 << 20));
        assert_eq!(p.label.unwrap().as_str(), "P1");
        for bad in [
            "persistence:\n  size: 1MiB\n",
            "persistence:\n  size: 1 parsec\n",
            "persistence:\n  size: 1GiB\n  label: MUCH-TOO-LONG-LABEL\n",
        ] {
            assert!(parse(&(GOOD.to_string() + bad)).is_err(), "{bad}");
        }
        let erofs =
            GOOD.replace("  compression: xz", "  format: erofs") + "persistence:\n  size: 1GiB\n";
        let e = format!("{:#}", parse(&erofs).unwrap_err());
        assert!(e.contains("persistence needs root.format squashfs"), "{e}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("512MiB").unwrap(), ByteSize(512 << 20));
        assert_eq!(ByteSize::parse("2G").unwrap(), ByteSize(2 << 30));
        assert_eq!(ByteSize::parse("4096").unwrap(), ByteSize(4096));
        assert_eq!(ByteSize(1).mib(), 1);
        assert!(ByteSize::parse("GiB").is_err());
        assert!(ByteSize::parse("99999999999TiB").is_err());
    }

    /// A bad label fails the parse with one line that names the value and
    /// the rule; the rule itself is tested with `image::label`.
    #[test]
    fn bad_labels_fail_the_parse_in_one_line() {
        let s = parse(GOOD).unwrap();
        assert_eq!(s.label.as_str(), "UCL-MINIMAL");
        for (bad, rule) in [
            (
                "label: lower",
                "\"lower\": use 1 to 32 of A-Z, 0-9, '_' and '-'",
            ),
            ("label: \"HAS SPACE\"", "use 1 to 32 of A-Z"),
            ("label: \"\"", "use 1 to 32 of A-Z"),
        ] {
            let e = format!(
                "{:#}",
                parse(&GOOD.replace("label: UCL-MINIMAL", bad)).unwrap_err()
            );
            assert!(e.contains(rule), "{bad}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let e = format!(
            "{:#}",
            parse(&(GOOD.to_string() + "persistence:\n  size: 1GiB\n  label: \"a b\"\n"))
                .unwrap_err()
        );
        assert!(e.contains("persistence.label \"a b\": use 1 to 16"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn output_formats() {
        let s = parse(GOOD).expect("parse");
        assert_eq!(s.format, OutputFormat::Hybrid);
        assert_eq!(s.ramdisk.max_size, ByteSize(1 << 30));
        let r = parse(&format!(
            "{GOOD}format: ramdisk\nramdisk:\n  compression: xz\n  max_size: 300MiB\n"
        ))
        .unwrap();
        assert_eq!(r.format, OutputFormat::Ramdisk);
        assert_eq!(r.ramdisk.compression, Some(Compression::Xz));
        assert_eq!(r.ramdisk.max_size, ByteSize(300 << 20));
        let d = parse(&format!("{GOOD}format: disk\ndisk:\n  size: 4GiB\n")).unwrap();
        assert_eq!(d.disk.size, Some(ByteSize(4 << 30)));
        let e = parse(&format!("{GOOD}format: floppy\n")).unwrap_err();
        assert!(format!("{e:#}").contains("floppy"), "{e:#}");
        let e = parse(&format!("{GOOD}ramdisk:\n  compression: lz4\n")).unwrap_err();
        assert!(format!("{e:#}").contains("zstd or xz"), "{e:#}");
        assert_eq!(OutputFormat::parse("disk").unwrap(), OutputFormat::Disk);
        assert!(format!("{:#}", OutputFormat::parse("iso").unwrap_err())
            .contains("hybrid, ramdisk or disk"));
    }
}
