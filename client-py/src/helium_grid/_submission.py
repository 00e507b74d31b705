"""Turning ``grid.submit(...)``'s arguments into the bytes and maps of a ``job.submit``.

Everything here is pure and runs before any network traffic: arguments are checked (raising the
same error classes the broker would), the model is scripted and saved as TorchScript, the data
saved as safetensors, money converted to micro-credits and the deadline to unix milliseconds.
No pickle anywhere.

Example::

    sub = prepare_submission(model, train=(x, y), epochs=3, batch_size=32, lr=1e-3,
                             max_price=2.0, budget=1.0)
    len(sub.model_bytes), sub.work
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from ._limits import credits_to_micro, deadline_to_ms
from .errors import BadRequest, InvalidData, InvalidModel

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "DEVICES",
    "Submission",
    "prepare_submission",
    "script_model",
    "pack_data",
    "quiet_torchscript",
]

#: The loss menu of ``TrainingSpec.loss``; ``module`` calls the model's ``training_loss(x, y)``.
LOSSES: tuple[str, ...] = ("cross_entropy", "mse", "l1", "bce_with_logits", "nll", "module")
#: ``TrainingSpec.optimizer.kind``.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
#: ``Requirements.device``.
DEVICES: tuple[str, ...] = ("any", "cpu", "cuda")

_CLASS_LOSSES = ("cross_entropy", "nll")
_FLOAT_TARGET_LOSSES = ("mse", "l1", "bce_with_logits")
_U32_MAX = 2**32 - 1


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silences torch's "torch.jit.* is deprecated" warnings: TorchScript is the grid's model
    format (the Rust worker runs it through libtorch), so the researcher cannot act on them.

    Example::

        with quiet_torchscript():
            scripted = torch.jit.script(model)
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        yield


@dataclass(frozen=True)
class Submission:
    """A checked, serialized job, ready to upload and submit.

    Example::

        sub = prepare_submission(...)
        body = sub.submit_body(model_upload="u1", data_upload="u2")
    """

    model_bytes: bytes
    data_bytes: bytes
    training: dict[str, Any]
    requirements: dict[str, Any]
    work: dict[str, int]
    name: str | None

    def submit_body(self, *, model_upload: str, data_upload: str) -> dict[str, Any]:
        """The ``SubmitJob`` fields (without ``v``) for the two committed uploads."""
        return {
            "model_upload": model_upload,
            "data_upload": data_upload,
            "training": self.training,
            "requirements": self.requirements,
            "work": self.work,
            "name": self.name,
        }


def script_model(model: torch.nn.Module) -> torch.jit.ScriptModule:
    """``model`` as TorchScript: a ``ScriptModule`` (scripted or traced) is taken as it is, any
    other ``nn.Module`` goes through ``torch.jit.script``.

    Example::

        scripted = script_model(torch.nn.Linear(4, 2))
    """
    if isinstance(model, torch.jit.ScriptModule):
        return model
    if not isinstance(model, torch.nn.Module):
        raise InvalidModel(f"model must be a torch.nn.Module or a TorchScript module, not {type(model).__name__}")
    try:
        with quiet_torchscript():
            return torch.jit.script(model)
    except Exception as e:  # TorchScript raises many types (FrontendError, RuntimeError, …)
        detail = str(e).strip().splitlines()
        first = detail[0] if detail else type(e).__name__
        raise InvalidModel(
            f"torch.jit.script could not compile {type(model).__name__}: {first}\n"
            "The grid runs models as TorchScript. Make forward() scriptable (tensor ops, type "
            "annotations, no numpy or arbitrary Python calls), or trace it yourself and submit "
            "the result: grid.submit(torch.jit.trace(model, example_x), ...).\n"
            f"Full TorchScript error:\n{e}"
        ) from e


def _model_bytes(scripted: torch.jit.ScriptModule) -> bytes:
    buf = io.BytesIO()
    try:
        with quiet_torchscript():
            torch.jit.save(scripted, buf)
    except Exception as e:
        raise InvalidModel(f"torch.jit.save failed: {e}") from e
    return buf.getvalue()


def _check_pair(pair: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise BadRequest(f"{what} must be a pair (x, y) of tensors")
    x, y = pair
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise BadRequest(f"{what}: {name} must be a torch.Tensor, not {type(t).__name__}")
        if t.dim() == 0:
            raise BadRequest(f"{what}: {name} must have a first (sample) dimension, got a scalar")
        if t.is_sparse or t.is_complex():
            raise BadRequest(f"{what}: {name} must be a dense real tensor")
    if x.shape[0] != y.shape[0]:
        raise BadRequest(
            f"{what}: x and y must have the same number of samples; x has {x.shape[0]}, y has {y.shape[0]}"
        )
    if x.shape[0] == 0:
        raise BadRequest(f"{what}: no samples")
    return x, y


def _targets_for(loss: str, y: torch.Tensor, what: str) -> torch.Tensor:
    if loss in _CLASS_LOSSES and not y.is_floating_point():
        # Class-index targets: torch's losses want int64, so int32/uint8 labels are widened.
        return y.to(torch.int64)
    if loss == "nll" and y.is_floating_point():
        raise BadRequest(f"{what}: loss 'nll' needs integer class targets, got {y.dtype}")
    if loss in _FLOAT_TARGET_LOSSES and not y.is_floating_point():
        raise BadRequest(f"{what}: loss {loss!r} needs floating-point targets, got {y.dtype} (use y.float())")
    return y


def pack_data(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Tensors → safetensors bytes: detached, on the CPU, contiguous, and not sharing memory
    (safetensors refuses views of one buffer, e.g. ``X[:800]`` and ``X[800:]``).

    Example::

        blob = pack_data({"x": torch.zeros(3, 2), "y": torch.zeros(3)})
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or t.storage_offset() != 0 or t.untyped_storage().nbytes() != t.nbytes:
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        seen.add(ptr)
        out[name] = t
    try:
        return save_safetensors(out)
    except Exception as e:
        raise InvalidData(f"could not save the data as safetensors: {e}") from e


def _positive_int(value: Any, name: str, *, maximum: int = _U32_MAX) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadRequest(f"{name} must be a positive integer, not {value!r}")
    if value > maximum:
        raise BadRequest(f"{name} must be at most {maximum}, not {value}")
    return value


def _real(value: Any, name: str, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number, not {value!r}")
    if positive and value <= 0:
        raise BadRequest(f"{name} must be positive, not {value!r}")
    if not positive and value < 0:
        raise BadRequest(f"{name} must not be negative, not {value!r}")
    return float(value)


def _choice(value: Any, name: str, menu: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in menu:
        raise BadRequest(f"unknown {name} {value!r}; choose one of: {', '.join(menu)}")
    return value


def prepare_submission(
    model: torch.nn.Module,
    *,
    train: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    batch_size: int,
    lr: float,
    max_price: float,
    budget: float,
    loss: str = "cross_entropy",
    optimizer: str = "adam",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    shuffle: bool = True,
    min_memory_gb: float = 0.0,
    device: str = "any",
    deadline: float | _dt.datetime | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    name: str | None = None,
) -> Submission:
    """Check every argument of ``grid.submit`` and serialize the model and the data.

    Cheap checks come first, so a typo fails before the model is scripted.

    Example::

        sub = prepare_submission(torch.nn.Linear(4, 2), train=(torch.randn(8, 4), torch.randint(0, 2, (8,))),
                                 epochs=1, batch_size=4, lr=0.1, max_price=1.0, budget=0.5)
    """
    loss = _choice(loss, "loss", LOSSES)
    optimizer = _choice(optimizer, "optimizer", OPTIMIZERS)
    device = _choice(device, "device", DEVICES)
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    lr = _real(lr, "lr", positive=True)
    momentum = _real(momentum, "momentum", positive=False)
    weight_decay = _real(weight_decay, "weight_decay", positive=False)
    min_memory_gb = _real(min_memory_gb, "min_memory_gb", positive=False)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise BadRequest(f"seed must be an integer in [0, 2**64), not {seed!r}")
    if not isinstance(shuffle, bool):
        raise BadRequest(f"shuffle must be True or False, not {shuffle!r}")
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"name must be a string, not {name!r}")
    max_price_micro = credits_to_micro(max_price, what="max_price")
    budget_micro = credits_to_micro(budget, what="budget")
    if max_price_micro == 0:
        raise BadRequest("max_price must be positive (credits per device-hour)")
    if budget_micro == 0:
        raise BadRequest("budget must be positive (at least 0.000001 credits)")
    deadline_ms = deadline_to_ms(deadline)

    x, y = _check_pair(train, "train")
    tensors = {"x": x, "y": _targets_for(loss, y, "train")}
    if validation is not None:
        xv, yv = _check_pair(validation, "validation")
        if xv.shape[1:] != x.shape[1:]:
            raise BadRequest(f"validation: x_val has sample shape {tuple(xv.shape[1:])}, x has {tuple(x.shape[1:])}")
        tensors["x_val"] = xv
        tensors["y_val"] = _targets_for(loss, yv, "validation")

    scripted = script_model(model)
    if loss == "module" and not hasattr(scripted, "training_loss"):
        raise InvalidModel(
            "loss='module' needs a method `training_loss(self, x, y) -> Tensor` marked @torch.jit.export"
        )
    parameters = sum(p.numel() for p in scripted.parameters())
    if parameters == 0:
        raise InvalidModel("the model has no parameters to train")

    return Submission(
        model_bytes=_model_bytes(scripted),
        data_bytes=pack_data(tensors),
        training={
            "epochs": epochs,
            "batch_size": batch_size,
            "loss": loss,
            "optimizer": {
                "kind": optimizer,
                "lr": lr,
                "momentum": momentum,
                "weight_decay": weight_decay,
                "nesterov": False,
                "beta1": 0.9,
                "beta2": 0.999,
                "eps": 1e-8,
            },
            "seed": seed,
            "shuffle": shuffle,
        },
        requirements={
            "device": device,
            "min_memory_bytes": int(min_memory_gb * 2**30),
            "max_price_per_hour": max_price_micro,
            "budget": budget_micro,
            "deadline_ms": deadline_ms,
        },
        work={"parameters": int(parameters), "samples": int(x.shape[0]), "epochs": epochs},
        name=name,
    )
