//! The open-jobs quota: how many unfinished jobs a researcher has, counted by the job manager
//! before it accepts another. Finished jobs never reopen, so once a supervisor says its job
//! is finished the manager remembers it and never asks again: a count asks only the
//! principal's jobs that were open last time (at most the quota, plus the new ones).

use std::collections::{HashMap, HashSet};

use helium_protocol::{ErrorCode, WireError};
use ractor::ActorRef;

use super::SupervisorMsg;

/// How long one supervisor may take to say whether its job is finished; one that does not
/// answer counts as open.
const ASK_MS: u64 = 2_000;

/// The principal's jobs: which are finished is learned lazily.
#[derive(Default)]
pub struct OpenJobs {
    finished: HashSet<String>,
}

impl OpenJobs {
    /// Remembers a job known to be finished (a respawned record in a terminal state).
    pub fn finished(&mut self, job_id: &str) {
        self.finished.insert(job_id.to_string());
    }

    /// Forgets the jobs `keep` says are gone.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.finished.retain(|job| keep(job));
    }

    /// Unfinished jobs of `principal` among `owners` (job → principal).
    pub async fn count(
        &mut self,
        principal: &str,
        owners: &HashMap<String, String>,
        jobs: &HashMap<String, ActorRef<SupervisorMsg>>,
    ) -> usize {
        let mut open = 0;
        for (job_id, _) in owners.iter().filter(|(_, p)| *p == principal) {
            if self.finished.contains(job_id) {
                continue;
            }
            let Some(supervisor) = jobs.get(job_id) else { continue };
            let p = principal.to_string();
            match ractor::call_t!(supervisor, |reply| SupervisorMsg::Status { principal: p, reply }, ASK_MS) {
                Ok(Ok(view)) if view.state.is_terminal() => self.finished(job_id),
                _ => open += 1,
            }
        }
        open
    }
}

/// The refusal of a submission over the quota.
pub fn over(principal: &str, open: usize, max: usize) -> Result<(), WireError> {
    if open < max {
        return Ok(());
    }
    Err(WireError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "{principal} has {open} open jobs, the most this grid allows at once ({max}); \
             submit again when one has finished or is cancelled"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_refuses_only_at_the_limit() {
        assert!(over("alice", 0, 1).is_ok());
        let e = over("alice", 1, 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::QuotaExceeded);
        assert!(e.message.contains("1 open jobs"), "{}", e.message);
    }
}
