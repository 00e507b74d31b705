//! The TrainingRun actor: one awarded job on this worker. It fetches the model, data (and a
//! checkpoint to resume from) through the broker, starts `helium-worker train` as a child
//! process (TorchScript is untrusted code: the child is sandboxed, see [`crate::sandbox`], and
//! its process group is killed at cancel, when the job's wall-clock limit passes, or when its
//! job directory passes its bounds, measured on a tick, at every checkpoint and before the
//! result is uploaded), turns the child's JSON lines into durable run events, logs its stderr
//! within bounds, hands each checkpoint to the run's [`Uploader`] (in the background:
//! progress is reported at once), and uploads the result. Cancel kills the child. Files are named by this side from the step the child
//! reports, never taken from the child's output.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use helium_protocol::{
    artifacts::{self, ArtifactInfo},
    encode,
    subjects::{self, worker},
    validate,
    worker::{Award, RunEvent, RunEventKind},
    PROTOCOL_VERSION,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::{io::BufReader, sync::oneshot};

use crate::{
    agent::AgentMsg,
    child::{self, ChildSpec},
    jobfs,
    sandbox::{
        jobdir,
        limits::{exit_reason, DirExceeded, Ended, JobLimits, JOB_DIR_CHECK_PERIOD},
        spawn::kill_group,
        stderr,
    },
    trainer::{
        checkpoint,
        report::{self, Line},
        TrainerEvent,
    },
    transfer,
    uploader::{Pending, Uploaded, Uploader},
};

pub enum RunMsg {
    /// Fetch artifacts and start the child.
    Prepare,
    /// One stdout line of the child.
    Line(String),
    /// A checkpoint's upload ended.
    Uploaded(Uploaded),
    Exited(Ended),
    /// The broker cancelled the award: kill the child, report nothing more.
    Cancel,
    /// The trainer was stopped for the owner (preempted) and the uploads it left ended: report
    /// [`RunEventKind::Cancelled`] and stop.
    Preempted,
}

/// What the agent wants of a run, through a watch the child's waiter also sees (so the
/// trainer stops at once, even while the run actor is busy uploading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Run,
    /// The broker cancelled the award: report nothing more.
    Cancel,
    /// The owner wants the machine back (`--when-idle`, `--hours`): stop, report the
    /// checkpoints already uploaded, then `cancelled`, which the broker takes as "stopped
    /// without being asked": it pays the verified checkpoints and resumes the job elsewhere.
    Preempt,
}

pub struct TrainingRun;

/// Whose fault a failed run is: it decides whether the job fails or moves to another worker.
enum Failure {
    /// The trainer reported it: the model or data cannot be trained as asked.
    Training(String),
    /// This worker could not do its part.
    Worker(String),
}

pub struct RunArgs {
    pub nats: async_nats::Client,
    pub worker_id: String,
    pub award: Award,
    pub job_dir: PathBuf,
    /// How to start the trainer, if `spare` is not there to take the job.
    pub child: ChildSpec,
    /// The trainer's CPU-time, file-size and wall-clock limits for this job.
    pub limits: JobLimits,
    /// A trainer started ahead of time, waiting for this job.
    pub spare: Option<tokio::process::Child>,
    /// Told that this worker is free before the run's last event goes out, so the worker can
    /// bid on the job the broker auctions as soon as it settles this one.
    pub agent: ActorRef<AgentMsg>,
    /// Set by the agent when the broker cancels this award, or the owner preempts it.
    pub cancel: tokio::sync::watch::Receiver<Stop>,
}

pub struct RunState {
    args: RunArgs,
    js: jetstream::Context,
    kill: Option<oneshot::Sender<()>>,
    /// Why the run failed, once known.
    failure: Option<Failure>,
    finished: bool,
    cancelled: bool,
    /// When the cancel arrived: the log says how long the trainer took to stop.
    cancelled_at: Option<std::time::Instant>,
    uploader: Option<Uploader>,
    /// Wakes the job directory's check at once (a checkpoint was reported).
    check_dir: std::sync::Arc<tokio::sync::Notify>,
}

impl Actor for TrainingRun {
    type Msg = RunMsg;
    type State = RunState;
    type Arguments = RunArgs;

    async fn pre_start(&self, me: ActorRef<RunMsg>, args: RunArgs) -> Result<RunState, ActorProcessingErr> {
        me.send_message(RunMsg::Prepare)?;
        let js = jetstream::new(args.nats.clone());
        Ok(RunState {
            args,
            js,
            kill: None,
            failure: None,
            finished: false,
            cancelled: false,
            cancelled_at: None,
            uploader: None,
            check_dir: std::sync::Arc::new(tokio::sync::Notify::new()),
        })
    }

    async fn post_stop(&self, _me: ActorRef<RunMsg>, state: &mut RunState) -> Result<(), ActorProcessingErr> {
        if let Some(kill) = state.kill.take() {
            let _ = kill.send(());
        }
        if let Some(uploader) = state.uploader.take() {
            uploader.abort();
        }
        let _ = tokio::fs::remove_dir_all(&state.args.job_dir).await;
        Ok(())
    }

    async fn handle(&self, me: ActorRef<RunMsg>, msg: RunMsg, state: &mut RunState) -> Result<(), ActorProcessingErr> {
        match msg {
            RunMsg::Prepare => {
                if let Err(reason) = state.prepare_and_spawn(&me).await {
                    state.release().await;
                    state
                        .report(RunEventKind::Failed {
                            reason,
                            worker_fault: true,
                        })
                        .await;
                    me.stop(None);
                }
            }
            RunMsg::Line(line) => {
                if !state.cancelled {
                    state.on_line(&line).await;
                }
            }
            RunMsg::Uploaded(Uploaded { step, epoch, result }) => match result {
                Ok(checkpoint) if !state.finished && !state.cancelled => {
                    state
                        .report(RunEventKind::Checkpoint {
                            step,
                            epoch,
                            checkpoint,
                        })
                        .await
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = %state.job_id(), step, error = %e, "checkpoint upload failed; the next one may succeed")
                }
            },
            RunMsg::Exited(ended) => {
                let stop = *state.args.cancel.borrow();
                // The agent's flag may kill the child before its Cancel message is handled.
                state.cancelled |= matches!(ended, Ended::Cancelled) && stop != Stop::Preempt;
                if matches!(ended, Ended::Cancelled) && stop == Stop::Preempt && !state.finished {
                    // A checkpoint upload in flight ends first: its event goes out (the owner is
                    // paid for it, the job resumes from it) before `cancelled`.
                    if let Some(uploader) = state.uploader.take() {
                        uploader.finish().await;
                    }
                    tracing::info!(job = %state.job_id(), "preempted for the owner; trainer stopped");
                    me.send_message(RunMsg::Preempted)?;
                    return Ok(());
                }
                if !state.finished && !state.cancelled {
                    // The trainer's own `failed` line blames the model or data; a limit it hit
                    // blames the job; anything else (an upload that failed, a process that
                    // died without a word) is ours.
                    let (reason, worker_fault) = match state.failure.take() {
                        Some(Failure::Training(reason)) => (reason, false),
                        Some(Failure::Worker(reason)) => (reason, true),
                        None => {
                            let why = exit_reason(ended, &state.args.limits);
                            (why.reason, why.worker_fault)
                        }
                    };
                    tracing::info!(job = %state.job_id(), ?ended, reason, worker_fault, "trainer ended without finishing");
                    state.release().await;
                    state.report(RunEventKind::Failed { reason, worker_fault }).await;
                } else if state.cancelled {
                    let stopped_ms = state.cancelled_at.map(|at| at.elapsed().as_millis() as u64);
                    tracing::info!(job = %state.job_id(), ?stopped_ms, "award cancelled; trainer stopped");
                }
                me.stop(None);
            }
            RunMsg::Preempted => {
                state.release().await;
                state.report(RunEventKind::Cancelled).await;
                me.stop(None);
            }
            RunMsg::Cancel => {
                state.cancelled = true;
                state.cancelled_at.get_or_insert_with(std::time::Instant::now);
                if let Some(kill) = state.kill.take() {
                    let _ = kill.send(());
                }
            }
        }
        Ok(())
    }
}

impl RunState {
    fn job_id(&self) -> &str {
        &self.args.award.job_id
    }

    async fn prepare_and_spawn(&mut self, me: &ActorRef<RunMsg>) -> Result<(), String> {
        let dir = &self.args.job_dir;
        // A fresh directory: nothing a previous child left (a link, a FIFO) may be in it.
        if tokio::fs::symlink_metadata(dir).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(dir).await; // removes links, never their targets
        }
        if let Some(parent) = dir.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| format!("worker cannot create its work dir: {e}"))?;
        }
        tokio::fs::create_dir(dir)
            .await
            .map_err(|e| format!("worker cannot create its job dir: {e}"))?;
        let award = &self.args.award;
        let fetch = |info: ArtifactInfo, file: &'static str| {
            let (nats, worker_id, job_id, dir) = (
                self.args.nats.clone(),
                self.args.worker_id.clone(),
                award.job_id.clone(),
                dir.clone(),
            );
            async move {
                let dest = jobfs::create(&dir, Path::new(file)).map_err(|e| format!("creating {file}: {e}"))?;
                transfer::download(&nats, &worker_id, &job_id, &info, dest)
                    .await
                    .map_err(|e| format!("fetching {}: {e}", info.name))
            }
        };
        fetch(award.model.clone(), "model.pt").await?;
        fetch(award.data.clone(), "data.safetensors").await?;
        if let Some(resume) = award.resume.clone() {
            fetch(resume, "resume.safetensors").await?;
        }
        let spec = serde_json::to_vec(&award.training).map_err(|e| e.to_string())?;
        jobfs::create(dir, Path::new("spec.json"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &spec))
            .map_err(|e| format!("writing spec.json: {e}"))?;

        let limits = self.args.limits;
        let mut child = child::begin(self.args.spare.take(), &self.args.child, dir, &limits)
            .await
            .map_err(|e| format!("cannot start the trainer: {e}"))?;
        let stdout = child.stdout.take().ok_or("trainer has no stdout")?;
        if let Some(err) = child.stderr.take() {
            let source = stderr::Source {
                job: award.job_id.clone(),
                award: award.award_id.clone(),
            };
            tokio::spawn(stderr::forward(err, source));
        }
        let lines_to = me.clone();
        let job_id = award.job_id.clone();
        let reader = tokio::spawn(async move {
            let mut stdout = BufReader::new(stdout);
            while let Ok(Some(line)) = report::read_line(&mut stdout).await {
                match line {
                    Line::Text(line) => {
                        if lines_to.send_message(RunMsg::Line(line)).is_err() {
                            break;
                        }
                    }
                    Line::TooLong(bytes) => {
                        tracing::warn!(job = %job_id, bytes, "trainer printed an overlong line; skipped")
                    }
                }
            }
        });
        self.uploader = Some(self.checkpoint_uploader(me));
        let (kill, killed) = oneshot::channel();
        self.kill = Some(kill);
        let mut cancelled = self.args.cancel.clone();
        let exit_to = me.clone();
        let (check_dir, watched) = (self.check_dir.clone(), dir.clone());
        tokio::spawn(async move {
            // The agent's cancel flag kills the child at once, even while this actor is busy
            // uploading: the GPU time stops now, not after the transfer. So does the job's
            // wall-clock limit. Either kills the trainer's whole process group.
            let ended = tokio::select! {
                status = child.wait() => status.map_or(Ended::WaitFailed, Ended::Exited),
                _ = killed => Ended::Killed,
                Ok(()) = async { cancelled.wait_for(|s| *s != Stop::Run).await.map(|_| ()) } => Ended::Cancelled,
                () = tokio::time::sleep(limits.wall) => Ended::WallClock,
                exceeded = watch_job_dir(watched, limits, check_dir) => Ended::JobDir(exceeded),
            };
            if !matches!(ended, Ended::Exited(_)) {
                kill_group(&mut child).await;
            }
            // Every line the child printed is in the mailbox before its exit is: a run that
            // completed must not be reported failed because the exit overtook the last line.
            let _ = reader.await;
            let _ = exit_to.send_message(RunMsg::Exited(ended));
        });
        tracing::info!(job = %self.job_id(), award = %award.award_id, wall_limit_s = limits.wall.as_secs(), cpu_limit_s = limits.cpu_secs, "trainer started");
        Ok(())
    }

    fn checkpoint_uploader(&self, me: &ActorRef<RunMsg>) -> Uploader {
        let (nats, worker_id, job_id) = (
            self.args.nats.clone(),
            self.args.worker_id.clone(),
            self.job_id().to_string(),
        );
        let me = me.clone();
        let root = self.args.job_dir.clone();
        Uploader::spawn(
            root.clone(),
            move |p: Pending| {
                let (nats, worker_id, job_id, root) = (nats.clone(), worker_id.clone(), job_id.clone(), root.clone());
                async move {
                    let name = format!("{}{}", artifacts::CHECKPOINTS, p.step);
                    let file = jobfs::open(&root, &p.path).map_err(|e| format!("{}: {e}", p.path.display()))?;
                    transfer::upload(&nats, &worker_id, &job_id, &name, file)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
            move |uploaded| {
                let _ = me.send_message(RunMsg::Uploaded(uploaded));
            },
        )
    }

    async fn release(&self) {
        let award_id = self.args.award.award_id.clone();
        if let Err(e) = ractor::call_t!(self.args.agent, AgentMsg::RunDone, 2_000, award_id) {
            tracing::warn!(job = %self.job_id(), error = %e, "could not tell the agent the run is done");
        }
    }

    async fn on_line(&mut self, line: &str) {
        let event = match report::parse_line(line) {
            Some(event) => event,
            None => {
                tracing::info!(job = %self.job_id(), line, "trainer output");
                return;
            }
        };
        match event {
            TrainerEvent::Started { device, parameters, .. } => {
                self.report(RunEventKind::Started {
                    device,
                    parameters: Some(parameters),
                })
                .await
            }
            TrainerEvent::Progress {
                epoch,
                epochs,
                step,
                loss,
                samples_per_sec,
                val_loss,
                val_accuracy,
            } => {
                tracing::debug!(job = %self.job_id(), epoch, epochs, loss, samples_per_sec, "epoch done");
                // For the owner's status line.
                let _ = self.args.agent.send_message(AgentMsg::Progress {
                    award_id: self.args.award.award_id.clone(),
                    epoch,
                    epochs,
                });
                self.report(RunEventKind::Progress {
                    epoch,
                    epochs,
                    step,
                    loss,
                    samples_per_sec,
                    val_loss,
                    val_accuracy,
                })
                .await;
            }
            TrainerEvent::Checkpoint { step, epoch } => {
                self.check_dir.notify_one();
                if let Some(uploader) = &self.uploader {
                    let path = checkpoint::relative_path(step);
                    uploader.offer(Pending { step, epoch, path });
                }
            }
            TrainerEvent::Completed {} => {
                // The last measurement: a run that filled its directory and finished before a
                // tick caught it fails all the same.
                if let Some(exceeded) = measure(self.args.job_dir.clone(), self.args.limits).await {
                    let why = exit_reason(Ended::JobDir(exceeded), &self.args.limits);
                    self.failure = Some(Failure::Training(why.reason));
                    return;
                }
                // The result supersedes a checkpoint still waiting; one in flight ends first.
                if let Some(uploader) = self.uploader.take() {
                    uploader.finish().await;
                }
                let uploaded = self.upload_result().await;
                match uploaded {
                    Ok(result) => {
                        tracing::info!(job = %self.job_id(), result_bytes = result.size, "training finished; result uploaded");
                        self.finished = true;
                        self.release().await;
                        self.report(RunEventKind::Completed { result }).await;
                    }
                    Err(e) => self.failure = Some(Failure::Worker(format!("uploading the result failed: {e}"))),
                }
            }
            TrainerEvent::Failed { reason } => self.failure = Some(Failure::Training(reason)),
        }
    }

    /// Uploads the result, riding out a broker that does not answer (a restart) for up to
    /// [`RESULT_PATIENCE`]: the training is done and must not be redone elsewhere.
    async fn upload_result(&self) -> Result<ArtifactInfo, String> {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            let file =
                jobfs::open(&self.args.job_dir, Path::new(RESULT_FILE)).map_err(|e| format!("{RESULT_FILE}: {e}"))?;
            let (nats, worker_id) = (&self.args.nats, &self.args.worker_id);
            match transfer::upload(nats, worker_id, self.job_id(), artifacts::RESULT, file).await {
                Ok(info) => return Ok(info),
                Err(e) if e.is_transient() && started.elapsed() + backoff < RESULT_PATIENCE => {
                    tracing::warn!(job = %self.job_id(), error = %e, retry_in = ?backoff, "result upload: broker not answering; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// Publishes a run event durably (JetStream ack), with a message id so a retry is deduplicated.
    /// Retried with backoff for [`RUN_EVENT_PATIENCE`]: a cluster that lost the node leading
    /// the runs stream answers "no stream" or nothing until it has elected another leader
    /// (seconds), and the event must not be lost meanwhile.
    async fn report(&self, kind: RunEventKind) {
        // Whatever the trainer or a transfer said, the event fits the runs stream (a huge
        // reason is truncated, not lost with the event).
        let mut kind = kind;
        if let RunEventKind::Failed { reason, .. } = &mut kind {
            *reason = validate::reason(reason);
        }
        // One message id per event of this award (per epoch for progress): a retried publish
        // is deduplicated by the stream.
        let dedup = match &kind {
            RunEventKind::Progress { epoch, .. } => format!("progress-{epoch}"),
            RunEventKind::Checkpoint { step, .. } => format!("checkpoint-{step}"),
            other => other.name().to_string(),
        };
        let event = RunEvent {
            v: PROTOCOL_VERSION,
            job_id: self.job_id().into(),
            award_id: self.args.award.award_id.clone(),
            kind,
        };
        let subject = subjects::worker(&self.args.worker_id, worker::RUN_EVENT);
        let id = format!("{}.{dedup}", self.args.award.award_id);
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(200);
        for attempt in 1u32.. {
            let publish = PublishMessage::build().payload(encode(&event).into()).message_id(&id);
            let acked = match self.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match acked {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(job = %self.job_id(), attempt, "run event stored after retrying");
                    }
                    return;
                }
                Err(e) if started.elapsed() + backoff < RUN_EVENT_PATIENCE => {
                    tracing::warn!(job = %self.job_id(), attempt, error = %e, retry_in = ?backoff, "run event not stored; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(job = %self.job_id(), attempt, error = %e, "run event lost: not stored within {RUN_EVENT_PATIENCE:?}");
                    return;
                }
            }
        }
    }
}

/// Measures `dir` against `limits` off the runtime's threads (a bounded walk).
async fn measure(dir: PathBuf, limits: JobLimits) -> Option<DirExceeded> {
    tokio::task::spawn_blocking(move || jobdir::exceeded(&dir, &limits))
        .await
        .ok()
        .flatten()
}

/// Returns once `dir` passes a bound of `limits`, measured every [`JOB_DIR_CHECK_PERIOD`] and
/// whenever `now` is notified; never returns while it stays within them.
async fn watch_job_dir(dir: PathBuf, limits: JobLimits, now: std::sync::Arc<tokio::sync::Notify>) -> DirExceeded {
    let mut tick = tokio::time::interval(JOB_DIR_CHECK_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = now.notified() => {}
        }
        if let Some(exceeded) = measure(dir.clone(), limits).await {
            return exceeded;
        }
    }
}

/// Where the trainer writes the trained tensors, in the job dir.
const RESULT_FILE: &str = crate::trainer::session::RESULT_FILE;
/// How long a finished run keeps offering its result to a broker that does not answer.
const RESULT_PATIENCE: Duration = Duration::from_secs(600);
/// How long a run event is retried before it is given up: well past a cluster's leader
/// election, within the runs stream's duplicate window (JetStream's default, two minutes), so a
/// retry of a publish that did land is still dropped as a duplicate.
const RUN_EVENT_PATIENCE: Duration = Duration::from_secs(90);
