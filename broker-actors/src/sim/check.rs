//! The invariants, checked after every step of a simulation and at its end. Each returns what
//! broke, in words, so the failing seed's report says it.

use std::collections::BTreeMap;

use helium_protocol::ledger::{escrow, user};

use super::world::World;
use crate::jobs::core::PLAUSIBLE_SPEEDUP;
use crate::jobs::record::settlement;
use crate::ledger::book::Book;

/// `<kind>.<job>.<n>` → (kind, job index, n).
fn parse_id(id: &str) -> Option<(&str, usize, u32)> {
    let mut parts = id.split('.');
    let kind = parts.next()?;
    let job = parts.next()?.strip_prefix("job")?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    Some((kind, job, n))
}

pub(super) fn after_step(w: &World) -> Result<(), String> {
    if let Some(v) = w.violations.first() {
        return Err(v.clone());
    }
    if !w.book.invariants_hold() {
        return Err(format!("ledger invariants broken: {:?}", w.book.balances()));
    }
    if w.book.transfer_count() != w.journal.len() {
        return Err("a transfer was applied twice, or applied without being journaled".into());
    }
    let mut replay = Book::default();
    for t in &w.journal {
        replay.apply(t.clone()).map_err(|e| format!("the journal does not replay: {e}"))?;
    }
    if replay.balances() != w.book.balances() {
        return Err("replaying the journal does not give the book".into());
    }
    for (j, sj) in w.jobs.iter().enumerate() {
        if let Some(s) = sj.terminal {
            if sj.job.state() != s {
                return Err(format!("job {j} moved from terminal {s:?} to {:?}", sj.job.state()));
            }
        }
    }
    money(w)
}

/// Every credit an owner earned is a debit of that job's escrow for an award it held, to that
/// award's owner, for work the worker uploaded and the broker recorded; a job never pays
/// beyond its budget, and never needs a sweep.
fn money(w: &World) -> Result<(), String> {
    let mut holds: BTreeMap<(usize, u32), u64> = BTreeMap::new();
    let mut out: BTreeMap<(usize, u32), u64> = BTreeMap::new();
    let mut paid: BTreeMap<usize, u64> = BTreeMap::new();
    for t in &w.journal {
        if t.id.starts_with("grant.") {
            continue;
        }
        let Some((kind, j, n)) = parse_id(&t.id) else {
            return Err(format!("transfer {} is none the grid makes", t.id));
        };
        let job_id = format!("job{j}");
        match kind {
            "hold" => {
                holds.insert((j, n), t.amount);
            }
            "pay" | "refund" => {
                if t.debit != escrow(&job_id) {
                    return Err(format!("{} does not come out of the job's escrow", t.id));
                }
                let hold = holds.get(&(j, n)).copied().ok_or_else(|| format!("{} without a hold", t.id))?;
                let total = out.entry((j, n)).or_default();
                *total += t.amount;
                if *total > hold {
                    return Err(format!("award {n} of job {j} paid out {total}, more than its hold {hold}"));
                }
                if kind == "pay" {
                    let truth = w.awards.get(&(j, n)).ok_or_else(|| format!("{} for an award never held", t.id))?;
                    if t.credit != user(&truth.owner) {
                        return Err(format!("{} went to {}, not the award's owner {}", t.id, t.credit, truth.owner));
                    }
                    let verified = if truth.result_stored {
                        truth.award_steps
                    } else {
                        truth.stored.iter().next_back().map_or(0, |s| s.saturating_sub(truth.start_step))
                    };
                    let (most, _) = settlement(truth.price, truth.award_steps, verified);
                    if t.amount > most {
                        return Err(format!(
                            "{} paid {} for unverified work: at most {most} ({verified} of {} steps uploaded)",
                            t.id, t.amount, truth.award_steps
                        ));
                    }
                    // No claim beyond what the true time since the hold allows (whatever the
                    // broker's wall clock did): PLAUSIBLE_SPEEDUP times the winner's own pace.
                    let secs = truth.paid_at.unwrap_or(0).saturating_sub(truth.held_at) as f64 / 1000.0;
                    let believable = ((PLAUSIBLE_SPEEDUP * truth.pace * secs).ceil() as u64).min(truth.award_steps);
                    let (most, _) = settlement(truth.price, truth.award_steps, believable);
                    if t.amount > most && !truth.result_stored {
                        return Err(format!(
                            "{} paid {} for {verified} claimed steps in {secs:.1} s; believable {believable} (it trained {})",
                            t.id, t.amount, truth.trained
                        ));
                    }
                    *paid.entry(j).or_default() += t.amount;
                }
            }
            "sweep" => return Err(format!("{}: a job lost track of its escrow", t.id)),
            other => return Err(format!("unknown transfer kind {other}")),
        }
    }
    for (j, total) in paid {
        if total > w.budgets[j] {
            return Err(format!("job {j} paid {total}, over its budget {}", w.budgets[j]));
        }
    }
    Ok(())
}

/// Every job is finished, its money settled and its escrow known empty.
pub(super) fn all_done(w: &World) -> bool {
    w.jobs.iter().all(|sj| {
        let r = &sj.job.record;
        r.view.state.is_terminal() && r.award.as_ref().is_none_or(|a| a.settled) && r.swept
    })
}

pub(super) fn at_end(w: &World) -> Result<(), String> {
    for (j, sj) in w.jobs.iter().enumerate() {
        let r = &sj.job.record;
        if !(r.view.state.is_terminal() && r.award.as_ref().is_none_or(|a| a.settled) && r.swept) {
            let job_id = &r.view.job_id;
            let moved: Vec<String> = w
                .journal
                .iter()
                .filter(|t| t.id.contains(&format!(".{job_id}.")))
                .map(|t| format!("{} {}", t.id, t.amount))
                .collect();
            return Err(format!(
                "job {j} did not end in the calm phase: {:?} ({:?}), award {:?}, swept {}, escrow {}, transfers {moved:?}",
                r.view.state,
                r.view.reason,
                r.award.as_ref().map(|a| (a.n, &a.worker_id, a.price, a.held, a.settle_steps, a.settled)),
                r.swept,
                w.book.balance(&escrow(job_id)),
            ));
        }
        let left = w.book.balance(&escrow(&r.view.job_id));
        if left != 0 {
            return Err(format!("job {j} ended with {left} in escrow"));
        }
    }
    Ok(())
}
