//! The live root: /LiveOS/squashfs.img made with mksquashfs, the field's
//! standard tool (dracut's dmsquash-live loop-mounts it).

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::spec::{Compression, Compressor};
use crate::system::command::Task;
use crate::system::tool;

/// Check that mksquashfs is there, naming the package that provides it.
pub fn check_tool() -> Result<()> {
    tool::require("mksquashfs", "squashfs-tools").map(drop)
}

/// The mksquashfs argument list (kept pure so it can be tested). Times
/// come from the environment: see [`super::clamp_times`].
pub fn args(root: &Path, out: &Path, comp: Compressor, quiet: bool) -> Vec<String> {
    let (comp, level) = comp;
    let mut a = vec![
        root.display().to_string(),
        out.display().to_string(),
        "-noappend".into(),
        "-comp".into(),
        comp.name().into(),
        // 1 MiB blocks compress a root noticeably better than the 128 KiB
        // default and are what Fedora's live images use.
        "-b".into(),
        "1M".into(),
        "-xattrs".into(),
    ];
    // zstd and gzip take a level; the spec refuses one for the others.
    if let (Compression::Zstd | Compression::Gzip, Some(l)) = (comp, level) {
        a.extend(["-Xcompression-level".into(), l.to_string()]);
    }
    if quiet {
        a.push("-quiet".into());
    }
    a.push("-no-progress".into());
    a
}

pub fn make(root: &Path, out: &Path, comp: Compressor, epoch: i64, quiet: bool) -> Result<()> {
    check_tool()?;
    let mut cmd = Command::new("mksquashfs");
    cmd.args(args(root, out, comp, quiet));
    super::clamp_times(&mut cmd, epoch);
    if quiet {
        cmd.stdout(std::process::Stdio::null());
    }
    Task::new("mksquashfs", &mut cmd).run()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_set_compression_and_leave_times_to_the_epoch() {
        let a = args(
            Path::new("/r"),
            Path::new("/o.img"),
            (Compression::Xz, None),
            false,
        );
        let s = a.join(" ");
        assert!(s.starts_with("/r /o.img -noappend -comp xz"));
        assert!(!s.contains("-all-time"), "{s}");
        assert!(!s.contains("Xcompression-level"));
        let z = args(
            Path::new("/r"),
            Path::new("/o.img"),
            (Compression::Zstd, Some(6)),
            false,
        )
        .join(" ");
        assert!(
            z.contains("-comp zstd") && z.contains("-Xcompression-level 6"),
            "{z}"
        );
    }

    #[test]
    fn makes_a_readable_image() {
        let have = tool::find("mksquashfs").is_some() && tool::find("unsquashfs").is_some();
        if !crate::system::testing::require(have, "squashfs-tools not installed") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        // etc/old.py, a packaged file older than the epoch: its time is kept.
        let root = crate::system::testing::root_with_old_and_new_files(t.path());
        let a = t.path().join("a.img");
        let b = t.path().join("b.img");
        make(&root, &a, (Compression::Zstd, None), 1_700_000_000, true).unwrap();
        // Touched between the builds: newer than the epoch either way.
        std::fs::write(root.join("etc/hostname"), "live\n").unwrap();
        make(&root, &b, (Compression::Zstd, None), 1_700_000_000, true).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        // unsquashfs -lln: "mode owner size date time name", times local.
        let list = Command::new("unsquashfs")
            .args(["-lln", "-UTC"])
            .arg(&a)
            .output()
            .unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        let line = |name: &str| {
            list.lines()
                .find(|l| l.ends_with(name))
                .unwrap_or_else(|| panic!("{name} not listed:\n{list}"))
                .to_string()
        };
        assert!(line("/etc/old.py").contains("2017-07-14 02:40"), "{list}");
        assert!(line("/etc/hostname").contains("2023-11-14 22:13"), "{list}");
        let out = Command::new("unsquashfs")
            .arg("-cat")
            .arg(&a)
            .arg("etc/hostname")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "live\n");
    }
}
