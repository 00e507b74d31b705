//! The open-jobs quota: how many unfinished jobs a researcher has, counted by the job manager
//! before it accepts another, without asking anyone. Finished jobs never reopen: each
//! supervisor tells the manager once its job is terminal (`ManagerMsg::Finished`), and a job
//! whose news has not arrived yet counts as open (the quota errs on the safe side).

use std::collections::{HashMap, HashSet};

use helium_protocol::{ErrorCode, WireError};

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
    pub fn count(&self, principal: &str, owners: &HashMap<String, String>) -> usize {
        owners
            .iter()
            .filter(|(job, p)| *p == principal && !self.finished.contains(*job))
            .count()
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
