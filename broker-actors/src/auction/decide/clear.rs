//! One round of many auctions at once: the jobs queued together are cleared against the
//! workers that bid on them, each worker going to one job at most, so a burst of jobs does not
//! herd onto the few cheapest workers (every auction but one winning a worker that another job
//! already took, then holding and refunding, then auctioning again).
//!
//! Each job's bids are ranked as a lone auction ranks them ([`rank`](super::rank)). Then, over
//! all the round's qualifying (job, bid) pairs, cheapest first (then reputation, then the
//! job's place in the round: older jobs first), a pair is taken when neither its job nor its
//! worker is taken yet. The winner of a job is paid as in a lone auction: the next qualifying
//! cost of another owner *for that job* after its own, capped by the budget, never below its own
//! cost. A round of one job is exactly [`decide`](super::decide).
//!
//! A job whose qualifying workers all went to other jobs of the round gets no winner and a
//! reason saying so; it waits for the next round.

use helium_protocol::job::{DeclaredWork, Requirements};

use super::{rank, winner_at, Offer, Outcome};

/// One job of a round: its constraints, its declared work, and the bids it received.
#[derive(Debug, Clone, Copy)]
pub struct Lot<'a> {
    pub requirements: &'a Requirements,
    pub work: &'a DeclaredWork,
    pub offers: &'a [Offer],
}

/// The outcome of each of `lots` (in their order), cleared together at `now_ms`.
pub fn clear(lots: &[Lot<'_>], now_ms: u64) -> Vec<Outcome> {
    let ranked: Vec<_> = lots.iter().map(|l| rank(l.offers, l.requirements, l.work, now_ms)).collect();
    // Every qualifying (job, rank) pair, in the order they are taken.
    let mut pairs: Vec<(u64, f64, usize, usize)> = Vec::new();
    for (lot, r) in ranked.iter().enumerate() {
        if let Ok(r) = r {
            for (i, (cost, offer)) in r.qualifying.iter().enumerate() {
                pairs.push((*cost, offer.reputation, lot, i));
            }
        }
    }
    pairs.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    let mut picked: Vec<Option<usize>> = vec![None; lots.len()];
    let mut taken: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for &(_, _, lot, i) in &pairs {
        if picked[lot].is_some() {
            continue;
        }
        let Ok(r) = &ranked[lot] else { continue };
        let worker = r.qualifying[i].1.worker_id.as_str();
        if taken.insert(worker) {
            picked[lot] = Some(i);
        }
    }
    ranked
        .iter()
        .zip(lots)
        .zip(picked)
        .map(|((r, lot), pick)| match (r, pick) {
            (Err(reason), _) => Outcome::NoWinner { reason: reason.clone() },
            (Ok(r), Some(i)) => Outcome::Won {
                winner: winner_at(r, i, lot.requirements),
                bids: r.bids,
            },
            (Ok(_), None) => Outcome::NoWinner {
                reason: "every worker that bid went to another job of the same round".into(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use helium_protocol::{job::DeviceKind, worker::Bid};

    use super::super::decide;
    use super::*;

    const WORK: DeclaredWork = DeclaredWork {
        parameters: 1_000,
        samples: 16,
        epochs: 2,
    };

    fn req() -> Requirements {
        Requirements {
            device: DeviceKind::Any,
            min_memory_bytes: 0,
            max_price_per_hour: 100_000,
            budget: 1_000,
            deadline_ms: 0,
        }
    }

    fn offer(id: &str, price: u64) -> Offer {
        Offer {
            worker_id: id.into(),
            owner: format!("o-{id}"),
            reputation: 1.0,
            throughput: 1e9,
            bid: Bid {
                price_per_hour: price,
                eta_secs: 36.0,
            },
        }
    }

    fn winners(outcomes: &[Outcome]) -> Vec<Option<(String, u64)>> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Won { winner, .. } => Some((winner.worker_id.clone(), winner.price)),
                Outcome::NoWinner { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_round_of_one_job_is_a_lone_auction() {
        let offers = [offer("a", 1_000), offer("b", 2_000), offer("c", 1_500)];
        let r = req();
        let lone = decide(&offers, &r, &WORK, 0);
        let round = clear(&[Lot { requirements: &r, work: &WORK, offers: &offers }], 0);
        assert_eq!(round, vec![lone]);
    }

    #[test]
    fn jobs_bidding_for_the_same_workers_each_get_a_different_one() {
        // Three jobs, the same three workers bid on each: costs a 10, c 15, b 20.
        let offers = [offer("a", 1_000), offer("b", 2_000), offer("c", 1_500)];
        let r = req();
        let lot = Lot { requirements: &r, work: &WORK, offers: &offers };
        let got = winners(&clear(&[lot, lot, lot], 0));
        // The oldest job gets the cheapest; each is paid the next cost after its own.
        assert_eq!(got, vec![Some(("a".into(), 15)), Some(("c".into(), 20)), Some(("b".into(), 20))]);
        // A fourth job finds every worker taken, and says so.
        let outcomes = clear(&[lot, lot, lot, lot], 0);
        assert!(matches!(&outcomes[3], Outcome::NoWinner { reason } if reason.contains("another job")));
    }

    #[test]
    fn a_job_no_bid_qualifies_for_keeps_its_own_reason_and_takes_no_worker() {
        let offers = [offer("a", 1_000)];
        let (r, mut poor) = (req(), req());
        poor.budget = 1;
        let outcomes = clear(
            &[
                Lot { requirements: &poor, work: &WORK, offers: &offers },
                Lot { requirements: &r, work: &WORK, offers: &offers },
            ],
            0,
        );
        assert!(matches!(&outcomes[0], Outcome::NoWinner { reason } if reason.contains("budget")));
        assert_eq!(winners(&outcomes)[1], Some(("a".into(), 10)));
    }
}
