//! An undercloud image booted by `undercloud-live boot` for a test: its
//! Ironic API forwarded to a host port on 127.0.0.1, optionally a
//! provisioning NIC on a UDP link (`--link`), the console in a log file;
//! and a small client for Ironic's API from the host.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bin;

/// The last line `undercloud-live status --wait` prints on the console.
pub const READY: &str = "undercloud-live status: ready";
pub const NOT_READY: &str = "undercloud-live status: NOT ready";
/// The API version the tests write their requests for (node inventory:
/// 1.81).
pub const API_VERSION: &str = "1.81";

/// The QEMU of a booted image; killed (power cut) on drop.
pub struct Vm {
    pub child: Child,
    pub api_port: u16,
    pub log: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How to boot it.
pub struct VmOptions<'a> {
    pub image: &'a Path,
    pub log: &'a Path,
    pub memory_mib: u32,
    /// `--link LOCAL:PEER` ports (the provisioning network).
    pub link: Option<(u16, u16)>,
    pub timeout: Duration,
}

impl Vm {
    pub fn start(o: &VmOptions) -> Vm {
        let api_port = super::testbed::free_tcp_port();
        let mut cmd = bin();
        cmd.arg("boot")
            .arg(o.image)
            .args(["--as", "disk", "--firmware", "uefi", "--accel", "tcg"])
            .arg("--memory")
            .arg(o.memory_mib.to_string())
            .arg("--timeout")
            .arg(o.timeout.as_secs().to_string())
            .arg("--writable")
            .arg("--forward")
            .arg(format!("{api_port}:6385"))
            .arg("--log")
            .arg(o.log)
            .arg("--quiet");
        if let Some((local, peer)) = o.link {
            cmd.arg("--link").arg(format!("{local}:{peer}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting undercloud-live boot");
        Vm {
            child,
            api_port,
            log: o.log.to_path_buf(),
        }
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 60 lines of the console.
    pub fn console_tail(&self) -> String {
        console_tail(&self.log)
    }

    /// Wait for the in-image status report; meanwhile poll the API from
    /// the host. Returns when the API first answered (seconds since `t0`):
    /// over HTTP, or (`ironic.tls`) with a TLS handshake.
    pub fn wait_ready(&mut self, t0: Instant, limit: Duration) -> f64 {
        let api = Api::new(self.api_port);
        let mut api_at = None;
        loop {
            let console = self.console();
            let answered =
                || matches!(api.get("/v1"), Some((200, _))) || server_cert(self.api_port).is_some();
            if api_at.is_none() && answered() {
                api_at = Some(t0.elapsed().as_secs_f64());
            }
            if console.contains(READY) {
                return api_at.unwrap_or_else(|| t0.elapsed().as_secs_f64());
            }
            if console.contains(NOT_READY) {
                panic!("the image reports the undercloud is not ready; console:\n{console}");
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(e) = self.child.stderr.take() {
                    for l in BufReader::new(e).lines().map_while(Result::ok) {
                        err.push_str(&l);
                        err.push('\n');
                    }
                }
                panic!("the VM stopped ({st}) before the undercloud was ready:\n{err}\nconsole:\n{console}");
            }
            if t0.elapsed() > limit {
                panic!("no status report within {limit:?}; console:\n{console}");
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }
}

pub fn console_tail(log: &Path) -> String {
    tail(&std::fs::read_to_string(log).unwrap_or_default(), 60)
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Wait until nothing listens on 127.0.0.1:`port` (QEMU has exited).
pub fn wait_port_free(port: u16) {
    let t = Instant::now();
    while TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "port {port} still in use a minute after the VM was killed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ironic's API from the host.
pub struct Api {
    base: String,
    client: reqwest::blocking::Client,
    /// (user, password) for HTTP basic auth.
    auth: Option<(String, String)>,
}

impl Api {
    pub fn new(port: u16) -> Api {
        Api {
            base: format!("http://127.0.0.1:{port}"),
            // Python answers slowly on an emulated CPU.
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()
                .unwrap(),
            auth: None,
        }
    }

    /// The same API, called as `user` with `password`.
    pub fn with_auth(port: u16, user: &str, password: &str) -> Api {
        Api {
            auth: Some((user.to_string(), password.to_string())),
            ..Api::new(port)
        }
    }

    /// The API over HTTPS (`ironic.tls`), called as `user` with
    /// `password`, trusting exactly `cert` (DER): no other root, no
    /// system one.
    pub fn with_tls(port: u16, user: &str, password: &str, cert: &[u8]) -> Api {
        let cert = reqwest::Certificate::from_der(cert).expect("a DER certificate");
        Api {
            base: format!("https://127.0.0.1:{port}"),
            client: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .tls_certs_only([cert])
                .build()
                .unwrap(),
            auth: Some((user.to_string(), password.to_string())),
        }
    }

    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("X-OpenStack-Ironic-API-Version", API_VERSION);
        if let Some((user, pw)) = &self.auth {
            req = req.basic_auth(user, Some(pw));
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let r = req.send().ok()?;
        let code = r.status().as_u16();
        let text = r.text().ok()?;
        Some((code, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    pub fn get(&self, path: &str) -> Option<(u16, Value)> {
        self.send(reqwest::Method::GET, path, None)
    }

    /// A request that must answer `want`; the answer's body.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        want: u16,
    ) -> Value {
        let (code, v) = self
            .send(method.clone(), path, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"));
        assert_eq!(code, want, "{method} {path}: {v}");
        v
    }

    /// `PUT /v1/nodes/ID/states/provision` with `target`.
    pub fn provision(&self, node: &str, target: &str) {
        self.call(
            reqwest::Method::PUT,
            &format!("/v1/nodes/{node}/states/provision"),
            Some(&serde_json::json!({"target": target})),
            202,
        );
    }

    /// Poll the node until its provision state is `want` and no target is
    /// pending; panic on a failed state (with Ironic's last error and
    /// `context()`'s text) or after `limit`. Returns the seconds taken.
    pub fn wait_provision(
        &self,
        node: &str,
        want: &str,
        limit: Duration,
        context: &dyn Fn() -> String,
    ) -> f64 {
        let t = Instant::now();
        let mut last = String::new();
        loop {
            if let Some((200, n)) = self.get(&format!("/v1/nodes/{node}")) {
                let state = n["provision_state"].as_str().unwrap_or("").to_string();
                let target = &n["target_provision_state"];
                if state != last {
                    eprintln!(
                        "node {node}: {state} (after {:.0} s)",
                        t.elapsed().as_secs_f64()
                    );
                    last = state.clone();
                }
                if state == want && target.is_null() {
                    return t.elapsed().as_secs_f64();
                }
                if state.ends_with("failed") || state == "error" {
                    panic!(
                        "node {node}: {state} waiting for {want}: {}\n{}",
                        n["last_error"],
                        context()
                    );
                }
            }
            if t.elapsed() > limit {
                panic!(
                    "node {node}: still {last:?}, not {want}, after {limit:?}\n{}",
                    context()
                );
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }
}

/// Write `src` to `dest` (an ESP path such as `::/undercloud.yaml`) in the
/// ESP of the image at `esp_offset`, with mtools: a test's own settings on
/// a copy of a shared image.
pub fn put_esp_file(image: &Path, esp_offset: u64, src: &Path, dest: &str) {
    let o = Command::new("mcopy")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@{esp_offset}", image.display()))
        .arg(src)
        .arg(dest)
        .output()
        .expect("running mcopy (mtools)");
    assert!(
        o.status.success(),
        "mcopy {} {dest}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The byte offset of the image's EFI System partition (`inspect --json`).
pub fn esp_offset(image: &Path) -> (u64, u64) {
    let o = bin()
        .args(["inspect", "--json"])
        .arg(image)
        .output()
        .expect("undercloud-live inspect");
    assert!(o.status.success(), "inspect {}", image.display());
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let esp = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["type_name"] == "EFI System")
        .expect("an EFI System partition")
        .clone();
    (
        esp["offset"].as_u64().unwrap(),
        esp["bytes"].as_u64().unwrap(),
    )
}

/// The API password the undercloud made up at its first boot, from the
/// console line that shows it once.
pub fn console_password(console: &str) -> Option<String> {
    let (_, rest) = console.split_once("Ironic API user admin, password ")?;
    Some(rest.split_whitespace().next()?.to_string())
}

/// The last certificate fingerprint the console showed
/// (`undercloud-config: ... SHA-256 fingerprint AB:CD:...; ...`).
pub fn console_fingerprint(console: &str) -> Option<String> {
    let (_, rest) = console.rsplit_once("SHA-256 fingerprint ")?;
    let f = rest.split_whitespace().next()?.trim_end_matches([';', ',']);
    Some(f.to_string())
}

/// The certificate (DER) the server on 127.0.0.1:`port` presents in a
/// completed TLS handshake, taken without judging it: a test compares
/// its fingerprint with the one the console showed, then trusts exactly
/// it (`Api::with_tls`). None when no TLS server answers.
pub fn server_cert(port: u16) -> Option<Vec<u8>> {
    use std::sync::{Arc, Mutex};
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let seen = Arc::new(Mutex::new(None));
    let record = Arc::new(Record {
        seen: seen.clone(),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(record)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    sock.set_write_timeout(Some(Duration::from_secs(30))).ok()?;
    // Done only once the server has also proved it holds the key.
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).ok()?;
    }
    let cert = seen.lock().unwrap().take();
    cert
}

/// A verifier that records the server's certificate and accepts it;
/// handshake signatures are still checked against it.
#[derive(Debug)]
struct Record {
    seen: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Record {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
