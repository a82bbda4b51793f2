//! The undercloud inside the image: `undercloud.yaml` (config), the files
//! the services read (render), and the boot-time step that writes them
//! (configure). `status` (src/status.rs) reports on the result.

pub mod config;
pub mod configure;
pub mod render;
