//! The live root as erofs, made with mkfs.erofs (package erofs-utils).
//! Reproducible: times clamped to the epoch (as squashfs's are, for the
//! same reason) and a UUID derived from the seed.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::spec::Compressor;
use crate::system::command::Task;
use crate::system::tool;

pub fn check_tool() -> Result<()> {
    tool::require("mkfs.erofs", "erofs-utils").map(drop)
}

/// The compressors this mkfs.erofs was built with, from its `--help` text
/// ("Available compressors are: lz4hc, lz4"): Debian 12's lacks lzma.
pub fn available_compressors() -> Result<Vec<String>> {
    // The text is what counts, whatever the exit status.
    let out = Task::new(
        "mkfs.erofs --help",
        Command::new("mkfs.erofs").arg("--help"),
    )
    .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok(parse_compressors(&text))
}

fn parse_compressors(help: &str) -> Vec<String> {
    help.lines()
        .find_map(|l| l.trim().strip_prefix("Available compressors are:"))
        .map(|list| {
            list.split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Times come from the environment: see [`make`].
pub fn args(root: &Path, out: &Path, comp: Compressor, uuid: &str) -> Vec<String> {
    let z = match comp {
        (c, Some(level)) => format!("-z{},{level}", c.name()),
        (c, None) => format!("-z{}", c.name()),
    };
    vec![
        z,
        format!("-U{uuid}"),
        "--quiet".into(),
        out.display().to_string(),
        root.display().to_string(),
    ]
}

pub fn make(root: &Path, out: &Path, comp: Compressor, epoch: i64, uuid: &str) -> Result<()> {
    check_tool()?;
    let have = available_compressors()?;
    if !have.iter().any(|c| c == comp.0.name()) {
        bail!(
            "this mkfs.erofs cannot compress with {} (it has: {}): choose another root.compression or install a newer erofs-utils",
            comp.0.name(),
            have.join(", ")
        );
    }
    let mut cmd = Command::new("mkfs.erofs");
    cmd.args(args(root, out, comp, uuid));
    super::clamp_times(&mut cmd, epoch);
    cmd.stdout(std::process::Stdio::null());
    Task::new("mkfs.erofs", &mut cmd).run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Compression;

    #[test]
    fn compressor_list_is_read_from_help() {
        let help =
            "usage: ...\n -T#  set time\nAvailable compressors are: lz4hc, lz4\nmkfs.erofs 1.5\n";
        assert_eq!(parse_compressors(help), vec!["lz4hc", "lz4"]);
        assert!(parse_compressors("nothing").is_empty());
    }

    #[test]
    fn makes_identical_images() {
        if !crate::system::testing::require(
            tool::find("mkfs.erofs").is_some(),
            "erofs-utils not installed",
        ) {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        // etc/old.py, a packaged file older than the epoch: its time is kept.
        let root = crate::system::testing::root_with_old_and_new_files(t.path());
        let uuid = "0b7f7d43-3b4a-4b57-9d7e-8f4f3c2f1a10";
        let (a, b) = (t.path().join("a.img"), t.path().join("b.img"));
        make(&root, &a, (Compression::Lz4hc, None), 1_700_000_000, uuid).unwrap();
        // Touched between the builds: newer than the epoch either way.
        std::fs::write(root.join("etc/hostname"), "live\n").unwrap();
        make(&root, &b, (Compression::Lz4hc, None), 1_700_000_000, uuid).unwrap();
        let bytes = std::fs::read(&a).unwrap();
        assert_eq!(bytes, std::fs::read(&b).unwrap());
        // erofs superblock magic at byte 1024.
        assert_eq!(&bytes[1024..1028], &0xE0F5_E1E2u32.to_le_bytes());
        if let Some(dump) = tool::find("dump.erofs") {
            let time = |path: &str| {
                // dump.erofs prints local time.
                let o = std::process::Command::new(&dump)
                    .env("TZ", "UTC")
                    .arg(format!("--path={path}"))
                    .arg(&a)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.lines()
                    .find_map(|l| l.strip_prefix("Timestamp: "))
                    .unwrap_or_else(|| panic!("no timestamp for {path}:\n{text}"))
                    .to_string()
            };
            assert!(time("/etc/old.py").starts_with("2017-07-14 02:40:00"));
            assert!(time("/etc/hostname").starts_with("2023-11-14 22:13:20"));
        }
    }
}
