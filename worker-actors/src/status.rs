//! The owner's status line: what the worker does (idle, training a job and its epoch, paused
//! and why), what it earned since it started, and the last word from an auction.
//!
//! On a terminal the line is redrawn in place on stderr (`\r`); log lines written through
//! [`LogWriter`] clear it first, and the next redraw puts it back under them. Elsewhere (a
//! file, a service's journal) it is logged when it changes, at most every [`LOG_EVERY`].

use std::{
    io::Write,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use helium_protocol::limits::credits;

use crate::owner::Pause;

/// The least time between two status lines in a log.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
/// How often the agent refreshes the line.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// What the worker is doing.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    Idle,
    Training {
        job: String,
        /// Epochs done of all, once the first is.
        epoch: Option<(u32, u32)>,
    },
    Paused(Pause),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub activity: Activity,
    /// Micro-credits paid to the owner for this process's settled awards.
    pub earned: u64,
    /// Awards settled (paid in whole or in part, or nothing).
    pub settled: u32,
    /// The last explanation of an auction: a decline, a loss.
    pub last: Option<String>,
}

/// A job id as a person scans it: its first 8 characters.
pub fn short(job: &str) -> String {
    match job.char_indices().nth(8) {
        Some((i, _)) if job.chars().count() > 10 => format!("{}…", &job[..i]),
        _ => job.to_string(),
    }
}

/// The status line, e.g. `training 0192ab34… epoch 3 of 8 · earned 1.500000 credits (2 jobs
/// settled) · last: lost job 0192ff00…: outbid: …`.
pub fn render(s: &Status) -> String {
    let activity = match &s.activity {
        Activity::Idle => "idle".to_string(),
        Activity::Training { job, epoch: None } => format!("training {}", short(job)),
        Activity::Training {
            job,
            epoch: Some((e, all)),
        } => format!("training {} epoch {e} of {all}", short(job)),
        Activity::Paused(Pause::OwnerBusy(load)) => format!("paused: owner busy ({load})"),
        Activity::Paused(Pause::OutsideHours(h)) => format!("paused: outside hours {h}"),
        Activity::Paused(Pause::Measuring) => "starting: measuring the owner's use".to_string(),
    };
    let jobs = if s.settled == 1 { "job" } else { "jobs" };
    let mut line = format!(
        "{activity} · earned {:.6} credits ({} {jobs} settled)",
        credits(s.earned),
        s.settled
    );
    if let Some(last) = &s.last {
        line.push_str(" · last: ");
        line.push_str(last);
    }
    line
}

/// Whether the status line is on the terminal now (a log line must clear it first).
static SHOWN: AtomicBool = AtomicBool::new(false);
const CLEAR_LINE: &[u8] = b"\r\x1b[2K";

/// Shows the status line: redrawn on a terminal, logged on change elsewhere.
pub struct Printer {
    tty: bool,
    logged: Option<(String, Instant)>,
}

impl Printer {
    /// For this process's stderr.
    pub fn stderr() -> Self {
        Printer {
            tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            logged: None,
        }
    }

    pub fn show(&mut self, status: &Status, now: Instant) {
        let line = render(status);
        if self.tty {
            let width = terminal_width().unwrap_or(120).max(20);
            let line: String = line.chars().take(width - 1).collect();
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(CLEAR_LINE);
            let _ = err.write_all(line.as_bytes());
            let _ = err.flush();
            SHOWN.store(true, Ordering::SeqCst);
        } else if should_log(self.logged.as_ref(), &line, now) {
            tracing::info!(target: "helium_worker::status", "{line}");
            self.logged = Some((line, now));
        }
    }
}

/// A changed line is logged, but not sooner than [`LOG_EVERY`] after the last one.
fn should_log(last: Option<&(String, Instant)>, line: &str, now: Instant) -> bool {
    match last {
        None => true,
        Some((text, at)) => text != line && now.duration_since(*at) >= LOG_EVERY,
    }
}

fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a winsize into `ws`, which outlives the call.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// stderr for the log: clears the status line before a log line on a terminal.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if SHOWN.swap(false, Ordering::SeqCst) {
            err.write_all(CLEAR_LINE)?;
        }
        err.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::load::{Load, Resource};

    fn status(activity: Activity) -> Status {
        Status {
            activity,
            earned: 0,
            settled: 0,
            last: None,
        }
    }

    #[test]
    fn each_activity_reads_as_the_owner_expects() {
        assert_eq!(
            render(&status(Activity::Idle)),
            "idle · earned 0.000000 credits (0 jobs settled)"
        );
        let training = Status {
            activity: Activity::Training {
                job: "0192ab34-5678-7abc-8def-0123456789ab".into(),
                epoch: Some((3, 8)),
            },
            earned: 1_500_000,
            settled: 1,
            last: Some("lost job 0192ff00…: outbid: 1.200000 against your 1.500000 credits/h".into()),
        };
        assert_eq!(
            render(&training),
            "training 0192ab34… epoch 3 of 8 · earned 1.500000 credits (1 job settled) · last: lost job 0192ff00…: outbid: 1.200000 against your 1.500000 credits/h"
        );
        let starting = Activity::Training {
            job: "j1".into(),
            epoch: None,
        };
        assert!(render(&status(starting)).starts_with("training j1 · "));
        let busy = Activity::Paused(Pause::OwnerBusy(Load {
            resource: Resource::Cpu,
            share: 0.85,
        }));
        assert!(render(&status(busy)).starts_with("paused: owner busy (CPU 85 % busy) · "));
        let night = Activity::Paused(Pause::OutsideHours("22:00-07:00".parse().unwrap()));
        assert!(render(&status(night)).starts_with("paused: outside hours 22:00–07:00 · "));
    }

    #[test]
    fn short_ids_keep_eight_characters() {
        assert_eq!(short("0192ab34-5678"), "0192ab34…");
        assert_eq!(short("job-1"), "job-1");
        assert_eq!(short("ééééééééééé"), "éééééééé…");
    }

    #[test]
    fn a_log_gets_changes_only_and_not_too_often() {
        let t0 = Instant::now();
        assert!(should_log(None, "idle", t0));
        let last = ("idle".to_string(), t0);
        assert!(!should_log(Some(&last), "idle", t0 + LOG_EVERY * 10), "unchanged");
        assert!(!should_log(Some(&last), "training j", t0 + LOG_EVERY / 2), "too soon");
        assert!(should_log(Some(&last), "training j", t0 + LOG_EVERY));
    }
}
