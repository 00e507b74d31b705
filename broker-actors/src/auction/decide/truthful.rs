//! Tests that bidding one's true cost is the best strategy (DESIGN §4): whatever the others
//! bid, a worker that bids below or above its true cost gains nothing over bidding it. A
//! worker's gain is what it is paid minus its true cost when it wins, 0 when it loses.
//!
//! The property holds whenever another owner's bid qualifies (its cost within the budget and
//! the deadline), for one auction ([`decide`]) and for a round ([`clear`]) in which each
//! worker bids on one job, which is how the registry spreads a round's invitations when there
//! are as many idle workers as jobs × K. Two limits, named in docs/ARCHITECTURE.md:
//! - a lone qualifying bid is paid its own cost (paying it the researcher's whole budget, the
//!   truthful price, would cost researchers more than the lie it prevents): a lone bidder gains
//!   by overbidding up to the budget, which is why an invitation carries no budget, maximum
//!   price or deadline, and why a bidder cannot know it is alone;
//! - a worker invited by two jobs of one round and cheapest for both could, knowing every other
//!   sealed bid, give up the job it would win for another that pays it more.

use helium_protocol::{
    job::{cost, Requirements},
    worker::Bid,
};
use proptest::prelude::*;

use super::{clear, decide, Lot, Offer, Outcome};

/// 32,000 parameter-samples: every ETA below is far above the bids' floor at 1e9/s.
use super::tests::WORK;
const CREDIT: u64 = 1_000_000;

fn req(budget: u64) -> Requirements {
    super::tests::req(100 * CREDIT, budget)
}

/// A worker's true cost: its price per hour and ETA for the work.
#[derive(Debug, Clone, Copy)]
struct Truth {
    price: u64,
    eta: f64,
}

fn offer(i: usize, price: u64, eta: f64) -> Offer {
    Offer {
        worker_id: format!("w{i}"),
        owner: format!("o{i}"),
        reputation: 1.0,
        throughput: 1e9,
        bid: Bid {
            price_per_hour: price,
            eta_secs: eta,
        },
    }
}

/// What worker `who` gains when everyone bids the truth but it bids `price` per hour.
fn gain(truths: &[Truth], who: usize, price: u64, req: &Requirements) -> i128 {
    let offers: Vec<Offer> = truths
        .iter()
        .enumerate()
        .map(|(i, t)| offer(i, if i == who { price } else { t.price }, t.eta))
        .collect();
    match decide(&offers, req, &WORK, 0) {
        Outcome::Won { winner, .. } if winner.worker_id == format!("w{who}") => {
            i128::from(winner.price) - i128::from(cost(truths[who].price, truths[who].eta))
        }
        _ => 0,
    }
}

/// Misreports from a quarter to four times the truth.
const FACTORS: [f64; 10] = [0.25, 0.5, 0.8, 0.95, 0.99, 1.01, 1.05, 1.25, 2.0, 4.0];

fn scaled(price: u64, factor: f64) -> u64 {
    ((price as f64 * factor).round() as u64).max(1)
}

/// The fixed scenario: four owners whose true costs are 10, 12, 15 and 30 credits-worth of
/// compute, a budget between them. The cheapest wins at the second's cost; the others gain
/// nothing. No worker gains by any misreport: the cheapest that overbids past the second
/// loses its margin, the others that underbid to win are paid less than their cost.
#[test]
fn on_a_fixed_scenario_no_worker_gains_by_bidding_other_than_its_true_cost() {
    let truths = [
        Truth {
            price: 10 * CREDIT,
            eta: 3_600.0,
        },
        Truth {
            price: 24 * CREDIT,
            eta: 1_800.0,
        },
        Truth {
            price: 15 * CREDIT,
            eta: 3_600.0,
        },
        Truth {
            price: 60 * CREDIT,
            eta: 1_800.0,
        },
    ];
    let r = req(20 * CREDIT);
    let honest: Vec<i128> = (0..truths.len())
        .map(|w| gain(&truths, w, truths[w].price, &r))
        .collect();
    assert_eq!(
        honest,
        [2 * i128::from(CREDIT), 0, 0, 0],
        "the cheapest is paid the second's cost"
    );
    for (w, truth) in truths.iter().enumerate() {
        for factor in FACTORS {
            let lied = gain(&truths, w, scaled(truth.price, factor), &r);
            assert!(
                lied <= honest[w],
                "w{w} bidding {factor}× its cost gains {lied} > {}",
                honest[w]
            );
        }
    }
    // The cheapest overbidding past the second (1.25×) loses the job; the second underbidding
    // to win (0.8×) is paid the cheapest's 10 for its own cost of 12.
    assert_eq!(gain(&truths, 0, scaled(truths[0].price, 1.25), &r), 0);
    assert_eq!(
        gain(&truths, 1, scaled(truths[1].price, 0.8), &r),
        -2 * i128::from(CREDIT)
    );
}

/// Whether a bid of someone other than `who` qualifies under `budget` when all bid the truth.
fn competed(truths: &[Truth], who: usize, budget: u64) -> bool {
    truths
        .iter()
        .enumerate()
        .any(|(i, t)| i != who && cost(t.price, t.eta) <= budget)
}

/// The lone bidder's exception, pinned: alone, it is paid its own bid, so overbidding pays.
#[test]
fn a_lone_qualifying_bid_is_paid_its_own_cost_which_is_why_invitations_hide_the_budget() {
    let truths = [
        Truth {
            price: CREDIT,
            eta: 3_600.0,
        },
        Truth {
            price: 500 * CREDIT,
            eta: 3_600.0,
        },
    ];
    let r = req(10 * CREDIT);
    assert_eq!(gain(&truths, 0, CREDIT, &r), 0);
    assert_eq!(gain(&truths, 0, 5 * CREDIT, &r), 4 * i128::from(CREDIT));
}

proptest! {
    /// Random markets of 2 to 6 owners, any budget under which another owner's bid
    /// qualifies: no misreport of any worker beats the truth in one auction.
    #[test]
    fn no_misreport_beats_the_truth_in_one_auction(
        costs in prop::collection::vec((1u64..100, 60u32..7_200), 2..6),
        budget in 1u64..200,
        who in 0usize..6,
        factor in 0.1f64..10.0,
    ) {
        let truths: Vec<Truth> = costs.iter().map(|&(p, eta)| Truth { price: p * CREDIT, eta: f64::from(eta) }).collect();
        let who = who % truths.len();
        prop_assume!(competed(&truths, who, budget * CREDIT));
        let r = req(budget * CREDIT);
        let honest = gain(&truths, who, truths[who].price, &r);
        let lied = gain(&truths, who, scaled(truths[who].price, factor), &r);
        prop_assert!(lied <= honest, "w{who} at {factor}×: {lied} > {honest}");
    }

    /// A round of jobs, each bid on by its own workers (as the registry spreads invitations):
    /// no worker gains by misreporting on its job.
    #[test]
    fn no_misreport_beats_the_truth_in_a_round_of_disjoint_bidders(
        jobs in prop::collection::vec(prop::collection::vec((1u64..100, 60u32..7_200), 2..4), 1..5),
        who in (0usize..5, 0usize..4),
        factor in 0.1f64..10.0,
    ) {
        let r = req(1_000 * CREDIT);
        let mut n = 0;
        let truths: Vec<Vec<(usize, Truth)>> = jobs
            .iter()
            .map(|bidders| bidders.iter().map(|&(p, eta)| { n += 1; (n, Truth { price: p * CREDIT, eta: f64::from(eta) }) }).collect())
            .collect();
        let (job, at) = (who.0 % truths.len(), who.1 % truths[who.0 % truths.len()].len());
        let (id, truth) = truths[job][at];
        let round_gain = |price: u64| -> i128 {
            let offers: Vec<Vec<Offer>> = truths
                .iter()
                .map(|bidders| bidders.iter().map(|&(i, t)| offer(i, if i == id { price } else { t.price }, t.eta)).collect())
                .collect();
            let lots: Vec<Lot<'_>> = offers.iter().map(|o| Lot { requirements: &r, work: &WORK, offers: o }).collect();
            match &clear(&lots, 0)[job] {
                Outcome::Won { winner, .. } if winner.worker_id == format!("w{id}") => {
                    i128::from(winner.price) - i128::from(cost(truth.price, truth.eta))
                }
                _ => 0,
            }
        };
        let honest = round_gain(truth.price);
        let lied = round_gain(scaled(truth.price, factor));
        prop_assert!(lied <= honest, "w{id} of job {job} at {factor}×: {lied} > {honest}");
    }
}
