//! The trainer's stderr, read by the agent with bounds.
//!
//! A trainer never gets the worker's own stderr (a terminal could be driven with `TIOCSTI`, a
//! log could be flooded): its stderr is a pipe the agent reads here, and each line goes to the
//! agent's log (`tracing`, INFO, with the job and award).
//!
//! Guarantees, for any bytes the trainer writes:
//! - memory: one read buffer and one line of at most [`LINE_BYTES`], whatever the trainer
//!   writes and however long its lines are;
//! - the log: each line truncated to [`LINE_BYTES`]; at most [`TOTAL_BYTES`] of the trainer's
//!   output per trainer process, then one warning, and the rest is read and dropped (counted,
//!   reported when the pipe closes) so the trainer never blocks on a full pipe;
//! - the reader ends when every copy of the pipe's write end is closed (the trainer exited).

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest line forwarded; longer lines are cut here, marked `[truncated]`.
pub const LINE_BYTES: usize = 4096;
/// Bytes of trainer output forwarded to the log per trainer process.
pub const TOTAL_BYTES: u64 = 1 << 20;

/// Who wrote the lines, for the log.
#[derive(Debug, Clone)]
pub struct Source {
    pub job: String,
    pub award: String,
}

/// What a [`forward`] did, once the pipe closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Lines written to the log.
    pub lines: u64,
    /// Bytes written to the log (each line as truncated).
    pub bytes: u64,
    /// Bytes read and not logged: beyond a line's bound or the total.
    pub dropped: u64,
}

/// Reads `pipe` to its end, sending each line to `sink` within the module's bounds.
pub async fn forward_to<R, F>(mut pipe: R, mut sink: F) -> Forwarded
where
    R: AsyncRead + Unpin,
    F: FnMut(&str),
{
    let mut done = Forwarded::default();
    let mut chunk = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = Vec::with_capacity(LINE_BYTES);
    let mut cut = false;
    let mut over = false;
    let mut emit = |line: &mut Vec<u8>, cut: bool, done: &mut Forwarded, over: &mut bool| {
        let bytes = u64::try_from(line.len()).unwrap_or(u64::MAX);
        if *over || done.bytes.saturating_add(bytes) > TOTAL_BYTES {
            if !*over {
                *over = true;
                sink(&format!("[the trainer's output passed {TOTAL_BYTES} bytes; the rest is dropped]"));
            }
            done.dropped = done.dropped.saturating_add(bytes);
        } else {
            let text = String::from_utf8_lossy(line);
            if cut {
                sink(&format!("{text} [truncated]"));
            } else {
                sink(&text);
            }
            done.lines += 1;
            done.bytes += bytes;
        }
        line.clear();
    };
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for piece in chunk[..n].split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match piece.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (piece, false),
            };
            let room = LINE_BYTES - line.len();
            if body.len() > room {
                line.extend_from_slice(&body[..room]);
                done.dropped = done.dropped.saturating_add(u64::try_from(body.len() - room).unwrap_or(u64::MAX));
                cut = true;
            } else {
                line.extend_from_slice(body);
            }
            if ends {
                emit(&mut line, cut, &mut done, &mut over);
                cut = false;
            }
        }
    }
    if !line.is_empty() {
        emit(&mut line, cut, &mut done, &mut over);
    }
    done
}

/// [`forward_to`] the agent's log, as `source`'s.
pub async fn forward<R: AsyncRead + Unpin>(pipe: R, source: Source) -> Forwarded {
    let done = forward_to(pipe, |line| {
        tracing::info!(job = %source.job, award = %source.award, line, "trainer stderr");
    })
    .await;
    if done.dropped > 0 {
        tracing::warn!(job = %source.job, award = %source.award, forwarded_bytes = done.bytes, dropped_bytes = done.dropped, "the trainer wrote more to stderr than its bound; the rest was dropped");
    }
    done
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    async fn through(bytes: &[u8]) -> (Forwarded, Vec<String>) {
        let mut lines = Vec::new();
        let done = forward_to(bytes, |l| lines.push(l.to_string())).await;
        (done, lines)
    }

    #[tokio::test]
    async fn lines_are_forwarded_whole_and_long_ones_cut() {
        let long = "x".repeat(LINE_BYTES + 10);
        let input = format!("one\ntwo\n{long}\nlast without newline");
        let (done, lines) = through(input.as_bytes()).await;
        assert_eq!(lines.len(), 4);
        assert_eq!(&lines[..2], ["one", "two"]);
        assert_eq!(lines[2], format!("{} [truncated]", "x".repeat(LINE_BYTES)));
        assert_eq!(lines[3], "last without newline");
        assert_eq!(done.dropped, 10);
    }

    /// A real process floods its stderr with 100 MB of long lines: the reader keeps up to the
    /// end (the writer is never blocked), logs at most the bound, and counts the rest.
    #[tokio::test]
    async fn a_100_mb_flood_from_a_real_process_is_bounded() {
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg("head -c 100000000 /dev/zero | tr '\\0' 'a' | fold -w 100000 >&2")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        let pipe = child.stderr.take().expect("a stderr pipe");
        let mut logged = 0u64;
        let mut longest = 0usize;
        let done = forward_to(pipe, |l| {
            logged += l.len() as u64;
            longest = longest.max(l.len());
        })
        .await;
        assert!(child.wait().await.expect("sh exits").success());
        assert!(logged <= TOTAL_BYTES + 2 * LINE_BYTES as u64, "{logged} bytes logged");
        assert!(longest <= LINE_BYTES + " [truncated]".len());
        assert_eq!(done.bytes + done.dropped, 100_000_000, "every byte was read: {done:?}");
    }
}
