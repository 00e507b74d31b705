//! Checkpoints: everything needed to continue the same trajectory elsewhere, in one
//! safetensors file (no pickle, DESIGN §7), so the broker can store it and another worker can
//! resume from it.
//!
//! Tensor names, by prefix:
//! - `train.step`, `train.epoch`: i64 scalars, optimizer steps taken and epochs completed;
//! - `param.<name>`: each parameter, named as in the model's `state_dict()`;
//! - `optim.<state>.<name>`: optimizer state (`step`, `exp_avg`, `exp_avg_sq`,
//!   `momentum_buffer`), as in torch.optim's `state_dict()`;
//! - `module.torchscript`: u8, the module as a TorchScript archive. It carries the buffers
//!   (BatchNorm statistics…), which tch cannot list individually.
//!
//! A checkpoint is written aside, fsynced and renamed, so a reader (the agent uploading it
//! after the `progress` line) never sees a partial file.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::error::{TorchContext, TrainError};
use super::model::ScriptModel;
use super::optim::{self, Optimizer};

pub const ARCHIVE: &str = "module.torchscript";

/// A checkpoint read back from disk (tensors on the CPU).
pub struct Checkpoint {
    pub step: u64,
    pub epoch: u32,
    pub params: Vec<(String, Tensor)>,
    pub optim: HashMap<String, Tensor>,
    pub archive: Option<Vec<u8>>,
}

/// `checkpoints/<step>.safetensors`, relative to the job dir, as reported in `progress`.
pub fn relative_path(step: u64) -> PathBuf {
    PathBuf::from("checkpoints").join(format!("{step}.safetensors"))
}

/// Writes the checkpoint after `epoch` (1-based) at optimizer `step` under `dir`.
pub fn write(
    dir: &Path,
    step: u64,
    epoch: u32,
    model: &ScriptModel,
    optimizer: &Optimizer,
    trainable_names: &[String],
) -> Result<PathBuf, TrainError> {
    let rel = relative_path(step);
    let path = dir.join(&rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| TrainError::Write {
            path: parent.to_owned(),
            source,
        })?;
    }
    let archive = model.archive_bytes(&path.with_extension("archive.tmp"))?;
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("train.step".into(), Tensor::from(step as i64)),
        ("train.epoch".into(), Tensor::from(i64::from(epoch))),
        (ARCHIVE.into(), Tensor::from_slice(&archive)),
    ];
    for (name, p) in model.named_parameters() {
        tensors.push((format!("param.{name}"), p.shallow_clone()));
    }
    tensors.extend(optimizer.state_tensors(trainable_names));
    let on_cpu = tensors
        .into_iter()
        .map(|(n, t)| Ok((n, t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?)))
        .collect::<Result<Vec<_>, tch::TchError>>()
        .ctx("copying the checkpoint to the CPU")?;
    let tmp = path.with_extension("safetensors.tmp");
    Tensor::write_safetensors(&on_cpu, &tmp).ctx("writing a checkpoint")?;
    sync_and_rename(&tmp, &path)?;
    Ok(rel)
}

/// Reads a checkpoint, or `None` when the job has none.
pub fn read_if_exists(path: &Path) -> Result<Option<Checkpoint>, TrainError> {
    if !path.exists() {
        return Ok(None);
    }
    let tensors = Tensor::read_safetensors(path).map_err(|e| {
        TrainError::Resume(format!(
            "it is not a safetensors file: {}",
            super::error::torch_reason(&e)
        ))
    })?;
    let mut step = None;
    let mut epoch = None;
    let mut ck = Checkpoint {
        step: 0,
        epoch: 0,
        params: Vec::new(),
        optim: HashMap::new(),
        archive: None,
    };
    for (name, t) in tensors {
        let scalar = |t: &Tensor| -> Result<i64, TrainError> {
            if t.numel() != 1 || t.kind() != Kind::Int64 {
                return Err(TrainError::Resume(format!("{name} must be an int64 scalar")));
            }
            t.f_int64_value(&[]).ctx("reading a checkpoint scalar")
        };
        if name == "train.step" {
            step = Some(u64::try_from(scalar(&t)?).map_err(|_| TrainError::Resume("train.step < 0".into()))?);
        } else if name == "train.epoch" {
            epoch =
                Some(u32::try_from(scalar(&t)?).map_err(|_| TrainError::Resume("train.epoch out of range".into()))?);
        } else if name == ARCHIVE {
            ck.archive = Some(Vec::<u8>::try_from(&t).ctx("reading the embedded module")?);
        } else if let Some(param) = name.strip_prefix("param.") {
            ck.params.push((param.to_owned(), t));
        } else if optim::is_state_key(&name) {
            ck.optim.insert(name, t);
        } else {
            return Err(TrainError::Resume(format!("unexpected tensor {name}")));
        }
    }
    let (Some(step), Some(epoch)) = (step, epoch) else {
        return Err(TrainError::Resume("it lacks train.step or train.epoch".into()));
    };
    ck.step = step;
    ck.epoch = epoch;
    Ok(Some(ck))
}

/// Makes `tmp` durable, then moves it to `path` and makes the rename durable.
pub fn sync_and_rename(tmp: &Path, path: &Path) -> Result<(), TrainError> {
    let write_err = |source| TrainError::Write {
        path: path.to_owned(),
        source,
    };
    File::open(tmp).and_then(|f| f.sync_all()).map_err(write_err)?;
    std::fs::rename(tmp, path).map_err(write_err)?;
    if let Some(parent) = path.parent() {
        // A directory fsync makes the rename itself durable (POSIX); not all filesystems allow it.
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}
