//! Running the external programs the stages call, one way for all of them.
//!
//! A [`Task`] is a `Command` with a description that names it in errors
//! ("mkfs.ext4 on /dev/loop3"). Every task
//!
//! - reads /dev/null unless it is given input: a tool that asks a question
//!   (a password prompt, "proceed anyway?") fails at once instead of
//!   waiting for an answer nobody will type;
//! - writes its standard error to an anonymous temporary file, whose last
//!   lines end the error when it fails: `mkfs.ext4 on /dev/loop3 failed
//!   (exit status: 1): <what it said>`. A file rather than a pipe: it never
//!   fills up and stops the program, needs no reader thread, and a
//!   grandchild that keeps it open cannot keep us waiting;
//! - runs in its own process group through `interrupt::spawn`/`wait`, so
//!   Ctrl-C kills it and whatever it started, and the error is
//!   `interrupt::Interrupted` (recognised by `interrupt::is_interrupt`).
//!
//! Standard output goes where the command says (inherited unless the
//! caller set it), or is captured by [`Task::read`] and [`Task::output`],
//! or streamed through [`Task::spawn`].
//!
//! Not every child goes through here: QEMU has its own launcher
//! (`qemu.rs`: its serial console and stderr are read as they come, and it
//! dies with us); element hooks stream their output line by line to the
//! build log (`elements::run::stream`); the sandboxed shell of
//! `elements plan` is started by the sandbox's rules; and clean-up that
//! must still run while an interrupt unwinds (detaching a loop device)
//! cannot use a runner that refuses to start once the flag is up.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::interrupt;

/// Lines of standard error an error message ends with (joined with "; ":
/// the message stays one line).
const TAIL_LINES: usize = 10;
/// Lines of a log shown under the error (its own lines: a log's last
/// lines make sense only together).
const LOG_TAIL_LINES: usize = 15;
/// How much of the end of standard error is read for its last lines.
const TAIL_BYTES: u64 = 64 << 10;

/// A command, what it is in words, and how it is fed and heard.
pub struct Task<'a> {
    what: String,
    cmd: &'a mut Command,
    input: Option<Vec<u8>>,
    log: Option<&'a Path>,
}

/// Where a task's standard output goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stdout {
    /// Where the command says (inherited unless set).
    AsSet,
    /// Into a temporary file, read when the task ends.
    Capture,
    /// A pipe the caller reads while the task runs.
    Pipe,
}

impl<'a> Task<'a> {
    /// `what` names the command in errors: lowercase, what it does to
    /// what ("losetup over disk.img at byte 1048576").
    pub fn new(what: impl Into<String>, cmd: &'a mut Command) -> Task<'a> {
        Task {
            what: what.into(),
            cmd,
            input: None,
            log: None,
        }
    }

    /// Bytes for its standard input (written by a thread of their own, so
    /// input of any size cannot block the wait).
    pub fn input(mut self, bytes: impl Into<Vec<u8>>) -> Task<'a> {
        self.input = Some(bytes.into());
        self
    }

    /// Both output streams into the file at `path` (created or truncated),
    /// which is kept; a failure shows the log's last lines. For tools
    /// whose long output explains a failure only as a whole (debootstrap).
    pub fn log(mut self, path: &'a Path) -> Task<'a> {
        self.log = Some(path);
        self
    }

    /// Runs it to the end; an error unless it succeeded.
    pub fn run(self) -> Result<()> {
        let (mut running, _) = self.start(Stdout::AsSet)?;
        let status = running.wait()?;
        running.check(status)
    }

    /// Runs it to the end and returns its standard output; an error unless
    /// it succeeded.
    pub fn read(self) -> Result<Vec<u8>> {
        let (mut running, stdout) = self.start(Stdout::Capture)?;
        let status = running.wait()?;
        running.check(status)?;
        read_all(stdout, &running.what)
    }

    /// [`Task::read`] as text (invalid UTF-8 replaced).
    pub fn read_text(self) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.read()?).into_owned())
    }

    /// Runs it to the end and returns its status and both output streams,
    /// whatever the status: for a tool whose exit status says nothing
    /// (`--help`, debugfs). Interrupts and failures to start are errors.
    pub fn output(self) -> Result<Output> {
        let (mut running, stdout) = self.start(Stdout::Capture)?;
        let status = running.wait()?;
        Ok(Output {
            status,
            stdout: read_all(stdout, &running.what)?,
            stderr: read_all(running.errors.try_clone().ok(), &running.what)?,
        })
    }

    /// Starts it with its standard output on a pipe, for a caller that
    /// streams it (`Running::stdout`), then calls `Running::finish`.
    pub fn spawn(self) -> Result<Running> {
        Ok(self.start(Stdout::Pipe)?.0)
    }

    /// Starts the child; the file its standard output is captured in, when
    /// asked to.
    fn start(self, stdout: Stdout) -> Result<(Running, Option<File>)> {
        let what = self.what;
        let (errors, log) = match self.log {
            Some(path) => {
                // Readable too: its end is read back for the error.
                let f = File::options()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                let out = f
                    .try_clone()
                    .with_context(|| format!("opening {}", path.display()))?;
                self.cmd.stdout(out);
                (f, Some(path.to_path_buf()))
            }
            None => (scratch(&what)?, None),
        };
        self.cmd
            .stderr(errors.try_clone().context("duplicating a file handle")?);
        let captured = match stdout {
            Stdout::AsSet => None,
            Stdout::Capture => {
                let f = scratch(&what)?;
                self.cmd
                    .stdout(f.try_clone().context("duplicating a file handle")?);
                Some(f)
            }
            Stdout::Pipe => {
                self.cmd.stdout(Stdio::piped());
                None
            }
        };
        let mut child = match self.input {
            Some(_) => interrupt::spawn_fed(self.cmd, &what),
            None => interrupt::spawn(self.cmd, &what),
        }?;
        let stdin = child.stdin.take();
        let mut running = Running {
            what,
            child: Some(child),
            errors,
            log,
            feeder: None,
        };
        if let (Some(bytes), Some(mut stdin)) = (self.input, stdin) {
            // On an error here `running` is dropped, which ends the child.
            let feeder = std::thread::Builder::new()
                .name("task-input".into())
                .spawn(move || stdin.write_all(&bytes))
                .with_context(|| format!("starting a thread to feed {}", running.what))?;
            running.feeder = Some(feeder);
        }
        Ok((running, captured))
    }
}

/// A started task: its standard output to stream, then its end.
pub struct Running {
    what: String,
    /// Taken by the wait.
    child: Option<Child>,
    errors: File,
    log: Option<PathBuf>,
    feeder: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// The pipe of its standard output (once).
    pub fn stdout(&mut self) -> Option<ChildStdout> {
        self.child.as_mut()?.stdout.take()
    }

    /// Waits for its end; an error unless it succeeded. Drop the pipe of
    /// `stdout` first: a child still writing to it would wait for a reader
    /// that never comes.
    pub fn finish(mut self) -> Result<()> {
        let status = self.wait()?;
        self.check(status)
    }

    fn wait(&mut self) -> Result<ExitStatus> {
        let child = self
            .child
            .take()
            .with_context(|| format!("{} was already waited for", self.what))?;
        let status = interrupt::wait(child, &self.what)?;
        if let Some(feeder) = self.feeder.take() {
            let fed = feeder.join().map_err(|_| {
                anyhow::anyhow!("feeding {} failed (its thread panicked)", self.what)
            })?;
            // A program that failed may have stopped reading: its own
            // error says more than the broken pipe.
            if status.success() {
                fed.with_context(|| format!("writing to {}", self.what))?;
            }
        }
        Ok(status)
    }

    /// The error of a failed run: the status and the last lines it wrote.
    fn check(&self, status: ExitStatus) -> Result<()> {
        if status.success() {
            return Ok(());
        }
        let what = &self.what;
        let lines = last_lines(&self.errors, TAIL_BYTES);
        match &self.log {
            Some(log) => {
                let shown = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                bail!(
                    "{what} failed ({status}); last lines of {}:\n{}",
                    log.display(),
                    shown.join("\n")
                )
            }
            None if lines.is_empty() => bail!("{what} failed ({status}) and printed nothing"),
            None => {
                let shown = &lines[lines.len().saturating_sub(TAIL_LINES)..];
                bail!("{what} failed ({status}): {}", shown.join("; "))
            }
        }
    }
}

/// A task given up before its end (an error between `spawn` and `finish`)
/// is killed with its process group and reaped, not left running.
impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Not yet reaped, so the group id cannot have been reused.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An anonymous temporary file (gone when closed) for a task's output.
fn scratch(what: &str) -> Result<File> {
    tempfile::tempfile().with_context(|| format!("creating a temporary file for {what}'s output"))
}

/// The whole of a capture file, from its start.
fn read_all(file: Option<File>, what: &str) -> Result<Vec<u8>> {
    let Some(mut f) = file else {
        return Ok(Vec::new());
    };
    let mut bytes = Vec::new();
    f.seek(SeekFrom::Start(0))
        .and_then(|_| f.read_to_end(&mut bytes))
        .with_context(|| format!("reading the output of {what}"))?;
    Ok(bytes)
}

/// The non-blank lines of the last `max` bytes of `file`, trimmed (none
/// when it cannot be read: the status alone is still an error).
fn last_lines(file: &File, max: u64) -> Vec<String> {
    let mut f = file;
    let mut bytes = Vec::new();
    let read = f
        .seek(SeekFrom::End(0))
        .and_then(|end| f.seek(SeekFrom::Start(end.saturating_sub(max))))
        .and_then(|_| f.take(max).read_to_end(&mut bytes));
    if read.is_err() {
        return Vec::new();
    }
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    #[test]
    fn a_failure_names_the_task_its_status_and_its_last_words() {
        let e = Task::new(
            "making things",
            sh("echo out; for i in $(seq 1 30); do echo line $i >&2; done; exit 3")
                .stdout(Stdio::null()),
        )
        .run()
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.starts_with("making things failed (exit status: 3): line 21; line 22;"),
            "{text}"
        );
        assert!(text.ends_with("line 30"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let e = Task::new("quiet", &mut sh("exit 1")).run().unwrap_err();
        assert_eq!(
            e.to_string(),
            "quiet failed (exit status: 1) and printed nothing"
        );
    }

    #[test]
    fn reads_output_feeds_input_and_gives_no_terminal_input() {
        let out = Task::new("echo", &mut sh("echo hello; echo noise >&2"))
            .read_text()
            .unwrap();
        assert_eq!(out, "hello\n");
        // Bigger than a pipe's buffer: the feeder thread writes while we
        // wait.
        let big = vec![b'x'; 1 << 20];
        let n = Task::new("wc", Command::new("wc").arg("-c"))
            .input(big)
            .read_text()
            .unwrap();
        assert_eq!(n.trim(), "1048576");
        // Standard input is /dev/null: read gets the end at once.
        let got = Task::new("cat", &mut Command::new("cat")).read().unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn output_returns_a_failure_with_both_streams() {
        let o = Task::new("help", &mut sh("echo usage; echo more >&2; exit 1"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(o.stdout, b"usage\n");
        assert_eq!(o.stderr, b"more\n");
    }

    #[test]
    fn a_program_that_is_not_there_is_named() {
        let e = Task::new(
            "the tool",
            &mut Command::new("/nonexistent/undercloud-live-tool"),
        )
        .run()
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(text.starts_with("starting the tool: "), "{text}");
    }

    #[test]
    fn a_log_keeps_both_streams_and_its_end_is_shown() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("tool.log");
        let e = Task::new(
            "the tool",
            &mut sh("for i in $(seq 1 20); do echo out $i; echo err $i >&2; done; exit 2"),
        )
        .log(&log)
        .run()
        .unwrap_err();
        let text = e.to_string();
        let head = format!(
            "the tool failed (exit status: 2); last lines of {}:\n",
            log.display()
        );
        assert!(text.starts_with(&head), "{text}");
        assert_eq!(text.lines().count(), 1 + LOG_TAIL_LINES, "{text}");
        assert!(text.ends_with("err 20"), "{text}");
        let kept = std::fs::read_to_string(&log).unwrap();
        assert!(kept.contains("out 1\n") && kept.contains("err 1\n"));
    }

    #[test]
    fn a_spawned_task_streams_its_output() {
        let mut t = Task::new("seq", Command::new("seq").args(["1", "3"]))
            .spawn()
            .unwrap();
        let mut text = String::new();
        t.stdout().unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "1\n2\n3\n");
        t.finish().unwrap();
        // Given up before its end: killed, not left running.
        let mut t = Task::new("sleep", Command::new("sleep").arg("600"))
            .spawn()
            .unwrap();
        let pid = t.child.as_ref().unwrap().id();
        drop(t.stdout());
        drop(t);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        let t = Task::new("false", &mut sh("echo why >&2; exit 4"))
            .spawn()
            .unwrap();
        assert_eq!(
            t.finish().unwrap_err().to_string(),
            "false failed (exit status: 4): why"
        );
    }
}
