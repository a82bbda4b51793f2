//! The undercloud inside the image: `undercloud.yaml` (config), the files
//! the services read (render), the boot-time step that writes them
//! (configure) and the check that no other DHCP server answers on the
//! provisioning network before ours serves it (dhcp_probe, dhcp_guard).
//! `status` (src/status.rs) reports on the result.

pub mod config;
pub mod configure;
pub mod credentials;
pub mod dhcp_guard;
pub mod dhcp_probe;
pub mod nodes;
pub mod render;
pub mod tls;

/// Written by `undercloud configure`: the URLs `status` probes.
pub const ENDPOINTS_FILE: &str = "/etc/undercloud/endpoints";

/// `key=value` lines of the endpoints file (comments skipped).
pub fn parse_endpoints(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The endpoints file of this system, empty when there is none (not a
/// configured undercloud).
pub fn read_endpoints() -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(ENDPOINTS_FILE)
        .map(|t| parse_endpoints(&t))
        .unwrap_or_default()
}
