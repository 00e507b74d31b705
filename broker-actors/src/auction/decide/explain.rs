//! Why each invited worker did or did not win: one [`AuctionNote`] per invitation of a round,
//! in words an owner reads ("outbid: 1.200000 against your 1.500000 credits/h"), from the same
//! rules that cleared the round ([`terms`], [`check`]). Pure: the auctioneer sends the notes of
//! losing bidders to their workers and hands all of them to the registry for `worker.log`.

use helium_protocol::{
    job::{DeclaredWork, Requirements},
    limits::MICRO_PER_CREDIT,
    worker::{AuctionNote, Verdict},
    PROTOCOL_VERSION,
};

use super::{check, terms, Offer, Outcome};

/// How one invitee answered an invitation.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Bid(Offer),
    /// It answered without a bid; its own reason.
    Declined {
        worker_id: String,
        why: String,
    },
    /// No (readable) answer within the bid window.
    NoAnswer {
        worker_id: String,
        why: String,
    },
}

impl Answer {
    pub fn worker_id(&self) -> &str {
        match self {
            Answer::Bid(o) => &o.worker_id,
            Answer::Declined { worker_id, .. } | Answer::NoAnswer { worker_id, .. } => worker_id,
        }
    }
}

/// One job of a cleared round, as [`explain`] reads it.
#[derive(Debug, Clone, Copy)]
pub struct Closed<'a> {
    pub job_id: &'a str,
    pub requirements: &'a Requirements,
    pub work: &'a DeclaredWork,
    pub answers: &'a [Answer],
    pub outcome: &'a Outcome,
}

/// A note for every answer of every job of the round, `(worker, note)`, in the round's order.
pub fn explain(round: &[Closed<'_>], now_ms: u64) -> Vec<(String, AuctionNote)> {
    // Which job each winner of the round took.
    let won_by = |worker: &str| {
        round.iter().find_map(|c| match c.outcome {
            Outcome::Won { winner, .. } if winner.worker_id == worker => Some(c.job_id),
            _ => None,
        })
    };
    let mut notes = Vec::new();
    for c in round {
        let winning = match c.outcome {
            Outcome::Won { winner, .. } => c.answers.iter().find_map(|a| match a {
                Answer::Bid(o) if o.worker_id == winner.worker_id => Some((o, winner.cost)),
                _ => None,
            }),
            Outcome::NoWinner { .. } => None,
        };
        for answer in c.answers {
            let note = |verdict, reason: String| AuctionNote {
                v: PROTOCOL_VERSION,
                job_id: c.job_id.to_string(),
                at_ms: now_ms,
                verdict,
                reason,
                price_per_hour: None,
                cost: None,
                winning_price_per_hour: None,
                winning_cost: None,
            };
            let n = match answer {
                Answer::Declined { why, .. } => note(Verdict::Declined, why.clone()),
                Answer::NoAnswer { why, .. } => note(Verdict::NoAnswer, why.clone()),
                Answer::Bid(offer) => {
                    let t = terms(offer, c.requirements, now_ms);
                    let (verdict, reason) = verdict(offer, c, &t, winning, won_by(&offer.worker_id));
                    // Only a bid that competed hears the winning one.
                    let revealed = winning.filter(|_| verdict == Verdict::Lost && t.qualifies);
                    AuctionNote {
                        price_per_hour: Some(offer.bid.price_per_hour),
                        cost: Some(t.cost),
                        winning_price_per_hour: revealed.map(|(o, _)| o.bid.price_per_hour),
                        winning_cost: revealed.map(|(_, cost)| cost),
                        ..note(verdict, reason)
                    }
                }
            };
            notes.push((answer.worker_id().to_string(), n));
        }
    }
    notes
}

/// Micro-credits as credits with six decimals, exactly (and without float formatting, which
/// showed in the auction's profile: a round writes a few numbers per invitee).
fn per_hour(micro: u64) -> String {
    format!("{}.{:06}", micro / MICRO_PER_CREDIT, micro % MICRO_PER_CREDIT)
}

/// The verdict on one bid of `c`, and why. `winning` is the job's winning bid and its cost;
/// `took` the job of the round this bidder won, if any.
fn verdict(
    offer: &Offer,
    c: &Closed<'_>,
    t: &super::Terms,
    winning: Option<(&Offer, u64)>,
    took: Option<&str>,
) -> (Verdict, String) {
    if let Err(e) = check(offer, c.work) {
        return (Verdict::Refused, format!("bid refused: {e}"));
    }
    match took {
        Some(job) if job == c.job_id => {
            let price = match c.outcome {
                Outcome::Won { winner, .. } => winner.price,
                Outcome::NoWinner { .. } => t.cost,
            };
            return (
                Verdict::Won,
                format!(
                    "won: paid {} credits for your cost of {}",
                    per_hour(price),
                    per_hour(t.cost)
                ),
            );
        }
        Some(job) => return (Verdict::Lost, format!("won job {job} of the same round instead")),
        None => {}
    }
    let mine = offer.bid.price_per_hour;
    if !t.qualifies {
        // Which constraint, and by how much, would tell bidders where the job's budget, maximum
        // price and deadline lie: what invitations hide (a lone bidder is paid its own cost).
        return (
            Verdict::Lost,
            format!(
                "your bid ({} credits/h for {:.0} s) does not meet the job's price, budget or deadline",
                per_hour(mine),
                offer.bid.eta_secs
            ),
        );
    }
    match winning {
        Some((_, cost)) if cost == t.cost => (
            Verdict::Lost,
            format!(
                "tied at {} credits with a bid of better reputation or that came first",
                per_hour(cost)
            ),
        ),
        Some((w, cost)) => {
            let mut why = format!(
                "outbid: {} against your {} credits/h",
                per_hour(w.bid.price_per_hour),
                per_hour(mine)
            );
            // Bids are ranked by cost: say so when the ETAs, not the prices, decided it.
            if (w.bid.eta_secs - offer.bid.eta_secs).abs() > 0.05 * offer.bid.eta_secs {
                why += &format!(", for {:.0} s against your {:.0} s", w.bid.eta_secs, offer.bid.eta_secs);
            }
            why += &format!(" (cost {} against your {} credits)", per_hour(cost), per_hour(t.cost));
            (Verdict::Lost, why)
        }
        // A qualifying bid that did not win lost to another (a round of one job never leaves a
        // qualifying bid unawarded). The job's own reason is never copied: it may name the budget.
        None => (Verdict::Lost, "no award".into()),
    }
}

#[cfg(test)]
mod tests {
    use helium_protocol::worker::Bid;

    use super::super::{clear, Lot};
    use super::*;

    use super::super::tests::WORK;
    const CREDIT: u64 = 1_000_000;

    fn req(budget: u64) -> Requirements {
        super::super::tests::req(10 * CREDIT, budget)
    }

    fn bid(id: &str, price: u64, eta: f64) -> Answer {
        Answer::Bid(Offer {
            worker_id: id.into(),
            owner: format!("o-{id}"),
            reputation: 1.0,
            throughput: 1e9,
            bid: Bid {
                price_per_hour: price,
                eta_secs: eta,
            },
        })
    }

    /// Clears `lots` as the auctioneer does and explains them.
    fn notes(lots: &[(&str, Requirements, Vec<Answer>)]) -> Vec<(String, AuctionNote)> {
        let offers: Vec<Vec<Offer>> = lots
            .iter()
            .map(|(_, _, answers)| {
                answers
                    .iter()
                    .filter_map(|a| match a {
                        Answer::Bid(o) => Some(o.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .collect();
        let round: Vec<Lot<'_>> = lots
            .iter()
            .zip(&offers)
            .map(|((_, r, _), o)| Lot {
                requirements: r,
                work: &WORK,
                offers: o,
            })
            .collect();
        let outcomes = clear(&round, 0);
        let closed: Vec<Closed<'_>> = lots
            .iter()
            .zip(&outcomes)
            .map(|((job, r, answers), outcome)| Closed {
                job_id: job,
                requirements: r,
                work: &WORK,
                answers,
                outcome,
            })
            .collect();
        explain(&closed, 0)
    }

    fn find<'a>(notes: &'a [(String, AuctionNote)], worker: &str, job: &str) -> &'a AuctionNote {
        &notes.iter().find(|(w, n)| w == worker && n.job_id == job).unwrap().1
    }

    #[test]
    fn the_loser_hears_the_winning_price_against_its_own_and_the_winner_what_it_is_paid() {
        let answers = vec![
            bid("cheap", 1_200_000, 10.0),
            bid("dear", 1_500_000, 10.0),
            Answer::Declined {
                worker_id: "full".into(),
                why: "needs 16.0 GiB, this GPU has 8.0".into(),
            },
            Answer::NoAnswer {
                worker_id: "mute".into(),
                why: "bid window closed".into(),
            },
        ];
        let notes = notes(&[("j", req(CREDIT), answers)]);
        assert_eq!(notes.len(), 4);
        let lost = find(&notes, "dear", "j");
        assert_eq!(lost.verdict, Verdict::Lost);
        assert!(
            lost.reason
                .starts_with("outbid: 1.200000 against your 1.500000 credits/h"),
            "{}",
            lost.reason
        );
        assert_eq!(
            (lost.price_per_hour, lost.winning_price_per_hour),
            (Some(1_500_000), Some(1_200_000))
        );
        assert_eq!((lost.cost, lost.winning_cost), (Some(4_167), Some(3_334)));
        let won = find(&notes, "cheap", "j");
        assert_eq!(won.verdict, Verdict::Won);
        assert_eq!(won.reason, "won: paid 0.004167 credits for your cost of 0.003334");
        assert_eq!(
            won.winning_price_per_hour, None,
            "a winner is told nothing of the others"
        );
        assert_eq!(find(&notes, "full", "j").verdict, Verdict::Declined);
        assert_eq!(find(&notes, "full", "j").reason, "needs 16.0 GiB, this GPU has 8.0");
        assert_eq!(find(&notes, "mute", "j").verdict, Verdict::NoAnswer);
    }

    #[test]
    fn bids_that_do_not_qualify_are_told_so_without_learning_the_jobs_constraints() {
        let answers = vec![
            bid("ok", CREDIT, 10.0),
            bid("greedy", 11 * CREDIT, 10.0),
            bid("slow", CREDIT, 5_000.0),
            bid("liar", CREDIT, 0.0),
        ];
        let notes = notes(&[("j", req(CREDIT / 10), answers)]);
        for loser in ["greedy", "slow"] {
            let n = find(&notes, loser, "j");
            assert_eq!(n.verdict, Verdict::Lost);
            assert!(n.reason.ends_with("does not meet the job's price, budget or deadline"), "{n:?}");
            // Neither the budget (0.100000), the maximum price (10.000000) nor the winning bid.
            assert!(!n.reason.contains("0.100000") && !n.reason.contains("10.000000"), "{n:?}");
            assert_eq!(n.winning_price_per_hour, None, "{n:?}");
        }
        assert_eq!(find(&notes, "liar", "j").verdict, Verdict::Refused);
        assert!(find(&notes, "liar", "j").reason.starts_with("bid refused"));
    }

    #[test]
    fn a_worker_that_won_another_job_of_the_round_is_told_so_and_ties_are_named() {
        // Both jobs want a and b; a is cheapest for both and goes to the first.
        let two = || vec![bid("a", CREDIT, 10.0), bid("b", 2 * CREDIT, 10.0)];
        let notes1 = notes(&[("j1", req(CREDIT), two()), ("j2", req(CREDIT), two())]);
        assert_eq!(find(&notes1, "a", "j1").verdict, Verdict::Won);
        assert_eq!(find(&notes1, "a", "j2").reason, "won job j1 of the same round instead");
        assert_eq!(find(&notes1, "b", "j2").verdict, Verdict::Won);
        assert_eq!(find(&notes1, "b", "j1").verdict, Verdict::Lost);
        let tie = notes(&[(
            "j",
            req(CREDIT),
            vec![bid("first", CREDIT, 10.0), bid("second", CREDIT, 10.0)],
        )]);
        assert!(
            find(&tie, "second", "j").reason.starts_with("tied at"),
            "{:?}",
            find(&tie, "second", "j")
        );
    }
}
