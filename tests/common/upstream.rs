//! The real element trees our compatibility tests run: diskimage-builder's
//! and ironic-python-agent-builder's, from their PyPI source releases
//! (pinned version and sha256), downloaded once into the test cache and
//! unpacked there (file modes kept: run-parts only runs executables).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::cache_root;

struct Release {
    name: &'static str,
    url: &'static str,
    sha256: &'static str,
    /// The element folder inside the unpacked release.
    elements: &'static str,
}

const DIB: Release = Release {
    name: "diskimage_builder-3.43.0",
    url: "https://files.pythonhosted.org/packages/7d/37/37071df7cb833220669c977cce9619e1aa25f9edf682cb362c3bf50f34d6/diskimage_builder-3.43.0.tar.gz",
    sha256: "a0e71b53c62e9f91dfa29a19118b4f44f6c9ddbf490ce51700234f950d1d70df",
    elements: "diskimage_builder/elements",
};

const IPA_BUILDER: Release = Release {
    name: "ironic_python_agent_builder-7.4.0",
    url: "https://files.pythonhosted.org/packages/7b/43/02074d6a0e7ae62273fa3d78fb0524833b23c4892feae39bd694d8a9f05e/ironic_python_agent_builder-7.4.0.tar.gz",
    sha256: "6ca1958a29e529daf501a45a4b5b612c2a1b349cea10dd29c07a839aa2dfa812",
    elements: "dib",
};

/// diskimage-builder's `elements` folder.
pub fn dib_elements() -> PathBuf {
    unpacked(&DIB)
}

/// ironic-python-agent-builder's `dib` folder (its elements).
pub fn ipa_builder_elements() -> PathBuf {
    unpacked(&IPA_BUILDER)
}

fn unpacked(r: &Release) -> PathBuf {
    let dir = cache_root().join("upstream").join(r.name);
    if !dir.is_dir() {
        // Tests run in parallel (and in several processes): each unpacks
        // beside the cache entry and renames; the first rename wins.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tmp = dir.with_extension(format!("partial-{}-{n}", std::process::id()));
        fetch_and_unpack(r, &tmp);
        if std::fs::rename(&tmp, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    dir.join(r.name).join(r.elements)
}

fn fetch_and_unpack(r: &Release, dir: &Path) {
    let mut body = Vec::new();
    reqwest::blocking::get(r.url)
        .and_then(|resp| resp.error_for_status())
        .unwrap_or_else(|e| panic!("downloading {}: {e}", r.url))
        .read_to_end(&mut body)
        .unwrap_or_else(|e| panic!("downloading {}: {e}", r.url));
    let got = hex::encode(Sha256::digest(&body));
    assert_eq!(got, r.sha256, "{}: wrong sha256", r.url);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let archive = dir.join(format!("{}.tar.gz", r.name));
    std::fs::write(&archive, &body).unwrap();
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "unpacking {}", archive.display());
    std::fs::remove_file(&archive).unwrap();
}
