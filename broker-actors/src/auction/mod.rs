//! The Auctioneer actor: runs one sealed-bid reverse auction per request. It invites the K
//! cheapest eligible workers (not the whole grid, so the cost of a job does not grow with the
//! grid), collects their private replies until all answered or the bid window closes, and
//! decides with the pure rules in [`decide`]. Invitations run in a task so auctions overlap.

pub mod decide;

use std::time::Duration;

use futures::future::join_all;
use helium_protocol::{
    decode, encode,
    job::{DeclaredWork, Requirements},
    subjects,
    api::Quote,
    worker::{BidReply, Invite},
    Reply, PROTOCOL_VERSION,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::registry::RegistryMsg;
pub use decide::{Candidate, Offer, Outcome, Winner};

pub enum AuctioneerMsg {
    Run {
        job_id: String,
        requirements: Requirements,
        work: DeclaredWork,
        /// Workers this job no longer invites (they failed it before).
        exclude: Vec<String>,
        reply: RpcReplyPort<Outcome>,
    },
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

impl Actor for Auctioneer {
    type Msg = AuctioneerMsg;
    type State = AuctioneerArgs;
    type Arguments = AuctioneerArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<AuctioneerMsg>,
        args: AuctioneerArgs,
    ) -> Result<AuctioneerArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _me: ActorRef<AuctioneerMsg>,
        msg: AuctioneerMsg,
        state: &mut AuctioneerArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AuctioneerMsg::Run {
                job_id,
                requirements,
                work,
                exclude,
                reply,
            } => {
                // The registry owns the idle workers and their sorted views; it answers with
                // the K to invite without copying the grid.
                let invitees = ractor::call_t!(
                    state.registry,
                    |reply| RegistryMsg::Invitees {
                        requirements: requirements.clone(),
                        work,
                        exclude,
                        k: state.invite_k,
                        reply,
                    },
                    2_000
                )
                .unwrap_or_else(|_| Err("no idle worker is online".into()));
                let invited = match invitees {
                    Ok(invited) => invited,
                    Err(reason) => {
                        let _ = reply.send(Outcome::NoWinner { reason });
                        return Ok(());
                    }
                };
                let args = state.clone();
                tokio::spawn(async move {
                    let outcome = collect_and_decide(&args, job_id, requirements, work, invited).await;
                    let _ = reply.send(outcome);
                });
            }
            AuctioneerMsg::Quote {
                requirements,
                work,
                reply,
            } => {
                let (registry, k) = (state.registry.clone(), state.invite_k);
                tokio::spawn(async move {
                    let now_ms = crate::now_ms();
                    let invitees = ractor::call_t!(
                        registry,
                        |reply| RegistryMsg::Invitees {
                            requirements: requirements.clone(),
                            work,
                            exclude: Vec::new(),
                            k,
                            reply,
                        },
                        2_000
                    )
                    .unwrap_or_else(|_| Err("no idle worker is online".into()));
                    let quote = match invitees {
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

async fn collect_and_decide(
    args: &AuctioneerArgs,
    job_id: String,
    requirements: Requirements,
    work: DeclaredWork,
    invited: Vec<Candidate>,
) -> Outcome {
    let invite = Invite {
        v: PROTOCOL_VERSION,
        job_id: job_id.clone(),
        auction_id: uuid::Uuid::now_v7().simple().to_string(),
        // Never the budget, the maximum price or the deadline: the broker holds bids to those.
        requirements: (&requirements).into(),
        work,
    };
    let payload = bytes::Bytes::from(encode(&invite));
    let asks = invited.iter().map(|c| {
        let subject = subjects::dispatch(&c.worker_id, subjects::dispatch::INVITE);
        let request = args.nats.request(subject, payload.clone());
        let (job_id, work) = (&job_id, &work);
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
                // allows would win; such a bid is dropped and the auction goes on with the
                // others (`decide` applies the same check).
                Ok(BidReply { bid: Some(bid), .. }) => match decide::check_bid(&bid, c.ask.throughput, work) {
                    Ok(()) => Some(Offer {
                        worker_id: c.worker_id.clone(),
                        owner: c.owner.clone(),
                        reputation: c.reputation,
                        throughput: c.ask.throughput,
                        bid,
                    }),
                    Err(e) => {
                        tracing::warn!(job = %job_id, worker = %c.worker_id, error = %e, "bid refused");
                        None
                    }
                },
                Ok(other) => {
                    tracing::info!(job = %job_id, worker = %c.worker_id, decline = ?other.decline, "no bid");
                    None
                }
                Err(e) => {
                    tracing::info!(job = %job_id, worker = %c.worker_id, error = %e, "no bid");
                    None
                }
            }
        }
    });
    let offers: Vec<Offer> = join_all(asks).await.into_iter().flatten().collect();
    let outcome = decide::decide(&offers, &requirements, &work, crate::now_ms());
    tracing::info!(job = %job_id, invited = invited.len(), bids = offers.len(), ?outcome, "auction closed");
    outcome
}
