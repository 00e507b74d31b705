//! One training job from its directory to `result.safetensors`: load and check everything first, then
//! epochs of batches. After each epoch a `progress` line reports its metrics; checkpoints are
//! taken by the job's policy ([`CheckpointEvery`]: every N seconds of training or every N
//! steps, and never at the last step, where the result stands for it), written by a thread of
//! their own, and reported in `checkpoint` lines once durable.
//!
//! A run resumes from any checkpoint, mid-epoch included, and continues bit for bit on the CPU:
//! the batch order is a function of (seed, epoch), torch's generator is reseeded from
//! (seed, step) before every step, and the checkpoint carries the epoch's loss sum so far.
//!
//! Gradients come from `Tensor::run_backward` (libtorch's `autograd.grad`) rather than
//! `backward()`: it returns an undefined tensor for a parameter the loss does not use, which is
//! torch's `grad is None` that torch.optim skips, and nothing needs zeroing between steps.

use std::path::Path;
use std::time::{Duration, Instant};

use helium_protocol::job::{CheckpointEvery, TrainingSpec};
use tch::{Device, Kind, Tensor};

use super::checkpoint::{self, Snapshot, Writer};
use super::data::{self, Dataset, Split};
use super::error::{TorchContext, TrainError};
use super::loss;
use super::model::ScriptModel;
use super::optim::Optimizer;
use super::report::TrainerEvent;

/// Runs the job in `dir` on `device`, reporting on stdout as it goes.
pub fn train(dir: &Path, device: Device) -> Result<(), TrainError> {
    let spec = read_spec(&dir.join("spec.json"))?;
    let resume = checkpoint::read_if_exists(&dir.join("resume.safetensors"))?;
    // Always the researcher's own module; a checkpoint brings tensors only (DESIGN §7).
    let mut model = ScriptModel::load(&dir.join("model.pt"), device)?;
    let mut data = Dataset::load(&dir.join("data.safetensors"), device)?;
    prepare_split(&spec, &mut data.train, "y")?;
    if let Some(val) = data.val.as_mut() {
        prepare_split(&spec, val, "y_val")?;
    }
    let (names, params): (Vec<String>, Vec<Tensor>) = model.trainable().into_iter().unzip();
    let mut optimizer = Optimizer::new(&spec.optimizer, params.len())?;

    let rows = data.train.rows();
    let per_epoch = spec.steps_per_epoch(rows as u64);
    let total = spec.total_steps(rows as u64);
    let mut at = Position { step: 0, loss_sum: 0.0 };
    if let Some(ck) = resume {
        if ck.step > total || u64::from(ck.epoch) != ck.step / per_epoch {
            return Err(TrainError::Resume(format!(
                "it was taken at step {} after {} epochs, which this job ({} epochs of {per_epoch} steps) does not have",
                ck.step, ck.epoch, spec.epochs
            )));
        }
        let mut saved = ck.model;
        model.load_state(&mut saved)?;
        if let Some(extra) = saved.keys().next() {
            return Err(TrainError::Resume(format!("it has {extra}, which the model does not")));
        }
        optimizer.load_state(&names, &params, ck.optim)?;
        let mid_epoch = ck.step % per_epoch != 0;
        at = Position {
            step: ck.step,
            loss_sum: if mid_epoch { ck.loss_sum } else { 0.0 },
        };
        tracing::info!(step = ck.step, epoch = ck.epoch, "resuming from resume.safetensors");
    }

    emit(TrainerEvent::Started {
        device: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
        parameters: model.parameter_count(),
        samples: rows as u64,
    })?;

    let writer = Writer::start(dir.to_owned(), |step, epoch| {
        emit(TrainerEvent::Checkpoint { step, epoch })
    })?;
    let mut checkpoints = Checkpoints {
        policy: Policy::new(spec.checkpoint_every),
        writer,
        total,
    };
    let trained = (|| {
        let job = Job {
            spec: &spec,
            train: &data.train,
            params: &params,
            names: &names,
            per_epoch,
        };
        while at.step < total {
            let epoch = u32::try_from(at.step / per_epoch + 1).unwrap_or(u32::MAX);
            let started = Instant::now();
            let first = at.step % per_epoch;
            let mean_loss = run_epoch(&job, &model, &mut optimizer, epoch, &mut at, &mut checkpoints)?;
            let done = (rows - (first as i64 * i64::from(spec.batch_size)).min(rows)) as f64;
            let samples_per_sec = done / started.elapsed().as_secs_f64().max(1e-9);
            if !mean_loss.is_finite() {
                return Err(TrainError::NonFinite {
                    epoch,
                    value: mean_loss,
                });
            }
            let (val_loss, val_accuracy) = match &data.val {
                Some(val) => validate(&spec, &mut model, val)?,
                None => (None, None),
            };
            tracing::debug!(epoch, step = at.step, loss = mean_loss, samples_per_sec, "epoch done");
            emit(TrainerEvent::Progress {
                epoch,
                epochs: spec.epochs,
                step: at.step,
                loss: mean_loss,
                samples_per_sec,
                val_loss,
                val_accuracy,
            })?;
        }
        Ok(())
    })();
    // Every checkpoint taken is reported before the run ends either way.
    let written = checkpoints.writer.finish();
    trained?;
    written?;

    model.save_result(&dir.join(RESULT_FILE))?;
    emit(TrainerEvent::Completed {})
}

/// Where the trainer writes the trained parameters and buffers, in the job dir.
pub const RESULT_FILE: &str = "result.safetensors";

/// Where the run is: optimizer steps taken over the whole job, and the size-weighted loss sum
/// of the epoch in progress.
struct Position {
    step: u64,
    loss_sum: f64,
}

/// What every epoch of the job shares.
struct Job<'a> {
    spec: &'a TrainingSpec,
    train: &'a Split,
    params: &'a [Tensor],
    names: &'a [String],
    per_epoch: u64,
}

/// When a checkpoint is due, by the job's [`CheckpointEvery`].
struct Policy {
    every: CheckpointEvery,
    last: Instant,
}

impl Policy {
    fn new(every: CheckpointEvery) -> Self {
        Self {
            every,
            last: Instant::now(),
        }
    }

    /// Whether to checkpoint after `step`: on the job-wide grid of N steps (so a resumed run
    /// keeps the same checkpoint steps), or once the interval passed since the last one.
    fn due(&self, step: u64) -> bool {
        match self.every {
            CheckpointEvery::Steps(n) => n > 0 && step % n == 0,
            CheckpointEvery::Secs(secs) => self.last.elapsed() >= Duration::from_secs_f64(secs.max(0.0)),
        }
    }

    fn taken(&mut self) {
        self.last = Instant::now();
    }
}

struct Checkpoints {
    policy: Policy,
    writer: Writer,
    total: u64,
}

impl Checkpoints {
    /// Takes a checkpoint after `at.step` if one is due (never after the last step).
    fn after_step(
        &mut self,
        job: &Job,
        model: &ScriptModel,
        optimizer: &Optimizer,
        at: &Position,
    ) -> Result<(), TrainError> {
        if at.step >= self.total || !self.policy.due(at.step) {
            return Ok(());
        }
        let epoch = u32::try_from(at.step / job.per_epoch).unwrap_or(u32::MAX);
        let snapshot = Snapshot::take(at.step, epoch, at.loss_sum, model, optimizer, job.names)?;
        self.writer.submit(snapshot)?;
        self.policy.taken();
        Ok(())
    }
}

fn emit(event: TrainerEvent) -> Result<(), TrainError> {
    event.emit().map_err(TrainError::Report)
}

fn read_spec(path: &Path) -> Result<TrainingSpec, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::Read {
        path: path.to_owned(),
        source,
    })?;
    let spec: TrainingSpec = serde_json::from_str(&text).map_err(|e| TrainError::Spec(e.to_string()))?;
    if spec.batch_size == 0 {
        return Err(TrainError::Spec("batch_size must be at least 1".into()));
    }
    if spec.epochs == 0 {
        return Err(TrainError::Spec("epochs must be at least 1".into()));
    }
    super::optim::check(&spec.optimizer)?;
    Ok(spec)
}

fn prepare_split(spec: &TrainingSpec, split: &mut Split, y_name: &str) -> Result<(), TrainError> {
    let y = split.y.shallow_clone();
    split.y = loss::prepare_targets(spec.loss, y_name, y)?;
    Ok(())
}

/// The rest of epoch `epoch` (1-based) from `at.step`, in the order of `(seed, epoch)`;
/// returns the epoch's mean loss.
fn run_epoch(
    job: &Job,
    model: &ScriptModel,
    optimizer: &mut Optimizer,
    epoch: u32,
    at: &mut Position,
    checkpoints: &mut Checkpoints,
) -> Result<f64, TrainError> {
    let spec = job.spec;
    let rows = job.train.rows();
    let device = job.train.x.device();
    let order = if spec.shuffle {
        let order = data::epoch_order(rows as usize, spec.seed, epoch, true);
        Tensor::f_from_slice(&order)
            .and_then(|t| t.f_to_device(device))
            .ctx("building the batch order")?
    } else {
        Tensor::new()
    };
    // Summed on the device so that a GPU is not synchronised every batch; read back only when
    // a checkpoint needs it.
    let mut loss_sum = Tensor::from(at.loss_sum)
        .f_to_device(device)
        .ctx("allocating the loss sum")?;
    let batch = i64::from(spec.batch_size);
    let mut start = ((at.step % job.per_epoch) as i64).saturating_mul(batch);
    while start < rows {
        let len = batch.min(rows - start);
        // What the model draws itself (dropout) depends only on (seed, step).
        tch::manual_seed(data::step_seed(spec.seed, at.step));
        let (x, y) = job.train.batch(&order, start, len, spec.shuffle)?;
        let loss = loss::compute(spec.loss, model, &x, &y)?;
        let grads = Tensor::f_run_backward(&[&loss], job.params, false, false)
            .map_err(|e| TrainError::torch("computing gradients", e))?;
        optimizer.step(job.params, &grads)?;
        at.step += 1;
        {
            let _guard = tch::no_grad_guard();
            let weighted = loss.f_to_kind(Kind::Double).and_then(|l| l.f_mul_scalar(len as f64));
            loss_sum = weighted.and_then(|w| loss_sum.f_add(&w)).ctx("summing the loss")?;
        }
        start += len;
        if start < rows && checkpoints.policy.due(at.step) {
            at.loss_sum = loss_sum.f_double_value(&[]).ctx("reading the epoch loss")?;
            checkpoints.after_step(job, model, optimizer, at)?;
        }
    }
    let sum = loss_sum.f_double_value(&[]).ctx("reading the epoch loss")?;
    at.loss_sum = 0.0;
    checkpoints.after_step(job, model, optimizer, at)?;
    Ok(sum / rows as f64)
}

/// Mean loss and, for classification, accuracy on the validation split, in eval mode.
fn validate(
    spec: &TrainingSpec,
    model: &mut ScriptModel,
    val: &Split,
) -> Result<(Option<f64>, Option<f64>), TrainError> {
    if val.rows() == 0 {
        return Ok((None, None));
    }
    model.set_train(false)?;
    let result = (|| {
        let _guard = tch::no_grad_guard();
        let rows = val.rows();
        let batch = i64::from(spec.batch_size);
        let (mut loss_sum, mut hits, mut counted) = (0.0, 0.0, true);
        let mut start = 0;
        while start < rows {
            let len = batch.min(rows - start);
            let (x, y) = val.batch(&Tensor::new(), start, len, false)?;
            let value = if spec.loss == helium_protocol::job::Loss::Module {
                counted = false;
                loss::compute(spec.loss, model, &x, &y)?
            } else {
                let out = model.forward(&x)?;
                let value = loss::of_output(spec.loss, &out, &y)?;
                match loss::correct(spec.loss, &out, &y)? {
                    Some(h) => hits += h,
                    None => counted = false,
                }
                value
            };
            loss_sum += value.f_double_value(&[]).ctx("reading the validation loss")? * len as f64;
            start += len;
        }
        let accuracy = counted.then(|| hits / rows as f64);
        Ok((Some(loss_sum / rows as f64), accuracy))
    })();
    model.set_train(true)?;
    result
}
