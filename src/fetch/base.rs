//! From a spec's `base:` to a verified archive on disk.
//!
//! A base is one of: an archive named by `url` or `path` (with `sha256` or
//! `checksum_url`); Fedora's published Container Base derived from
//! `distro: fedora` + `release` (URLs from the mirror layout, CHECKSUM
//! signature required); or, for `distro: debian` with neither, a root made
//! by debootstrap and cached as a tarball. `plan` decides which without
//! touching the network, so spec mistakes are reported before any work.

use std::path::PathBuf;

use anyhow::{bail, Result};

use super::debootstrap::{self, Debootstrap};
use super::{fedora, Consumer, Fetcher, Source};
use crate::distro::BaseSource;
use crate::spec::{Distro, LoadedSpec};

/// Command-line replacements for the spec's base.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// A URL or path used instead of the spec's base.
    pub location: Option<String>,
    pub sha256: Option<String>,
    pub checksum_url: Option<String>,
}

/// How a base is obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// A given archive.
    Archive(Source),
    /// Fedora's Container Base; `compose: None` means read it from the
    /// mirror's folder listing.
    Fedora {
        mirror: String,
        release: String,
        compose: Option<String>,
    },
    Debootstrap(Debootstrap),
}

impl Plan {
    /// One line for the log.
    pub fn describe(&self) -> String {
        match self {
            Plan::Archive(s) => s.location.clone(),
            Plan::Fedora {
                release, compose, ..
            } => format!(
                "Fedora {release} Container Base (compose {})",
                compose.as_deref().unwrap_or("from the mirror listing")
            ),
            Plan::Debootstrap(d) => {
                format!("Debian {} by debootstrap from {}", d.release, d.mirror)
            }
        }
    }
}

/// The archive a plan produced.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub path: PathBuf,
    /// False only for a local archive given without any checksum.
    pub verified: bool,
    pub location: String,
}

/// Decide how the base of `loaded` is obtained.
pub fn plan(loaded: &LoadedSpec, overrides: &Overrides) -> Result<Plan> {
    let b = &loaded.spec.base;
    if let Some(location) = &overrides.location {
        // An override replaces the spec's checksum too: the spec's digest
        // belongs to the spec's file.
        return Ok(Plan::Archive(Source {
            location: location.clone(),
            sha256: overrides.sha256.clone(),
            checksum_url: overrides.checksum_url.clone(),
            require_signature: false,
        }));
    }
    let from_spec = |location: String| Source {
        location,
        sha256: overrides.sha256.clone().or_else(|| b.sha256.clone()),
        checksum_url: overrides
            .checksum_url
            .clone()
            .or_else(|| b.checksum_url.clone()),
        require_signature: false,
    };
    match (&b.url, &b.path, b.distro.facts().base) {
        (Some(u), _, _) => Ok(Plan::Archive(from_spec(u.clone()))),
        (None, Some(p), _) => Ok(Plan::Archive(from_spec(
            loaded.resolve(p).display().to_string(),
        ))),
        (None, None, BaseSource::Compose) => Ok(Plan::Fedora {
            mirror: b
                .mirror
                .clone()
                .unwrap_or_else(|| fedora::DEFAULT_MIRROR.to_string()),
            release: b.release.clone(),
            compose: b
                .compose
                .clone()
                .or_else(|| fedora::known_compose(&b.release).map(str::to_string)),
        }),
        (None, None, BaseSource::Debootstrap) => Ok(Plan::Debootstrap(Debootstrap::new(
            &b.release,
            b.mirror.as_deref(),
            &b.include,
        )?)),
    }
}

/// Carry out a plan: download and verify, or debootstrap, into the cache.
pub fn fetch(fetcher: &Fetcher, plan: &Plan) -> Result<Fetched> {
    Ok(fetch_streaming(fetcher, plan, None)?.0)
}

/// `fetch`, with a download read by `consume` while it arrives; the flag
/// says whether that happened (see `Fetcher::fetch_streaming`).
pub fn fetch_streaming(
    fetcher: &Fetcher,
    plan: &Plan,
    consume: Option<Consumer<'_>>,
) -> Result<(Fetched, bool)> {
    match plan {
        Plan::Archive(src) => {
            let (path, consumed) = fetcher.fetch_streaming(src, consume)?;
            Ok((
                Fetched {
                    path,
                    verified: src.sha256.is_some() || src.checksum_url.is_some(),
                    location: src.location.clone(),
                },
                consumed,
            ))
        }
        Plan::Fedora {
            mirror,
            release,
            compose,
        } => {
            let arch = Distro::Fedora.arch();
            let compose = match compose {
                Some(c) => c.clone(),
                None => {
                    if fetcher.is_offline() {
                        bail!(
                            "Fedora {release}: no known compose id and downloads are off \
                             (offline); set base.compose"
                        );
                    }
                    let dir = fedora::images_dir(mirror, release, arch);
                    let html = fetcher.get_text(&dir)?;
                    fedora::compose_from_listing(&html, release, arch).map_err(|e| {
                        e.context(format!("finding Fedora {release}'s compose in {dir}"))
                    })?
                }
            };
            let src = fedora::source(mirror, release, &compose, arch)?;
            let (path, consumed) = fetcher.fetch_streaming(&src, consume)?;
            Ok((
                Fetched {
                    path,
                    verified: true,
                    location: src.location,
                },
                consumed,
            ))
        }
        Plan::Debootstrap(d) => Ok((
            Fetched {
                path: debootstrap::base_tarball(fetcher, d)?,
                // Made here from the archive's signed indexes; nothing to
                // check against afterwards.
                verified: true,
                location: d.tarball(fetcher.cache_dir()).display().to_string(),
            },
            false,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec;
    use std::path::Path;

    fn loaded(base: &str) -> LoadedSpec {
        let text = format!("name: t\nlabel: T\nbase:\n{base}");
        LoadedSpec {
            spec: spec::parse(&text).unwrap(),
            file: PathBuf::from("/specs/t.yaml"),
            dir: PathBuf::from("/specs"),
        }
    }

    #[test]
    fn fedora_without_url_is_derived() {
        let p = plan(
            &loaded("  distro: fedora\n  release: \"43\"\n"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            p,
            Plan::Fedora {
                mirror: fedora::DEFAULT_MIRROR.into(),
                release: "43".into(),
                compose: Some("1.6".into())
            }
        );
        let p = plan(
            &loaded("  distro: fedora\n  release: \"46\"\n  mirror: http://m/fedora\n"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            p,
            Plan::Fedora {
                mirror: "http://m/fedora".into(),
                release: "46".into(),
                compose: None
            }
        );
    }

    #[test]
    fn debian_without_url_is_debootstrapped() {
        let p = plan(
            &loaded("  distro: debian\n  release: bookworm\n  include: [ca-certificates]\n"),
            &Overrides::default(),
        )
        .unwrap();
        let Plan::Debootstrap(d) = p else {
            panic!("{p:?}")
        };
        assert_eq!(d.mirror, debootstrap::DEFAULT_MIRROR);
        assert_eq!(d.include, vec!["ca-certificates"]);
        let tarball = d.tarball(Path::new("/c")).display().to_string();
        assert!(tarball.starts_with("/c/debootstrap/bookworm-"), "{tarball}");
    }

    #[test]
    fn overrides_replace_the_spec_checksum() {
        let l = loaded(
            "  distro: debian\n  release: bookworm\n  path: base.tar\n  sha256: \
             0000000000000000000000000000000000000000000000000000000000000000\n",
        );
        let Plan::Archive(s) = plan(&l, &Overrides::default()).unwrap() else {
            panic!()
        };
        assert_eq!(s.location, "/specs/base.tar");
        assert!(s.sha256.is_some());
        let o = Overrides {
            location: Some("/x.tar".into()),
            ..Overrides::default()
        };
        let Plan::Archive(s) = plan(&l, &o).unwrap() else {
            panic!()
        };
        assert_eq!(s.location, "/x.tar");
        assert_eq!(s.sha256, None);
    }
}
