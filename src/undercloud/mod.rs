//! The undercloud inside the image: `undercloud.yaml` (config), the files
//! the services read (render), the boot-time step that writes them
//! (configure) and the check that no other DHCP server answers on the
//! provisioning network before ours serves it (dhcp_probe, dhcp_guard).
//! `status` (src/status.rs) reports on the result.

pub mod config;
pub mod configure;
pub mod dhcp_guard;
pub mod dhcp_probe;
pub mod nodes;
pub mod render;

/// Written by `undercloud configure`: the URLs `status` probes.
pub const ENDPOINTS_FILE: &str = "/etc/undercloud/endpoints";
