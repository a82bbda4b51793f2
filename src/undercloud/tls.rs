//! Ironic's API over HTTPS (`ironic.tls` in `undercloud.yaml`): the
//! operator's certificate and key, checked before anything is written, or
//! a self-signed one made at first boot and kept under /var/lib (which the
//! persistence partition carries), as Bifrost's `enable_tls` and Metal3's
//! ironic-image make one when given none.
//!
//! Either way Ironic reads a copy written at every boot under
//! /etc/ironic/tls (the key root:ironic 0640, as the htpasswd file), so the
//! operator's files may sit on the ESP (FAT: no owners or modes) and the
//! kept key stays root's alone. The certificate's SHA-256 fingerprint is
//! on the console at every boot: a client that cannot be handed the
//! certificate can compare it.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};

use super::configure::{in_root, write_file};

/// The certificate Ironic serves and clients trust (0644).
pub const CERT_FILE: &str = "/etc/ironic/tls/ironic.crt";
/// Its key, for Ironic only (root:ironic 0640).
pub const KEY_FILE: &str = "/etc/ironic/tls/ironic.key";
/// The self-signed pair, kept across boots: the key root only (0600).
pub const KEPT_CERT: &str = "var/lib/undercloud/tls/ironic.crt";
pub const KEPT_KEY: &str = "var/lib/undercloud/tls/ironic.key";

/// A certificate (chain) and its key, checked to belong together.
#[derive(Clone, PartialEq, Eq)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
    /// The first (server's own) certificate, DER.
    pub leaf: Vec<u8>,
}

impl std::fmt::Debug for Pair {
    // Never the key, in any log or panic message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pair {{ fingerprint: {}, .. }}", self.fingerprint())
    }
}

impl Pair {
    /// Parse PEM text: one or more certificates (the server's first), one
    /// private key (PKCS#8, PKCS#1 or SEC1) whose public key is the first
    /// certificate's.
    pub fn parse(cert_pem: &[u8], key_pem: &[u8]) -> Result<Pair> {
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("the certificate is not PEM: {e}"))?;
        let Some(leaf) = certs.first() else {
            bail!("no PEM certificate (-----BEGIN CERTIFICATE-----) in the certificate file");
        };
        rustls::server::ParsedCertificate::try_from(leaf)
            .map_err(|e| anyhow::anyhow!("the certificate does not parse: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| anyhow::anyhow!("no PEM private key in the key file: {e}"))?;
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| anyhow::anyhow!("the private key is not usable: {e}"))?;
        let ck = rustls::sign::CertifiedKey::new(certs.clone(), signer);
        match ck.keys_match() {
            Ok(()) => {}
            // The key type cannot tell its public key: nothing to compare.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => bail!("the key is not the certificate's (their public keys differ)"),
        }
        Ok(Pair {
            cert_pem: text(cert_pem, "certificate")?,
            key_pem: text(key_pem, "key")?,
            leaf: leaf.to_vec(),
        })
    }

    /// SHA-256 of the server's certificate, as `openssl x509 -fingerprint
    /// -sha256` prints it (AB:CD:...).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.leaf)
    }

    /// Whether the server's certificate names `host` (an IP address or a
    /// DNS name) among its subject alternative names.
    pub fn valid_for(&self, host: &str) -> bool {
        let der = CertificateDer::from(self.leaf.as_slice());
        let (Ok(cert), Ok(name)) = (
            rustls::server::ParsedCertificate::try_from(&der),
            ServerName::try_from(host),
        ) else {
            return false;
        };
        rustls::client::verify_server_name(&cert, &name).is_ok()
    }
}

fn text(pem: &[u8], what: &str) -> Result<String> {
    String::from_utf8(pem.to_vec()).with_context(|| format!("the {what} file is not text"))
}

/// `AB:CD:...`: SHA-256 of DER bytes, upper-case hex pairs.
pub fn fingerprint(der: &[u8]) -> String {
    let hex = hex::encode_upper(Sha256::digest(der));
    let pairs: Vec<&str> = (0..hex.len()).step_by(2).map(|i| &hex[i..i + 2]).collect();
    pairs.join(":")
}

/// The certificates an API client in the image trusts besides the system's:
/// the file `OS_CACERT` names (a sourced undercloudrc), and the endpoints
/// file's `cacert=` (the API's own certificate, written by `configure`).
/// Verification is never turned off; an unreadable file is an error, not
/// a client that trusts less and fails later with a vaguer one.
pub fn client_roots(
    os_cacert: Option<&str>,
    endpoints: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<reqwest::Certificate>> {
    let mut roots = Vec::new();
    let files = [
        (os_cacert, "OS_CACERT"),
        (
            endpoints.get("cacert").map(String::as_str),
            "cacert= in /etc/undercloud/endpoints",
        ),
    ];
    for (file, named_by) in files {
        let Some(file) = file.filter(|f| !f.is_empty()) else {
            continue;
        };
        let pem = crate::io::read_bounded(Path::new(file), crate::io::MIB, "certificate file")
            .with_context(|| format!("the API's certificate ({named_by})"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|c| !c.is_empty())
            .with_context(|| format!("{file} ({named_by}): no PEM certificate in it"))?;
        roots.extend(certs);
    }
    Ok(roots)
}

/// [`client_roots`] with this process's `OS_CACERT`.
pub fn client_roots_here(
    endpoints: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<reqwest::Certificate>> {
    client_roots(std::env::var("OS_CACERT").ok().as_deref(), endpoints)
}

/// Where the self-signed pair came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Kept,
    /// Made now: first boot, or the kept one was unusable or did not name
    /// the undercloud any more (another `provisioning.address`).
    Generated,
}

/// The names a self-signed certificate is made for: the provisioning
/// address (where nodes and the operator's clients call), the host name,
/// and 127.0.0.1 / localhost (the undercloud's own tools).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub address: Ipv4Addr,
    pub hostname: Option<String>,
}

impl Names {
    fn all(&self) -> Vec<String> {
        let mut v = vec![
            self.address.to_string(),
            "127.0.0.1".to_string(),
            "localhost".to_string(),
        ];
        v.extend(self.hostname.clone());
        v
    }
}

/// The root's host name, when it is one a certificate can name.
pub fn hostname(root: &Path) -> Option<String> {
    let file = in_root(root, "/etc/hostname").ok()?;
    let name = fs::read_to_string(file).ok()?.trim().to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "localhost"
        && ServerName::try_from(name.as_str()).is_ok_and(|n| matches!(n, ServerName::DnsName(_)));
    ok.then_some(name)
}

/// The kept self-signed pair when it still names `names`, else a new one
/// (written to the kept files: the key 0600, root's).
pub fn self_signed(root: &Path, names: &Names) -> Result<(Pair, Origin)> {
    let cert_path = in_root(root, KEPT_CERT)?;
    let key_path = in_root(root, KEPT_KEY)?;
    if let (Ok(c), Ok(k)) = (fs::read(&cert_path), fs::read(&key_path)) {
        if let Ok(pair) = Pair::parse(&c, &k) {
            if names.all().iter().all(|n| pair.valid_for(n)) {
                return Ok((pair, Origin::Kept));
            }
        }
    }
    let pair = generate(names)?;
    // The key first: a crash between the two leaves a pair that does not
    // match, which the next boot replaces.
    write_file(&key_path, pair.key_pem.as_bytes(), 0o600, 0, 0)?;
    write_file(&cert_path, pair.cert_pem.as_bytes(), 0o644, 0, 0)?;
    Ok((pair, Origin::Generated))
}

/// A new ECDSA P-256 key and a certificate for `names`, signed by itself.
/// Its validity is rcgen's default, 1975 to 4096: a live stick boots on
/// machines whose clocks may be years off, and nothing renews it.
pub fn generate(names: &Names) -> Result<Pair> {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    let key = KeyPair::generate().context("making a TLS key")?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "undercloud-live Ironic API");
    params.subject_alt_names = vec![
        SanType::IpAddress(names.address.into()),
        SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
        SanType::DnsName("localhost".try_into().context("naming localhost")?),
    ];
    if let Some(h) = &names.hostname {
        let name = h
            .as_str()
            .try_into()
            .with_context(|| format!("naming {h} in the certificate"))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    let cert = params
        .self_signed(&key)
        .context("signing the TLS certificate")?;
    Pair::parse(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
}

/// A TLS server on 127.0.0.1 serving `pair`, for client tests: every
/// request gets 200 and `{"id": "v1"}`, then the connection closes. Runs
/// until the test process ends.
#[cfg(test)]
pub(crate) fn test_server(pair: &Pair) -> u16 {
    use std::io::{Read, Write};
    use std::sync::Arc;
    let certs = CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            // A client that refuses the certificate ends the handshake
            // here: the read fails and the connection is dropped.
            while !head.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            if head.ends_with(b"\r\n\r\n") {
                let body = r#"{"id": "v1"}"#;
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        }
    });
    port
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names() -> Names {
        Names {
            address: Ipv4Addr::new(192, 168, 24, 1),
            hostname: Some("undercloud".into()),
        }
    }

    #[test]
    fn a_generated_certificate_names_the_undercloud() {
        let p = generate(&names()).unwrap();
        for host in ["192.168.24.1", "127.0.0.1", "localhost", "undercloud"] {
            assert!(p.valid_for(host), "{host}");
        }
        for host in ["192.168.24.2", "example.com", "10.0.2.15"] {
            assert!(!p.valid_for(host), "{host}");
        }
        assert!(p.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(p.key_pem.contains("PRIVATE KEY-----"));
        // Parses again from its own PEM, as the next boot reads it.
        assert_eq!(
            Pair::parse(p.cert_pem.as_bytes(), p.key_pem.as_bytes()).unwrap(),
            p
        );
        let f = p.fingerprint();
        assert_eq!(f.len(), 32 * 3 - 1, "{f}");
        assert!(f
            .split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit())));
        assert!(!format!("{p:?}").contains("PRIVATE"));
    }

    #[test]
    #[ignore = "needs root: gives files to the services' users (make test runs it)"]
    fn the_self_signed_pair_is_kept_and_remade_for_another_address() {
        let root = tempfile::tempdir().unwrap();
        let (a, o) = self_signed(root.path(), &names()).unwrap();
        assert_eq!(o, Origin::Generated);
        let mode = |rel: &str| {
            fs::metadata(root.path().join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(KEPT_KEY), 0o600);
        assert_eq!(mode(KEPT_CERT), 0o644);
        let (b, o) = self_signed(root.path(), &names()).unwrap();
        assert_eq!((o, b.fingerprint()), (Origin::Kept, a.fingerprint()));
        let moved = Names {
            address: Ipv4Addr::new(10, 1, 0, 1),
            ..names()
        };
        let (c, o) = self_signed(root.path(), &moved).unwrap();
        assert_eq!(o, Origin::Generated);
        assert_ne!(c.fingerprint(), a.fingerprint());
        assert!(c.valid_for("10.1.0.1"));
        // A damaged key is replaced, not served.
        fs::write(root.path().join(KEPT_KEY), "garbage").unwrap();
        let (_, o) = self_signed(root.path(), &moved).unwrap();
        assert_eq!(o, Origin::Generated);
    }

    #[test]
    fn bad_pairs_are_one_line_errors() {
        let a = generate(&names()).unwrap();
        let b = generate(&names()).unwrap();
        let err = |c: &str, k: &str| {
            format!("{:#}", Pair::parse(c.as_bytes(), k.as_bytes()).unwrap_err())
        };
        let e = err(&a.cert_pem, &b.key_pem);
        assert!(e.contains("not the certificate's"), "{e}");
        let e = err("hello", &a.key_pem);
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = err(&a.cert_pem, "hello");
        assert!(e.contains("no PEM private key"), "{e}");
        let e = err(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &a.key_pem,
        );
        assert!(e.contains("does not parse"), "{e}");
        // The key and the certificate in one file, as some tools write them.
        let both = format!("{}{}", a.cert_pem, a.key_pem);
        assert_eq!(
            Pair::parse(both.as_bytes(), both.as_bytes())
                .unwrap()
                .fingerprint(),
            a.fingerprint()
        );
    }

    #[test]
    fn clients_trust_the_named_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = generate(&names()).unwrap();
        let file = dir.path().join("api.crt");
        fs::write(&file, &a.cert_pem).unwrap();
        let f = file.to_str().unwrap();
        let mut ep = std::collections::BTreeMap::new();
        assert!(client_roots(None, &ep).unwrap().is_empty());
        ep.insert("cacert".to_string(), f.to_string());
        assert_eq!(client_roots(None, &ep).unwrap().len(), 1);
        assert_eq!(client_roots(Some(f), &ep).unwrap().len(), 2);
        assert_eq!(client_roots(Some(""), &ep).unwrap().len(), 1);
        let e = format!("{:#}", client_roots(Some("/nowhere.crt"), &ep).unwrap_err());
        assert!(e.contains("OS_CACERT") && e.contains("/nowhere.crt"), "{e}");
        fs::write(&file, "not a certificate").unwrap();
        let e = format!("{:#}", client_roots(None, &ep).unwrap_err());
        assert!(
            e.contains("no PEM certificate") && e.contains("cacert="),
            "{e}"
        );
    }

    #[test]
    fn host_names() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(hostname(root.path()), None);
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/hostname"), "Undercloud\n").unwrap();
        assert_eq!(hostname(root.path()).as_deref(), Some("undercloud"));
        for bad in ["localhost\n", "a b\n", "\n", "10.0.0.1\n"] {
            fs::write(root.path().join("etc/hostname"), bad).unwrap();
            assert_eq!(hostname(root.path()), None, "{bad:?}");
        }
    }
}
