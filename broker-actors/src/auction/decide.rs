//! The reverse auction's decisions as pure functions: who is invited, who wins, what is paid.
//!
//! Winner: the lowest estimated cost (price/hour × ETA) among bids meeting every constraint,
//! ties broken by reputation, then by arrival. Payment: the second-lowest qualifying cost,
//! capped by the budget, or the winner's own cost when alone — so bidding one's true cost is
//! the best strategy.

use helium_protocol::{
    job::{cost, DeclaredWork, Requirements},
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

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn credits(micro: u64) -> f64 {
    micro as f64 / helium_protocol::limits::MICRO_PER_CREDIT as f64
}

/// Picks up to `k` workers to invite: those whose standing ask can meet the requirements,
/// cheapest expected cost first. When none can, says why in words.
pub fn invitees(
    candidates: &[Candidate],
    req: &Requirements,
    work: &DeclaredWork,
    k: usize,
) -> Result<Vec<Candidate>, String> {
    if candidates.is_empty() {
        return Err("no idle worker is online".into());
    }
    let device: Vec<_> = candidates
        .iter()
        .filter(|c| c.ask.device.satisfies(req.device))
        .collect();
    if device.is_empty() {
        return Err(format!("no idle worker with device {:?}", req.device).to_lowercase());
    }
    let memory: Vec<_> = device
        .into_iter()
        .filter(|c| c.ask.memory_bytes >= req.min_memory_bytes)
        .collect();
    if memory.is_empty() {
        let largest = candidates.iter().map(|c| c.ask.memory_bytes).max().unwrap_or(0);
        return Err(format!(
            "no idle worker with ≥ {:.1} GiB of device memory (largest: {:.1} GiB)",
            gib(req.min_memory_bytes),
            gib(largest)
        ));
    }
    let priced: Vec<_> = memory
        .into_iter()
        .filter(|c| c.ask.price_per_hour <= req.max_price_per_hour)
        .collect();
    if priced.is_empty() {
        let cheapest = candidates.iter().map(|c| c.ask.price_per_hour).min().unwrap_or(0);
        return Err(format!(
            "no idle worker at ≤ {} credits/hour (cheapest asks {})",
            credits(req.max_price_per_hour),
            credits(cheapest)
        ));
    }
    let mut ranked: Vec<(u64, Candidate)> = priced
        .into_iter()
        .map(|c| (cost(c.ask.price_per_hour, work.eta_secs(c.ask.throughput)), c.clone()))
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.reputation.total_cmp(&a.1.reputation)));
    Ok(ranked.into_iter().take(k.max(1)).map(|(_, c)| c).collect())
}

/// Closes the auction. `now_ms` is wall-clock unix milliseconds, for the deadline.
pub fn decide(offers: &[Offer], req: &Requirements, now_ms: u64) -> Outcome {
    if offers.is_empty() {
        return Outcome::NoWinner {
            reason: "no invited worker bid".into(),
        };
    }
    let mut qualifying: Vec<(usize, u64, &Offer)> = Vec::new();
    let mut lowest_cost = u64::MAX;
    let mut late = 0;
    for (order, offer) in offers.iter().enumerate() {
        let c = cost(offer.bid.price_per_hour, offer.bid.eta_secs);
        lowest_cost = lowest_cost.min(c);
        let finish_ms = now_ms as f64 + offer.bid.eta_secs * 1000.0;
        let in_time = req.deadline_ms == 0 || finish_ms <= req.deadline_ms as f64;
        if !in_time {
            late += 1;
        }
        if offer.bid.price_per_hour <= req.max_price_per_hour && in_time && c <= req.budget {
            qualifying.push((order, c, offer));
        }
    }
    if qualifying.is_empty() {
        let reason = if late == offers.len() {
            "no bid can finish before the deadline".to_string()
        } else {
            format!(
                "the lowest bid, {} credits, is over the budget of {} credits",
                credits(lowest_cost),
                credits(req.budget)
            )
        };
        return Outcome::NoWinner { reason };
    }
    qualifying.sort_by(|a, b| {
        a.1.cmp(&b.1)
            .then(b.2.reputation.total_cmp(&a.2.reputation))
            .then(a.0.cmp(&b.0))
    });
    let (_, own_cost, best) = qualifying[0];
    let second = qualifying.get(1).map(|q| q.1).unwrap_or(own_cost);
    Outcome::Won {
        winner: Winner {
            worker_id: best.worker_id.clone(),
            owner: best.owner.clone(),
            price: second.min(req.budget).max(own_cost),
            cost: own_cost,
            eta_secs: best.bid.eta_secs,
        },
        bids: offers.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use helium_protocol::job::DeviceKind;

    fn req(max_price: u64, budget: u64) -> Requirements {
        Requirements {
            device: DeviceKind::Any,
            min_memory_bytes: 0,
            max_price_per_hour: max_price,
            budget,
            deadline_ms: 0,
        }
    }

    fn offer(id: &str, price: u64, eta: f64) -> Offer {
        Offer {
            worker_id: id.into(),
            owner: format!("o-{id}"),
            reputation: 1.0,
            bid: Bid {
                price_per_hour: price,
                eta_secs: eta,
            },
        }
    }

    #[test]
    fn lowest_cost_wins_and_is_paid_the_second_price() {
        // Costs: a = 3600*10/3600 = 10, b = 20, c = 15.
        let offers = [offer("a", 3600, 10.0), offer("b", 7200, 10.0), offer("c", 1800, 30.0)];
        let Outcome::Won { winner, bids } = decide(&offers, &req(10_000, 1_000), 0) else {
            panic!()
        };
        assert_eq!(
            (winner.worker_id.as_str(), winner.cost, winner.price, bids),
            ("a", 10, 15, 3)
        );
    }

    #[test]
    fn a_lone_bid_is_paid_its_own_price_and_non_qualifying_bids_set_no_price() {
        let Outcome::Won { winner, .. } = decide(&[offer("a", 3600, 10.0)], &req(10_000, 1_000), 0) else {
            panic!()
        };
        assert_eq!(winner.price, 10);
        // b's cost (100) is over the budget, so it does not qualify and cannot set the price.
        let Outcome::Won { winner, .. } =
            decide(&[offer("a", 3600, 10.0), offer("b", 3600, 100.0)], &req(10_000, 50), 0)
        else {
            panic!()
        };
        assert_eq!(winner.price, 10);
    }

    #[test]
    fn no_qualifying_bid_says_why() {
        let Outcome::NoWinner { reason } = decide(&[offer("a", 3600, 10.0)], &req(10_000, 5), 0) else {
            panic!()
        };
        assert!(reason.contains("budget"), "{reason}");
        let mut r = req(10_000, 1_000);
        r.deadline_ms = 5_000;
        let Outcome::NoWinner { reason } = decide(&[offer("a", 3600, 10.0)], &r, 0) else {
            panic!()
        };
        assert!(reason.contains("deadline"), "{reason}");
    }

    #[test]
    fn invitees_filter_with_a_reason() {
        let c = Candidate {
            worker_id: "w".into(),
            owner: "o".into(),
            ask: Ask {
                price_per_hour: 100,
                device: DeviceKind::Cpu,
                device_name: "cpu".into(),
                memory_bytes: 8 << 30,
                throughput: 1e9,
            },
            reputation: 1.0,
        };
        let work = DeclaredWork {
            parameters: 10,
            samples: 10,
            epochs: 1,
        };
        let mut r = req(1_000, 1_000);
        r.min_memory_bytes = 16 << 30;
        let e = invitees(&[c.clone()], &r, &work, 8).unwrap_err();
        assert!(e.contains("16.0 GiB"), "{e}");
        r.min_memory_bytes = 0;
        r.device = DeviceKind::Cuda;
        assert!(invitees(&[c.clone()], &r, &work, 8).unwrap_err().contains("cuda"));
        assert!(invitees(&[c.clone()], &req(10, 1_000), &work, 8)
            .unwrap_err()
            .contains("credits/hour"));
        assert_eq!(invitees(&[c], &req(1_000, 1_000), &work, 8).unwrap().len(), 1);
    }
}
