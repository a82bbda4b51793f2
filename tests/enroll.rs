//! `undercloud-live undercloud enroll` (nodes.yaml) against a fake Ironic
//! API on 127.0.0.1 that keeps its nodes and ports like Ironic does: the
//! first run creates the nodes and their ports, a second run leaves known
//! nodes alone, a bad file sends no request at all, and Ironic's refusal is
//! one line naming the node.

// A test that cannot go on panics: its message is the failure report.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};
use undercloud_live::undercloud::tls::{generate, Names, Pair};

#[derive(Default)]
struct State {
    /// name -> node body as created
    nodes: BTreeMap<String, Value>,
    ports: Vec<Value>,
    /// "METHOD path" of every request after the version check.
    calls: Vec<String>,
    /// Refuse to create nodes with this name (as Ironic refuses a driver
    /// it has not enabled).
    refuse: Option<String>,
    /// Answer 401 to every call but `GET /v1` without this Authorization
    /// header (Ironic with `auth_strategy = http_basic`).
    require_auth: Option<String>,
}

/// The fake on the tests' loopback server (tests/common/http.rs), which
/// reads each request and closes the connection after the answer.
fn fake_ironic(state: Arc<Mutex<State>>) -> u16 {
    Server::handler(move |req, stream| {
        let version = req
            .headers
            .iter()
            .find(|(k, _)| k == "x-openstack-ironic-api-version")
            .map(|(_, v)| v.clone());
        let mut st = state.lock().unwrap();
        let path = req.target.split('?').next().unwrap_or("/").to_string();
        if path != "/v1" {
            st.calls.push(format!("{} {path}", req.method));
        }
        assert_eq!(version.as_deref(), Some("1.31"), "{} {path}", req.method);
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        if let Some(want) = &st.require_auth {
            let given = req
                .headers
                .iter()
                .find(|(k, _)| k == "authorization")
                .map(|(_, v)| v.as_str());
            if path != "/v1" && given != Some(want.as_str()) {
                respond(
                    stream,
                    "401 Unauthorized",
                    &json!({"error_message": "{\"faultstring\": \"Incorrect username or password\"}"}),
                );
                return;
            }
        }
        match (req.method.as_str(), path.as_str()) {
            ("GET", "/v1") => respond(stream, "200 OK", &json!({"id": "v1"})),
            ("GET", p) if p.starts_with("/v1/nodes/") => {
                match st.nodes.get(&p["/v1/nodes/".len()..]) {
                    Some(n) => respond(stream, "200 OK", n),
                    None => respond(
                        stream,
                        "404 Not Found",
                        &json!({"error_message": "{\"faultstring\": \"Node not found.\"}"}),
                    ),
                }
            }
            ("POST", "/v1/nodes") => {
                let name = body["name"].as_str().unwrap_or_default().to_string();
                if st.refuse.as_deref() == Some(name.as_str()) {
                    respond(
                        stream,
                        "400 Bad Request",
                        &json!({"error_message": "{\"faultstring\": \"No valid host was found. Reason: No conductor service registered which supports driver ipmi for conductor group \\\"\\\".\", \"debuginfo\": null}"}),
                    );
                    return;
                }
                let mut node = body.clone();
                node["uuid"] =
                    json!(format!("00000000-0000-4000-8000-{:012}", st.nodes.len()));
                node["provision_state"] = json!("enroll");
                st.nodes.insert(name, node.clone());
                respond(stream, "201 Created", &node);
            }
            ("POST", "/v1/ports") => {
                st.ports.push(body.clone());
                respond(stream, "201 Created", &body);
            }
            _ => respond(
                stream,
                "404 Not Found",
                &json!({"error_message": "not in the fake"}),
            ),
        }
    })
    .port
}

const NODES: &str = "\
nodes:
  - name: node-0
    driver: redfish
    bmc:
      address: http://10.0.2.2:8000/redfish/v1/Systems/5d6f3c2a-9d1e-4a57-8e55-0c1f9c7f2b11
      username: admin
      password: password
    macs: [\"52:54:00:12:34:56\"]
    properties: {cpu_arch: x86_64}
  - name: rack1-u7
    driver: ipmi
    bmc: {address: 10.0.0.17, port: 6230, username: root, password: calvin}
    macs: [\"AA:BB:CC:00:11:22\", \"aa:bb:cc:00:11:23\"]
";

/// `undercloud enroll` against the fake, with no credentials from the
/// environment unless a test adds them.
fn enroll_cmd(port: u16, file: &std::path::Path) -> std::process::Command {
    enroll_cmd_at(&format!("http://127.0.0.1:{port}"), file)
}

fn enroll_cmd_at(api: &str, file: &std::path::Path) -> std::process::Command {
    let mut cmd = bin();
    cmd.args(["undercloud", "enroll", "--wait", "5", "--api"])
        .arg(api)
        .arg("--nodes")
        .arg(file)
        .env_remove("OS_USERNAME")
        .env_remove("OS_PASSWORD")
        .env_remove("OS_CACERT");
    cmd
}

fn enroll(port: u16, file: &std::path::Path, extra: &[&str]) -> std::process::Output {
    run(enroll_cmd(port, file).args(extra))
}

#[test]
fn nodes_are_enrolled_once_with_their_ports() {
    let dir = scratch("enroll");
    let state = Arc::new(Mutex::new(State::default()));
    let port = fake_ironic(state.clone());
    let file = dir.join("nodes.yaml");
    std::fs::write(&file, NODES).unwrap();

    let o = enroll(port, &file, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("enrolled node-0 (00000000-0000-4000-8000-000000000000, redfish, 1 port(s))"),
        "{out}"
    );
    assert!(out.contains("enrolled rack1-u7 ("), "{out}");
    {
        let st = state.lock().unwrap();
        let n = &st.nodes["node-0"];
        assert_eq!(n["driver"], "redfish");
        assert_eq!(n["driver_info"]["redfish_address"], "http://10.0.2.2:8000");
        assert_eq!(n["driver_info"]["redfish_username"], "admin");
        assert_eq!(n["properties"]["cpu_arch"], "x86_64");
        let r = &st.nodes["rack1-u7"];
        assert_eq!(r["driver_info"]["ipmi_port"], 6230);
        let macs: Vec<&str> = st
            .ports
            .iter()
            .map(|p| p["address"].as_str().unwrap())
            .collect();
        assert_eq!(
            macs,
            [
                "52:54:00:12:34:56",
                "aa:bb:cc:00:11:22",
                "aa:bb:cc:00:11:23"
            ]
        );
        assert!(st.ports.iter().all(|p| p["pxe_enabled"] == true));
        assert_eq!(
            st.ports[2]["node_uuid"],
            "00000000-0000-4000-8000-000000000001"
        );
    }

    // At the next boot: both known, nothing created.
    let before = state.lock().unwrap().calls.len();
    let o = enroll(port, &file, &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "node-0 is already enrolled (00000000-0000-4000-8000-000000000000): left alone"
        ),
        "{out}"
    );
    let st = state.lock().unwrap();
    assert_eq!(
        st.calls[before..],
        ["GET /v1/nodes/node-0", "GET /v1/nodes/rack1-u7"]
    );
    assert_eq!(st.ports.len(), 3);
}

#[test]
fn a_bad_file_enrols_nothing_and_says_which_entry() {
    let dir = scratch("enroll-bad");
    let state = Arc::new(Mutex::new(State::default()));
    let port = fake_ironic(state.clone());
    let file = dir.join("nodes.yaml");
    // The second entry's MAC is short: the first must not be enrolled either.
    std::fs::write(
        &file,
        NODES.replace("\"aa:bb:cc:00:11:23\"", "\"aa:bb:cc:00:11\""),
    )
    .unwrap();
    let o = enroll(port, &file, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("nodes.yaml: node 2 (rack1-u7): macs: \"aa:bb:cc:00:11\" is not a MAC"),
        "{err}"
    );
    assert!(state.lock().unwrap().calls.is_empty(), "a request was sent");

    // --check lists a good file without a request.
    std::fs::write(&file, NODES).unwrap();
    let o = enroll(port, &file, &["--check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(": 2 node(s)\n  node-0 (redfish, 52:54:00:12:34:56)\n"),
        "{out}"
    );
    assert!(
        state.lock().unwrap().calls.is_empty(),
        "--check sent a request"
    );
}

#[test]
fn ironic_refusing_a_node_is_one_line_naming_it() {
    let dir = scratch("enroll-refused");
    let state = Arc::new(Mutex::new(State {
        refuse: Some("rack1-u7".into()),
        ..State::default()
    }));
    let port = fake_ironic(state.clone());
    let file = dir.join("nodes.yaml");
    std::fs::write(&file, NODES).unwrap();
    let o = enroll(port, &file, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("creating node rack1-u7: Ironic answered 400: No valid host was found."),
        "{err}"
    );

    // Nothing listens: the wait gives up with a clear line.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let t = std::time::Instant::now();
    let o = run(bin()
        .args(["undercloud", "enroll", "--wait", "3", "--api"])
        .arg(format!("http://127.0.0.1:{dead}"))
        .arg("--nodes")
        .arg(&file));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("did not answer within 3s"), "{err}");
    assert!(t.elapsed().as_secs() < 30, "{:?}", t.elapsed());
}

/// Ironic with HTTP basic auth: the credentials of a sourced undercloudrc
/// (`OS_USERNAME`, `OS_PASSWORD`) go with every call; without them the
/// first call's 401 is one line naming the node.
#[test]
fn credentials_from_the_environment_are_sent() {
    let dir = scratch("enroll-auth");
    let state = Arc::new(Mutex::new(State {
        require_auth: Some("Basic YWRtaW46czNjcjN0IHBhc3M=".into()),
        ..State::default()
    }));
    let port = fake_ironic(state.clone());
    let file = dir.join("nodes.yaml");
    std::fs::write(&file, NODES).unwrap();

    let o = enroll(port, &file, &[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("node-0") && err.contains("401"), "{err}");
    assert!(state.lock().unwrap().nodes.is_empty());

    let o = run(enroll_cmd(port, &file)
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", "s3cr3t pass"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(state.lock().unwrap().nodes.len(), 2);
}

/// Ironic's API over HTTPS on 127.0.0.1 (`ironic.tls`) in front of the
/// fake: each connection's request is passed on to it and its answer back
/// (the fake closes every connection after one answer).
fn tls_front(pair: &Pair, backend: u16) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::io::{Read, Write};
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
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            // The head byte by byte, then Content-Length bytes of body.
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !req.ends_with(b"\r\n\r\n") {
                match tls.read(&mut byte) {
                    Ok(1) => req.push(byte[0]),
                    // A client that refuses the certificate ends here.
                    _ => break,
                }
            }
            if !req.ends_with(b"\r\n\r\n") {
                continue;
            }
            let head = String::from_utf8_lossy(&req).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            if tls.read_exact(&mut body).is_err() {
                continue;
            }
            req.extend(body);
            let mut plain = std::net::TcpStream::connect(("127.0.0.1", backend)).unwrap();
            plain.write_all(&req).unwrap();
            let mut answer = Vec::new();
            let _ = plain.read_to_end(&mut answer);
            let _ = tls.write_all(&answer);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

/// With `ironic.tls`: `enroll` calls an https API when it trusts the
/// API's certificate (OS_CACERT, as a sourced undercloudrc sets it), and
/// refuses one serving any other certificate, sending nothing.
#[test]
fn an_https_api_is_trusted_only_with_its_certificate() {
    let dir = scratch("enroll-tls");
    let state = Arc::new(Mutex::new(State::default()));
    let names = Names {
        address: [192, 168, 24, 1].into(),
        hostname: None,
    };
    let ours = generate(&names).unwrap();
    let other = generate(&names).unwrap();
    let front = tls_front(&ours, fake_ironic(state.clone()));
    let file = dir.join("nodes.yaml");
    std::fs::write(&file, NODES).unwrap();
    let (ours_file, other_file) = (dir.join("ours.crt"), dir.join("other.crt"));
    std::fs::write(&ours_file, &ours.cert_pem).unwrap();
    std::fs::write(&other_file, &other.cert_pem).unwrap();
    let api = format!("https://127.0.0.1:{front}");

    for refused in [None, Some(&other_file)] {
        let mut cmd = enroll_cmd_at(&api, &file);
        if let Some(f) = refused {
            cmd.env("OS_CACERT", f);
        }
        let o = run(&mut cmd);
        assert!(!o.status.success(), "{refused:?} was enough");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("certificate"), "{err}");
        assert!(
            state.lock().unwrap().calls.is_empty(),
            "a request got through"
        );
    }

    let o = run(enroll_cmd_at(&api, &file).env("OS_CACERT", &ours_file));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(state.lock().unwrap().nodes.len(), 2);
}

/// The boot test's HTTPS client (tests/common/ucvm.rs): it takes the
/// certificate from the handshake, and, pinned to it, gets answers from
/// that server and none from a server with another certificate.
#[test]
fn the_boot_tests_https_client_pins_the_handshake_certificate() {
    use common::ucvm::{console_fingerprint, server_cert, Api};
    let backend_port =
        Server::handler(|_, stream| respond(stream, "200 OK", &json!({"id": "v1"}))).port;
    let names = Names {
        address: [192, 168, 24, 1].into(),
        hostname: None,
    };
    let ours = generate(&names).unwrap();
    let other = generate(&names).unwrap();
    let front = tls_front(&ours, backend_port);
    let impostor = tls_front(&other, backend_port);
    let der = server_cert(front).expect("no certificate from the handshake");
    let line = format!(
        "undercloud-config: Ironic API at https://192.168.24.1:6385 with a self-signed certificate (made now, in /var/lib/undercloud/tls/ironic.crt); SHA-256 fingerprint {}; clients trust /etc/ironic/tls/ironic.crt\n",
        ours.fingerprint()
    );
    assert_eq!(
        console_fingerprint(&line).as_deref(),
        Some(undercloud_live::undercloud::tls::fingerprint(&der).as_str())
    );
    let v1 = Api::with_tls(front, "admin", "pw", &der).call(reqwest::Method::GET, "/v1", None, 200);
    assert_eq!(v1["id"], "v1");
    assert!(Api::with_tls(impostor, "admin", "pw", &der)
        .get("/v1")
        .is_none());
    // Nothing listening: no certificate.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    assert!(server_cert(dead).is_none());
}
