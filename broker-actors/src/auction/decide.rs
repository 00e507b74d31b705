//! The reverse auction's decisions as pure functions: who is invited ([`invite`]), which bids
//! count ([`bids`]), who wins and what is paid ([`decide`]).
//!
//! Winner: the lowest estimated cost (price/hour × ETA) among the bids that take part (see
//! [`bids`]: in bounds, and no faster than the bidder's own ask allows by more than
//! [`MAX_BID_SPEEDUP`]) and meet every constraint (price ≤ max, done by the deadline, cost ≤
//! budget); ties broken by reputation, then by invitation rank. Payment: the lowest qualifying
//! cost of an owner other than the winner's, capped by the budget; the winner's own cost when
//! no other owner qualified. A second worker of the winner's owner therefore never sets the
//! price (it could bid up to the budget at no risk), so bidding one's true cost stays the best
//! strategy for an owner with many workers too.
//!
//! [`MAX_BID_SPEEDUP`]: helium_protocol::limits::MAX_BID_SPEEDUP

mod bids;
mod clear;
mod explain;
mod invite;
mod quote;
#[cfg(test)]
mod truthful;

pub use bids::{check, check_bid, min_eta_secs, Refused};
pub use clear::{clear, Lot};
pub use explain::{explain, Answer, Closed};
pub use invite::{invitation_cost, invitees, invitees_indexed, merge_ranked, rate_key, Search};
pub use quote::{no_quote, quote, truthful_offers};

use helium_protocol::{
    job::{cost, DeclaredWork, Requirements},
    limits::credits,
    worker::{Ask, Bid},
};

/// A registered, live, idle worker as the registry sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub worker_id: String,
    pub owner: String,
    pub ask: Ask,
    pub reputation: f64,
}

/// A sealed bid as received, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub worker_id: String,
    pub owner: String,
    pub reputation: f64,
    /// The throughput the bidder's standing ask advertised when it was invited: its ETA is
    /// held to it ([`bids`]).
    pub throughput: f64,
    pub bid: Bid,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Winner {
    pub worker_id: String,
    pub owner: String,
    /// What the researcher pays (second price, capped by the budget), micro-credits.
    pub price: u64,
    /// The winner's own estimated cost.
    pub cost: u64,
    pub eta_secs: f64,
    /// The throughput (parameter-samples/s) the winner's ask advertised: the job holds its
    /// claims of progress to it.
    pub throughput: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Won {
        winner: Winner,
        bids: u32,
    },
    /// Nobody qualified; the reason is shown to the researcher while the job waits.
    NoWinner {
        reason: String,
    },
}

/// A bid's estimated cost and whether it meets the job's constraints.
pub(crate) struct Terms {
    pub cost: u64,
    /// Done by the deadline (or there is none).
    pub in_time: bool,
    /// Price ≤ the maximum, in time, and cost ≤ the budget.
    pub qualifies: bool,
}

/// What `offer` would cost under `req` at `now_ms` (wall-clock unix ms), and if it qualifies.
pub(crate) fn terms(offer: &Offer, req: &Requirements, now_ms: u64) -> Terms {
    let c = cost(offer.bid.price_per_hour, offer.bid.eta_secs);
    let finish_ms = now_ms as f64 + offer.bid.eta_secs * 1000.0;
    let in_time = req.deadline_ms == 0 || finish_ms <= req.deadline_ms as f64;
    Terms {
        cost: c,
        in_time,
        qualifies: offer.bid.price_per_hour <= req.max_price_per_hour && in_time && c <= req.budget,
    }
}

/// The bids of one auction that take part and qualify, best first (cost, then reputation,
/// then invitation order), with the number that took part.
pub(crate) struct Ranked<'a> {
    /// `(cost, offer)`.
    pub qualifying: Vec<(u64, &'a Offer)>,
    pub bids: u32,
}

/// Ranks one auction's `offers` for `work` under `req` at `now_ms` (wall-clock unix ms);
/// `Err` is why none qualifies.
pub(crate) fn rank<'a>(
    offers: &'a [Offer],
    req: &Requirements,
    work: &DeclaredWork,
    now_ms: u64,
) -> Result<Ranked<'a>, String> {
    // A bid out of bounds, or faster than its own ask allows (an ETA of 0 would cost 0 and
    // win), does not take part.
    let offers: Vec<&Offer> = offers.iter().filter(|o| check(o, work).is_ok()).collect();
    if offers.is_empty() {
        return Err("no invited worker bid".into());
    }
    let mut qualifying: Vec<(usize, u64, &Offer)> = Vec::new();
    let mut lowest_cost = u64::MAX;
    let mut late = 0;
    for (order, &offer) in offers.iter().enumerate() {
        let t = terms(offer, req, now_ms);
        lowest_cost = lowest_cost.min(t.cost);
        if !t.in_time {
            late += 1;
        }
        if t.qualifies {
            qualifying.push((order, t.cost, offer));
        }
    }
    if qualifying.is_empty() {
        return Err(if late == offers.len() {
            "no bid can finish before the deadline".to_string()
        } else {
            format!(
                "the lowest bid, {} credits, is over the budget of {} credits",
                credits(lowest_cost),
                credits(req.budget)
            )
        });
    }
    qualifying.sort_by(|a, b| {
        a.1.cmp(&b.1)
            .then(b.2.reputation.total_cmp(&a.2.reputation))
            .then(a.0.cmp(&b.0))
    });
    Ok(Ranked {
        qualifying: qualifying.into_iter().map(|(_, c, o)| (c, o)).collect(),
        bids: offers.len() as u32,
    })
}

/// The `pick`-th ranked bid as the winner. It is paid the next qualifying cost of an owner
/// other than its own (a bid of its own owner never sets its price), capped by the budget, and
/// never less than its own cost; its own cost when no other owner's bid follows it.
pub(crate) fn winner_at(ranked: &Ranked<'_>, pick: usize, req: &Requirements) -> Winner {
    let (own_cost, best) = ranked.qualifying[pick];
    let second = ranked.qualifying[pick + 1..]
        .iter()
        .find(|q| q.1.owner != best.owner)
        .map_or(own_cost, |q| q.0);
    Winner {
        worker_id: best.worker_id.clone(),
        owner: best.owner.clone(),
        price: second.min(req.budget).max(own_cost),
        cost: own_cost,
        eta_secs: best.bid.eta_secs,
        throughput: best.throughput,
    }
}

/// Closes the auction for `work` (the work the invitation declared). `now_ms` is wall-clock
/// unix milliseconds, for the deadline.
pub fn decide(offers: &[Offer], req: &Requirements, work: &DeclaredWork, now_ms: u64) -> Outcome {
    match rank(offers, req, work, now_ms) {
        Err(reason) => Outcome::NoWinner { reason },
        Ok(ranked) => Outcome::Won {
            winner: winner_at(&ranked, 0, req),
            bids: ranked.bids,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helium_protocol::job::DeviceKind;

    /// 32,000 parameter-samples: at the offers' 1e9/s, an ETA of 5 s (the overhead) is honest
    /// (shared with `explain`'s and `truthful`'s tests).
    pub(super) const WORK: DeclaredWork = DeclaredWork {
        parameters: 1_000,
        samples: 16,
        epochs: 2,
    };

    /// Requirements of any device and memory, without a deadline (shared with `invite`'s,
    /// `explain`'s and `truthful`'s tests).
    pub(super) fn req(max_price: u64, budget: u64) -> Requirements {
        Requirements {
            device: DeviceKind::Any,
            min_memory_bytes: 0,
            max_price_per_hour: max_price,
            budget,
            deadline_ms: 0,
        }
    }

    fn owned(id: &str, owner: &str, price: u64, eta: f64) -> Offer {
        Offer {
            worker_id: id.into(),
            owner: owner.into(),
            reputation: 1.0,
            throughput: 1e9,
            bid: Bid {
                price_per_hour: price,
                eta_secs: eta,
            },
        }
    }

    fn offer(id: &str, price: u64, eta: f64) -> Offer {
        owned(id, &format!("o-{id}"), price, eta)
    }

    fn won(offers: &[Offer], req: &Requirements) -> (String, u64, u64, u32) {
        match decide(offers, req, &WORK, 0) {
            Outcome::Won { winner, bids } => (winner.worker_id, winner.cost, winner.price, bids),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lowest_cost_wins_and_is_paid_the_second_price() {
        // Costs: a = 3600*10/3600 = 10, b = 20, c = 15.
        let offers = [offer("a", 3600, 10.0), offer("b", 7200, 10.0), offer("c", 1800, 30.0)];
        assert_eq!(won(&offers, &req(10_000, 1_000)), ("a".into(), 10, 15, 3));
    }

    #[test]
    fn a_lone_bid_is_paid_its_own_price_and_non_qualifying_bids_set_no_price() {
        assert_eq!(won(&[offer("a", 3600, 10.0)], &req(10_000, 1_000)).2, 10);
        // b's cost (100) is over the budget, so it does not qualify and cannot set the price.
        let offers = [offer("a", 3600, 10.0), offer("b", 3600, 100.0)];
        assert_eq!(won(&offers, &req(10_000, 50)).2, 10);
    }

    #[test]
    fn bids_of_zero_nan_or_negative_eta_are_refused_and_the_honest_one_wins() {
        for eta in [0.0, -5.0, f64::NAN, 1.0] {
            let offers = [offer("liar", 3600, eta), offer("honest", 3600, 36.0)];
            assert_eq!(won(&offers, &req(10_000, 1_000)), ("honest".into(), 36, 36, 1), "{eta}");
        }
        let Outcome::NoWinner { .. } = decide(&[offer("liar", 3600, 0.0)], &req(10_000, 1_000), &WORK, 0) else {
            panic!()
        };
    }

    /// The liar's ask advertises 1,000 parameter-samples/s: the work takes it 32 s, so it may
    /// quote no less than 5 + 32 / 4 = 13 s. Its 10 s bid (cost 10) would beat the honest
    /// 36 s (cost 36); refused, it neither wins nor sets the price.
    #[test]
    fn a_bid_faster_than_its_own_ask_allows_is_refused() {
        let slow_ask = |eta| Offer {
            throughput: 1e3,
            ..offer("liar", 3600, eta)
        };
        let honest = offer("honest", 3600, 36.0);
        assert_eq!(
            won(&[slow_ask(10.0), honest.clone()], &req(10_000, 1_000)),
            ("honest".into(), 36, 36, 1)
        );
        // At its floor it is believed, wins, and the honest bid sets its price.
        assert_eq!(
            won(&[slow_ask(13.0), honest], &req(10_000, 1_000)),
            ("liar".into(), 13, 36, 2)
        );
    }

    /// Owner A has a1 (cost 10) and a2; owner B has b. Whatever a2 bids, a1 is paid what it
    /// would be paid without a2: b's cost when b qualifies, else a1's own.
    #[test]
    fn a_second_worker_of_the_winners_owner_never_sets_the_price() {
        let a1 = owned("a1", "A", 3600, 10.0);
        let b = |cost: u64| owned("b", "B", 3600, cost as f64);
        let a2 = |cost: u64| owned("a2", "A", 3600, cost as f64);
        // b over the budget (2,000 > 1,000): a2 bidding the whole budget would set a1's price.
        assert_eq!(
            won(&[a1.clone(), a2(1_000), b(2_000)], &req(10_000, 1_000)),
            ("a1".into(), 10, 10, 3)
        );
        // b qualifies at 20: a2 between them would lower the price the other owner set.
        assert_eq!(
            won(&[a1.clone(), a2(15), b(20)], &req(10_000, 1_000)),
            ("a1".into(), 10, 20, 3)
        );
        for cost in [10, 11, 19, 20, 21, 500, 999, 1_000] {
            for (others, price) in [(vec![], 10), (vec![b(20)], 20), (vec![b(2_000)], 10)] {
                let mut offers = vec![a1.clone(), a2(cost)];
                offers.extend(others);
                assert_eq!(won(&offers, &req(10_000, 1_000)).2, price, "a2 at {cost}");
            }
        }
        // The second worker is the cheapest: it wins, and b still sets the price.
        assert_eq!(won(&[a1, a2(8), b(20)], &req(10_000, 1_000)), ("a2".into(), 8, 20, 3));
    }

    #[test]
    fn no_qualifying_bid_says_why() {
        let Outcome::NoWinner { reason } = decide(&[offer("a", 3600, 10.0)], &req(10_000, 5), &WORK, 0) else {
            panic!()
        };
        assert!(reason.contains("budget"), "{reason}");
        let mut r = req(10_000, 1_000);
        r.deadline_ms = 5_000;
        let Outcome::NoWinner { reason } = decide(&[offer("a", 3600, 10.0)], &r, &WORK, 0) else {
            panic!()
        };
        assert!(reason.contains("deadline"), "{reason}");
    }
}
