//! Bounds on what a peer sends, as pure functions both broker and worker call: ids are one
//! strict subject token (never a path), numbers are finite and in range, free text is capped.
//! The numbers live in [`crate::limits`].
//!
//! Two kinds of rule: what is refused ([`Invalid`], e.g. an ask with infinite throughput or
//! a path-like award id), and what is truncated ([`truncate`], e.g. a failure reason), where
//! refusing would lose the message's point (a failed run must still settle).

use crate::{
    artifacts::ArtifactInfo,
    limits::{
        MAX_DEVICE_MEMORY_BYTES, MAX_DEVICE_NAME_BYTES, MAX_ETA_SECS, MAX_ID_BYTES, MAX_PRICE_PER_HOUR,
        MAX_NOTE_BYTES, MAX_REASON_BYTES, MAX_THROUGHPUT, MIN_ETA_SECS,
    },
    worker::{Ask, Award, Bid, Heartbeat, RunEvent, RunEventKind, SandboxLayer},
};

/// Why a message is refused, in words for the peer's operator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Invalid {
    #[error("{0} must be 1-{MAX_ID_BYTES} of [A-Za-z0-9_-] (never a path)")]
    Id(&'static str),
    #[error("throughput must be a finite number in (0, {MAX_THROUGHPUT:e}] parameter-samples/s")]
    Throughput,
    #[error("memory_bytes must be at most {MAX_DEVICE_MEMORY_BYTES} (64 TiB)")]
    Memory,
    #[error("price_per_hour must be at most {MAX_PRICE_PER_HOUR} micro-credits")]
    Price,
    #[error("device_name must be at most {MAX_DEVICE_NAME_BYTES} bytes without control characters")]
    DeviceName,
    #[error("sandbox lists a layer twice")]
    Sandbox,
    #[error("eta_secs must be a finite number in [{MIN_ETA_SECS}, {MAX_ETA_SECS}] (every estimate includes the fixed overhead)")]
    Eta,
    #[error("artifact {0} has a malformed name or digest")]
    Artifact(&'static str),
}

/// Principals, worker ids, job ids, award ids and upload ids: 1-64 of `[A-Za-z0-9_-]`, so
/// never `.`, `..`, a `/` or a subject wildcard.
pub fn id(what: &'static str, value: &str) -> Result<(), Invalid> {
    if crate::subjects::valid_id(value) {
        Ok(())
    } else {
        Err(Invalid::Id(what))
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked as cut (`…[truncated]`).
pub fn truncate(text: &str, max: usize) -> String {
    const MARK: &str = "…[truncated]";
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// A failure reason as it may travel: at most [`MAX_REASON_BYTES`].
pub fn reason(text: &str) -> String {
    truncate(text, MAX_REASON_BYTES)
}

/// A worker's own words as the broker keeps and shows them (a decline, a pause): control
/// characters become spaces (they would redraw an operator's terminal), at most
/// [`MAX_NOTE_BYTES`].
pub fn note(text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    truncate(&clean, MAX_NOTE_BYTES)
}

fn short_text(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(char::is_control)
}

impl Ask {
    /// A standing ask the registry may rank: every number finite and in range, so that no
    /// claim (∞ throughput, `u64::MAX` memory) ranks first everywhere, and the name short
    /// enough that `worker.list` stays small.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(self.throughput.is_finite() && self.throughput > 0.0 && self.throughput <= MAX_THROUGHPUT) {
            return Err(Invalid::Throughput);
        }
        if self.memory_bytes > MAX_DEVICE_MEMORY_BYTES {
            return Err(Invalid::Memory);
        }
        if self.price_per_hour > MAX_PRICE_PER_HOUR {
            return Err(Invalid::Price);
        }
        if !short_text(&self.device_name, MAX_DEVICE_NAME_BYTES) {
            return Err(Invalid::DeviceName);
        }
        let mut layers: Vec<SandboxLayer> = self.sandbox.clone();
        layers.sort();
        layers.dedup();
        if layers.len() != self.sandbox.len() {
            return Err(Invalid::Sandbox);
        }
        Ok(())
    }
}

impl Bid {
    /// A sealed bid the auction may rank: an ETA of 0 (cost 0), NaN or below the fixed
    /// overhead is refused, and so is a price no ask may name.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(self.eta_secs.is_finite() && (MIN_ETA_SECS..=MAX_ETA_SECS).contains(&self.eta_secs)) {
            return Err(Invalid::Eta);
        }
        if self.price_per_hour > MAX_PRICE_PER_HOUR {
            return Err(Invalid::Price);
        }
        Ok(())
    }
}

impl Heartbeat {
    /// `running` names a job id, or nothing.
    pub fn validate(&self) -> Result<(), Invalid> {
        match &self.running {
            Some(job) => id("running", job),
            None => Ok(()),
        }
    }
}

fn artifact(what: &'static str, a: &ArtifactInfo) -> Result<(), Invalid> {
    let digest = a.sha256.len() == 64 && a.sha256.bytes().all(|b| b.is_ascii_hexdigit());
    if digest && short_text(&a.name, MAX_ID_BYTES) {
        Ok(())
    } else {
        Err(Invalid::Artifact(what))
    }
}

impl Award {
    /// Checked by the worker before it touches its file system: the award id names the job
    /// directory, so it must be one id token (`../x`, `a/b` and `.` are refused).
    pub fn validate(&self) -> Result<(), Invalid> {
        id("job_id", &self.job_id)?;
        id("award_id", &self.award_id)?;
        artifact("model", &self.model)?;
        artifact("data", &self.data)?;
        if let Some(resume) = &self.resume {
            artifact("resume", resume)?;
        }
        Ok(())
    }
}

impl RunEvent {
    /// Cuts the free text of a run event to its bounds (a failure reason to
    /// [`MAX_REASON_BYTES`], a device name to [`MAX_DEVICE_NAME_BYTES`]): the event still
    /// counts, and everything made from it (job record, job event) stays small.
    pub fn clamp(&mut self) {
        match &mut self.kind {
            RunEventKind::Failed { reason: r, .. } if r.len() > MAX_REASON_BYTES => *r = reason(r),
            RunEventKind::Started { device, .. } if device.len() > MAX_DEVICE_NAME_BYTES => {
                *device = truncate(device, MAX_DEVICE_NAME_BYTES)
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{DeclaredWork, DeviceKind, Loss, OptimizerKind, OptimizerSpec, TrainingSpec};
    use crate::PROTOCOL_VERSION;

    fn ask() -> Ask {
        Ask {
            price_per_hour: 1_000_000,
            device: DeviceKind::Cuda,
            device_name: "NVIDIA H200".into(),
            memory_bytes: 141 << 30,
            throughput: 1e12,
            sandbox: SandboxLayer::ALL.to_vec(),
        }
    }

    #[test]
    fn asks_with_impossible_claims_are_refused() {
        assert_eq!(ask().validate(), Ok(()));
        for t in [f64::INFINITY, f64::NAN, 0.0, -1.0, 1e17] {
            let a = Ask { throughput: t, ..ask() };
            assert_eq!(a.validate(), Err(Invalid::Throughput), "{t}");
        }
        assert_eq!(Ask { memory_bytes: u64::MAX, ..ask() }.validate(), Err(Invalid::Memory));
        assert_eq!(Ask { price_per_hour: u64::MAX, ..ask() }.validate(), Err(Invalid::Price));
        let long = "x".repeat(1 << 20);
        assert_eq!(Ask { device_name: long, ..ask() }.validate(), Err(Invalid::DeviceName));
        assert_eq!(Ask { device_name: "a\nb".into(), ..ask() }.validate(), Err(Invalid::DeviceName));
        let twice = vec![SandboxLayer::Landlock, SandboxLayer::Landlock];
        assert_eq!(Ask { sandbox: twice, ..ask() }.validate(), Err(Invalid::Sandbox));
        // The message says what is wrong.
        assert!(Invalid::Throughput.to_string().contains("throughput"));
    }

    #[test]
    fn bids_of_zero_nan_or_negative_eta_are_refused() {
        let bid = |eta_secs| Bid {
            price_per_hour: 1_000,
            eta_secs,
        };
        assert_eq!(bid(36.0).validate(), Ok(()));
        assert_eq!(bid(MIN_ETA_SECS).validate(), Ok(()));
        for eta in [0.0, -1.0, f64::NAN, f64::INFINITY, 1.0, MAX_ETA_SECS * 2.0] {
            assert_eq!(bid(eta).validate(), Err(Invalid::Eta), "{eta}");
        }
        // Every honest estimate is at least the fixed overhead.
        let work = DeclaredWork {
            parameters: 0,
            samples: 0,
            epochs: 1,
        };
        assert_eq!(bid(work.eta_secs(MAX_THROUGHPUT)).validate(), Ok(()));
    }

    #[test]
    fn path_like_ids_are_refused() {
        for bad in ["../x", "a/b", ".", "..", "", "a.b", "a*", "a>", "a b", "/etc", &"a".repeat(65)] {
            assert_eq!(id("award_id", bad), Err(Invalid::Id("award_id")), "{bad:?}");
        }
        assert_eq!(id("award_id", "0190abcdef-3"), Ok(()));
        let info = |name: &str| ArtifactInfo {
            name: name.into(),
            size: 1,
            sha256: "ab".repeat(32),
        };
        let mut award = Award {
            v: PROTOCOL_VERSION,
            job_id: "j1".into(),
            award_id: "j1-1".into(),
            training: TrainingSpec {
                epochs: 1,
                batch_size: 1,
                loss: Loss::Mse,
                optimizer: OptimizerSpec {
                    kind: OptimizerKind::Sgd,
                    lr: 0.1,
                    momentum: 0.0,
                    weight_decay: 0.0,
                    nesterov: false,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                },
                seed: 0,
                shuffle: false,
                checkpoint_every: Default::default(),
            },
            work: DeclaredWork {
                parameters: 1,
                samples: 1,
                epochs: 1,
            },
            model: info("model"),
            data: info("data"),
            price: 1,
            deadline_ms: 0,
            resume: None,
        };
        assert_eq!(award.validate(), Ok(()));
        for bad in ["../x", "a/b", "."] {
            award.award_id = bad.into();
            assert_eq!(award.validate(), Err(Invalid::Id("award_id")));
        }
        award.award_id = "j1-1".into();
        award.job_id = "../../etc".into();
        assert_eq!(award.validate(), Err(Invalid::Id("job_id")));
    }

    #[test]
    fn heartbeats_name_a_job_id_or_nothing() {
        let hb = |running: Option<String>| Heartbeat {
            v: PROTOCOL_VERSION,
            running,
            paused: None,
        };
        assert_eq!(hb(None).validate(), Ok(()));
        assert_eq!(hb(Some("job-1".into())).validate(), Ok(()));
        assert!(hb(Some("x".repeat(1 << 20))).validate().is_err());
    }

    #[test]
    fn a_workers_words_lose_control_characters_and_are_kept_short() {
        assert_eq!(note("busy\u{1b}[2J\r\nnow"), "busy [2J  now");
        let long = note(&"é".repeat(1_000));
        assert!(long.len() <= MAX_NOTE_BYTES && long.ends_with("…[truncated]"), "{}", long.len());
    }

    #[test]
    fn long_reasons_are_truncated_on_a_character_boundary() {
        assert_eq!(reason("short"), "short");
        let long = "é".repeat(1 << 20); // 2 MiB of two-byte characters
        let cut = reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES, "{}", cut.len());
        assert!(cut.ends_with("…[truncated]"));
        assert!(cut.starts_with("éé"));
        let mut event = RunEvent {
            v: PROTOCOL_VERSION,
            job_id: "j".into(),
            award_id: "a".into(),
            kind: RunEventKind::Failed {
                reason: long,
                worker_fault: false,
            },
        };
        event.clamp();
        let RunEventKind::Failed { reason, .. } = &event.kind else { panic!() };
        assert!(reason.len() <= MAX_REASON_BYTES);
    }
}
