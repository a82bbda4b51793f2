//! Where undercloud-live keeps what it downloads and builds once.

use std::path::PathBuf;

/// `$UCL_CACHE_DIR`, else `$XDG_CACHE_HOME/undercloud-live`, else
/// `~/.cache/undercloud-live`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("UCL_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("undercloud-live")
}
