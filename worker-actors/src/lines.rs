//! Lines of the trainer child's stdout, each at most a bound long: the child runs untrusted
//! code, and a line without end must not grow the agent's memory. A longer line is reported
//! as [`Line::TooLong`] (its bytes are skipped up to the next newline) and reading goes on.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line without its newline (invalid UTF-8 replaced).
    Whole(String),
    /// A line over the bound, dropped.
    TooLong,
}

pub struct BoundedLines<R> {
    reader: R,
    max: usize,
}

impl<R: AsyncBufRead + Unpin> BoundedLines<R> {
    pub fn new(reader: R, max: usize) -> Self {
        Self { reader, max }
    }

    /// The next line, or `None` at the end of the stream (or on a read error).
    pub async fn next(&mut self) -> Option<Line> {
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let available = match self.reader.fill_buf().await {
                Ok(bytes) => bytes,
                Err(_) => return None,
            };
            if available.is_empty() {
                // End of stream: a last line without a newline still counts.
                return match (too_long, line.is_empty()) {
                    (true, _) => Some(Line::TooLong),
                    (false, true) => None,
                    (false, false) => Some(Line::Whole(String::from_utf8_lossy(&line).into_owned())),
                };
            }
            let (chunk, end) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], Some(at + 1)),
                None => (available, None),
            };
            if !too_long && line.len() + chunk.len() <= self.max {
                line.extend_from_slice(chunk);
            } else {
                too_long = true;
                line = Vec::new();
            }
            let used = end.unwrap_or(available.len());
            self.reader.consume(used);
            if end.is_some() {
                return Some(if too_long {
                    Line::TooLong
                } else {
                    Line::Whole(String::from_utf8_lossy(&line).into_owned())
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_endless_line_is_dropped_and_reading_goes_on() {
        let mut input = b"{\"event\":\"completed\"}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 << 20));
        input.extend_from_slice(b"\nshort\nlast");
        let reader = tokio::io::BufReader::with_capacity(4096, &input[..]);
        let mut lines = BoundedLines::new(reader, 64 * 1024);
        assert_eq!(lines.next().await, Some(Line::Whole("{\"event\":\"completed\"}".into())));
        assert_eq!(lines.next().await, Some(Line::TooLong));
        assert_eq!(lines.next().await, Some(Line::Whole("short".into())));
        assert_eq!(lines.next().await, Some(Line::Whole("last".into())));
        assert_eq!(lines.next().await, None);
    }
}
