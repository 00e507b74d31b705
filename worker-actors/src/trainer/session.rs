//! One training job from its directory to `result.pt`: load and check everything first, then
//! epochs of batches, each epoch ending with a durable checkpoint and a `progress` line.
//!
//! Gradients come from `Tensor::run_backward` (libtorch's `autograd.grad`) rather than
//! `backward()`: it returns an undefined tensor for a parameter the loss does not use, which is
//! torch's `grad is None` that torch.optim skips, and nothing needs zeroing between steps.

use std::path::Path;
use std::time::Instant;

use helium_protocol::job::TrainingSpec;
use tch::{Device, Kind, Tensor};

use super::checkpoint;
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
    let mut model = match resume.as_ref().and_then(|ck| ck.archive.as_deref()) {
        Some(archive) => ScriptModel::load_bytes(archive, device)?,
        None => ScriptModel::load(&dir.join("model.pt"), device)?,
    };
    let mut data = Dataset::load(&dir.join("data.safetensors"), device)?;
    prepare_split(&spec, &mut data.train, "y")?;
    if let Some(val) = data.val.as_mut() {
        prepare_split(&spec, val, "y_val")?;
    }
    let (names, params): (Vec<String>, Vec<Tensor>) = model.trainable().into_iter().unzip();
    let mut optimizer = Optimizer::new(&spec.optimizer, params.len())?;

    let (mut step, mut epoch) = (0u64, 0u32);
    if let Some(ck) = resume {
        if ck.epoch > spec.epochs {
            return Err(TrainError::Resume(format!(
                "it is at epoch {} but the job has {} epochs",
                ck.epoch, spec.epochs
            )));
        }
        model.load_parameters(&ck.params)?;
        optimizer.load_state(&names, &params, ck.optim)?;
        (step, epoch) = (ck.step, ck.epoch);
        tracing::info!(step, epoch, "resuming from resume.safetensors");
    }

    let rows = data.train.rows();
    emit(TrainerEvent::Started {
        device: if device.is_cuda() { "cuda" } else { "cpu" }.into(),
        parameters: model.parameter_count(),
        samples: rows as u64,
    })?;

    while epoch < spec.epochs {
        epoch += 1;
        let started = Instant::now();
        let mean_loss = run_epoch(&spec, &model, &data.train, &params, &mut optimizer, epoch, &mut step)?;
        let samples_per_sec = rows as f64 / started.elapsed().as_secs_f64().max(1e-9);
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
        let written = Instant::now();
        let rel = checkpoint::write(dir, step, epoch, &model, &optimizer, &names)?;
        let checkpoint_ms = written.elapsed().as_millis() as u64;
        tracing::info!(
            epoch,
            step,
            loss = mean_loss,
            samples_per_sec,
            checkpoint_ms,
            "epoch done"
        );
        emit(TrainerEvent::Progress {
            epoch,
            epochs: spec.epochs,
            step,
            loss: mean_loss,
            samples_per_sec,
            checkpoint: rel.to_string_lossy().into_owned(),
            val_loss,
            val_accuracy,
        })?;
    }

    model.save_result(&dir.join("result.pt"))?;
    emit(TrainerEvent::Completed {
        result: "result.pt".into(),
    })
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

/// One pass over the training rows in the order of `(seed, epoch)`; returns the mean loss.
fn run_epoch(
    spec: &TrainingSpec,
    model: &ScriptModel,
    train: &Split,
    params: &[Tensor],
    optimizer: &mut Optimizer,
    epoch: u32,
    step: &mut u64,
) -> Result<f64, TrainError> {
    // What the model draws itself (dropout) also depends only on (seed, epoch).
    tch::manual_seed(data::torch_seed(spec.seed, epoch));
    let rows = train.rows();
    let device = train.x.device();
    let order = if spec.shuffle {
        let order = data::epoch_order(rows as usize, spec.seed, epoch, true);
        Tensor::f_from_slice(&order)
            .and_then(|t| t.f_to_device(device))
            .ctx("building the batch order")?
    } else {
        Tensor::new()
    };
    // Summed on the device so that a GPU is not synchronised every batch.
    let mut loss_sum = Tensor::f_zeros([], (Kind::Double, device)).ctx("allocating the loss sum")?;
    let batch = i64::from(spec.batch_size);
    let mut start = 0;
    while start < rows {
        let len = batch.min(rows - start);
        let (x, y) = train.batch(&order, start, len, spec.shuffle)?;
        let loss = loss::compute(spec.loss, model, &x, &y)?;
        let grads = Tensor::f_run_backward(&[&loss], params, false, false)
            .map_err(|e| TrainError::torch("computing gradients", e))?;
        optimizer.step(params, &grads)?;
        *step += 1;
        let _guard = tch::no_grad_guard();
        let weighted = loss.f_to_kind(Kind::Double).and_then(|l| l.f_mul_scalar(len as f64));
        loss_sum = weighted.and_then(|w| loss_sum.f_add(&w)).ctx("summing the loss")?;
        start += len;
    }
    Ok(loss_sum.f_double_value(&[]).ctx("reading the epoch loss")? / rows as f64)
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
