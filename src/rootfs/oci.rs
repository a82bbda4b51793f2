//! OCI image layouts as a base: Fedora publishes its Container Base as an
//! xz-compressed tar of one (`oci-layout`, `index.json`, `blobs/sha256/…`).
//!
//! This module is the JSON side only: which manifest `index.json` leads to
//! (directly, or through nested indexes / manifest lists, picking this
//! machine's platform), its config and its layers. Reading the archive and
//! applying the layers is `unpack`'s job.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// Largest JSON document (index, manifest, config) read into memory. Real
/// ones are a few KiB; the limit keeps a hostile archive from making us
/// allocate gigabytes.
pub const MAX_JSON: u64 = 4 << 20;

/// Indexes nested deeper than this are refused (a loop of indexes cannot
/// exist with real digests, but a hostile archive may still try depth).
const MAX_DEPTH: usize = 8;

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor: what a blob is, its digest and its size.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Required by the spec, yet tolerated when missing: the blob's own
    /// content then tells an index from a manifest.
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Descriptor {
    /// The hex part of the digest, which names the blob in `blobs/sha256/`.
    /// Only sha256 is accepted, and only in its canonical lowercase form,
    /// so the result is always safe as a file name.
    pub fn sha256(&self) -> Result<&str> {
        sha256_hex(&self.digest)
    }

    /// The `org.opencontainers.image.ref.name` annotation (a tag such as
    /// `latest`), if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }

    fn describe(&self) -> String {
        match self.ref_name() {
            Some(name) => format!("{} ({name})", self.digest),
            None => self.digest.clone(),
        }
    }
}

/// The hex part of a `sha256:<hex>` digest.
pub fn sha256_hex(digest: &str) -> Result<&str> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        bail!("malformed digest {digest:?}");
    };
    if algorithm != "sha256" {
        bail!("unsupported digest algorithm in {digest:?} (only sha256 is supported)");
    }
    if !is_sha256_hex(hex) {
        bail!("malformed digest {digest:?}");
    }
    Ok(hex)
}

/// 64 lowercase hex digits, as the spec encodes sha256.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The image `index.json` leads to: its manifest, config and layers
/// (bottom layer first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Index {
    schema_version: u32,
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    schema_version: u32,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Layout {
    image_layout_version: String,
}

/// This machine's architecture in OCI's naming (`amd64`, `arm64`, …): the
/// build runs the rootfs's binaries in a chroot, so no other will do.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Check the `oci-layout` file: a JSON object whose `imageLayoutVersion`
/// is a 1.x version.
pub fn check_layout(bytes: &[u8]) -> Result<()> {
    let layout: Layout = serde_json::from_slice(bytes).context("oci-layout is not valid")?;
    let v = layout.image_layout_version;
    if v.split('.').next() != Some("1") {
        bail!("oci-layout: unsupported imageLayoutVersion {v:?}");
    }
    Ok(())
}

/// Follow `index.json` to the image for `linux/<arch>`. `blob` returns the
/// (verified) content of a descriptor's blob; it is called for nested
/// indexes, the manifest and the config.
pub fn resolve(
    index_json: &[u8],
    arch: &str,
    blob: &mut dyn FnMut(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Image> {
    let mut doc = "index.json".to_string();
    let index: Index = parse(index_json, &doc)?;
    check_schema(index.schema_version, &doc)?;
    let mut candidates = index.manifests;
    for _ in 0..MAX_DEPTH {
        let chosen = choose(&candidates, arch, &doc)?;
        let bytes = blob(&chosen)?;
        let what = format!("{} {}", noun(&chosen, &bytes), chosen.digest);
        if is_index(&chosen, &bytes) {
            let index: Index = parse(&bytes, &what)?;
            check_schema(index.schema_version, &what)?;
            candidates = index.manifests;
            doc = what;
            continue;
        }
        let manifest: Manifest = parse(&bytes, &what)?;
        check_schema(manifest.schema_version, &what)?;
        return image(chosen, manifest, arch, &what, blob);
    }
    bail!("image indexes are nested more than {MAX_DEPTH} deep")
}

fn parse<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("{what} is not valid"))
}

fn check_schema(version: u32, what: &str) -> Result<()> {
    if version != 2 {
        bail!("{what}: unsupported schemaVersion {version}");
    }
    Ok(())
}

fn is_index(d: &Descriptor, bytes: &[u8]) -> bool {
    if INDEX_TYPES.contains(&d.media_type.as_str()) {
        return true;
    }
    if !d.media_type.is_empty() {
        return false;
    }
    // No media type: an index has `manifests`, a manifest has `layers`.
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .is_some_and(|v| v.get("manifests").is_some())
}

fn noun(d: &Descriptor, bytes: &[u8]) -> &'static str {
    if is_index(d, bytes) {
        "image index"
    } else {
        "manifest"
    }
}

/// Pick the one descriptor of `doc` that is an image (or index) for
/// `linux/<arch>`. Entries without a platform (Fedora's single-image
/// index) qualify; several tags of the same manifest count once.
fn choose(candidates: &[Descriptor], arch: &str, doc: &str) -> Result<Descriptor> {
    let images: Vec<&Descriptor> = candidates
        .iter()
        .filter(|d| {
            d.media_type.is_empty()
                || INDEX_TYPES.contains(&d.media_type.as_str())
                || MANIFEST_TYPES.contains(&d.media_type.as_str())
        })
        .collect();
    let fits = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .map_or(true, |p| p.os == "linux" && p.architecture == arch)
    };
    let mut matching: Vec<&Descriptor> = Vec::new();
    for d in images.iter().copied().filter(fits) {
        if !matching.iter().any(|m| m.digest == d.digest) {
            matching.push(d);
        }
    }
    if matching.len() > 1 {
        // An entry naming this platform beats entries naming none.
        let explicit: Vec<&Descriptor> = matching
            .iter()
            .copied()
            .filter(|d| d.platform.is_some())
            .collect();
        if explicit.len() == 1 {
            matching = explicit;
        }
    }
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let found: Vec<String> = images
                .iter()
                .map(|d| match &d.platform {
                    Some(p) => format!("{}/{}", p.os, p.architecture),
                    None => d.describe(),
                })
                .collect();
            if found.is_empty() {
                bail!("{doc} lists no container image");
            }
            bail!(
                "{doc} has no image for linux/{arch} (it has {})",
                found.join(", ")
            )
        }
        many => bail!(
            "{doc} lists {} images for linux/{arch} and nothing to choose between them: {}",
            many.len(),
            many.iter()
                .map(|d| d.describe())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn image(
    manifest_desc: Descriptor,
    manifest: Manifest,
    arch: &str,
    what: &str,
    blob: &mut dyn FnMut(&Descriptor) -> Result<Vec<u8>>,
) -> Result<Image> {
    let config_desc = manifest.config;
    if !config_desc.media_type.is_empty()
        && !CONFIG_TYPES.contains(&config_desc.media_type.as_str())
    {
        bail!(
            "{what} is not a container image (its config is {})",
            config_desc.media_type
        );
    }
    if manifest.layers.is_empty() {
        bail!("{what} has no layers");
    }
    for layer in &manifest.layers {
        if !is_layer_type(&layer.media_type) {
            bail!(
                "{what}: layer {} has the unsupported media type {:?}",
                layer.digest,
                layer.media_type
            );
        }
        layer.sha256().with_context(|| format!("{what}: layer"))?;
    }
    let config_bytes = blob(&config_desc)?;
    let config: Config = parse(
        &config_bytes,
        &format!("image config {}", config_desc.digest),
    )?;
    let os = config.os.as_deref().unwrap_or("linux");
    let image_arch = config.architecture.as_deref().unwrap_or(arch);
    if os != "linux" || image_arch != arch {
        bail!("{what} is an image for {os}/{image_arch}, but this machine runs linux/{arch}");
    }
    Ok(Image {
        manifest: manifest_desc,
        config: config_desc,
        layers: manifest.layers,
    })
}

/// Layer media types whose content is a tar changeset (plain, gzip or
/// zstd; the compression itself is told from magic bytes when applying).
fn is_layer_type(media_type: &str) -> bool {
    let oci = media_type
        .strip_prefix("application/vnd.oci.image.layer.v1.")
        .or_else(|| {
            media_type.strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.")
        });
    if let Some(rest) = oci {
        return matches!(rest, "tar" | "tar+gzip" | "tar+zstd");
    }
    matches!(
        media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    )
}

impl std::fmt::Display for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {} layer{}",
            self.manifest.describe(),
            self.layers.len(),
            if self.layers.len() == 1 { "" } else { "s" }
        )
    }
}

/// A blob's content did not hash to its name.
pub fn digest_mismatch(hex: &str, actual: &str) -> anyhow::Error {
    anyhow!("blob sha256:{hex} does not match its digest (its content hashes to sha256:{actual})")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "28e20d822db81517f4fbb67292bf23e1b17131d8b51605c262a02b9b898b24a4";
    const LAYER: &str = "32b07b9a22d03d120489b279e0d0764e2945a00b566e1de536fb232e718c4dc4";
    const CONFIG: &str = "856c6718e99185c1e9d7d1ff9eac557283e0e49ecbfe362adfc5efa958550368";

    fn blobs(map: Vec<(&'static str, String)>) -> impl FnMut(&Descriptor) -> Result<Vec<u8>> {
        move |d: &Descriptor| {
            let hex = d.sha256()?;
            map.iter()
                .find(|(h, _)| *h == hex)
                .map(|(_, v)| v.clone().into_bytes())
                .ok_or_else(|| anyhow!("blob {} is missing", d.digest))
        }
    }

    fn config(arch: &str) -> String {
        format!(
            r#"{{"architecture":"{arch}","os":"linux","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","DISTTAG=f43container","FGC=f43","container=oci"],"Cmd":["/bin/bash"],"Labels":{{"license":"MIT","name":"fedora","vendor":"Fedora Project","version":"43"}}}},"rootfs":{{"type":"layers","diff_ids":["sha256:{LAYER}"]}},"history":[{{"created":"2025-10-24T06:32:14Z","created_by":"KIWI 10.2.33"}}]}}"#
        )
    }

    /// The shape of Fedora's Container Base index.json and manifest (as
    /// built by KIWI): an index without a top-level media type, one
    /// manifest descriptor with a ref name and no platform, one gzip layer.
    #[test]
    fn fedora_container_base_shape() {
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{MANIFEST}","size":504,"annotations":{{"org.opencontainers.image.ref.name":"43"}}}}]}}"#
        );
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{CONFIG}","size":858}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{LAYER}","size":50701616}}],"annotations":{{"org.opencontainers.image.created":"2025-10-24T06:32:14Z"}}}}"#
        );
        let mut fetch = blobs(vec![(MANIFEST, manifest), (CONFIG, config("amd64"))]);
        let image = resolve(index.as_bytes(), "amd64", &mut fetch).unwrap();
        assert_eq!(image.manifest.digest, format!("sha256:{MANIFEST}"));
        assert_eq!(image.manifest.size, 504);
        assert_eq!(image.manifest.ref_name(), Some("43"));
        assert_eq!(image.config.digest, format!("sha256:{CONFIG}"));
        assert_eq!(image.layers.len(), 1);
        assert_eq!(
            image.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(image.layers[0].sha256().unwrap(), LAYER);
        assert_eq!(image.layers[0].size, 50_701_616);
        assert_eq!(
            image.to_string(),
            format!("sha256:{MANIFEST} (43), 1 layer")
        );

        // The same image on another machine is refused by its config.
        let err = resolve(index.as_bytes(), "arm64", &mut fetch).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "manifest sha256:{MANIFEST} is an image for linux/amd64, but this machine runs linux/arm64"
            )
        );
    }

    #[test]
    fn manifest_list_picks_the_platform_and_skips_attestations() {
        let amd = "a".repeat(64);
        let arm = "b".repeat(64);
        let att = "c".repeat(64);
        let list = "d".repeat(64);
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:{list}","size":1,"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#
        );
        let nested = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{arm}","size":1,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{amd}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{att}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#
        );
        let manifest = |cfg: &str, layer: &str| {
            format!(
                r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{cfg}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"sha256:{layer}","size":1}}]}}"#
            )
        };
        let (cfg_amd, cfg_arm) = ("1".repeat(64), "2".repeat(64));
        let (layer_amd, layer_arm) = ("3".repeat(64), "4".repeat(64));
        let map: Vec<(&'static str, String)> = vec![
            (leak(&list), nested),
            (leak(&amd), manifest(&cfg_amd, &layer_amd)),
            (leak(&arm), manifest(&cfg_arm, &layer_arm)),
            (leak(&cfg_amd), config("amd64")),
            (leak(&cfg_arm), config("arm64")),
        ];
        let mut fetch = blobs(map);
        let image = resolve(index.as_bytes(), "amd64", &mut fetch).unwrap();
        assert_eq!(image.layers[0].sha256().unwrap(), layer_amd);
        let image = resolve(index.as_bytes(), "arm64", &mut fetch).unwrap();
        assert_eq!(image.layers[0].sha256().unwrap(), layer_arm);
        let err = resolve(index.as_bytes(), "s390x", &mut fetch).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "image index sha256:{list} has no image for linux/s390x (it has linux/arm64, linux/amd64, unknown/unknown)"
            )
        );
    }

    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_string().into_boxed_str())
    }

    #[test]
    fn tags_of_one_manifest_count_once_but_two_images_are_ambiguous() {
        let m = "e".repeat(64);
        let other = "f".repeat(64);
        let desc = |hex: &str, tag: &str| {
            format!(
                r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{hex}","size":1,"annotations":{{"org.opencontainers.image.ref.name":"{tag}"}}}}"#
            )
        };
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{}]}}"#,
            desc(&m, "43"),
            desc(&m, "latest")
        );
        let chosen = choose(
            &serde_json::from_str::<Index>(&index).unwrap().manifests,
            "amd64",
            "index.json",
        )
        .unwrap();
        assert_eq!(chosen.ref_name(), Some("43"));

        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{},{}]}}"#,
            desc(&m, "43"),
            desc(&other, "44")
        );
        let err = choose(
            &serde_json::from_str::<Index>(&index).unwrap().manifests,
            "amd64",
            "index.json",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "index.json lists 2 images for linux/amd64 and nothing to choose between them: sha256:{m} (43), sha256:{other} (44)"
            )
        );
    }

    #[test]
    fn digests_are_checked_before_use_as_file_names() {
        let ok = "0".repeat(64);
        assert_eq!(sha256_hex(&format!("sha256:{ok}")).unwrap(), ok);
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "0".repeat(63)),
            "sha256".to_string(),
        ] {
            let err = sha256_hex(&bad).unwrap_err();
            assert!(
                err.to_string().starts_with("malformed digest"),
                "{bad}: {err}"
            );
        }
        let err = sha256_hex(&format!("sha512:{}", "0".repeat(128))).unwrap_err();
        assert!(err.to_string().contains("only sha256"), "{err}");
    }

    #[test]
    fn layer_media_types() {
        for ok in [
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ] {
            assert!(is_layer_type(ok), "{ok}");
        }
        for bad in [
            "application/vnd.oci.image.layer.v1.tar+encrypted",
            "application/vnd.oci.image.config.v1+json",
            "",
        ] {
            assert!(!is_layer_type(bad), "{bad}");
        }
    }

    #[test]
    fn layout_versions() {
        check_layout(br#"{"imageLayoutVersion": "1.0.0"}"#).unwrap();
        let err = check_layout(br#"{"imageLayoutVersion": "2.0.0"}"#).unwrap_err();
        assert!(err.to_string().contains("2.0.0"), "{err}");
        assert!(check_layout(b"{}").is_err());
    }
}
