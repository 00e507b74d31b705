//! The WorkerAgent actor: this machine's seat on the grid. It registers its standing ask,
//! heartbeats, answers auction invitations with sealed bids, accepts awards by starting a
//! [`TrainingRun`](crate::run::TrainingRun), and relays cancellations. One run at a time.

use std::{path::PathBuf, time::Duration};

use futures::StreamExt;
use helium_protocol::{
    decode, encode,
    job::cost,
    limits::credits,
    subjects::{self, dispatch, worker},
    worker::{Ask, Award, AwardAck, Bid, BidReply, CancelRun, Heartbeat, Invite, Register, Registered, Settled},
    ErrorCode, Reply, WireError, PROTOCOL_VERSION,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::{
    child::{ChildSpec, Spare},
    run::{RunArgs, RunMsg, TrainingRun},
    sandbox::limits::job_limits,
    transfer,
};

/// Re-register every this many heartbeats, so a restarted broker learns about us again.
const REREGISTER_EVERY: u32 = 10;

pub enum AgentMsg {
    Invite(Invite, RpcReplyPort<BidReply>),
    Award(Award, RpcReplyPort<AwardAck>),
    /// Replies whether that award was running here.
    Cancel(CancelRun, RpcReplyPort<bool>),
    /// The run of this award has finished its work (its last event is about to go out).
    RunDone(String, RpcReplyPort<()>),
    Heartbeat,
}

pub struct AgentArgs {
    pub nats: async_nats::Client,
    pub worker_id: String,
    pub owner: String,
    /// This worker's user JWT (from its `.creds` file), sent at registration.
    pub credential: String,
    pub ask: Ask,
    /// This process's [`Register::incarnation`].
    pub incarnation: String,
    pub work_dir: PathBuf,
    /// How training children start (the binary is resolved once at start: a rebuilt binary
    /// must not break the path of a running worker).
    pub child: ChildSpec,
}

struct Current {
    job_id: String,
    award_id: String,
    run: ActorRef<RunMsg>,
    cancel: tokio::sync::watch::Sender<bool>,
}

pub struct AgentState {
    args: AgentArgs,
    current: Option<Current>,
    beats: u32,
    /// A trainer started ahead of the next award (see [`crate::child`]).
    spare: Spare,
}

pub struct WorkerAgent;

impl Actor for WorkerAgent {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(&self, me: ActorRef<AgentMsg>, args: AgentArgs) -> Result<AgentState, ActorProcessingErr> {
        listen(&args.nats, &args.worker_id, me.clone()).await?;
        let registered = register(&args).await?;
        me.send_interval(Duration::from_millis(registered.heartbeat_ms.max(100)), || {
            AgentMsg::Heartbeat
        });
        tracing::info!(worker = %args.worker_id, owner = %args.owner, credits_per_hour = credits(args.ask.price_per_hour), "registered with the grid");
        let mut spare = Spare::new(args.child.clone());
        spare.refill();
        Ok(AgentState {
            args,
            current: None,
            beats: 0,
            spare,
        })
    }

    async fn handle(
        &self,
        me: ActorRef<AgentMsg>,
        msg: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Invite(invite, reply) => {
                let _ = reply.send(state.bid(&invite));
            }
            AgentMsg::Award(award, reply) => {
                let ack = state.accept(&me, award).await;
                let _ = reply.send(ack);
            }
            AgentMsg::Cancel(cancel, reply) => {
                let running = match &state.current {
                    Some(c) if c.award_id == cancel.award_id => {
                        tracing::info!(job = %c.job_id, "cancelling run");
                        let _ = c.cancel.send(true);
                        let _ = c.run.send_message(RunMsg::Cancel);
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(running);
            }
            AgentMsg::RunDone(award_id, reply) => {
                if state.current.as_ref().is_some_and(|c| c.award_id == award_id) {
                    state.current = None;
                }
                let _ = reply.send(());
            }
            AgentMsg::Heartbeat => {
                state.beats += 1;
                if state.beats % REREGISTER_EVERY == 0 {
                    if let Err(e) = register(&state.args).await {
                        tracing::warn!(error = %e, "re-registration failed");
                    }
                }
                let heartbeat = Heartbeat {
                    v: PROTOCOL_VERSION,
                    running: state.current.as_ref().map(|c| c.job_id.clone()),
                };
                let subject = subjects::worker(&state.args.worker_id, worker::HEARTBEAT);
                let _ = state.args.nats.publish(subject, encode(&heartbeat).into()).await;
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<AgentMsg>,
        evt: SupervisionEvent,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        // A run that ends, cleanly or not, frees the worker; the agent itself keeps going.
        let ended = match &evt {
            SupervisionEvent::ActorTerminated(cell, ..) | SupervisionEvent::ActorFailed(cell, _) => Some(cell.get_id()),
            _ => None,
        };
        if let (Some(id), Some(current)) = (ended, &state.current) {
            if current.run.get_id() == id {
                // Reached only if the run died before telling us it was done.
                tracing::info!(job = %current.job_id, event = ?evt, "run ended");
                state.current = None;
            }
        }
        Ok(())
    }
}

impl AgentState {
    fn bid(&self, invite: &Invite) -> BidReply {
        let decline = |why: String| BidReply {
            bid: None,
            decline: Some(why),
        };
        let (ask, req) = (&self.args.ask, &invite.requirements);
        if let Some(c) = &self.current {
            return decline(format!("busy with {}", c.job_id));
        }
        if !ask.device.satisfies(req.device) {
            return decline(format!("offers {:?}, job needs {:?}", ask.device, req.device));
        }
        if ask.memory_bytes < req.min_memory_bytes {
            return decline("not enough device memory".into());
        }
        // The invite names no price, budget or deadline: the broker invited this worker because
        // its ask is within the job's maximum price, and holds the bid to every constraint.
        let eta_secs = invite.work.eta_secs(ask.throughput);
        tracing::debug!(job = %invite.job_id, eta_secs, cost_credits = credits(cost(ask.price_per_hour, eta_secs)), "bidding");
        BidReply {
            bid: Some(Bid {
                price_per_hour: ask.price_per_hour,
                eta_secs,
            }),
            decline: None,
        }
    }

    async fn accept(&mut self, me: &ActorRef<AgentMsg>, award: Award) -> AwardAck {
        // The award id names the job directory: a path-like one (`../x`, `a/b`, `.`) is
        // refused before anything touches the file system.
        if let Err(e) = award.validate() {
            tracing::warn!(job = %award.job_id.escape_debug(), error = %e, "award refused");
            return AwardAck {
                accepted: false,
                reason: Some(format!("award refused: {e}")),
            };
        }
        if let Some(c) = &self.current {
            return AwardAck {
                accepted: false,
                reason: Some(format!("busy with {}", c.job_id)),
            };
        }
        let (job_id, award_id) = (award.job_id.clone(), award.award_id.clone());
        let price = award.price;
        let eta_secs = self.args.ask.throughput.max(f64::MIN_POSITIVE);
        let eta_secs = award.work.eta_secs(eta_secs);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let input_bytes = [Some(&award.model), Some(&award.data), award.resume.as_ref()]
            .into_iter()
            .flatten()
            .fold(0u64, |sum, a| sum.saturating_add(a.size));
        let limits = job_limits(
            &award.work,
            input_bytes,
            award.deadline_ms,
            now_ms,
            self.args.ask.throughput,
            self.args.child.threads,
        );
        let (cancel, cancel_rx) = tokio::sync::watch::channel(false);
        let args = RunArgs {
            nats: self.args.nats.clone(),
            worker_id: self.args.worker_id.clone(),
            job_dir: self.args.work_dir.join(&award_id),
            award,
            child: self.args.child.clone(),
            limits,
            spare: self.spare.take(),
            agent: me.clone(),
            cancel: cancel_rx,
        };
        match Actor::spawn_linked(None, TrainingRun, args, me.get_cell()).await {
            Ok((run, _)) => {
                tracing::info!(job = %job_id, award = %award_id, price_credits = credits(price), eta_secs, "won an award; training");
                // The next award finds a trainer warm, even right after this one ends.
                self.spare.refill();
                self.current = Some(Current {
                    job_id,
                    award_id,
                    run,
                    cancel,
                });
                AwardAck {
                    accepted: true,
                    reason: None,
                }
            }
            Err(e) => AwardAck {
                accepted: false,
                reason: Some(format!("cannot start the run: {e}")),
            },
        }
    }
}

/// Registers, retrying while no broker answers yet (a grid may start its workers first).
async fn register(args: &AgentArgs) -> Result<Registered, ActorProcessingErr> {
    let body = Register {
        v: PROTOCOL_VERSION,
        owner: args.owner.clone(),
        credential: args.credential.clone(),
        ask: args.ask.clone(),
        incarnation: args.incarnation.clone(),
    };
    let mut last = String::new();
    for attempt in 0..120u32 {
        match transfer::request::<_, Registered>(&args.nats, &args.worker_id, worker::REGISTER, &body).await {
            Ok(registered) => return Ok(registered),
            Err(transfer::TransferError::Refused(e)) => {
                return Err(format!("the grid refused registration: {e}").into())
            }
            Err(e) => {
                last = e.to_string();
                if attempt == 0 {
                    tracing::info!(error = %last, "waiting for a broker to register with");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Err(format!("no broker answered registration for 60 s: {last}").into())
}

/// Serves `helium.v1.dispatch.<worker>.>`: each request becomes an actor message, and the
/// answer goes back in the reply envelope.
async fn listen(
    nats: &async_nats::Client,
    worker_id: &str,
    agent: ActorRef<AgentMsg>,
) -> Result<(), ActorProcessingErr> {
    let mut sub = nats.subscribe(subjects::dispatch(worker_id, ">")).await?;
    let (nats, prefix) = (nats.clone(), subjects::dispatch(worker_id, ""));
    tokio::spawn(async move {
        while let Some(message) = sub.next().await {
            let verb = message
                .subject
                .as_str()
                .strip_prefix(&prefix)
                .unwrap_or_default()
                .to_string();
            if verb == dispatch::SETTLED {
                log_settled(&message.payload);
                continue;
            }
            let Some(reply_to) = message.reply.clone() else {
                continue;
            };
            let payload = match verb.as_str() {
                dispatch::INVITE => {
                    answer(decode::<Invite>(&message.payload), |i| async {
                        ractor::call_t!(agent, AgentMsg::Invite, 5_000, i)
                    })
                    .await
                }
                dispatch::AWARD => {
                    answer(decode::<Award>(&message.payload), |a| async {
                        ractor::call_t!(agent, AgentMsg::Award, 10_000, a)
                    })
                    .await
                }
                dispatch::CANCEL => {
                    answer(decode::<CancelRun>(&message.payload), |c| async {
                        ractor::call_t!(agent, AgentMsg::Cancel, 5_000, c)
                    })
                    .await
                }
                other => encode(&Reply::<()>::err(WireError::bad_request(format!(
                    "unknown verb {other}"
                )))),
            };
            let _ = nats.publish(reply_to, payload.into()).await;
        }
    });
    Ok(())
}

/// One info line per settled award: what this worker's owner earned.
fn log_settled(payload: &[u8]) {
    match decode::<Settled>(payload) {
        Ok(s) => tracing::info!(
            job = %s.job_id,
            award = %s.award_id,
            earned_credits = credits(s.paid),
            paid_steps = s.paid_steps,
            steps = s.steps,
            "award settled"
        ),
        Err(e) => tracing::debug!(error = %e, "unreadable settlement notice"),
    }
}

async fn answer<Req, Resp, F, Fut, E>(request: Result<Req, WireError>, call: F) -> Vec<u8>
where
    Resp: serde::Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: std::future::Future<Output = Result<Resp, E>>,
    E: std::fmt::Display,
{
    let result = match request {
        Ok(req) => call(req)
            .await
            .map_err(|e| WireError::new(ErrorCode::Unavailable, e.to_string())),
        Err(e) => Err(e),
    };
    encode(&Reply::from_result(result))
}
