//! Why a job waits, or why it ended: typed, kept in the job's record, rendered as words only at
//! the edge ([`Reason::text`] into `JobView::reason`, [`Reason::code`] into
//! `JobView::reason_code`). Tests and clients match codes, never text.

use serde::{Deserialize, Serialize};

/// The reason attached to the job's current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    // ---- queued: waiting for a worker ----
    /// The last auction found no qualifying worker; `why` is the auctioneer's explanation.
    NoWorker { why: String },
    /// The winner refused the award or did not answer it.
    WinnerRefused { worker: String, why: String },
    /// The hold on the researcher's account could not be made (the ledger was unavailable).
    HoldFailed { why: String },
    /// The award's worker was lost (heartbeats stopped, it stopped the run, or it did not
    /// rejoin after a broker restart); the job resumes from its last verified checkpoint.
    WorkerLost { worker: String, resume_epoch: u32 },
    /// The award's worker failed through its own fault, or lied (a claim the broker could not
    /// verify); it is not invited again by this job.
    WorkerFailed { worker: String, why: String, resume_epoch: u32 },
    // ---- terminal ----
    Cancelled,
    /// The deadline passed while the job waited (`waiting` says for what) or ran.
    DeadlinePassed { waiting: Option<String>, running: bool },
    /// The researcher's account could not cover the hold.
    InsufficientFunds { why: String },
    /// So many awards were accepted and not finished that the job gives up.
    TooManyAwards { awards: u32 },
    /// The loaded model has more parameters than the job declared (and was priced for).
    LargerThanDeclared { actual: u64, declared: u64 },
    /// Training itself failed (the model or the data), as the worker reported it.
    RunFailed { why: String },
}

impl Reason {
    /// A stable snake_case code for the wire and for tests.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoWorker { .. } => "no_worker",
            Self::WinnerRefused { .. } => "winner_refused",
            Self::HoldFailed { .. } => "hold_failed",
            Self::WorkerLost { .. } => "worker_lost",
            Self::WorkerFailed { .. } => "worker_failed",
            Self::Cancelled => "cancelled",
            Self::DeadlinePassed { .. } => "deadline_passed",
            Self::InsufficientFunds { .. } => "insufficient_funds",
            Self::TooManyAwards { .. } => "too_many_awards",
            Self::LargerThanDeclared { .. } => "larger_than_declared",
            Self::RunFailed { .. } => "run_failed",
        }
    }

    /// Whether the job waits for a worker (its state is `queued`) for this reason.
    pub fn is_waiting(&self) -> bool {
        matches!(
            self,
            Self::NoWorker { .. }
                | Self::WinnerRefused { .. }
                | Self::HoldFailed { .. }
                | Self::WorkerLost { .. }
                | Self::WorkerFailed { .. }
        )
    }

    /// The reason in words, for the researcher.
    pub fn text(&self) -> String {
        match self {
            Self::NoWorker { why } => format!("waiting: {why}"),
            Self::WinnerRefused { worker, why } => {
                format!("waiting: the winner {worker} did not take the job ({why})")
            }
            Self::HoldFailed { why } => format!("waiting: could not hold the price ({why})"),
            Self::WorkerLost { worker, resume_epoch } => {
                format!("waiting: worker {worker} was lost; resuming from epoch {resume_epoch}")
            }
            Self::WorkerFailed {
                worker,
                why,
                resume_epoch,
            } => format!("waiting: worker {worker} failed ({why}); resuming from epoch {resume_epoch}"),
            Self::Cancelled => "cancelled by the researcher".into(),
            Self::DeadlinePassed { waiting: Some(w), .. } => format!("deadline passed while {w}"),
            Self::DeadlinePassed { running: true, .. } => "deadline passed while the job was training".into(),
            Self::DeadlinePassed { .. } => "deadline passed before a worker took the job".into(),
            Self::InsufficientFunds { why } => format!("could not hold the price: {why}"),
            Self::TooManyAwards { awards } => {
                format!("gave up after {awards} workers took the job and did not finish it")
            }
            Self::LargerThanDeclared { actual, declared } => format!(
                "the model has {actual} parameters but the job declared {declared}; the auction priced the declared work"
            ),
            Self::RunFailed { why } => why.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_reasons_say_so_and_codes_are_distinct() {
        let all = [
            Reason::NoWorker { why: "x".into() },
            Reason::WinnerRefused {
                worker: "w".into(),
                why: "x".into(),
            },
            Reason::HoldFailed { why: "x".into() },
            Reason::WorkerLost {
                worker: "w".into(),
                resume_epoch: 1,
            },
            Reason::WorkerFailed {
                worker: "w".into(),
                why: "x".into(),
                resume_epoch: 1,
            },
            Reason::Cancelled,
            Reason::DeadlinePassed {
                waiting: None,
                running: false,
            },
            Reason::InsufficientFunds { why: "x".into() },
            Reason::TooManyAwards { awards: 10 },
            Reason::LargerThanDeclared { actual: 2, declared: 1 },
            Reason::RunFailed { why: "x".into() },
        ];
        let codes: std::collections::BTreeSet<_> = all.iter().map(Reason::code).collect();
        assert_eq!(codes.len(), all.len());
        for r in &all {
            assert_eq!(r.is_waiting(), r.text().starts_with("waiting: "), "{r:?}");
            let back: Reason = rmp_serde::from_slice(&rmp_serde::to_vec_named(r).unwrap()).unwrap();
            assert_eq!(&back, r);
        }
    }
}
