//! `undercloud-live status`: inside the image, the state of each undercloud
//! service (systemd) and endpoint (Ironic's API and drivers, the image
//! server, DHCP and TFTP), as a table or JSON; non-zero exit when anything
//! is down. DHCP that `configure` deliberately left off (another DHCP server
//! answers on the provisioning network, or `provisioning.dhcp: off`) is
//! "off", not down: it stays so until the next boot, and the rest of the
//! undercloud works.
//!
//! The probes are separate from the parsing and rendering so those are
//! unit tested without systemd or a network.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::system::command::Task;
use crate::undercloud::configure::NOAUTH_WARNING;
use crate::undercloud::credentials::{self, Credentials};
use crate::undercloud::dhcp_guard;

/// The units in start order; MariaDB's only when the undercloud uses it
/// (`database=` in the endpoints file).
pub fn units(endpoints: &BTreeMap<String, String>) -> Vec<&'static str> {
    let mut units = vec!["undercloud-config.service"];
    if endpoints.get("database").map(String::as_str) == Some("mariadb") {
        units.push("mariadb.service");
    }
    units.extend([
        "undercloud-db.service",
        "ironic.service",
        "undercloud-nodes.service",
        "dnsmasq.service",
        "nginx.service",
    ]);
    units
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UnitState {
    pub unit: String,
    pub load: String,
    pub active: String,
    pub sub: String,
    pub result: String,
}

impl UnitState {
    pub fn up(&self) -> bool {
        self.active == "active"
    }

    /// Will not come up by itself (failed, or not installed at all).
    pub fn dead(&self) -> bool {
        self.active == "failed" || self.load == "not-found" || self.load == "masked"
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub name: String,
    pub up: bool,
    /// Deliberately not running (DHCP kept off): neither up nor down.
    pub off: bool,
    pub detail: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub ready: bool,
    pub units: Vec<UnitState>,
    pub endpoints: Vec<Endpoint>,
    /// The enrolled nodes, when the API answered.
    pub nodes: Vec<Node>,
    /// Ironic's auth_strategy as configured (`http_basic`, `noauth`,
    /// `keystone`); empty when the endpoints file does not say.
    pub auth: String,
}

/// One enrolled node, as `baremetal node list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub uuid: String,
    pub provision_state: String,
    pub power_state: String,
    pub maintenance: bool,
    /// Ironic's last error for the node, if any (one line).
    pub last_error: String,
}

/// The fields `status` asks Ironic for (`fields=` needs API 1.8).
pub const NODE_FIELDS: &str = "uuid,name,provision_state,power_state,maintenance,last_error";

/// Parse Ironic's `GET /v1/nodes` answer.
pub fn parse_nodes(json: &str) -> Result<Vec<Node>> {
    let v: serde_json::Value = serde_json::from_str(json).context("not JSON")?;
    let list = v
        .get("nodes")
        .and_then(|d| d.as_array())
        .context("no \"nodes\" list")?;
    let text = |n: &serde_json::Value, k: &str| {
        n.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    };
    Ok(list
        .iter()
        .map(|n| Node {
            name: text(n, "name"),
            uuid: text(n, "uuid"),
            provision_state: text(n, "provision_state"),
            power_state: text(n, "power_state"),
            maintenance: n.get("maintenance").and_then(|m| m.as_bool()) == Some(true),
            last_error: text(n, "last_error"),
        })
        .collect())
}

fn render_nodes(s: &mut String, nodes: &[Node]) {
    if nodes.is_empty() {
        s.push_str("\nNODES  none enrolled\n");
        return;
    }
    let w = nodes
        .iter()
        .map(|n| n.name.len().max(n.uuid.len().min(8)))
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "\n{:<w$}  {:<15}  {:<9}  ERROR",
        "NODE", "PROVISION", "POWER"
    );
    for n in nodes {
        let name = if n.name.is_empty() {
            &n.uuid[..n.uuid.len().min(8)]
        } else {
            n.name.as_str()
        };
        let state = if n.maintenance {
            format!("{} (maint.)", n.provision_state)
        } else {
            n.provision_state.clone()
        };
        let _ = writeln!(
            s,
            "{name:<w$}  {state:<15}  {:<9}  {}",
            n.power_state, n.last_error
        );
    }
}

/// Parse `systemctl show -p Id,LoadState,ActiveState,SubState,Result U...`:
/// one block of `Key=value` lines per unit, blocks separated by a blank line.
pub fn parse_systemctl_show(text: &str) -> Vec<UnitState> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let kv: BTreeMap<&str, &str> = block.lines().filter_map(|l| l.split_once('=')).collect();
        let Some(id) = kv.get("Id") else { continue };
        let get = |k: &str| kv.get(k).copied().unwrap_or("").to_string();
        out.push(UnitState {
            unit: id.to_string(),
            load: get("LoadState"),
            active: get("ActiveState"),
            sub: get("SubState"),
            result: get("Result"),
        });
    }
    out
}

/// Whether a UDP port is bound, from /proc/net/udp or udp6 text (the
/// local address column is `HEXADDR:HEXPORT`).
pub fn udp_port_bound(proc_net_udp: &str, port: u16) -> bool {
    proc_net_udp.lines().skip(1).any(|l| {
        l.split_whitespace()
            .nth(1)
            .and_then(|local| local.rsplit_once(':'))
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            == Some(port)
    })
}

/// Driver names from `GET /v1/drivers`.
pub fn driver_names(json: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(json).context("not JSON")?;
    let list = v
        .get("drivers")
        .and_then(|d| d.as_array())
        .context("no \"drivers\" list")?;
    Ok(list
        .iter()
        .filter_map(|d| d.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect())
}

pub use crate::undercloud::parse_endpoints;

pub fn render_table(r: &Report) -> String {
    let mut s = String::new();
    let w = r
        .units
        .iter()
        .map(|u| u.unit.len())
        .chain(r.endpoints.iter().map(|e| e.name.len()))
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(s, "{:<w$}  STATE", "SERVICE");
    for u in &r.units {
        let state = if u.load == "not-found" {
            "not installed".to_string()
        } else if u.active == "failed" && !u.result.is_empty() {
            format!("failed ({})", u.result)
        } else {
            format!("{} ({})", u.active, u.sub)
        };
        let _ = writeln!(s, "{:<w$}  {state}", u.unit);
    }
    let _ = writeln!(s, "\n{:<w$}  STATE  DETAIL", "ENDPOINT");
    for e in &r.endpoints {
        let _ = writeln!(
            s,
            "{:<w$}  {:<5}  {}",
            e.name,
            if e.up {
                "up"
            } else if e.off {
                "off"
            } else {
                "DOWN"
            },
            e.detail
        );
    }
    if r.endpoints.iter().any(|e| e.name == "ironic API" && e.up) {
        render_nodes(&mut s, &r.nodes);
    }
    if r.auth == "noauth" {
        let _ = write!(s, "\nWARNING: {NOAUTH_WARNING}\n");
    }
    s.push('\n');
    s.push_str(&summary(r));
    s.push('\n');
    s
}

/// The last line: the boot test waits for the ready form of it.
pub fn summary(r: &Report) -> String {
    let units_up = r.units.iter().filter(|u| u.up()).count();
    let eps_up = r.endpoints.iter().filter(|e| e.up).count();
    if r.ready {
        let off: Vec<String> = r
            .endpoints
            .iter()
            .filter(|e| e.off)
            .map(|e| format!(", {} off", e.name))
            .collect();
        format!(
            "undercloud-live status: ready ({units_up} services active, {eps_up} endpoints up{})",
            off.concat()
        )
    } else {
        let down: Vec<&str> = r
            .units
            .iter()
            .filter(|u| !u.up())
            .map(|u| u.unit.trim_end_matches(".service"))
            .chain(
                r.endpoints
                    .iter()
                    .filter(|e| !e.up && !e.off)
                    .map(|e| e.name.as_str()),
            )
            .collect();
        format!(
            "undercloud-live status: NOT ready, down: {}",
            down.join(", ")
        )
    }
}

fn systemctl_show(units: &[&str]) -> Result<Vec<UnitState>> {
    let out = Task::new(
        "systemctl show",
        Command::new("systemctl")
            .args(["show", "-p", "Id,LoadState,ActiveState,SubState,Result"])
            .args(units),
    )
    .read_text()?;
    let mut states = parse_systemctl_show(&out);
    // systemctl answers in the order asked; keep ours whatever happens.
    states.sort_by_key(|s| {
        units
            .iter()
            .position(|u| *u == s.unit)
            .unwrap_or(usize::MAX)
    });
    Ok(states)
}

/// The API's client and the user it calls as (none: no auth, or the
/// password is not readable: the calls that need it then answer 401).
struct Caller {
    client: reqwest::blocking::Client,
    creds: Option<Credentials>,
}

fn http_get(caller: &Caller, url: &str) -> Result<(u16, String)> {
    let mut req = caller
        .client
        .get(url)
        .header("X-OpenStack-Ironic-API-Version", "1.8");
    if let Some(c) = &caller.creds {
        req = req.basic_auth(&c.username, Some(&c.password));
    }
    let resp = req.send().with_context(|| format!("GET {url}"))?;
    let code = resp.status().as_u16();
    let body = resp.text().with_context(|| format!("reading {url}"))?;
    Ok((code, body))
}

fn fetch_nodes(caller: &Caller, api: &str) -> Result<Vec<Node>> {
    let url = format!("{api}/v1/nodes?fields={NODE_FIELDS}");
    match http_get(caller, &url)? {
        (200, body) => parse_nodes(&body),
        (code, _) => anyhow::bail!("{url} answered {code}"),
    }
}

fn udp_bound(port: u16) -> bool {
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|f| {
        std::fs::read_to_string(f)
            .map(|t| udp_port_bound(&t, port))
            .unwrap_or(false)
    })
}

/// Ironic's API from the endpoints file.
fn api_url(endpoints: &BTreeMap<String, String>) -> String {
    endpoints
        .get("api")
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:6385".into())
}

/// With `ironic.tls`, the API's certificate is trusted (the endpoints
/// file's `cacert=`, or `OS_CACERT`); nothing is ever left unchecked.
fn http_client(endpoints: &BTreeMap<String, String>) -> Result<reqwest::blocking::Client> {
    let roots = crate::undercloud::tls::client_roots_here(endpoints)?;
    // Generous: Python answers slowly on an emulated CPU.
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(3))
        .tls_certs_merge(roots)
        .build()
        .context("making an HTTP client")
}

fn probe_endpoints(caller: &Caller, endpoints: &BTreeMap<String, String>) -> Result<Vec<Endpoint>> {
    let api = api_url(endpoints);
    let images = endpoints
        .get("image_server")
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8088/".into());
    let mut out = Vec::new();
    let v1 = format!("{api}/v1");
    out.push(match http_get(caller, &v1) {
        Ok((200, _)) => ep("ironic API", true, format!("{v1} (200)")),
        Ok((code, _)) => ep("ironic API", false, format!("{v1} answered {code}")),
        Err(e) => ep("ironic API", false, format!("{e:#}")),
    });
    let drivers = format!("{api}/v1/drivers");
    out.push(match http_get(caller, &drivers) {
        Ok((200, body)) => match driver_names(&body) {
            Ok(names) if !names.is_empty() => ep("ironic drivers", true, names.join(", ")),
            Ok(_) => ep(
                "ironic drivers",
                false,
                "no conductor has registered a driver yet".into(),
            ),
            Err(e) => ep("ironic drivers", false, format!("{drivers}: {e:#}")),
        },
        Ok((401, _)) => ep(
            "ironic drivers",
            false,
            format!("{drivers} answered 401: run as root, or source ~stack/undercloudrc first"),
        ),
        Ok((code, _)) => ep(
            "ironic drivers",
            false,
            format!("{drivers} answered {code}"),
        ),
        Err(e) => ep("ironic drivers", false, format!("{e:#}")),
    });
    out.push(match http_get(caller, &images) {
        // Any answer from nginx is an answering server; 5xx is not.
        Ok((code, _)) if code < 500 => ep("image server", true, format!("{images} ({code})")),
        Ok((code, _)) => ep("image server", false, format!("{images} answered {code}")),
        Err(e) => ep("image server", false, format!("{e:#}")),
    });
    let iface = endpoints.get("interface").cloned().unwrap_or_default();
    let guard = std::fs::read_to_string(dhcp_guard::STATE_FILE).ok();
    out.push(dhcp_endpoint(
        endpoints.get("dhcp").map(String::as_str),
        guard.as_deref(),
        &iface,
        udp_bound(67),
    ));
    out.push(port_endpoint("TFTP", 69, &iface, udp_bound(69)));
    Ok(out)
}

fn port_endpoint(name: &str, port: u16, iface: &str, up: bool) -> Endpoint {
    let detail = if iface.is_empty() {
        format!("udp {port}")
    } else {
        format!("udp {port} on {iface}")
    };
    ep(
        name,
        up,
        if up {
            detail
        } else {
            format!("nothing on {detail}")
        },
    )
}

/// DHCP: what `configure` decided (the endpoints file's `dhcp=`, the
/// guard's state file), else whether udp 67 is bound.
pub fn dhcp_endpoint(
    decided: Option<&str>,
    guard_file: Option<&str>,
    iface: &str,
    bound: bool,
) -> Endpoint {
    let detail = match decided {
        Some("off") => "off: provisioning.dhcp is off in undercloud.yaml".to_string(),
        Some("guard") => match guard_file.and_then(dhcp_guard::Guard::parse) {
            Some(g) => g.status_detail(),
            None => format!(
                "off: kept off by the check for another DHCP server on {iface} ({} is missing); \
                 set provisioning.dhcp: force in undercloud.yaml to serve anyway",
                dhcp_guard::STATE_FILE
            ),
        },
        // "serve", or a file from before the check existed.
        _ => return port_endpoint("DHCP", 67, iface, bound),
    };
    Endpoint {
        name: "DHCP".into(),
        up: false,
        off: true,
        detail,
    }
}

fn ep(name: &str, up: bool, detail: String) -> Endpoint {
    Endpoint {
        name: name.into(),
        up,
        off: false,
        detail,
    }
}

pub fn collect() -> Result<Report> {
    let endpoints = crate::undercloud::read_endpoints();
    let wanted = units(&endpoints);
    let units = systemctl_show(&wanted)?;
    let api = api_url(&endpoints);
    let caller = Caller {
        client: http_client(&endpoints)?,
        // Unreadable (not root, nothing sourced): reported as the 401.
        creds: credentials::for_client(&endpoints).unwrap_or(None),
    };
    let auth = endpoints.get("auth").cloned().unwrap_or_default();
    let endpoints = probe_endpoints(&caller, &endpoints)?;
    // The node list is information, not a condition of readiness; asked
    // for only when the API answered.
    let api_up = endpoints.iter().any(|e| e.name == "ironic API" && e.up);
    let nodes = if api_up {
        fetch_nodes(&caller, &api).unwrap_or_default()
    } else {
        Vec::new()
    };
    let ready = units.len() == wanted.len()
        && units.iter().all(UnitState::up)
        && endpoints.iter().all(|e| e.up || e.off);
    Ok(Report {
        ready,
        units,
        endpoints,
        nodes,
        auth,
    })
}

/// Collect, or with `wait` keep collecting until ready, a unit is dead, or
/// the time is up. Returns the last report.
pub fn status(wait: Option<Duration>) -> Result<Report> {
    wait_for(wait, collect, Duration::from_secs(5))
}

/// `status`'s loop over any way of collecting a report.
fn wait_for(
    wait: Option<Duration>,
    mut collect: impl FnMut() -> Result<Report>,
    pause: Duration,
) -> Result<Report> {
    // checked: `--wait 9223372036854775807` is past what an Instant holds;
    // such a wait is "until ready", not a panic.
    let deadline = wait.and_then(|w| Instant::now().checked_add(w));
    loop {
        let report = collect()?;
        let dead = report.units.iter().any(UnitState::dead);
        let give_up = match (wait, deadline) {
            (None, _) => true,
            (Some(_), None) => dead,
            (Some(_), Some(d)) => Instant::now() >= d || dead,
        };
        if report.ready || give_up {
            return Ok(report);
        }
        std::thread::sleep(pause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOW: &str = "Id=mariadb.service\nLoadState=loaded\nActiveState=active\nSubState=running\nResult=success\n\n\
Id=ironic-api.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\nResult=exit-code\n\n\
Id=nginx.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nResult=success\n";

    #[test]
    fn systemctl_show_blocks() {
        let s = parse_systemctl_show(SHOW);
        assert_eq!(s.len(), 3);
        assert!(s[0].up() && !s[0].dead());
        assert_eq!(s[1].result, "exit-code");
        assert!(!s[1].up() && s[1].dead());
        assert!(s[2].dead());
        assert!(parse_systemctl_show("").is_empty());
    }

    #[test]
    fn udp_ports_from_proc() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  12: 00000000:0043 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0\n\
  13: 0118A8C0:0045 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0\n";
        assert!(udp_port_bound(t, 67));
        assert!(udp_port_bound(t, 69));
        assert!(!udp_port_bound(t, 53));
        // The header's "local_address" is not a port.
        assert!(!udp_port_bound("  sl  local_address\n", 0));
    }

    #[test]
    fn dhcp_kept_off_is_off_not_down() {
        let guard =
            "interface=enp0s2\nreason=other-server\nserver=10.0.2.2\noffered=10.0.2.15\ntime=1\n";
        let e = dhcp_endpoint(Some("guard"), Some(guard), "enp0s2", false);
        assert!(e.off && !e.up);
        assert_eq!(
            e.detail,
            "off: another DHCP server (10.0.2.2) answers on enp0s2; set provisioning.dhcp: force in undercloud.yaml to serve anyway"
        );
        let e = dhcp_endpoint(Some("guard"), None, "enp0s2", false);
        assert!(
            e.off
                && e.detail
                    .contains("/run/undercloud-live/dhcp-guard is missing")
        );
        let e = dhcp_endpoint(Some("off"), None, "enp0s2", false);
        assert!(e.off && e.detail.contains("provisioning.dhcp is off"));
        // Served (or an endpoints file from before): the port decides.
        for decided in [Some("serve"), None] {
            let e = dhcp_endpoint(decided, Some(guard), "enp0s2", true);
            assert!(e.up && !e.off);
            assert_eq!(e.detail, "udp 67 on enp0s2");
            let e = dhcp_endpoint(decided, None, "enp0s2", false);
            assert!(!e.up && !e.off);
            assert_eq!(e.detail, "nothing on udp 67 on enp0s2");
        }

        let r = Report {
            ready: true,
            units: parse_systemctl_show(SHOW).into_iter().take(1).collect(),
            nodes: Vec::new(),
            auth: "http_basic".into(),
            endpoints: vec![
                ep("TFTP", true, "udp 69 on enp0s2".into()),
                dhcp_endpoint(Some("guard"), Some(guard), "enp0s2", false),
            ],
        };
        let t = render_table(&r);
        assert!(
            t.contains(
                "DHCP             off    off: another DHCP server (10.0.2.2) answers on enp0s2;"
            ),
            "{t}"
        );
        assert!(
            t.ends_with(
                "undercloud-live status: ready (1 services active, 1 endpoints up, DHCP off)\n"
            ),
            "{t}"
        );
        let mut r = r;
        r.ready = false;
        r.endpoints[0].up = false;
        assert!(summary(&r).ends_with("down: TFTP"), "{}", summary(&r));
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["endpoints"][1]["off"], true);
        assert_eq!(j["endpoints"][1]["up"], false);
    }

    #[test]
    fn drivers_json() {
        let j = r#"{"drivers":[{"name":"ipmi","hosts":["localhost"]},{"name":"redfish","hosts":["localhost"]}]}"#;
        assert_eq!(driver_names(j).unwrap(), ["ipmi", "redfish"]);
        assert!(driver_names(r#"{"drivers":[]}"#).unwrap().is_empty());
        assert!(driver_names("<html>").is_err());
        assert!(driver_names("{}").is_err());
    }

    #[test]
    fn endpoints_file() {
        let e = parse_endpoints(
            "# c\napi=http://127.0.0.1:6385\nimage_server = http://127.0.0.1:8090/\n",
        );
        assert_eq!(e["api"], "http://127.0.0.1:6385");
        assert_eq!(e["image_server"], "http://127.0.0.1:8090/");
        assert_eq!(e.len(), 2);
    }

    /// Ironic's answer to `GET /v1/nodes?fields=...` (API 1.8), trimmed.
    const NODES: &str = r#"{"nodes": [
      {"uuid": "5d6f3c2a-9d1e-4a57-8e55-0c1f9c7f2b11", "name": "node-0",
       "provision_state": "active", "power_state": "power on",
       "maintenance": false, "last_error": null, "links": []},
      {"uuid": "0f6b2c1e-3b4a-4d5e-9f60-718293a4b5c6", "name": null,
       "provision_state": "clean failed", "power_state": "power off",
       "maintenance": true,
       "last_error": "Timeout reached while cleaning\nTraceback ...", "links": []}
    ]}"#;

    #[test]
    fn nodes_json() {
        let n = parse_nodes(NODES).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].name, "node-0");
        assert_eq!(n[1].name, "");
        assert!(n[1].maintenance);
        assert_eq!(n[1].last_error, "Timeout reached while cleaning");
        assert!(parse_nodes("{}").is_err());
        assert!(parse_nodes(r#"{"nodes": []}"#).unwrap().is_empty());
    }

    #[test]
    fn mariadb_is_checked_only_when_used() {
        let mut e = parse_endpoints("database=sqlite\n");
        assert_eq!(
            units(&e),
            [
                "undercloud-config.service",
                "undercloud-db.service",
                "ironic.service",
                "undercloud-nodes.service",
                "dnsmasq.service",
                "nginx.service"
            ]
        );
        e.insert("database".into(), "mariadb".into());
        assert_eq!(units(&e)[1], "mariadb.service");
    }

    #[test]
    fn a_wait_too_long_for_the_clock_waits_until_ready() {
        let mut calls = 0;
        let r = wait_for(
            Some(Duration::from_secs(u64::MAX / 2)),
            || {
                calls += 1;
                Ok(Report {
                    ready: calls == 3,
                    units: Vec::new(),
                    endpoints: Vec::new(),
                    nodes: Vec::new(),
                    auth: String::new(),
                })
            },
            Duration::from_millis(1),
        )
        .unwrap();
        assert!(r.ready);
        assert_eq!(calls, 3);
        // A dead unit ends the wait whatever its length.
        let r = wait_for(
            Some(Duration::MAX),
            || {
                Ok(Report {
                    ready: false,
                    units: parse_systemctl_show(SHOW),
                    endpoints: Vec::new(),
                    nodes: Vec::new(),
                    auth: String::new(),
                })
            },
            Duration::from_millis(1),
        )
        .unwrap();
        assert!(!r.ready);
    }

    #[test]
    fn table_and_summary() {
        let units = parse_systemctl_show(SHOW);
        let mut r = Report {
            ready: false,
            units,
            endpoints: vec![
                ep("ironic API", true, "http://127.0.0.1:6385/v1 (200)".into()),
                ep("DHCP", false, "nothing on udp 67".into()),
            ],
            nodes: parse_nodes(NODES).unwrap(),
            auth: "http_basic".into(),
        };
        let t = render_table(&r);
        assert!(
            t.contains("\nNODE      PROVISION        POWER      ERROR\n"),
            "{t}"
        );
        assert!(
            t.contains("\nnode-0    active           power on   \n"),
            "{t}"
        );
        assert!(
            t.contains(
                "\n0f6b2c1e  clean failed (maint.)  power off  Timeout reached while cleaning\n"
            ),
            "{t}"
        );
        assert!(t.contains("mariadb.service     active (running)\n"), "{t}");
        assert!(
            t.contains("ironic-api.service  failed (exit-code)\n"),
            "{t}"
        );
        assert!(t.contains("nginx.service       not installed\n"), "{t}");
        assert!(
            t.contains("ironic API          up     http://127.0.0.1:6385/v1 (200)\n"),
            "{t}"
        );
        assert!(
            t.contains("DHCP                DOWN   nothing on udp 67\n"),
            "{t}"
        );
        assert!(
            t.ends_with("undercloud-live status: NOT ready, down: ironic-api, nginx, DHCP\n"),
            "{t}"
        );
        r.ready = true;
        r.units.truncate(1);
        r.endpoints.truncate(1);
        assert_eq!(
            summary(&r),
            "undercloud-live status: ready (1 services active, 1 endpoints up)"
        );
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["ready"], true);
        assert_eq!(j["nodes"][0]["provision_state"], "active");
        r.nodes.clear();
        assert!(render_table(&r).contains("\nNODES  none enrolled\n"));
        assert_eq!(j["units"][0]["unit"], "mariadb.service");
        assert_eq!(j["endpoints"][0]["up"], true);
        assert_eq!(j["auth"], "http_basic");
        assert!(!render_table(&r).contains("WARNING"));
        r.auth = "noauth".into();
        assert!(render_table(&r).contains("\nWARNING: Ironic's API has no authentication"));
    }

    /// With `ironic.tls`, `status` trusts the certificate the endpoints
    /// file names, and refuses an API serving any other.
    #[test]
    fn the_api_certificate_is_checked() {
        use crate::undercloud::tls;
        let names = tls::Names {
            address: [192, 168, 24, 1].into(),
            hostname: None,
        };
        let ours = tls::generate(&names).unwrap();
        let other = tls::generate(&names).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cacert = dir.path().join("ironic.crt");
        std::fs::write(&cacert, &ours.cert_pem).unwrap();
        let endpoints = parse_endpoints(&format!("cacert={}\n", cacert.display()));
        let caller = Caller {
            client: http_client(&endpoints).unwrap(),
            creds: None,
        };
        let port = tls::test_server(&ours);
        let (code, body) = http_get(&caller, &format!("https://127.0.0.1:{port}/v1")).unwrap();
        assert_eq!((code, body.as_str()), (200, r#"{"id": "v1"}"#));
        let impostor = tls::test_server(&other);
        let e = http_get(&caller, &format!("https://127.0.0.1:{impostor}/v1")).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("certificate") || e.contains("UnknownIssuer"),
            "{e}"
        );
        // Without the file: the system's roots alone refuse ours too.
        let plain = Caller {
            client: http_client(&BTreeMap::new()).unwrap(),
            creds: None,
        };
        assert!(http_get(&plain, &format!("https://127.0.0.1:{port}/v1")).is_err());
    }
}
