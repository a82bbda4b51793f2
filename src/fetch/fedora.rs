//! Fedora's published Container Base: where it lives on a mirror.
//!
//! Fedora publishes, per release, `Fedora-Container-Base-Generic-<N>-<compose>.<arch>.oci.tar.xz`
//! and a clearsigned `Fedora-Container-<N>-<compose>-<arch>-CHECKSUM` in
//! `<mirror>/releases/<N>/Container/<arch>/images/`. The compose id (`1.6`)
//! is not derivable from the release number. The choice made here: a table
//! of the composes of known releases (reproducible, works offline from the
//! cache, no HTML scraping in the normal case); `base.compose` overrides
//! it; and only a release missing from the table with no `compose` given
//! falls back to reading the mirror's folder listing for the CHECKSUM file.

use anyhow::{bail, Context, Result};

use super::Source;

/// Where `dl.fedoraproject.org` keeps released Fedora; any mirror with the
/// same layout works (`base.mirror`).
pub const DEFAULT_MIRROR: &str = "https://dl.fedoraproject.org/pub/fedora/linux";

/// Compose ids of the final (GA) Container Base images. A release's GA
/// compose never changes once published.
const KNOWN_COMPOSES: &[(&str, &str)] =
    &[("41", "1.4"), ("42", "1.1"), ("43", "1.6"), ("44", "1.7")];

/// The compose id of release `release`'s published images, when known.
pub fn known_compose(release: &str) -> Option<&'static str> {
    KNOWN_COMPOSES
        .iter()
        .find(|(r, _)| *r == release)
        .map(|(_, c)| *c)
}

/// `<mirror>/releases/<N>/Container/<arch>/images/`
pub fn images_dir(mirror: &str, release: &str, arch: &str) -> String {
    format!(
        "{}/releases/{release}/Container/{arch}/images/",
        mirror.trim_end_matches('/')
    )
}

pub fn image_name(release: &str, compose: &str, arch: &str) -> String {
    format!("Fedora-Container-Base-Generic-{release}-{compose}.{arch}.oci.tar.xz")
}

pub fn checksum_name(release: &str, compose: &str, arch: &str) -> String {
    format!("Fedora-Container-{release}-{compose}-{arch}-CHECKSUM")
}

/// The verified source of release `release`'s Container Base. The
/// CHECKSUM must carry a good signature by a shipped Fedora key.
pub fn source(mirror: &str, release: &str, compose: &str, arch: &str) -> Result<Source> {
    check_release(release)?;
    if compose.is_empty() || !compose.chars().all(|c| c.is_ascii_digit() || c == '.') {
        bail!("base.compose {compose:?} is not a Fedora compose id such as 1.6");
    }
    let dir = images_dir(mirror, release, arch);
    Ok(
        Source::new(format!("{dir}{}", image_name(release, compose, arch)))
            .checksum_url(format!("{dir}{}", checksum_name(release, compose, arch)))
            .require_signature(true),
    )
}

fn check_release(release: &str) -> Result<()> {
    if release.is_empty() || !release.chars().all(|c| c.is_ascii_digit()) {
        bail!(
            "base.release {release:?}: a Fedora base without url needs a release number such as 43"
        );
    }
    Ok(())
}

/// The compose id named by the CHECKSUM link in an HTML folder listing
/// (Apache and nginx autoindex both show `href="<name>"`). Several composes
/// in one folder (respins) resolve to the newest.
pub fn compose_from_listing(html: &str, release: &str, arch: &str) -> Result<String> {
    check_release(release)?;
    let prefix = format!("Fedora-Container-{release}-");
    let suffix = format!("-{arch}-CHECKSUM");
    let mut found: Vec<String> = html
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| href.rsplit('/').next().unwrap_or(href))
        .filter_map(|name| name.strip_prefix(&prefix)?.strip_suffix(&suffix))
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || ch == '.'))
        .map(str::to_string)
        .collect();
    found.sort_by_key(|c| version_key(c));
    found
        .pop()
        .with_context(|| format!("the folder listing has no {prefix}<compose>{suffix}"))
}

/// `1.10` sorts after `1.9`.
fn version_key(s: &str) -> Vec<u64> {
    s.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_urls_follow_fedoras_layout() {
        let s = source(DEFAULT_MIRROR, "43", "1.6", "x86_64").unwrap();
        assert_eq!(
            s.location,
            "https://dl.fedoraproject.org/pub/fedora/linux/releases/43/Container/x86_64/images/Fedora-Container-Base-Generic-43-1.6.x86_64.oci.tar.xz"
        );
        assert_eq!(
            s.checksum_url.as_deref(),
            Some("https://dl.fedoraproject.org/pub/fedora/linux/releases/43/Container/x86_64/images/Fedora-Container-43-1.6-x86_64-CHECKSUM")
        );
        assert!(s.require_signature);
        let s = source("http://mirror.example/fedora/", "42", "1.1", "x86_64").unwrap();
        assert!(s
            .location
            .starts_with("http://mirror.example/fedora/releases/42/Container/"));
        assert!(source(DEFAULT_MIRROR, "rawhide", "1.1", "x86_64").is_err());
        assert!(source(DEFAULT_MIRROR, "43", "../x", "x86_64").is_err());
    }

    #[test]
    fn known_composes() {
        assert_eq!(known_compose("43"), Some("1.6"));
        assert_eq!(known_compose("99"), None);
    }

    #[test]
    fn compose_is_read_from_an_autoindex_listing() {
        // The shape of an Apache autoindex page of that folder.
        let html = r#"<html><body><h1>Index of /pub/fedora/linux/releases/44/Container/x86_64/images</h1>
<pre><a href="?C=N;O=D">Name</a> <a href="/pub/fedora/linux/releases/44/Container/x86_64/">Parent Directory</a>
<a href="Fedora-Container-44-1.2-x86_64-CHECKSUM">Fedora-Container-44-1.2-x86_64-CHECKSUM</a> 2026-04-10 12:00  1.2K
<a href="Fedora-Container-44-1.10-x86_64-CHECKSUM">Fedora-Container-44-1.10-x86_64-CHECKSUM</a> 2026-04-11 12:00  1.2K
<a href="Fedora-Container-Base-Generic-44-1.10.x86_64.oci.tar.xz">Fedora-Container-Base-Generic-44-1.10.x86_64.oci.tar.xz</a> 2026-04-11 12:00   48M
<a href="Fedora-Container-44-1.3-aarch64-CHECKSUM">x</a>
</pre></body></html>"#;
        assert_eq!(compose_from_listing(html, "44", "x86_64").unwrap(), "1.10");
        let err = compose_from_listing(html, "45", "x86_64").unwrap_err();
        assert!(
            format!("{err:#}").contains("Fedora-Container-45-"),
            "{err:#}"
        );
    }
}
