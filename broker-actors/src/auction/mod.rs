//! The Auctioneer actor: sealed-bid reverse auctions, cleared in rounds. Every job that asks
//! for an auction while none is in flight starts a round; those that ask during a round go
//! into the next, which starts as soon as it ends. A round invites, for each of its jobs, the
//! K cheapest eligible idle workers (not the whole grid, so a job's cost does not grow with
//! the grid), collects the private replies until all answered or the bid window closes, and
//! clears all its jobs at once with the pure rules in [`decide::clear`]: each worker wins one
//! job at most, so a burst of jobs spreads over the workers instead of herding onto the
//! cheapest. A round promises each winner to its job in the registry before it answers
//! ([`RegistryMsg::Promise`]: the job reserves its winner only once the hold is in escrow), so
//! the next round does not invite it. Rounds run in a task; the actor's handler never awaits.
//!
//! Once a round is cleared, every invitation is explained ([`decide::explain`]): the registry
//! keeps each worker's notes for its owner's `worker.log`, and a worker that bid and did not
//! win hears why on `dispatch.<worker>.auction.result` ("outbid: 1.200000 against your
//! 1.500000 credits/h").

pub mod decide;

use std::time::Duration;

use futures::future::join_all;
use helium_protocol::{
    api::Quote,
    decode, encode,
    job::{DeclaredWork, Requirements},
    subjects,
    worker::{BidReply, Invite, Verdict},
    Reply, PROTOCOL_VERSION,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::registry::RegistryMsg;
pub use decide::{Answer, Candidate, Offer, Outcome, Winner};

pub enum AuctioneerMsg {
    Run {
        job_id: String,
        requirements: Requirements,
        work: DeclaredWork,
        /// Workers this job no longer invites (they failed it before).
        exclude: Vec<String>,
        reply: RpcReplyPort<Outcome>,
    },
    /// Internal: a round ended.
    RoundDone,
    /// What an auction for this job would charge now, if the workers it would invite bid
    /// what their asks say ([`decide::quote`]); nothing is sent to any worker.
    Quote {
        requirements: Requirements,
        work: DeclaredWork,
        reply: RpcReplyPort<Quote>,
    },
}

pub struct Auctioneer;

#[derive(Clone)]
pub struct AuctioneerArgs {
    pub nats: async_nats::Client,
    pub registry: ActorRef<RegistryMsg>,
    /// How many workers one auction invites at most.
    pub invite_k: usize,
    pub bid_window: Duration,
}

/// A job waiting for the next round.
pub struct Pending {
    job_id: String,
    requirements: Requirements,
    work: DeclaredWork,
    exclude: Vec<String>,
    reply: RpcReplyPort<Outcome>,
}

pub struct AuctioneerState {
    args: AuctioneerArgs,
    pending: Vec<Pending>,
    in_flight: bool,
}

impl Actor for Auctioneer {
    type Msg = AuctioneerMsg;
    type State = AuctioneerState;
    type Arguments = AuctioneerArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<AuctioneerMsg>,
        args: AuctioneerArgs,
    ) -> Result<AuctioneerState, ActorProcessingErr> {
        Ok(AuctioneerState {
            args,
            pending: Vec::new(),
            in_flight: false,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<AuctioneerMsg>,
        msg: AuctioneerMsg,
        state: &mut AuctioneerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AuctioneerMsg::Run {
                job_id,
                requirements,
                work,
                exclude,
                reply,
            } => {
                state.pending.push(Pending {
                    job_id,
                    requirements,
                    work,
                    exclude,
                    reply,
                });
                if !state.in_flight {
                    start_round(&me, state);
                }
            }
            AuctioneerMsg::RoundDone => {
                state.in_flight = false;
                if !state.pending.is_empty() {
                    start_round(&me, state);
                }
            }
            AuctioneerMsg::Quote {
                requirements,
                work,
                reply,
            } => {
                let (registry, k) = (state.args.registry.clone(), state.args.invite_k);
                tokio::spawn(async move {
                    let now_ms = crate::now_ms();
                    let quote = match invitees(&registry, &requirements, work, Vec::new(), k).await {
                        Ok(invited) => decide::quote(&invited, &requirements, &work, now_ms),
                        Err(reason) => decide::no_quote(reason),
                    };
                    let _ = reply.send(quote);
                });
            }
        }
        Ok(())
    }
}

/// Starts a round with every pending job, in a task; it reports back with `RoundDone`.
fn start_round(me: &ActorRef<AuctioneerMsg>, state: &mut AuctioneerState) {
    let lots = std::mem::take(&mut state.pending);
    state.in_flight = true;
    let (args, me) = (state.args.clone(), me.clone());
    tokio::spawn(async move {
        run_round(&args, lots).await;
        let _ = me.send_message(AuctioneerMsg::RoundDone);
    });
}

/// The K workers the registry would invite for one job, or why there are none.
async fn invitees(
    registry: &ActorRef<RegistryMsg>,
    requirements: &Requirements,
    work: DeclaredWork,
    exclude: Vec<String>,
    k: usize,
) -> Result<Vec<Candidate>, String> {
    ractor::call_t!(
        registry,
        |reply| RegistryMsg::Invitees {
            requirements: requirements.clone(),
            work,
            exclude,
            k,
            reply,
        },
        2_000
    )
    .unwrap_or_else(|_| Err("no idle worker is online".into()))
}

/// One round: invite for every job at once, clear them together, promise each winner to its
/// job, answer each job.
async fn run_round(args: &AuctioneerArgs, lots: Vec<Pending>) {
    let asked = lots
        .iter()
        .map(|p| (p.requirements.clone(), p.work, p.exclude.clone()))
        .collect();
    let invitations = ractor::call_t!(
        args.registry,
        |reply| RegistryMsg::RoundInvitees {
            lots: asked,
            k: args.invite_k,
            reply,
        },
        2_000
    )
    .unwrap_or_else(|_| vec![Err("no idle worker is online".to_string()); lots.len()]);
    let collect = lots.iter().zip(invitations).map(|(p, invitees)| async move {
        match invitees {
            Ok(invited) => {
                let answers = collect_bids(args, &p.job_id, &p.requirements, &p.work, &invited).await;
                let offers: Vec<Offer> = answers
                    .iter()
                    .filter_map(|a| match a {
                        Answer::Bid(o) => Some(o.clone()),
                        _ => None,
                    })
                    .collect();
                Ok((invited.len(), offers, answers))
            }
            Err(reason) => Err(reason),
        }
    });
    let collected = join_all(collect).await;
    let now_ms = crate::now_ms();
    let no_offers: Vec<Offer> = Vec::new();
    let round: Vec<decide::Lot<'_>> = lots
        .iter()
        .zip(&collected)
        .map(|(p, c)| decide::Lot {
            requirements: &p.requirements,
            work: &p.work,
            offers: c.as_ref().map_or(&no_offers, |(_, offers, _)| offers),
        })
        .collect();
    let outcomes: Vec<Outcome> = decide::clear(&round, now_ms)
        .into_iter()
        .zip(&collected)
        .map(|(outcome, c)| match c {
            // The registry's reason (nobody idle, nobody eligible) says more than "no bid".
            Err(reason) => Outcome::NoWinner { reason: reason.clone() },
            Ok(_) => outcome,
        })
        .collect();
    drop(round);
    let no_answers: Vec<Answer> = Vec::new();
    let closed: Vec<decide::Closed<'_>> = lots
        .iter()
        .zip(&collected)
        .zip(&outcomes)
        .map(|((p, c), outcome)| decide::Closed {
            job_id: &p.job_id,
            requirements: &p.requirements,
            work: &p.work,
            answers: c.as_ref().map_or(&no_answers, |(_, _, answers)| answers),
            outcome,
        })
        .collect();
    tell(args, decide::explain(&closed, now_ms));
    drop(closed);
    for ((p, c), outcome) in lots.into_iter().zip(collected).zip(outcomes) {
        let (invited, bids) = c.as_ref().map_or((0, 0), |(n, offers, _)| (*n, offers.len()));
        if let Outcome::Won { winner, .. } = &outcome {
            // Before the answer: the job's `Reserve` comes after it and must replace this.
            let _ = args.registry.send_message(RegistryMsg::Promise {
                worker_id: winner.worker_id.clone(),
                job: p.job_id.clone(),
            });
        }
        tracing::info!(job = %p.job_id, invited, bids, ?outcome, "auction closed");
        let _ = p.reply.send(outcome);
    }
}

/// Hands the round's notes to the registry (for `worker.log`), and sends each bidder that did
/// not win, and each invitee that did not answer, its own note. Publishes are buffered by the
/// client: nothing here waits on a worker.
fn tell(args: &AuctioneerArgs, notes: Vec<(String, helium_protocol::worker::AuctionNote)>) {
    let told: Vec<(String, bytes::Bytes)> = notes
        .iter()
        .filter(|(_, note)| matches!(note.verdict, Verdict::Lost | Verdict::Refused | Verdict::NoAnswer))
        .map(|(worker_id, note)| {
            let subject = subjects::dispatch(worker_id, subjects::dispatch::AUCTION_RESULT);
            (subject, bytes::Bytes::from(encode(note)))
        })
        .collect();
    if !told.is_empty() {
        // One task for the round's notices: they are plain publishes, buffered by the client.
        let nats = args.nats.clone();
        tokio::spawn(async move {
            for (subject, payload) in told {
                let _ = nats.publish(subject, payload).await;
            }
        });
    }
    if !notes.is_empty() {
        let _ = args.registry.send_message(RegistryMsg::Notes(notes));
    }
}

/// Invites `invited` to bid on one job and collects every answer that arrives within the bid
/// window: a bid (whether it passes [`decide::check_bid`] is for the rules to say), a decline
/// with its reason, or none.
async fn collect_bids(
    args: &AuctioneerArgs,
    job_id: &str,
    requirements: &Requirements,
    work: &DeclaredWork,
    invited: &[Candidate],
) -> Vec<Answer> {
    let invite = Invite {
        v: PROTOCOL_VERSION,
        job_id: job_id.to_string(),
        auction_id: uuid::Uuid::now_v7().simple().to_string(),
        // Never the budget, the maximum price or the deadline: the broker holds bids to those.
        requirements: requirements.into(),
        work: *work,
    };
    let payload = bytes::Bytes::from(encode(&invite));
    let asks = invited.iter().map(|c| {
        let subject = subjects::dispatch(&c.worker_id, subjects::dispatch::INVITE);
        let request = args.nats.request(subject, payload.clone());
        async move {
            let answer = tokio::time::timeout(args.bid_window, request).await;
            let reply = match answer {
                Ok(Ok(message)) => decode::<Reply<BidReply>>(&message.payload).and_then(Reply::into_result),
                Ok(Err(e)) => Err(helium_protocol::WireError::new(
                    helium_protocol::ErrorCode::Unavailable,
                    e.to_string(),
                )),
                Err(_) => Err(helium_protocol::WireError::new(
                    helium_protocol::ErrorCode::Unavailable,
                    "bid window closed",
                )),
            };
            match reply {
                // An ETA of 0 (cost 0), NaN, negative or faster than the worker's own ask
                // allows would win; `decide` leaves such a bid out and the auction goes on
                // with the others.
                Ok(BidReply { bid: Some(bid), .. }) => {
                    if let Err(e) = decide::check_bid(&bid, c.ask.throughput, work) {
                        tracing::warn!(job = %job_id, worker = %c.worker_id, error = %e, "bid refused");
                    }
                    Answer::Bid(Offer {
                        worker_id: c.worker_id.clone(),
                        owner: c.owner.clone(),
                        reputation: c.reputation,
                        throughput: c.ask.throughput,
                        bid,
                    })
                }
                Ok(other) => {
                    tracing::info!(job = %job_id, worker = %c.worker_id, decline = ?other.decline, "no bid");
                    let why = other.decline.as_deref().unwrap_or("declined");
                    Answer::Declined {
                        worker_id: c.worker_id.clone(),
                        // The worker's own words, kept to a short line.
                        why: helium_protocol::validate::note(why),
                    }
                }
                Err(e) => {
                    tracing::info!(job = %job_id, worker = %c.worker_id, error = %e, "no bid");
                    Answer::NoAnswer {
                        worker_id: c.worker_id.clone(),
                        // An error reply is the worker's own words too.
                        why: helium_protocol::validate::note(&e.message),
                    }
                }
            }
        }
    });
    join_all(asks).await
}
