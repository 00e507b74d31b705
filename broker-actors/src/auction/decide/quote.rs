//! A price before committing: the auction [`decide`](super::decide) would run now, with every
//! worker it would invite bidding what its standing ask says.
//!
//! A worker bids its ask's price per hour and its own ETA for the declared work
//! ([`DeclaredWork::eta_secs`] at its advertised throughput, the estimate the worker itself
//! uses), so on an unchanged market the quote's `price` is what the auction charges. Which of
//! the invited workers are still free when the job is submitted may change; the charged price
//! stays in `[low, high]` anyway: it is at least the winner's own cost (≥ the cheapest
//! qualifying cost) and, being the winner's cost or another qualifying bid's capped by the
//! budget, at most the dearest qualifying cost capped by the budget.

use helium_protocol::{
    api::Quote,
    job::{DeclaredWork, Requirements},
    worker::Bid,
    PROTOCOL_VERSION,
};

use super::{rank, winner_at, Candidate, Offer};

/// The bids `invited` would make for `work` if each bid what its ask says.
pub fn truthful_offers(invited: &[Candidate], work: &DeclaredWork) -> Vec<Offer> {
    invited
        .iter()
        .map(|c| Offer {
            worker_id: c.worker_id.clone(),
            owner: c.owner.clone(),
            reputation: c.reputation,
            throughput: c.ask.throughput,
            bid: Bid {
                price_per_hour: c.ask.price_per_hour,
                eta_secs: work.eta_secs(c.ask.throughput),
            },
        })
        .collect()
}

/// No worker can take the job now, and `reason` says why.
pub fn no_quote(reason: String) -> Quote {
    Quote {
        v: PROTOCOL_VERSION,
        price: 0,
        low: 0,
        high: 0,
        worker: None,
        eta_secs: 0.0,
        eta_low_secs: 0.0,
        eta_high_secs: 0.0,
        invited: 0,
        qualifying: 0,
        reason: Some(reason),
    }
}

/// The quote for `work` under `req` from `invited`, the workers an auction would invite now
/// (the registry's [`invitees`](super::invitees)); its `reason` says why there is none.
pub fn quote(invited: &[Candidate], req: &Requirements, work: &DeclaredWork, now_ms: u64) -> Quote {
    let offers = truthful_offers(invited, work);
    // Ranked as the auction ranks them: cheapest first, so the range's ends are the first
    // and last qualifying cost.
    let ranked = match rank(&offers, req, work, now_ms) {
        Ok(ranked) => ranked,
        Err(reason) => {
            return Quote {
                invited: invited.len() as u32,
                ..no_quote(reason)
            }
        }
    };
    let winner = winner_at(&ranked, 0, req);
    let costs = ranked.qualifying.iter().map(|q| q.0);
    let etas = ranked.qualifying.iter().map(|q| q.1.bid.eta_secs);
    Quote {
        v: PROTOCOL_VERSION,
        price: winner.price,
        low: winner.cost,
        high: costs.max().unwrap_or(winner.cost).min(req.budget).max(winner.price),
        worker: Some(winner.worker_id),
        eta_secs: winner.eta_secs,
        eta_low_secs: etas.clone().fold(f64::INFINITY, f64::min),
        eta_high_secs: etas.fold(0.0, f64::max),
        invited: invited.len() as u32,
        qualifying: ranked.qualifying.len() as u32,
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use helium_protocol::{job::DeviceKind, worker::Ask};

    use super::super::{decide, Outcome};
    use super::*;

    /// 1e6 parameters × 1,000 samples × 10 epochs = 1e10 parameter-samples.
    const WORK: DeclaredWork = DeclaredWork {
        parameters: 1_000_000,
        samples: 1_000,
        epochs: 10,
    };

    fn worker(id: &str, owner: &str, credits_per_hour: u64, throughput: f64) -> Candidate {
        Candidate {
            worker_id: id.into(),
            owner: owner.into(),
            ask: Ask {
                device: DeviceKind::Cpu,
                device_name: "cpu".into(),
                memory_bytes: 1 << 30,
                price_per_hour: credits_per_hour * 1_000_000,
                throughput,
                sandbox: vec![],
            },
            reputation: 0.0,
        }
    }

    fn req(budget_credits: u64) -> Requirements {
        Requirements {
            device: DeviceKind::Any,
            min_memory_bytes: 0,
            max_price_per_hour: 10_000_000,
            budget: budget_credits * 1_000_000,
            deadline_ms: 0,
        }
    }

    #[test]
    fn the_quote_is_the_price_truthful_bids_get_and_every_subset_stays_in_range() {
        let invited = vec![
            worker("a", "alice", 1, 1e8),
            worker("b", "bob", 2, 1e8),
            worker("c", "carol", 3, 2e8),
            worker("d", "dan", 9, 1e9),
        ];
        let r = req(5);
        let q = quote(&invited, &r, &WORK, 0);
        assert_eq!(q.reason, None);
        assert_eq!(q.worker.as_deref(), Some("a"));
        let Outcome::Won { winner, .. } = decide(&truthful_offers(&invited, &WORK), &r, &WORK, 0) else { panic!() };
        assert_eq!(q.price, winner.price);
        assert!(q.low <= q.price && q.price <= q.high, "{q:?}");
        // Whichever workers are free to bid at submit time, the price stays in the range.
        for mask in 1u32..(1 << invited.len()) {
            let some: Vec<Candidate> =
                invited.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, c)| c.clone()).collect();
            if let Outcome::Won { winner, .. } = decide(&truthful_offers(&some, &WORK), &r, &WORK, 0) {
                assert!((q.low..=q.high).contains(&winner.price), "mask {mask:b}: {} outside {q:?}", winner.price);
                assert!(winner.eta_secs >= q.eta_low_secs && winner.eta_secs <= q.eta_high_secs);
            }
        }
        assert_eq!(q.invited, 4);
        assert_eq!(q.qualifying, 4);
    }

    #[test]
    fn no_worker_that_can_take_the_job_is_a_reason_not_a_price() {
        let q = quote(&[], &req(5), &WORK, 0);
        assert!(q.reason.is_some() && q.price == 0 && q.worker.is_none());
        // One worker over the budget: the reason names the budget.
        let q = quote(&[worker("a", "alice", 9, 1e6)], &req(1), &WORK, 0);
        assert!(q.reason.as_deref().is_some_and(|r| r.contains("budget")), "{q:?}");
    }

    #[test]
    fn the_budget_caps_the_top_of_the_range() {
        let invited = vec![worker("a", "alice", 1, 1e7), worker("b", "bob", 9, 1e7)];
        let r = req(1);
        let q = quote(&invited, &r, &WORK, 0);
        assert!(q.high <= r.budget, "{q:?}");
        assert_eq!(q.qualifying, 1, "the dear worker's cost is over the budget");
    }
}
