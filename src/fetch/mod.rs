//! Base download: HTTP(S)/file/local sources into a cache, sha256 verified while streaming.
