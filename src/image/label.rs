//! Volume labels, checked once where they enter (the spec, `assemble
//! --label`) and carried as types from there: the ISO9660 volume id the
//! boot finds the medium by (`search --label`, `root=live:CDLABEL=`), and
//! the ext4 label of the persistence partition derived from it or given.

use std::fmt;

use anyhow::{bail, Error, Result};

/// What both label types share: reading one as a string, parsing one from
/// a string through its `new` (serde's `try_from`), and printing it.
macro_rules! label_impls {
    ($t:ident) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $t {
            type Error = Error;
            fn try_from(s: String) -> Result<$t> {
                $t::new(s)
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

/// The ISO9660 volume id: 1 to 32 of A-Z, 0-9, '_' and '-'.
///
/// ISO9660 volume ids are d-characters (A-Z, 0-9, '_'); '-' is accepted by
/// every reader in practice (Fedora's labels use it) and by udev's
/// /dev/disk/by-label, which dracut's `CDLABEL=` looks up. The label is
/// written as given: dracut matches it case-sensitively, so a lowercase
/// label is refused rather than silently uppercased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct VolumeLabel(String);

impl VolumeLabel {
    /// Longest volume id: the PVD's field is 32 bytes.
    pub const MAX: usize = 32;

    pub fn new(label: impl Into<String>) -> Result<VolumeLabel> {
        let label = label.into();
        if !fits(&label, Self::MAX, |b| {
            b.is_ascii_uppercase() || b.is_ascii_digit()
        }) {
            bail!("label {label:?}: use 1 to 32 of A-Z, 0-9, '_' and '-' (an ISO9660 volume id)");
        }
        Ok(VolumeLabel(label))
    }

    /// The persistence partition's default ext4 label: the first 8
    /// characters plus "-PERSIST", which fills ext4's 16 bytes exactly
    /// (`UCL-MINIMAL` -> `UCL-MINI-PERSIST`). A '-' or '_' cut at the end
    /// of the 8 is dropped so the result never reads `UCL--PERSIST`.
    pub fn persistence(&self) -> PersistLabel {
        let head = &self.0[..self.0.len().min(8)];
        // Always valid: the volume id's characters are a subset of ext4's,
        // and 8 + 8 bytes is the limit.
        PersistLabel(format!("{}-PERSIST", head.trim_end_matches(['-', '_'])))
    }
}

/// The ext4 label of the persistence partition: 1 to 16 of A-Z, a-z, 0-9,
/// '-' and '_' (ext4 holds 16 bytes; these characters need no quoting on
/// the kernel command line, in `rd.live.overlay=LABEL=`, or in grub.cfg).
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct PersistLabel(String);

impl PersistLabel {
    /// Longest ext4 label: the superblock's field is 16 bytes.
    pub const MAX: usize = 16;

    pub fn new(label: impl Into<String>) -> Result<PersistLabel> {
        let label = label.into();
        if !fits(&label, Self::MAX, |b| b.is_ascii_alphanumeric()) {
            bail!("persistence.label {label:?}: use 1 to 16 of A-Z, a-z, 0-9, '-' and '_' (an ext4 label)");
        }
        Ok(PersistLabel(label))
    }
}

label_impls!(VolumeLabel);
label_impls!(PersistLabel);

/// 1 to `max` bytes, each `allowed` or one of '-' and '_' (both labels'
/// separators).
fn fits(label: &str, max: usize, allowed: impl Fn(u8) -> bool) -> bool {
    (1..=max).contains(&label.len()) && label.bytes().all(|b| allowed(b) || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_labels_are_d_characters_and_dash() {
        for ok in ["UCL_LIVE-43", "A", &"A".repeat(32)] {
            assert_eq!(VolumeLabel::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "lower", "HAS SPACE", "DOT.TED", &"A".repeat(33), "ÜNÏ"] {
            let e = VolumeLabel::new(bad).unwrap_err().to_string();
            assert!(e.contains("1 to 32 of A-Z, 0-9, '_' and '-'"), "{e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn persistence_labels_are_ext4_labels() {
        for ok in ["P1", "Persist_data-1", &"p".repeat(16)] {
            assert!(PersistLabel::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "MUCH-TOO-LONG-LABEL", "has space", "a=b"] {
            let e = PersistLabel::new(bad).unwrap_err().to_string();
            assert!(
                e.contains("persistence.label") && e.contains("1 to 16"),
                "{e}"
            );
        }
    }

    #[test]
    fn derived_persistence_labels_are_valid() {
        let derive = |l: &str| VolumeLabel::new(l).unwrap().persistence();
        assert_eq!(derive("UCL-MINIMAL").as_str(), "UCL-MINI-PERSIST");
        assert_eq!(derive("UCL").as_str(), "UCL-PERSIST");
        assert_eq!(derive("UCL_----X").as_str(), "UCL-PERSIST");
        assert_eq!(derive("--------").as_str(), "-PERSIST");
        for l in ["UCL-MINIMAL", "A", &"Z".repeat(32), "--------", "ABCDEFGH"] {
            let p = derive(l);
            assert_eq!(PersistLabel::new(p.as_str()).unwrap(), p, "{l}");
        }
    }

    #[test]
    fn labels_parse_from_yaml_with_the_rule_in_the_error() {
        #[derive(serde::Deserialize, Debug)]
        struct T {
            label: VolumeLabel,
        }
        let t: T = serde_saphyr::from_str("label: UCL-X\n").unwrap();
        assert_eq!(t.label.as_str(), "UCL-X");
        let e = serde_saphyr::from_str::<T>("label: ucl-x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"ucl-x\": use 1 to 32 of A-Z"), "{e}");
    }
}
