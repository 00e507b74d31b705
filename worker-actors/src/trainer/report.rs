//! The trainer child's only output channel: one JSON object per line on stdout.
//!
//! The worker agent runs `helium-worker train` as a child process (TorchScript is untrusted
//! code) and parses these lines with the same enum, so the wire shape lives in one place.
//! Logs never go to stdout; they go to stderr through `tracing`.

use std::fs::File;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::{Mutex, OnceLock};

use helium_protocol::limits::MAX_REASON_BYTES;
use serde::{Deserialize, Serialize};

/// Where events go once [`reserve_stdout`] ran: the process's original stdout.
static SINK: OnceLock<Mutex<File>> = OnceLock::new();

/// Keeps the original stdout for events only and points file descriptor 1 at stderr, so that
/// whatever the model prints (TorchScript has `print`) or libtorch writes cannot corrupt the
/// line protocol. Called once, at the start of a run.
pub fn reserve_stdout() -> std::io::Result<()> {
    if SINK.get().is_some() {
        return Ok(());
    }
    std::io::stdout().flush()?;
    // SAFETY: plain descriptor calls on fds 1 and 2, which every process has; the duplicate is
    // owned by the `File` from here on.
    let events = unsafe {
        let fd = libc::dup(1);
        if fd < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        File::from_raw_fd(fd)
    };
    let _ = SINK.set(Mutex::new(events));
    Ok(())
}

/// What the trainer child reports, one per line, e.g.
/// `{"event":"progress","epoch":1,"epochs":3,"step":16,"loss":0.52,…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// No unknown fields: a line naming anything more (a path, say) is not an event, and the
// agent only logs it. The agent names every file itself, from `step`.
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum TrainerEvent {
    /// Model and data are loaded and checked; training begins (or resumes).
    Started {
        /// `cpu` or `cuda`.
        device: String,
        /// Number of scalar parameters of the model.
        parameters: u64,
        /// Training rows in `x`.
        samples: u64,
    },
    /// One epoch is done: its metrics.
    Progress {
        /// 1-based epoch just finished.
        epoch: u32,
        epochs: u32,
        /// Optimizer steps taken since the job began (across resumes).
        step: u64,
        /// Mean training loss of the epoch, batches weighted by their size.
        loss: f64,
        samples_per_sec: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val_loss: Option<f64>,
        /// Only for classification losses (cross_entropy, nll, bce_with_logits).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        val_accuracy: Option<f64>,
    },
    /// The checkpoint after optimizer step `step` (`epoch` epochs complete) is durable at
    /// `checkpoints/<step>.safetensors` in the job dir.
    Checkpoint { step: u64, epoch: u32 },
    /// The trained parameters and buffers are durable at `result.safetensors` in the job dir.
    Completed {},
    /// Training stopped; `reason` is meant for the researcher.
    Failed { reason: String },
}

impl TrainerEvent {
    /// The event as one line, newline included. A reason can be as long as the model's own
    /// exception message: it is cut to what a run event carries, so the line stays within
    /// what the agent reads.
    pub fn line(&self) -> serde_json::Result<String> {
        let mut line = match self {
            TrainerEvent::Failed { reason } if reason.len() > MAX_REASON_BYTES => {
                serde_json::to_string(&TrainerEvent::Failed {
                    reason: helium_protocol::validate::reason(reason),
                })
            }
            _ => serde_json::to_string(self),
        }?;
        line.push('\n');
        Ok(line)
    }

    /// Writes the event as one line on stdout and flushes, so the parent sees it at once.
    pub fn emit(&self) -> std::io::Result<()> {
        let line = self.line().map_err(std::io::Error::other)?;
        match SINK.get() {
            Some(sink) => {
                let mut out = sink.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                out.write_all(line.as_bytes())?;
                out.flush()
            }
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes())?;
                out.flush()
            }
        }
    }
}

/// Longest event line the agent reads from the child; the rest of a longer line is skipped
/// unread into memory. Real lines are well under a kilobyte; a failure reason may be long.
pub const MAX_LINE_BYTES: usize = helium_protocol::limits::MAX_CHILD_LINE_BYTES;

/// One line of the child's stdout, as the agent reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// A line of at most [`MAX_LINE_BYTES`], without its `\n` (invalid UTF-8 replaced).
    Text(String),
    /// A line longer than [`MAX_LINE_BYTES`], skipped: its length in bytes.
    TooLong(u64),
}

/// Reads the next line of the child's stdout, holding at most [`MAX_LINE_BYTES`] of it:
/// `None` at the end of the stream. Invalid UTF-8 does not end the stream (a reader that
/// stopped there would leave the child blocked on a full pipe).
pub async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<Line>> {
    use tokio::io::AsyncBufReadExt;
    let mut line = Vec::new();
    let mut len = 0u64;
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            // The end of the stream; a last line without `\n` still counts.
            return Ok((len > 0).then(|| finish(line, len)));
        }
        let (part, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], i + 1),
            None => (chunk, chunk.len()),
        };
        let ended = done > part.len();
        len += part.len() as u64;
        if len <= MAX_LINE_BYTES as u64 {
            line.extend_from_slice(part);
        } else {
            line = Vec::new();
        }
        reader.consume(done);
        if ended {
            return Ok(Some(finish(line, len)));
        }
    }
}

fn finish(line: Vec<u8>, len: u64) -> Line {
    if len > MAX_LINE_BYTES as u64 {
        return Line::TooLong(len);
    }
    match String::from_utf8(line) {
        Ok(text) => Line::Text(text),
        Err(e) => Line::Text(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// The event a line of the child's stdout carries, `None` for any other output.
pub fn parse_line(line: &str) -> Option<TrainerEvent> {
    serde_json::from_str(line).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_has_the_documented_shape() {
        let event = TrainerEvent::Progress {
            epoch: 1,
            epochs: 3,
            step: 16,
            loss: 0.5,
            samples_per_sec: 100.0,
            val_loss: None,
            val_accuracy: Some(0.75),
        };
        let json: serde_json::Value = serde_json::to_value(&event).unwrap();
        assert_eq!(json["event"], "progress");
        assert_eq!(json["step"], 16);
        assert!(json.get("val_loss").is_none());
        assert_eq!(json["val_accuracy"], 0.75);
        let back: TrainerEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn a_line_naming_a_path_is_no_event() {
        for line in [
            r#"{"event":"checkpoint","step":8,"epoch":2,"path":"/home/owner/.ssh/id_ed25519"}"#,
            r#"{"event":"completed","result":"../../other-job/result.safetensors"}"#,
            r#"{"event":"checkpoint","step":"../x","epoch":2}"#,
        ] {
            assert!(serde_json::from_str::<TrainerEvent>(line).is_err(), "{line}");
        }
    }

    #[test]
    fn a_huge_reason_is_cut_when_emitted() {
        let event = TrainerEvent::Failed {
            reason: "x".repeat(2 << 20),
        };
        let line = event.line().unwrap();
        assert!(line.len() < MAX_REASON_BYTES + 64, "{}", line.len());
        assert!(line.ends_with("[truncated]\"}\n"), "{}", &line[line.len() - 40..]);
    }

    #[test]
    fn parses_the_lines_of_the_contract() {
        let started: TrainerEvent =
            serde_json::from_str(r#"{"event":"started","device":"cpu","parameters":5,"samples":9}"#).unwrap();
        assert_eq!(
            started,
            TrainerEvent::Started {
                device: "cpu".into(),
                parameters: 5,
                samples: 9
            }
        );
        let checkpoint: TrainerEvent = serde_json::from_str(r#"{"event":"checkpoint","step":8,"epoch":2}"#).unwrap();
        assert_eq!(checkpoint, TrainerEvent::Checkpoint { step: 8, epoch: 2 });
        let completed: TrainerEvent = serde_json::from_str(r#"{"event":"completed"}"#).unwrap();
        assert_eq!(completed, TrainerEvent::Completed {});
        let failed: TrainerEvent =
            serde_json::from_str(r#"{"event":"failed","reason":"x has 3 rows but y has 2"}"#).unwrap();
        assert_eq!(
            failed,
            TrainerEvent::Failed {
                reason: "x has 3 rows but y has 2".into()
            }
        );
    }

    #[tokio::test]
    async fn lines_are_bounded_and_survive_bad_bytes() {
        let mut input = b"{\"event\":\"completed\"}\n\xff\xfe\n".to_vec();
        input.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 1));
        input.extend_from_slice(b"\nlast");
        let mut reader = &input[..];
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            [
                Line::Text(r#"{"event":"completed"}"#.into()),
                Line::Text("\u{fffd}\u{fffd}".into()),
                Line::TooLong(MAX_LINE_BYTES as u64 + 1),
                Line::Text("last".into()),
            ]
        );
        assert_eq!(parse_line(r#"{"event":"completed"}"#), Some(TrainerEvent::Completed {}));
        assert_eq!(parse_line("Epoch 1"), None);
    }
}
