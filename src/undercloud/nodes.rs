//! `nodes.yaml`: the machines the undercloud provisions, enrolled into
//! Ironic at boot (`undercloud-live undercloud enroll`), as Bifrost enrols
//! its inventory. Like `undercloud.yaml` it sits on the ESP, so an operator
//! writes it on any computer before booting the stick.
//!
//! Enrolment is idempotent: a node Ironic already knows by name is left
//! alone (its state, ports and settings are the operator's by then). The
//! whole file is checked before the first request, so a mistake enrols
//! nothing and is reported as one line naming the entry.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::{first_line, HardwareType};

/// The file's name on the ESP and in `/etc/undercloud`.
pub const FILE_NAME: &str = "nodes.yaml";

/// The API version the requests are written for: node names (1.5), ports
/// with `pxe_enabled` (1.19), `resource_class` (1.21).
const API_VERSION: &str = "1.31";

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodesFile {
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: String,
    pub driver: HardwareType,
    #[serde(default)]
    pub bmc: Option<Bmc>,
    /// The MAC addresses of the NICs the node network-boots from.
    pub macs: Vec<String>,
    /// Ironic node properties (cpu_arch, memory_mb, root_device, ...).
    #[serde(default)]
    pub properties: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub resource_class: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bmc {
    /// redfish: `http(s)://HOST[:PORT]/redfish/v1/Systems/ID` (or the base
    /// URL and `system_id`); ipmi: a host name or address.
    pub address: String,
    #[serde(default)]
    pub system_id: Option<String>,
    /// ipmi only (default 623).
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// redfish over https: check the BMC's certificate (default true).
    #[serde(default)]
    pub verify_ca: Option<bool>,
}

impl NodesFile {
    /// Parse and check the file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<NodesFile> {
        let blank = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
        if blank {
            return Ok(NodesFile::default());
        }
        let file: NodesFile = serde_saphyr::from_str(text)
            .map_err(|e| anyhow!("{origin}: {}", first_line(&e.to_string())))?;
        let mut seen = BTreeMap::new();
        for (i, n) in file.nodes.iter().enumerate() {
            let entry = format!("{origin}: node {} ({})", i + 1, n.name);
            n.check().with_context(|| entry.clone())?;
            if let Some(first) = seen.insert(n.name.clone(), i + 1) {
                bail!("{entry}: the name is also node {first}'s");
            }
        }
        let mut macs = BTreeMap::new();
        for n in &file.nodes {
            for m in &n.macs {
                if let Some(other) = macs.insert(normal_mac(m), n.name.clone()) {
                    bail!("{origin}: node {}: MAC {m} is also {other}'s", n.name);
                }
            }
        }
        Ok(file)
    }
}

impl NodeSpec {
    fn check(&self) -> Result<()> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 255
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'));
        if !name_ok {
            bail!("name: 1-255 of letters, digits, - _ . ~");
        }
        if self.macs.is_empty() {
            bail!("macs: give the MAC of at least one NIC the node network-boots from");
        }
        for m in &self.macs {
            if !valid_mac(m) {
                bail!("macs: {m:?} is not a MAC address such as 52:54:00:12:34:56");
            }
        }
        if let Some(rc) = &self.resource_class {
            if rc.is_empty() || rc.len() > 80 || rc.contains(char::is_whitespace) {
                bail!("resource_class {rc:?}: one word of at most 80 characters");
            }
        }
        self.driver_info().map(|_| ())
    }

    /// Ironic's `driver_info` for the node's hardware type.
    pub fn driver_info(&self) -> Result<Value> {
        let need_bmc = || {
            self.bmc.as_ref().with_context(|| {
                format!(
                    "bmc: the {} driver needs the BMC's address",
                    self.driver.name()
                )
            })
        };
        match self.driver {
            HardwareType::ManualManagement => {
                if self.bmc.is_some() {
                    bail!("bmc: manual-management nodes have no BMC; remove it or pick ipmi or redfish");
                }
                Ok(json!({}))
            }
            HardwareType::Ipmi => {
                let b = need_bmc()?;
                one_word("bmc.address", &b.address)?;
                if b.system_id.is_some() || b.verify_ca.is_some() {
                    bail!("bmc: system_id and verify_ca are for redfish, not ipmi");
                }
                let mut info = json!({"ipmi_address": b.address});
                if let Some(p) = b.port {
                    info["ipmi_port"] = json!(p);
                }
                credentials(&mut info, "ipmi", b);
                Ok(info)
            }
            HardwareType::Redfish => {
                let b = need_bmc()?;
                if b.port.is_some() {
                    bail!("bmc.port is for ipmi; put a redfish port in bmc.address");
                }
                let (base, system) = redfish_address(&b.address, b.system_id.as_deref())?;
                let mut info = json!({"redfish_address": base, "redfish_system_id": system});
                if let Some(v) = b.verify_ca {
                    info["redfish_verify_ca"] = json!(v);
                }
                credentials(&mut info, "redfish", b);
                Ok(info)
            }
        }
    }

    /// The body of `POST /v1/nodes`.
    pub fn create_body(&self) -> Result<Value> {
        let mut body = json!({
            "name": self.name,
            "driver": self.driver.name(),
            "driver_info": self.driver_info()?,
            "properties": self.properties,
        });
        if let Some(rc) = &self.resource_class {
            body["resource_class"] = json!(rc);
        }
        Ok(body)
    }
}

fn credentials(info: &mut Value, prefix: &str, b: &Bmc) {
    if !b.username.is_empty() {
        info[format!("{prefix}_username")] = json!(b.username);
    }
    if !b.password.is_empty() {
        info[format!("{prefix}_password")] = json!(b.password);
    }
}

fn one_word(key: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.contains(char::is_whitespace) || v.contains('/') {
        bail!("{key} {v:?}: a host name or address");
    }
    Ok(())
}

/// Split a Redfish System URL into Ironic's base address and system id.
fn redfish_address(address: &str, system_id: Option<&str>) -> Result<(String, String)> {
    let rest = address
        .strip_prefix("https://")
        .or_else(|| address.strip_prefix("http://"))
        .filter(|r| !r.is_empty() && !r.contains(char::is_whitespace))
        .with_context(|| {
            format!("bmc.address {address:?}: an http(s) URL such as http://10.0.0.5:8000/redfish/v1/Systems/1")
        })?;
    let scheme_len = address.len() - rest.len();
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let base = format!("{}{host}", &address[..scheme_len]);
    let path = path.trim_end_matches('/');
    match (path.is_empty(), system_id) {
        (true, Some(id)) if !id.is_empty() => Ok((base, id.to_string())),
        (true, _) => bail!(
            "bmc.address {address:?}: name the system, as .../redfish/v1/Systems/ID or with bmc.system_id"
        ),
        (false, None) if path.starts_with("/redfish/v1/Systems/") => Ok((base, path.to_string())),
        (false, None) => bail!("bmc.address {address:?}: the path is not /redfish/v1/Systems/ID"),
        (false, Some(_)) => bail!("bmc: give the system in bmc.address or bmc.system_id, not both"),
    }
}

pub fn valid_mac(m: &str) -> bool {
    let parts: Vec<&str> = m.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn normal_mac(m: &str) -> String {
    m.to_ascii_lowercase()
}

/// What happened to one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enrolled {
    /// Created, with this many ports.
    Created { uuid: String, ports: usize },
    /// Ironic already knew the name: left alone.
    Known { uuid: String },
}

/// A small client for the few calls enrolment makes.
pub struct Api {
    base: String,
    client: reqwest::blocking::Client,
    creds: Option<super::credentials::Credentials>,
}

impl Api {
    /// `creds`: the user to call as (none for `noauth`); `roots`: the
    /// certificates to trust besides the system's (the API's own, with
    /// `ironic.tls`).
    pub fn new(
        base: &str,
        creds: Option<super::credentials::Credentials>,
        roots: Vec<reqwest::Certificate>,
    ) -> Result<Api> {
        let client = reqwest::blocking::Client::builder()
            // Generous: Python answers slowly on an emulated CPU.
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(3))
            .tls_certs_merge(roots)
            .build()
            .context("making an HTTP client")?;
        Ok(Api {
            base: base.trim_end_matches('/').to_string(),
            client,
            creds,
        })
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .header("X-OpenStack-Ironic-API-Version", API_VERSION);
        if let Some(c) = &self.creds {
            req = req.basic_auth(&c.username, Some(&c.password));
        }
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().with_context(|| format!("{method} {url}"))?;
        let code = resp.status().as_u16();
        if code == 401 {
            bail!("{method} {url}: Ironic answered 401: no or wrong credentials (run as root in the undercloud, or source ~stack/undercloudrc)");
        }
        let text = resp.text().with_context(|| format!("reading {url}"))?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((code, v))
    }

    /// Wait until the API answers `GET /v1`, up to `limit`.
    pub fn wait(&self, limit: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            match self.call(reqwest::Method::GET, "/v1", None) {
                Ok((200, _)) => return Ok(()),
                Ok(_) | Err(_) if t0.elapsed() < limit => {
                    std::thread::sleep(Duration::from_secs(2))
                }
                Ok((code, _)) => bail!("{}/v1 answered {code} after {limit:?}", self.base),
                Err(e) => {
                    return Err(e.context(format!("Ironic's API did not answer within {limit:?}")))
                }
            }
        }
    }

    /// Enrol one node unless Ironic knows its name.
    pub fn enroll(&self, n: &NodeSpec) -> Result<Enrolled> {
        let (code, v) = self.call(reqwest::Method::GET, &format!("/v1/nodes/{}", n.name), None)?;
        match code {
            200 => return Ok(Enrolled::Known { uuid: uuid_of(&v)? }),
            404 => {}
            _ => bail!(
                "GET /v1/nodes/{} answered {code}: {}",
                n.name,
                api_error(&v)
            ),
        }
        let (code, v) = self.call(reqwest::Method::POST, "/v1/nodes", Some(&n.create_body()?))?;
        if code != 201 {
            bail!(
                "creating node {}: Ironic answered {code}: {}",
                n.name,
                api_error(&v)
            );
        }
        let uuid = uuid_of(&v)?;
        for mac in &n.macs {
            let port = json!({"node_uuid": uuid, "address": normal_mac(mac), "pxe_enabled": true});
            let (code, v) = self.call(reqwest::Method::POST, "/v1/ports", Some(&port))?;
            if code != 201 {
                bail!(
                    "adding port {mac} to node {}: Ironic answered {code}: {}",
                    n.name,
                    api_error(&v)
                );
            }
        }
        Ok(Enrolled::Created {
            uuid,
            ports: n.macs.len(),
        })
    }
}

fn uuid_of(v: &Value) -> Result<String> {
    v.get("uuid")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("Ironic's answer has no uuid")
}

/// Ironic's error message out of its JSON error body (one line).
fn api_error(v: &Value) -> String {
    let msg = v
        .get("error_message")
        .and_then(|m| match m {
            Value::String(s) => serde_json::from_str::<Value>(s).ok().or(Some(m.clone())),
            other => Some(other.clone()),
        })
        .and_then(|m| m.get("faultstring").cloned().or(Some(m)))
        .unwrap_or_else(|| v.clone());
    let text = match msg {
        Value::String(s) => s,
        other => other.to_string(),
    };
    text.lines().next().unwrap_or("").to_string()
}

/// Enrol every node of a checked file; one line per node. Stops at the
/// first failure (its error names the node).
pub fn enroll_all(api: &Api, file: &NodesFile) -> Result<String> {
    let mut out = String::new();
    for n in &file.nodes {
        let line = match api.enroll(n)? {
            Enrolled::Created { uuid, ports } => {
                format!(
                    "undercloud-nodes: enrolled {} ({uuid}, {}, {ports} port(s))\n",
                    n.name,
                    n.driver.name()
                )
            }
            Enrolled::Known { uuid } => {
                format!(
                    "undercloud-nodes: {} is already enrolled ({uuid}): left alone\n",
                    n.name
                )
            }
        };
        out.push_str(&line);
    }
    Ok(out)
}

/// `undercloud-live undercloud enroll`'s options.
pub struct Options {
    /// Read this file instead of looking for one (ESP, /etc/undercloud).
    pub nodes: Option<std::path::PathBuf>,
    /// Ironic's API; none: the endpoints file's `api=`, else
    /// http://127.0.0.1:6385.
    pub api: Option<String>,
    /// How long to wait for the API to answer.
    pub wait: Duration,
    /// Check the file and print what would be enrolled; no request.
    pub check: bool,
}

/// Find, check and enrol `nodes.yaml`; returns the lines to print.
pub fn run(opts: &Options) -> Result<String> {
    let (source, text) =
        super::configure::find_file(FILE_NAME, opts.nodes.as_deref(), std::path::Path::new("/"))?;
    if source == super::configure::Source::Defaults {
        return Ok(format!(
            "undercloud-nodes: no {FILE_NAME} on the ESP or in /etc/undercloud: nothing to enrol\n"
        ));
    }
    let file = NodesFile::parse(&text, &source.to_string())?;
    if opts.check {
        let mut out = format!("undercloud-nodes: {source}: {} node(s)\n", file.nodes.len());
        for n in &file.nodes {
            out.push_str(&format!(
                "  {} ({}, {})\n",
                n.name,
                n.driver.name(),
                n.macs.join(" ")
            ));
        }
        return Ok(out);
    }
    if file.nodes.is_empty() {
        return Ok(format!("undercloud-nodes: {source} lists no nodes\n"));
    }
    let endpoints = super::read_endpoints();
    let creds = super::credentials::for_client(&endpoints)?;
    let roots = super::tls::client_roots_here(&endpoints)?;
    let base = opts
        .api
        .clone()
        .or_else(|| endpoints.get("api").cloned())
        .unwrap_or_else(|| "http://127.0.0.1:6385".to_string());
    let api = Api::new(&base, creds, roots)?;
    api.wait(opts.wait)?;
    let mut out = format!("undercloud-nodes: enrolling from {source}\n");
    out.push_str(&enroll_all(&api, &file)?);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
# The lab's two machines.
nodes:
  - name: node-0
    driver: redfish
    bmc:
      address: http://10.0.2.2:8000/redfish/v1/Systems/5d6f3c2a-9d1e-4a57-8e55-0c1f9c7f2b11
      username: admin
      password: secret
    macs: [\"52:54:00:12:34:56\"]
    properties: {cpu_arch: x86_64, root_device: {name: /dev/vda}}
  - name: rack1-u7
    driver: ipmi
    bmc: {address: 10.0.0.17, port: 6230, username: root, password: calvin}
    macs: [\"AA:BB:CC:00:11:22\", \"aa:bb:cc:00:11:23\"]
    resource_class: baremetal
  - name: lab-pc
    driver: manual-management
    macs: [\"52:54:00:aa:bb:cc\"]
";

    #[test]
    fn a_good_file_gives_ironic_requests() {
        let f = NodesFile::parse(GOOD, "nodes.yaml").unwrap();
        assert_eq!(f.nodes.len(), 3);
        let b = f.nodes[0].create_body().unwrap();
        assert_eq!(b["driver"], "redfish");
        assert_eq!(b["driver_info"]["redfish_address"], "http://10.0.2.2:8000");
        assert_eq!(
            b["driver_info"]["redfish_system_id"],
            "/redfish/v1/Systems/5d6f3c2a-9d1e-4a57-8e55-0c1f9c7f2b11"
        );
        assert_eq!(b["driver_info"]["redfish_password"], "secret");
        assert_eq!(b["properties"]["root_device"]["name"], "/dev/vda");
        assert!(b.get("resource_class").is_none());
        let b = f.nodes[1].create_body().unwrap();
        assert_eq!(
            b["driver_info"],
            json!({"ipmi_address": "10.0.0.17", "ipmi_port": 6230, "ipmi_username": "root", "ipmi_password": "calvin"})
        );
        assert_eq!(b["resource_class"], "baremetal");
        let b = f.nodes[2].create_body().unwrap();
        assert_eq!(b["driver"], "manual-management");
        assert_eq!(b["driver_info"], json!({}));
        assert!(NodesFile::parse("# none yet\n", "n")
            .unwrap()
            .nodes
            .is_empty());
        assert!(NodesFile::parse("nodes: []\n", "n")
            .unwrap()
            .nodes
            .is_empty());
    }

    fn err(text: &str) -> String {
        format!("{:#}", NodesFile::parse(text, "nodes.yaml").unwrap_err())
    }

    #[test]
    fn mistakes_name_the_entry_on_one_line() {
        let node = |extra: &str| {
            format!("nodes:\n  - name: n1\n    macs: [\"52:54:00:12:34:56\"]\n{extra}")
        };
        for (text, want) in [
            (node("    driver: redfish\n"), "node 1 (n1): bmc: the redfish driver needs"),
            (node("    driver: idrac\n"), "idrac"),
            (
                node("    driver: redfish\n    bmc: {address: 10.0.0.5}\n"),
                "an http(s) URL",
            ),
            (
                node("    driver: redfish\n    bmc: {address: \"http://h:8000\"}\n"),
                "name the system",
            ),
            (
                node("    driver: redfish\n    bmc: {address: \"http://h/x\"}\n"),
                "not /redfish/v1/Systems/ID",
            ),
            (
                node("    driver: ipmi\n    bmc: {address: \"10.0.0.5 6230\"}\n"),
                "bmc.address",
            ),
            (
                node("    driver: manual-management\n    bmc: {address: 10.0.0.5}\n"),
                "no BMC",
            ),
            (node("    driver: ipmi\n    bmc: {adress: x}\n"), "adress"),
            (
                "nodes:\n  - {name: a, driver: manual-management, macs: []}\n".into(),
                "node 1 (a): macs: give",
            ),
            (
                "nodes:\n  - {name: a, driver: manual-management, macs: [\"52:54:00:12:34\"]}\n".into(),
                "not a MAC",
            ),
            (
                "nodes:\n  - {name: \"a b\", driver: manual-management, macs: [\"52:54:00:12:34:56\"]}\n".into(),
                "node 1 (a b): name",
            ),
            (
                "nodes:\n  - {name: a, driver: manual-management, macs: [\"52:54:00:12:34:56\"]}\n  - {name: a, driver: manual-management, macs: [\"52:54:00:12:34:57\"]}\n".into(),
                "node 2 (a): the name is also node 1's",
            ),
            (
                "nodes:\n  - {name: a, driver: manual-management, macs: [\"52:54:00:12:34:56\"]}\n  - {name: b, driver: manual-management, macs: [\"52:54:00:12:34:56\"]}\n".into(),
                "node b: MAC 52:54:00:12:34:56 is also a's",
            ),
            ("nodes: {name: a}\n".into(), "nodes.yaml: "),
        ] {
            let e = err(&text);
            assert!(e.contains(want), "{want:?} not in {e:?}");
            assert!(e.starts_with("nodes.yaml: "), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn ironic_error_bodies_become_one_line() {
        let v = json!({"error_message": "{\"faultstring\": \"Node foo already exists.\\nmore\", \"debuginfo\": null}"});
        assert_eq!(api_error(&v), "Node foo already exists.");
        assert_eq!(
            api_error(&json!({"error_message": {"faultstring": "bad"}})),
            "bad"
        );
        assert_eq!(api_error(&Value::String("plain\ntext".into())), "plain");
    }
}
