//! Checkpoints: everything needed to continue the same trajectory elsewhere, in one
//! safetensors file (no pickle, DESIGN §7), so the broker can store it and another worker can
//! resume from it, mid-epoch included.
//!
//! Tensors only, named as [`helium_protocol::state`] says: `meta/step`, `meta/epoch` (i64
//! scalars), `meta/loss_sum` (f64 scalar, the size-weighted loss sum of the epoch in progress,
//! so a resumed run reports the same epoch mean as an uninterrupted one), `param/<name>` and
//! `buffer/<name>` (the model's `named_parameters()` and `named_buffers()`), and
//! `optim/<slot>/<name>` (optimizer state as in torch.optim's `state_dict()`). No module
//! archive: a resume loads the researcher's own `model.pt` and copies these in.
//!
//! Taking a checkpoint is split in two: [`Snapshot::take`] copies the tensors on the training
//! thread (a memory copy), and the [`Writer`] thread serialises, fsyncs and renames it, then
//! reports it, while training goes on. A reader (the agent uploading it after the `checkpoint`
//! line) never sees a partial file.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use helium_protocol::state;
use tch::{Device, Kind, Tensor};

use super::error::{TorchContext, TrainError};
use super::model::ScriptModel;
use super::optim::Optimizer;

/// A checkpoint read back from disk (tensors on the CPU).
pub struct Checkpoint {
    pub step: u64,
    pub epoch: u32,
    /// Loss sum of the partial epoch after `step` (0 at an epoch boundary).
    pub loss_sum: f64,
    /// `param/…` and `buffer/…` entries, by their state-file names.
    pub model: HashMap<String, Tensor>,
    /// `optim/…` entries.
    pub optim: HashMap<String, Tensor>,
}

/// `checkpoints/<step>.safetensors`, relative to the job dir. The agent derives the path from
/// the step in the `checkpoint` line; it never takes a path from the child.
pub fn relative_path(step: u64) -> PathBuf {
    PathBuf::from("checkpoints").join(format!("{step}.safetensors"))
}

/// A checkpoint's tensors, copied to the CPU: training may change the live ones at once.
pub struct Snapshot {
    pub step: u64,
    pub epoch: u32,
    tensors: Vec<(String, Tensor)>,
}

impl Snapshot {
    /// Copies the state after optimizer `step` (`epoch` epochs complete, `loss_sum` of the
    /// epoch in progress).
    pub fn take(
        step: u64,
        epoch: u32,
        loss_sum: f64,
        model: &ScriptModel,
        optimizer: &Optimizer,
        trainable_names: &[String],
    ) -> Result<Self, TrainError> {
        let mut tensors: Vec<(String, Tensor)> = vec![
            (state::META_STEP.into(), Tensor::from(step as i64)),
            (state::META_EPOCH.into(), Tensor::from(i64::from(epoch))),
            (state::META_LOSS_SUM.into(), Tensor::from(loss_sum)),
        ];
        let _guard = tch::no_grad_guard();
        for (name, t) in model.state()? {
            tensors.push((name, cpu_copy(&t)?));
        }
        for (name, t) in optimizer.state_tensors(trainable_names) {
            tensors.push((name, cpu_copy(&t)?));
        }
        Ok(Self { step, epoch, tensors })
    }

    /// Writes the snapshot under `dir` at [`relative_path`], durably.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, TrainError> {
        let rel = relative_path(self.step);
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| TrainError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        let tmp = path.with_extension("safetensors.tmp");
        Tensor::write_safetensors(&self.tensors, &tmp).ctx("writing a checkpoint")?;
        sync_and_rename(&tmp, &path)?;
        Ok(rel)
    }
}

/// A detached, contiguous copy on the CPU that shares no storage with `t`.
fn cpu_copy(t: &Tensor) -> Result<Tensor, TrainError> {
    t.f_detach()
        .and_then(|d| d.f_to_device_(Device::Cpu, d.kind(), false, true))
        .and_then(|c| c.f_contiguous())
        .ctx("copying the checkpoint to the CPU")
}

/// The checkpoint writer thread. [`Writer::submit`] hands it a snapshot and returns at once
/// unless the previous snapshot is still being written (the rendezvous channel holds none
/// queued), so at most two snapshots exist at a time and the training thread waits for its
/// disk only when asked to checkpoint faster than the disk writes. Each written checkpoint is
/// reported through `written(step, epoch)`, in order.
pub struct Writer {
    tx: Option<SyncSender<Snapshot>>,
    thread: Option<JoinHandle<Result<(), TrainError>>>,
}

impl Writer {
    pub fn start<F>(dir: PathBuf, mut written: F) -> Result<Self, TrainError>
    where
        F: FnMut(u64, u32) -> Result<(), TrainError> + Send + 'static,
    {
        let (tx, rx) = sync_channel::<Snapshot>(0);
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || {
                for snapshot in rx {
                    snapshot.write(&dir)?;
                    written(snapshot.step, snapshot.epoch)?;
                }
                Ok(())
            })
            .map_err(|e| TrainError::Checkpoint(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Hands `snapshot` to the writer; a write error of an earlier snapshot surfaces here.
    pub fn submit(&mut self, snapshot: Snapshot) -> Result<(), TrainError> {
        match &self.tx {
            Some(tx) if tx.send(snapshot).is_ok() => Ok(()),
            // The thread ended, which it does only on an error: report that error.
            _ => {
                self.tx = None;
                self.join()?;
                Err(TrainError::Checkpoint("the writer thread stopped".into()))
            }
        }
    }

    /// Waits until every submitted snapshot is written and reported.
    pub fn finish(mut self) -> Result<(), TrainError> {
        self.tx = None;
        self.join()
    }

    fn join(&mut self) -> Result<(), TrainError> {
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(TrainError::Checkpoint("the writer thread panicked".into())),
        }
    }
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
        loss_sum: 0.0,
        model: HashMap::new(),
        optim: HashMap::new(),
    };
    for (name, t) in tensors {
        let scalar = |t: &Tensor| -> Result<i64, TrainError> {
            if t.numel() != 1 || t.kind() != Kind::Int64 {
                return Err(TrainError::Resume(format!("{name} must be an int64 scalar")));
            }
            t.f_int64_value(&[]).ctx("reading a checkpoint scalar")
        };
        if name == state::META_STEP {
            step = Some(u64::try_from(scalar(&t)?).map_err(|_| TrainError::Resume("meta/step < 0".into()))?);
        } else if name == state::META_EPOCH {
            epoch =
                Some(u32::try_from(scalar(&t)?).map_err(|_| TrainError::Resume("meta/epoch out of range".into()))?);
        } else if name == state::META_LOSS_SUM {
            if t.numel() != 1 || t.kind() != Kind::Double {
                return Err(TrainError::Resume("meta/loss_sum must be a float64 scalar".into()));
            }
            let value = t.f_double_value(&[]).ctx("reading a checkpoint scalar")?;
            if !value.is_finite() {
                return Err(TrainError::Resume("meta/loss_sum is not finite".into()));
            }
            ck.loss_sum = value;
        } else if name.starts_with(state::PARAM) || name.starts_with(state::BUFFER) {
            ck.model.insert(name, t);
        } else if state::parse_optim_key(&name).is_some() {
            ck.optim.insert(name, t);
        } else {
            return Err(TrainError::Resume(format!("unexpected tensor {name}")));
        }
    }
    let (Some(step), Some(epoch)) = (step, epoch) else {
        return Err(TrainError::Resume("it lacks meta/step or meta/epoch".into()));
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
