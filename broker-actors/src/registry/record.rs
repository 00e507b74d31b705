//! What the grid remembers of each worker's past, kept by the registry: its track record (how
//! its awards ended, from which its reputation follows) and the last auction notes, for its
//! owner's `worker.log`. Pure; the registry actor holds one [`WorkerRecord`] per worker id.

use std::collections::VecDeque;

use helium_protocol::worker::{AuctionNote, Verdict};

/// How many auction notes are kept per worker (the oldest are dropped).
pub const NOTES_KEPT: usize = 64;

/// How an award ended, for the winner's track record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// It delivered a verified result.
    Completed,
    /// It abandoned the job: lost, restarted, preempted, failed by its own fault, refused the
    /// award it won, or claimed work faster than its ask allows.
    Failed,
    /// The award ended for a reason not the worker's: cancelled, expired, the model or data
    /// failed, larger than declared.
    Neutral,
}

/// A worker's track record and recent auction notes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerRecord {
    pub completed: u32,
    pub failed: u32,
    notes: VecDeque<AuctionNote>,
    /// Invitations by verdict since the registry started: won, lost, declined, refused, no answer.
    pub tally: [u32; 5],
}

impl WorkerRecord {
    /// Completed awards over all awards that ended for a reason of the worker's, with one
    /// completion granted up front: `(completed + 1) / (completed + failed + 1)`, in (0, 1]. A
    /// newcomer starts at 1 (so a new worker is invited as readily as a proven one); each
    /// abandoned job lowers it, each completed one raises it back.
    pub fn reputation(&self) -> f64 {
        f64::from(self.completed.saturating_add(1)) / (f64::from(self.completed) + f64::from(self.failed) + 1.0)
    }

    pub fn track(&mut self, track: Track) {
        match track {
            Track::Completed => self.completed = self.completed.saturating_add(1),
            Track::Failed => self.failed = self.failed.saturating_add(1),
            Track::Neutral => {}
        }
    }

    /// Files a note. One that says again what the last said (the same job, verdict and
    /// reason: a waiting job is auctioned again every few seconds) replaces it, so that a job
    /// stuck in the queue does not push every other note out.
    pub fn note(&mut self, note: AuctionNote) {
        let i = verdict_index(note.verdict);
        self.tally[i] = self.tally[i].saturating_add(1);
        let again = self
            .notes
            .back()
            .is_some_and(|l| l.job_id == note.job_id && l.verdict == note.verdict && l.reason == note.reason);
        if again {
            self.notes.pop_back();
        } else if self.notes.len() == NOTES_KEPT {
            self.notes.pop_front();
        }
        self.notes.push_back(note);
    }

    /// The last `limit` notes, oldest first.
    pub fn notes(&self, limit: usize) -> Vec<AuctionNote> {
        let skip = self.notes.len().saturating_sub(limit);
        self.notes.iter().skip(skip).cloned().collect()
    }

    /// The last note as one line: "lost job 0192…: outbid: …".
    pub fn last_note(&self) -> Option<String> {
        self.notes
            .back()
            .map(|n| format!("{} job {}: {}", n.verdict.name(), n.job_id, n.reason))
    }
}

fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Won => 0,
        Verdict::Lost => 1,
        Verdict::Declined => 2,
        Verdict::Refused => 3,
        Verdict::NoAnswer => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helium_protocol::PROTOCOL_VERSION;

    fn note(job: &str, verdict: Verdict) -> AuctionNote {
        AuctionNote {
            v: PROTOCOL_VERSION,
            job_id: job.into(),
            at_ms: 1,
            verdict,
            reason: format!("why {job}"),
            price_per_hour: None,
            cost: None,
            winning_price_per_hour: None,
            winning_cost: None,
        }
    }

    #[test]
    fn reputation_starts_at_one_falls_with_abandoned_jobs_and_recovers_with_completed_ones() {
        let mut r = WorkerRecord::default();
        assert_eq!(r.reputation(), 1.0);
        r.track(Track::Neutral);
        assert_eq!(r.reputation(), 1.0);
        r.track(Track::Failed);
        assert_eq!(r.reputation(), 0.5);
        r.track(Track::Completed);
        assert!((r.reputation() - 2.0 / 3.0).abs() < 1e-12);
        for _ in 0..8 {
            r.track(Track::Completed);
        }
        assert!((r.reputation() - 10.0 / 11.0).abs() < 1e-12);
        assert_eq!((r.completed, r.failed), (9, 1));
    }

    #[test]
    fn notes_are_bounded_oldest_dropped_and_tallied_by_verdict() {
        let mut r = WorkerRecord::default();
        for i in 0..NOTES_KEPT + 3 {
            r.note(note(
                &format!("j{i}"),
                if i % 2 == 0 { Verdict::Lost } else { Verdict::Declined },
            ));
        }
        let all = r.notes(usize::MAX);
        assert_eq!(all.len(), NOTES_KEPT);
        assert_eq!(all[0].job_id, "j3");
        assert_eq!(
            r.notes(2).iter().map(|n| n.job_id.as_str()).collect::<Vec<_>>(),
            ["j65", "j66"]
        );
        assert_eq!(r.tally, [0, 34, 33, 0, 0]);
        assert_eq!(r.last_note().as_deref(), Some("lost job j66: why j66"));
        // The same word again replaces the last note (newer time), counted but not kept twice.
        let mut again = note("j66", Verdict::Lost);
        again.at_ms = 2;
        r.note(again);
        assert_eq!(r.notes(usize::MAX).len(), NOTES_KEPT);
        assert_eq!(r.notes(1)[0].at_ms, 2);
        assert_eq!(r.notes(2)[0].job_id, "j65");
        assert_eq!(r.tally[1], 35);
    }
}
