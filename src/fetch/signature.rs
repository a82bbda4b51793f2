//! OpenPGP verification of clearsigned checksum lists, in pure Rust.
//!
//! Fedora publishes its image digests in a `CHECKSUM` file that is a
//! clearsigned OpenPGP message made with the release's primary key. The
//! digests are only as trustworthy as that signature, so a clearsigned list
//! is verified against a keyring before any of its lines is used, and only
//! the *signed* text is parsed afterwards: lines an attacker added around
//! the signed block (before the armor header or after the signature) never
//! count.
//!
//! The keyring starts with Fedora's release keys, shipped in
//! `src/fetch/keys/` and compiled in (their fingerprints and provenance are
//! listed in docs/fetch.md and checked by a unit test), so verification
//! needs neither gpg nor a network key server.

use anyhow::{anyhow, bail, Context, Result};
use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};
use pgp::types::KeyDetails;

/// Fedora's primary release keys: (file name, armored public key).
const FEDORA_KEYS: &[(&str, &str)] = &[
    (
        "RPM-GPG-KEY-fedora-42-primary",
        include_str!("keys/RPM-GPG-KEY-fedora-42-primary"),
    ),
    (
        "RPM-GPG-KEY-fedora-43-primary",
        include_str!("keys/RPM-GPG-KEY-fedora-43-primary"),
    ),
    (
        "RPM-GPG-KEY-fedora-44-primary",
        include_str!("keys/RPM-GPG-KEY-fedora-44-primary"),
    ),
    (
        "RPM-GPG-KEY-fedora-45-primary",
        include_str!("keys/RPM-GPG-KEY-fedora-45-primary"),
    ),
];

/// One trusted public key and the name it is reported by.
#[derive(Clone, Debug)]
struct Trusted {
    name: String,
    key: SignedPublicKey,
}

/// The public keys a signed checksum list may be signed by.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<Trusted>,
}

impl Keyring {
    /// No keys: every signature is by an unknown key.
    pub fn empty() -> Self {
        Keyring::default()
    }

    /// Fedora's release keys shipped with the tool.
    pub fn fedora() -> Result<Self> {
        let mut ring = Keyring::empty();
        for (name, armored) in FEDORA_KEYS {
            ring.add_armored(name, armored)
                .with_context(|| format!("built-in key {name}"))?;
        }
        Ok(ring)
    }

    /// Trust one more ASCII-armored public key (a private mirror's own key,
    /// or a test key). `name` is what messages call it.
    pub fn add_armored(&mut self, name: &str, armored: &str) -> Result<()> {
        let (key, _) = SignedPublicKey::from_string(armored)
            .map_err(|e| anyhow!("reading public key {name}: {e}"))?;
        // A key whose self-signatures do not verify is damaged or forged.
        key.verify_bindings()
            .map_err(|e| anyhow!("public key {name} has invalid self-signatures: {e}"))?;
        self.keys.push(Trusted {
            name: name.to_string(),
            key,
        });
        Ok(())
    }

    /// `(name, fingerprint in upper-case hex)` of every trusted primary key.
    pub fn fingerprints(&self) -> Vec<(String, String)> {
        self.keys
            .iter()
            .map(|t| (t.name.clone(), format!("{:X}", t.key.fingerprint())))
            .collect()
    }
}

/// Whether a checksum list is clearsigned: its first non-blank line is the
/// cleartext armor header.
pub fn is_clearsigned(text: &str) -> bool {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l == "-----BEGIN PGP SIGNED MESSAGE-----")
}

/// The signed text of a clearsigned message and the name of the key that
/// signed it (`None` when the signature was not checked).
#[derive(Clone, Debug)]
pub struct SignedText {
    pub text: String,
    pub signer: Option<String>,
}

/// Verify a clearsigned message against `keyring` and return its signed
/// text (dash-escaping undone). `what` names the file in errors.
pub fn verify_clearsigned(text: &str, keyring: &Keyring, what: &str) -> Result<SignedText> {
    let msg = parse(text, what)?;
    let signatures = msg.signatures();
    if signatures.is_empty() {
        bail!("{what}: the signed message carries no signature");
    }
    let mut issuers: Vec<String> = Vec::new();
    let mut matched: Vec<&str> = Vec::new();
    for sig in signatures {
        let fprs = sig.issuer_fingerprint();
        let ids = sig.issuer_key_id();
        issuers.extend(fprs.iter().map(|f| format!("{f:X}")));
        if fprs.is_empty() {
            issuers.extend(ids.iter().map(|id| hex::encode_upper(id.as_ref())));
        }
        for trusted in &keyring.keys {
            // The primary key and its subkeys: a signing subkey is as good
            // as the primary when the key binds it.
            let primary = (trusted.key.fingerprint(), trusted.key.legacy_key_id(), None);
            let subs = trusted
                .key
                .public_subkeys
                .iter()
                .map(|s| (s.key.fingerprint(), s.key.legacy_key_id(), Some(s)));
            for (fpr, id, sub) in std::iter::once(primary).chain(subs) {
                let named = fprs.iter().any(|f| f.as_bytes() == fpr.as_bytes())
                    || ids.iter().any(|i| i.as_ref() == id.as_ref());
                if !named {
                    continue;
                }
                matched.push(&trusted.name);
                let ok = match sub {
                    None => sig.verify(&trusted.key, msg.signed_text().as_bytes()),
                    Some(s) => sig.verify(&s.key, msg.signed_text().as_bytes()),
                };
                if ok.is_ok() {
                    return Ok(SignedText {
                        text: msg.signed_text(),
                        signer: Some(trusted.name.clone()),
                    });
                }
            }
        }
    }
    issuers.sort();
    issuers.dedup();
    if matched.is_empty() {
        bail!(
            "{what}: signed by an unknown key ({}); trusted keys: {}",
            if issuers.is_empty() {
                "no issuer given".to_string()
            } else {
                issuers.join(", ")
            },
            keyring
                .keys
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    matched.dedup();
    bail!(
        "{what}: BAD signature by {}: the file was changed after it was signed",
        matched.join(", ")
    )
}

/// The signed text without checking the signature (only for
/// `--insecure-skip-signature`).
pub fn signed_text_unverified(text: &str, what: &str) -> Result<SignedText> {
    let msg = parse(text, what)?;
    Ok(SignedText {
        text: msg.signed_text(),
        signer: None,
    })
}

fn parse(text: &str, what: &str) -> Result<CleartextSignedMessage> {
    // pgp's parser wants the armor header first; a list may have blank
    // lines before it.
    let start = text
        .find("-----BEGIN PGP SIGNED MESSAGE-----")
        .with_context(|| format!("{what}: not a clearsigned message"))?;
    let (msg, _) = CleartextSignedMessage::from_string(&text[start..])
        .map_err(|e| anyhow!("{what}: unreadable clearsigned message: {e}"))?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fingerprints as Fedora publishes them (fedoraproject.org/security),
    /// recorded with provenance in docs/fetch.md. A changed key file must
    /// fail here rather than silently widen what is trusted.
    #[test]
    fn shipped_fedora_keys_have_the_published_fingerprints() {
        let ring = Keyring::fedora().expect("built-in keys parse");
        assert_eq!(
            ring.fingerprints(),
            vec![
                (
                    "RPM-GPG-KEY-fedora-42-primary".to_string(),
                    "B0F4950458F69E1150C6C5EDC8AC4916105EF944".to_string()
                ),
                (
                    "RPM-GPG-KEY-fedora-43-primary".to_string(),
                    "C6E7F081CF80E13146676E88829B606631645531".to_string()
                ),
                (
                    "RPM-GPG-KEY-fedora-44-primary".to_string(),
                    "36F612DCF27F7D1A48A835E4DBFCF71C6D9F90A6".to_string()
                ),
                (
                    "RPM-GPG-KEY-fedora-45-primary".to_string(),
                    "4F50A6114CD5C6976A7F1179655A4B02F577861E".to_string()
                ),
            ]
        );
    }

    #[test]
    fn clearsigned_is_told_by_its_first_line() {
        assert!(is_clearsigned(
            "\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\n"
        ));
        assert!(!is_clearsigned("abc  file\n"));
        assert!(!is_clearsigned(
            "# -----BEGIN PGP SIGNED MESSAGE-----\nabc  file\n"
        ));
    }

    #[test]
    fn a_damaged_message_is_named() {
        let err = verify_clearsigned(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nx\n",
            &Keyring::fedora().unwrap(),
            "CHECKSUM",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("CHECKSUM: "), "{msg}");
    }
}
