//! A root folder packed into a `.tar.zst` that `unpack` restores exactly:
//! the form of the cached debootstrap base and of the package layer.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::io::Interruptible;
use crate::system::command::Task;

/// GNU tar keeps numeric owners, device nodes, hard links and xattrs (file
/// capabilities) exactly; its output is compressed here with zstd, which
/// is fast both ways and sniffed by the unpacker. The file is private
/// (0600): a root mid-build can hold what its hooks were given.
pub fn pack(root: &Path, out: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut tar = Task::new(
        format!("tar of {}", root.display()),
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
            .arg(root)
            .args(["-cf", "-", "."]),
    )
    .spawn()?;
    // Checked on every read: a signal does not reach tar (its own process
    // group), which would otherwise go on to the end of the root.
    let mut stdout = Interruptible::new(tar.stdout().context("tar has no output pipe")?);
    let file = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    let mut enc = zstd::stream::write::Encoder::new(file, 3).context("starting zstd")?;
    // Both CPUs: packing runs while nothing else does.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    enc.multithread(threads).context("starting zstd workers")?;
    let copied = io::copy(&mut stdout, &mut enc);
    // Closed before the wait: after a failed copy, tar must see the pipe
    // end rather than wait for a reader.
    drop(stdout);
    let finished = tar.finish();
    // A failed copy first: tar's broken pipe would only follow from it.
    copied.with_context(|| format!("writing {}", out.display()))?;
    finished?;
    let mut file = enc
        .finish()
        .with_context(|| format!("writing {}", out.display()))?;
    file.flush()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}
