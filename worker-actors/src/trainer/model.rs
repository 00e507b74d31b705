//! The researcher's TorchScript module, made trainable. Only the researcher's own `model.pt`
//! is ever loaded: a resume copies a checkpoint's tensors into it, and the result is its
//! tensors, never a module archive (DESIGN §7, [`helium_protocol::state`]).
//!
//! This is what `tch::TrainableCModule::load` does (load the archive on the device, collect
//! `named_parameters`, keep `requires_grad`), done on a `CModule` directly because
//! `TrainableCModule` hides two things the trainer needs: the parameters' dotted names (the
//! checkpoint keys match `state_dict()` names, which tch's `VarStore` rewrites with `_`), and
//! a fallible forward (its `ModuleT::forward_t` unwraps, so a bad model would panic). Buffers
//! (BatchNorm statistics…) come from `csrc/buffers.cpp`, since tch lists parameters only.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;

use helium_protocol::state;
use tch::{CModule, Device, Tensor};

use super::error::{torch_reason, TorchContext, TrainError};

pub struct ScriptModel {
    module: CModule,
    /// All parameters in `named_parameters` order; they share storage with the module.
    params: Vec<(String, Tensor)>,
}

impl ScriptModel {
    /// Loads `model.pt` onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<Self, TrainError> {
        if !path.is_file() {
            return Err(TrainError::Model("the job has no model.pt".into()));
        }
        let module = CModule::load_on_device(path, device).map_err(|e| TrainError::NotTorchScript(torch_reason(&e)))?;
        Self::new(module)
    }

    fn new(mut module: CModule) -> Result<Self, TrainError> {
        let params = module.named_parameters().ctx("listing the model's parameters")?;
        if !params.iter().any(|(_, p)| p.requires_grad()) {
            return Err(TrainError::Model("the model has no trainable parameters".into()));
        }
        module.f_set_train().ctx("switching the model to training mode")?;
        Ok(Self { module, params })
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

    /// The module's buffers, listed afresh (a module may rebind one in its forward); each
    /// shares storage with the module's.
    pub fn named_buffers(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        named_buffers(&self.module)
    }

    /// Parameters and buffers under their state-file names (`param/…`, `buffer/…`).
    pub fn state(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        let mut out: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(n, p)| (state::param_key(n), p.shallow_clone()))
            .collect();
        for (n, b) in self.named_buffers()? {
            out.push((state::buffer_key(&n), b));
        }
        Ok(out)
    }

    /// Overwrites every parameter and buffer with its entry of `saved` (a checkpoint's),
    /// removing what it takes: each must be there with the model's shape and dtype.
    pub fn load_state(&mut self, saved: &mut HashMap<String, Tensor>) -> Result<(), TrainError> {
        let _guard = tch::no_grad_guard();
        for (key, mut live) in self.state()? {
            let Some(value) = saved.remove(&key) else {
                return Err(TrainError::Resume(format!("it lacks {key}")));
            };
            if value.size() != live.size() || value.kind() != live.kind() {
                return Err(TrainError::Resume(format!(
                    "{key} is {:?} {:?} there, {:?} {:?} in the model",
                    value.kind(),
                    value.size(),
                    live.kind(),
                    live.size()
                )));
            }
            live.f_copy_(&value).ctx("restoring a parameter or buffer")?;
        }
        Ok(())
    }

    /// Writes the trained parameters and buffers as a safetensors state file, on the CPU so
    /// that a notebook without CUDA loads them. Written aside, then renamed.
    pub fn save_result(&self, path: &Path) -> Result<(), TrainError> {
        let _guard = tch::no_grad_guard();
        let mut tensors = Vec::new();
        for (key, t) in self.state()? {
            let cpu = t
                .f_detach()
                .and_then(|d| d.f_to_device(Device::Cpu))
                .and_then(|c| c.f_contiguous())
                .ctx("moving the result to the CPU")?;
            tensors.push((key, cpu));
        }
        let tmp = path.with_extension("safetensors.tmp");
        Tensor::write_safetensors(&tensors, &tmp).ctx("saving the trained tensors")?;
        super::checkpoint::sync_and_rename(&tmp, path)
    }
}

extern "C" {
    /// `csrc/buffers.cpp`.
    fn helium_named_buffers(
        module: *mut c_void,
        data: *mut c_void,
        f: extern "C" fn(*mut c_void, *const c_char, *mut c_void),
        error: *mut *const c_char,
    ) -> c_int;
}

extern "C" fn push_buffer(data: *mut c_void, name: *const c_char, tensor: *mut c_void) {
    // SAFETY: `data` is the Vec passed below; `tensor` is a fresh `at::Tensor` whose ownership
    // passes to the Rust `Tensor`; `name` is a NUL-terminated string valid during the call.
    let out = unsafe { &mut *(data as *mut Vec<(String, Tensor)>) };
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    out.push((name, unsafe { Tensor::from_ptr(tensor.cast()) }));
}

// tch's `CModule` is one pointer to the C++ `torch::jit::Module`, which it does not expose.
const _: () = assert!(std::mem::size_of::<CModule>() == std::mem::size_of::<*mut c_void>());

fn named_buffers(module: &CModule) -> Result<Vec<(String, Tensor)>, TrainError> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    let mut error: *const c_char = std::ptr::null();
    // SAFETY: `CModule` holds exactly the module pointer (asserted above); the shim only reads
    // the module and calls `push_buffer` with `out`, which outlives the call.
    let rc = unsafe {
        let raw = *(module as *const CModule as *const *mut c_void);
        helium_named_buffers(raw, &mut out as *mut _ as *mut c_void, push_buffer, &mut error)
    };
    if rc != 0 {
        let why = if error.is_null() {
            "unknown error".to_string()
        } else {
            unsafe { CStr::from_ptr(error) }.to_string_lossy().into_owned()
        };
        return Err(TrainError::Model(format!("listing the model's buffers failed: {why}")));
    }
    Ok(out)
}
