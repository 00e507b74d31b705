//! The researcher's TorchScript module, made trainable.
//!
//! This is what `tch::TrainableCModule::load` does (load the archive on the device, collect
//! `named_parameters`, keep `requires_grad`), done on a `CModule` directly because
//! `TrainableCModule` hides two things the trainer needs: the parameters' dotted names (the
//! checkpoint keys match `state_dict()` names, which tch's `VarStore` rewrites with `_`), and
//! a fallible forward (its `ModuleT::forward_t` unwraps, so a bad model would panic).

use std::path::Path;

use tch::{CModule, Device, Tensor};

use super::error::{torch_reason, TorchContext, TrainError};

pub struct ScriptModel {
    module: CModule,
    /// All parameters in `named_parameters` order; they share storage with the module.
    params: Vec<(String, Tensor)>,
    device: Device,
}

impl ScriptModel {
    /// Loads `model.pt` onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<Self, TrainError> {
        if !path.is_file() {
            return Err(TrainError::Model("the job has no model.pt".into()));
        }
        let module = CModule::load_on_device(path, device).map_err(|e| TrainError::NotTorchScript(torch_reason(&e)))?;
        Self::new(module, device)
    }

    /// Loads a module from archive bytes (the copy embedded in a checkpoint).
    pub fn load_bytes(bytes: &[u8], device: Device) -> Result<Self, TrainError> {
        let module = CModule::load_data_on_device(&mut &bytes[..], device)
            .map_err(|e| TrainError::Resume(format!("its module.torchscript: {}", torch_reason(&e))))?;
        Self::new(module, device)
    }

    fn new(mut module: CModule, device: Device) -> Result<Self, TrainError> {
        let params = module.named_parameters().ctx("listing the model's parameters")?;
        if !params.iter().any(|(_, p)| p.requires_grad()) {
            return Err(TrainError::Model("the model has no trainable parameters".into()));
        }
        module.f_set_train().ctx("switching the model to training mode")?;
        Ok(Self { module, params, device })
    }

    pub fn named_parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The parameters the optimizer updates (those with `requires_grad`), with their names.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .filter(|(_, p)| p.requires_grad())
            .map(|(n, p)| (n.clone(), p.shallow_clone()))
            .collect()
    }

    pub fn parameter_count(&self) -> u64 {
        self.params.iter().map(|(_, p)| p.numel() as u64).sum()
    }

    pub fn set_train(&mut self, train: bool) -> Result<(), TrainError> {
        let result = if train {
            self.module.f_set_train()
        } else {
            self.module.f_set_eval()
        };
        result.ctx("switching the model's mode")
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor, TrainError> {
        self.module.forward_ts(&[x]).map_err(|e| {
            TrainError::Model(format!(
                "the model's forward failed on a batch of x with shape {:?}: {}",
                x.size(),
                torch_reason(&e)
            ))
        })
    }

    /// The module's own `@torch.jit.export def training_loss(self, x, y)` (loss `module`).
    pub fn training_loss(&self, x: &Tensor, y: &Tensor) -> Result<Tensor, TrainError> {
        self.module.method_ts("training_loss", &[x, y]).map_err(|e| {
            TrainError::Loss(format!(
                "loss module calls the model's exported training_loss(x, y), which failed: {}",
                torch_reason(&e)
            ))
        })
    }

    /// Overwrites the parameters with `values` (from a checkpoint), checking names and shapes.
    pub fn load_parameters(&mut self, values: &[(String, Tensor)]) -> Result<(), TrainError> {
        let _guard = tch::no_grad_guard();
        if values.len() != self.params.len() {
            return Err(TrainError::Resume(format!(
                "it has {} parameters, the model has {}",
                values.len(),
                self.params.len()
            )));
        }
        for (name, param) in &mut self.params {
            let Some((_, value)) = values.iter().find(|(n, _)| n == name) else {
                return Err(TrainError::Resume(format!("it lacks parameter {name}")));
            };
            if value.size() != param.size() || value.kind() != param.kind() {
                return Err(TrainError::Resume(format!(
                    "parameter {name} is {:?} {:?} there, {:?} {:?} in the model",
                    value.kind(),
                    value.size(),
                    param.kind(),
                    param.size()
                )));
            }
            param.f_copy_(value).ctx("restoring a parameter")?;
        }
        Ok(())
    }

    /// The module as a TorchScript archive: program, parameters and buffers (BatchNorm
    /// statistics…). tch offers no way to list a module's buffers, so a checkpoint carries them
    /// inside this archive.
    pub fn archive_bytes(&self, scratch: &Path) -> Result<Vec<u8>, TrainError> {
        self.module.save(scratch).ctx("serialising the model")?;
        let bytes = std::fs::read(scratch).map_err(|source| TrainError::Read {
            path: scratch.to_owned(),
            source,
        });
        let _ = std::fs::remove_file(scratch);
        bytes
    }

    /// Writes the trained module where `torch.jit.load` finds it, with its tensors on the CPU
    /// so that a notebook without CUDA can load it. Written aside, then renamed.
    pub fn save_result(&self, path: &Path) -> Result<(), TrainError> {
        let tmp = path.with_extension("pt.tmp");
        self.module.save(&tmp).ctx("saving the trained model")?;
        if self.device != Device::Cpu {
            let on_cpu = CModule::load_on_device(&tmp, Device::Cpu).ctx("moving the model to the CPU")?;
            on_cpu.save(&tmp).ctx("saving the trained model")?;
        }
        super::checkpoint::sync_and_rename(&tmp, path)
    }
}
