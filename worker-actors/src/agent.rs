//! The WorkerAgent actor: this machine's seat on the grid. It registers its standing ask,
//! heartbeats, answers auction invitations with sealed bids, accepts awards by starting a
//! [`TrainingRun`](crate::run::TrainingRun), and relays cancellations. One run at a time.
//!
//! It keeps the owner's terms ([`crate::owner`]): an invitation outside them is declined with
//! its reason, and a run in progress when the owner takes the machine back (`--when-idle`,
//! the end of `--hours`) is preempted ([`Stop::Preempt`]). It keeps the owner's status line
//! ([`crate::status`]) and logs every auction note the broker sends it.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use helium_protocol::{
    decode, encode,
    job::cost,
    limits::credits,
    subjects::{self, dispatch, worker},
    worker::{
        Ask, AuctionNote, Award, AwardAck, Bid, BidReply, CancelRun, Heartbeat, Invite, Register, Registered, Settled,
    },
    ErrorCode, Reply, WireError, PROTOCOL_VERSION,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::{
    child::{ChildSpec, Spare},
    owner::{
        hours::local_secs_of_day,
        load::{Avail, Availability, Load},
        monitor, price, Decline, Moment, OwnerPolicy, Pause,
    },
    run::{RunArgs, RunMsg, Stop, TrainingRun},
    sandbox::limits::job_limits,
    status::{self, short, Activity, Printer, Status},
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
    /// A reading of others' use of the machine (`--when-idle`).
    Load(Load),
    /// Every [`status::REFRESH_EVERY`]: the owner's hours, and the status line.
    Tick,
    /// The run of this award finished epoch `epoch` of `epochs`.
    Progress {
        award_id: String,
        epoch: u32,
        epochs: u32,
    },
    /// `job.settled`: what an award of this worker paid.
    Settled(Settled),
    /// `auction.result`: why a bid of this worker did not win.
    Note(AuctionNote),
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
    /// The owner's terms (`--when-idle`, `--hours`, `--max-job`, `--price-policy`).
    pub policy: OwnerPolicy,
}

struct Current {
    job_id: String,
    award_id: String,
    run: ActorRef<RunMsg>,
    stop: tokio::sync::watch::Sender<Stop>,
    /// Epochs done of all, for the status line.
    epoch: Option<(u32, u32)>,
}

pub struct AgentState {
    args: AgentArgs,
    current: Option<Current>,
    beats: u32,
    /// A trainer started ahead of the next award (see [`crate::child`]).
    spare: Spare,
    /// The owner's use of the machine, with `--when-idle`.
    avail: Option<Availability>,
    /// Whether a run is in progress, for the load monitor (the GPU's use is then partly ours).
    training: Arc<AtomicBool>,
    /// The origin of the readings' clock.
    started: Instant,
    /// Why the machine was last not for rent (logged when it changes).
    pause: Option<Pause>,
    /// `--price`: the owner's floor, micro-credits per hour.
    floor: u64,
    /// Winning prices seen in this worker's lost auctions (`--price-policy market`).
    recent: price::RecentPrices,
    /// The ask changed: register it at the next heartbeat.
    reregister: bool,
    /// Micro-credits paid for this process's settled awards, and how many.
    earned: u64,
    settled: u32,
    /// The last explanation of an auction, for the status line.
    last: Option<String>,
    printer: Printer,
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
        let policy = &args.policy;
        let terms = policy.hours.is_some() || policy.max_job_secs.is_some() || policy.when_idle.is_some();
        if terms || policy.price != price::PricePolicy::Floor {
            tracing::info!(
                hours = policy.hours.map(|h| h.to_string()),
                max_job_secs = policy.max_job_secs,
                when_idle = policy.when_idle.is_some(),
                busy_above = policy.when_idle.map(|w| w.busy_above),
                idle_after_secs = policy.when_idle.map(|w| w.idle_after_secs),
                price_policy = ?policy.price,
                "the owner's terms"
            );
        }
        let training = Arc::new(AtomicBool::new(false));
        let avail = policy.when_idle.map(|w| {
            let gpu = args.ask.device == helium_protocol::job::DeviceKind::Cuda;
            let agent = me.clone();
            monitor::spawn(gpu, training.clone(), move |load| {
                agent.send_message(AgentMsg::Load(load)).is_ok()
            });
            Availability::new(w.busy_above, w.idle_after_secs)
        });
        me.send_interval(status::REFRESH_EVERY, || AgentMsg::Tick);
        let mut spare = Spare::new(args.child.clone());
        spare.refill();
        Ok(AgentState {
            floor: args.ask.price_per_hour,
            args,
            current: None,
            beats: 0,
            spare,
            avail,
            training,
            started: Instant::now(),
            pause: None,
            recent: price::RecentPrices::default(),
            reregister: false,
            earned: 0,
            settled: 0,
            last: None,
            printer: Printer::stderr(),
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
                        let _ = c.stop.send(Stop::Cancel);
                        let _ = c.run.send_message(RunMsg::Cancel);
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(running);
            }
            AgentMsg::RunDone(award_id, reply) => {
                if state.current.as_ref().is_some_and(|c| c.award_id == award_id) {
                    state.set_current(None);
                }
                let _ = reply.send(());
            }
            AgentMsg::Heartbeat => {
                state.beats += 1;
                if state.beats % REREGISTER_EVERY == 0 || std::mem::take(&mut state.reregister) {
                    if let Err(e) = register(&state.args).await {
                        tracing::warn!(error = %e, "re-registration failed");
                    }
                }
                let heartbeat = Heartbeat {
                    v: PROTOCOL_VERSION,
                    running: state.current.as_ref().map(|c| c.job_id.clone()),
                    paused: state.pause.as_ref().map(ToString::to_string),
                };
                let subject = subjects::worker(&state.args.worker_id, worker::HEARTBEAT);
                let _ = state.args.nats.publish(subject, encode(&heartbeat).into()).await;
            }
            AgentMsg::Load(load) => {
                let now = state.started.elapsed().as_secs_f64();
                if let Some(avail) = state.avail.as_mut() {
                    avail.observe(load, now);
                }
                if state.enforce() {
                    let _ = me.send_message(AgentMsg::Heartbeat);
                }
            }
            AgentMsg::Tick => {
                if state.enforce() {
                    let _ = me.send_message(AgentMsg::Heartbeat);
                }
                let status = state.status();
                state.printer.show(&status, Instant::now());
            }
            AgentMsg::Progress {
                award_id,
                epoch,
                epochs,
            } => {
                if let Some(c) = state.current.as_mut().filter(|c| c.award_id == award_id) {
                    c.epoch = Some((epoch, epochs));
                }
            }
            AgentMsg::Settled(s) => state.on_settled(&s),
            AgentMsg::Note(note) => state.on_note(&note),
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
                state.set_current(None);
            }
        }
        Ok(())
    }
}

impl AgentState {
    /// This worker's situation now, for the owner's rules.
    fn moment(&self) -> Moment<'_> {
        Moment {
            running: self.current.as_ref().map(|c| c.job_id.as_str()),
            local_secs: local_secs_of_day(),
            avail: self.avail.as_ref().map_or(Avail::Idle, Availability::state),
        }
    }

    fn bid(&mut self, invite: &Invite) -> BidReply {
        let ask = &self.args.ask;
        // The invite names no price, budget or deadline: the broker invited this worker because
        // its ask is within the job's maximum price, and holds the bid to every constraint.
        let eta_secs = invite.work.eta_secs(ask.throughput);
        let screened = self.args.policy.screen(
            ask.device,
            ask.memory_bytes,
            &invite.requirements,
            eta_secs,
            &self.moment(),
        );
        if let Err(why) = screened {
            let line = format!("declined job {}: {why}", short(&invite.job_id));
            if matches!(why, Decline::Busy { .. }) {
                tracing::debug!(job = %invite.job_id, "{line}");
            } else {
                tracing::info!(job = %invite.job_id, "{line}");
                self.last = Some(line);
            }
            return BidReply {
                bid: None,
                decline: Some(why.to_string()),
            };
        }
        tracing::debug!(job = %invite.job_id, eta_secs, cost_credits = credits(cost(ask.price_per_hour, eta_secs)), "bidding");
        BidReply {
            bid: Some(Bid {
                price_per_hour: ask.price_per_hour,
                eta_secs,
            }),
            decline: None,
        }
    }

    fn set_current(&mut self, current: Option<Current>) {
        self.training.store(current.is_some(), Ordering::Relaxed);
        self.current = current;
    }

    /// Applies the owner's terms now: logs when the machine stops or starts being for rent,
    /// and preempts a run in progress when the owner takes it back. Returns whether it
    /// stopped or started being for rent (the broker should hear at once: a heartbeat).
    fn enforce(&mut self) -> bool {
        let pause = self.args.policy.paused(&self.moment());
        let kind = |p: &Option<Pause>| p.as_ref().map(std::mem::discriminant);
        let changed = kind(&pause) != kind(&self.pause);
        if changed {
            match &pause {
                Some(p) => tracing::info!("paused: {p}"),
                None => tracing::info!("available: taking jobs"),
            }
        }
        self.pause = pause;
        let Some(why @ (Pause::OwnerBusy(_) | Pause::OutsideHours(_))) = pause else {
            return changed;
        };
        if let Some(c) = &self.current {
            // Once: a broker's cancel already under way is not turned into a preemption.
            let preempted = c.stop.send_if_modified(|s| {
                let first = *s == Stop::Run;
                if first {
                    *s = Stop::Preempt;
                }
                first
            });
            if preempted {
                tracing::info!(job = %c.job_id, award = %c.award_id, reason = %why, "preempting the run: {why}");
                self.last = Some(format!("preempted job {}: {why}", short(&c.job_id)));
            }
        }
        changed
    }

    fn status(&self) -> Status {
        let activity = match (&self.current, &self.pause) {
            (Some(c), _) => Activity::Training {
                job: c.job_id.clone(),
                epoch: c.epoch,
            },
            (None, Some(p)) => Activity::Paused(*p),
            (None, None) => Activity::Idle,
        };
        Status {
            activity,
            earned: self.earned,
            settled: self.settled,
            last: self.last.clone(),
        }
    }

    /// One info line per settled award: what this worker's owner earned.
    fn on_settled(&mut self, s: &Settled) {
        self.earned = self.earned.saturating_add(s.paid);
        self.settled = self.settled.saturating_add(1);
        tracing::info!(
            job = %s.job_id,
            award = %s.award_id,
            earned_credits = credits(s.paid),
            paid_steps = s.paid_steps,
            steps = s.steps,
            "award settled"
        );
    }

    /// Logs why a bid did not win, and (`--price-policy market`) follows the winning prices.
    fn on_note(&mut self, note: &AuctionNote) {
        let line = format!("{} job {}: {}", note.verdict.name(), short(&note.job_id), note.reason);
        // A waiting job is auctioned again every few seconds: the same word again is not news.
        if self.last.as_deref() == Some(line.as_str()) {
            tracing::debug!(job = %note.job_id, verdict = note.verdict.name(), "{line}");
        } else {
            tracing::info!(job = %note.job_id, verdict = note.verdict.name(), "{line}");
        }
        self.last = Some(line);
        let policy = &self.args.policy;
        let Some(winning) = note
            .winning_price_per_hour
            .filter(|_| policy.price == price::PricePolicy::Market)
        else {
            return;
        };
        self.recent.push(winning);
        let ask = price::ask(policy.price, self.floor, policy.market_fraction, &self.recent);
        if ask != self.args.ask.price_per_hour {
            tracing::info!(
                credits_per_hour = credits(ask),
                floor = credits(self.floor),
                median_winning = self.recent.median().map(credits),
                fraction = policy.market_fraction,
                "price policy market: asking {:.6} credits/h",
                credits(ask)
            );
            self.args.ask.price_per_hour = ask;
            self.reregister = true;
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
        // The owner took the machine back since the bid.
        if let Some(pause) = self.args.policy.paused(&self.moment()) {
            tracing::info!(job = %award.job_id, reason = %pause, "award refused: {pause}");
            return AwardAck {
                accepted: false,
                reason: Some(pause.to_string()),
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
        let (stop, cancel_rx) = tokio::sync::watch::channel(Stop::Run);
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
                self.set_current(Some(Current {
                    job_id,
                    award_id,
                    run,
                    stop,
                    epoch: None,
                }));
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
            // Plain publishes: notices for the owner's log and status line.
            if verb == dispatch::SETTLED || verb == dispatch::AUCTION_RESULT {
                let msg = if verb == dispatch::SETTLED {
                    decode::<Settled>(&message.payload).map(AgentMsg::Settled)
                } else {
                    decode::<AuctionNote>(&message.payload).map(AgentMsg::Note)
                };
                match msg {
                    Ok(msg) => {
                        let _ = agent.send_message(msg);
                    }
                    Err(e) => tracing::debug!(verb, error = %e, "unreadable notice"),
                }
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
