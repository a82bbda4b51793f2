//! Progress reporting: indicatif bars on a terminal, plain log lines otherwise.
//!
//! Every long stage takes a `&Progress`. On a terminal a byte bar shows
//! rate and ETA; when standard error is not a terminal (CI, logs) the same
//! work prints a plain line at start, roughly every 10% and at the end, so logs
//! stay readable. `--quiet` silences both.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

#[derive(Clone, Debug)]
pub struct Progress {
    quiet: bool,
    tty: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// A reporter that prints nothing (library callers, tests).
    pub fn silent() -> Self {
        Progress {
            quiet: true,
            tty: false,
        }
    }

    pub fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// One line announcing a stage or a fact.
    pub fn step(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("==> {}", msg.as_ref());
        }
    }

    /// A byte counter for `what`; `total` when the size is known.
    pub fn bytes(&self, what: &str, total: Option<u64>) -> Bar {
        self.bar_in(None, what, total)
    }

    /// Bars that run at the same time (one per USB stick written in
    /// parallel): on a terminal they are drawn together instead of
    /// overwriting each other; plain lines need no coordination.
    pub fn group(&self) -> Group {
        Group {
            progress: self.clone(),
            multi: (self.tty && !self.quiet).then(MultiProgress::new),
        }
    }

    fn bar_in(&self, multi: Option<&MultiProgress>, what: &str, total: Option<u64>) -> Bar {
        if self.quiet {
            return Bar::none();
        }
        if self.tty {
            let pb = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let template = if total.is_some() {
                "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
            } else {
                "{msg:>12} {spinner} {bytes} {bytes_per_sec}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb.set_message(what.to_string());
            let pb = match multi {
                Some(m) => m.add(pb),
                None => pb,
            };
            pb.enable_steady_tick(Duration::from_millis(200));
            Bar {
                inner: BarKind::Tty(pb),
            }
        } else {
            eprintln!(
                "==> {what}: started{}",
                total
                    .map(|t| format!(" ({})", human_bytes(t)))
                    .unwrap_or_default()
            );
            Bar {
                inner: BarKind::Plain {
                    what: what.to_string(),
                    total,
                    done: 0,
                    next_report: 0,
                    started: Instant::now(),
                },
            }
        }
    }
}

/// A set of bars drawn together; see [`Progress::group`].
#[derive(Clone)]
pub struct Group {
    progress: Progress,
    multi: Option<MultiProgress>,
}

impl Group {
    pub fn bytes(&self, what: &str, total: Option<u64>) -> Bar {
        self.progress.bar_in(self.multi.as_ref(), what, total)
    }
}

enum BarKind {
    None,
    Tty(ProgressBar),
    Plain {
        what: String,
        total: Option<u64>,
        done: u64,
        next_report: u64,
        started: Instant,
    },
}

pub struct Bar {
    inner: BarKind,
}

impl Bar {
    pub fn none() -> Self {
        Bar {
            inner: BarKind::None,
        }
    }

    pub fn inc(&mut self, n: u64) {
        match &mut self.inner {
            BarKind::None => {}
            BarKind::Tty(pb) => pb.inc(n),
            BarKind::Plain {
                what,
                total,
                done,
                next_report,
                ..
            } => {
                *done += n;
                if let Some(t) = *total {
                    if t > 0 && *done >= *next_report {
                        if *next_report > 0 {
                            eprintln!("==> {what}: {}%", (*done * 100 / t).min(100));
                        }
                        *next_report += t.div_ceil(10).max(1);
                    }
                }
            }
        }
    }

    pub fn finish(self) {
        match self.inner {
            BarKind::None => {}
            BarKind::Tty(pb) => pb.finish_and_clear(),
            BarKind::Plain {
                what,
                done,
                started,
                ..
            } => {
                let secs = started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
                eprintln!(
                    "==> {what}: done, {} in {secs:.1} s ({}/s)",
                    human_bytes(done),
                    human_bytes(rate as u64)
                );
            }
        }
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_scales() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
