"""Turning ``grid.submit(...)``'s arguments into the bytes and maps of a ``job.submit``.

Everything here is pure and runs before any network traffic: arguments are checked (raising the
same error classes the broker would), the model is scripted and saved as TorchScript, a trial
step on the caller's CPU refuses what cannot train (see :func:`preflight`), the data is saved as
safetensors, money converted to micro-credits and the deadline to unix milliseconds. No pickle
anywhere.

Defaults: ``loss=None`` is ``"module"`` for a model that exports ``training_loss(x, y)``, else
``"cross_entropy"`` (:func:`resolve_loss`); optimizer settings left out are torch.optim's
defaults for the chosen optimizer (:data:`OPTIMIZER_DEFAULTS`).

Example::

    sub = prepare_submission(model, train=(x, y), epochs=3, batch_size=32,
                             max_price=2.0, budget=1.0)
    len(sub.model_bytes), sub.work, sub.training["loss"]
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save as save_safetensors

from ._limits import credits_to_micro, deadline_to_ms
from ._state import manifest
from .errors import BadRequest, InvalidData, InvalidModel

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "OPTIMIZER_DEFAULTS",
    "DEVICES",
    "PREFLIGHT_ROWS",
    "Submission",
    "prepare_submission",
    "optimizer_spec",
    "resolve_loss",
    "preflight",
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
    #: The model's parameters and buffers (``_state.manifest``): results must match them.
    state: list[dict[str, Any]] = field(default_factory=list)

    def submit_body(self, *, model_upload: str, data_upload: str) -> dict[str, Any]:
        """The ``SubmitJob`` fields (without ``v``) for the two committed uploads."""
        return {
            "model_upload": model_upload,
            "data_upload": data_upload,
            "training": self.training,
            "requirements": self.requirements,
            "work": self.work,
            "name": self.name,
            "state": self.state,
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
    """``y`` in the dtype the trainer needs (``prepare_targets`` in the Rust ``trainer/loss.rs``)."""
    if loss in _CLASS_LOSSES and not y.is_floating_point():
        # Class-index targets: torch's losses want int64, so int32/uint8 labels are widened.
        return y.to(torch.int64)
    if loss == "nll" and y.is_floating_point():
        raise BadRequest(f"{what}: loss 'nll' needs integer class targets, got {y.dtype}")
    if loss == "cross_entropy" and y.dim() < 2:
        # Float targets are class probabilities, one row per sample; 1-D floats are labels cast by mistake.
        raise BadRequest(
            f"{what}: loss 'cross_entropy' needs integer class targets (or class probabilities of shape "
            f"(N, classes)), got {_describe(y)} (use y.long())"
        )
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


# -- optimizer ----------------------------------------------------------------------------------

#: torch.optim's defaults for the settings ``OptimizerSpec`` carries, per optimizer (a test
#: checks them against ``torch.optim.X(params).defaults``). Note AdamW's ``weight_decay=1e-2``.
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
    "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
}
#: What the wire carries for a setting the chosen optimizer does not have.
_UNUSED_ON_WIRE: dict[str, Any] = {"momentum": 0.0, "nesterov": False, "betas": (0.9, 0.999), "eps": 1e-8}


def _fraction(value: Any, name: str) -> float:
    """A finite number in [0, 1), as the broker requires of momentum and betas."""
    v = _real(value, name, positive=False)
    if v >= 1:
        raise BadRequest(f"{name} must be in [0, 1), not {value!r}")
    return v


def _betas(value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise BadRequest(f"betas must be a pair (beta1, beta2), not {value!r}")
    return _fraction(value[0], "betas[0]"), _fraction(value[1], "betas[1]")


def _is_wire_value(name: str, value: Any) -> bool:
    if name == "betas":
        return isinstance(value, (tuple, list)) and tuple(value) == _UNUSED_ON_WIRE[name]
    return not isinstance(value, str) and value == _UNUSED_ON_WIRE[name]


def _refuse_foreign(kind: str, given: Mapping[str, Any]) -> None:
    """A setting the chosen optimizer does not have would be ignored silently: refuse it."""
    for name, value in given.items():
        if value is None or name in OPTIMIZER_DEFAULTS[kind]:
            continue
        if _is_wire_value(name, value):
            continue  # the value it would have anyway: harmless
        owners = " and ".join(k for k, d in OPTIMIZER_DEFAULTS.items() if name in d)
        raise BadRequest(f"optimizer {kind!r} has no {name}; {name}= applies to {owners} only")


def optimizer_spec(
    kind: str,
    *,
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    nesterov: bool | None = None,
    betas: tuple[float, float] | None = None,
    eps: float | None = None,
) -> dict[str, Any]:
    """The wire's ``OptimizerSpec`` for ``kind``: settings left as ``None`` take torch.optim's
    default for that optimizer; settings it does not have (``momentum`` for Adam, ``betas``
    for SGD) are refused unless they equal what the wire carries anyway.

    Example::

        >>> optimizer_spec("adamw")["weight_decay"]
        0.01
        >>> optimizer_spec("sgd", lr=0.1, momentum=0.9, nesterov=True)["nesterov"]
        True
    """
    kind = _choice(kind, "optimizer", OPTIMIZERS)
    _refuse_foreign(kind, {"momentum": momentum, "nesterov": nesterov, "betas": betas, "eps": eps})
    d = {**_UNUSED_ON_WIRE, **OPTIMIZER_DEFAULTS[kind]}
    lr = d["lr"] if lr is None else _real(lr, "lr", positive=True)
    momentum = d["momentum"] if momentum is None else _fraction(momentum, "momentum")
    weight_decay = d["weight_decay"] if weight_decay is None else _real(weight_decay, "weight_decay", positive=False)
    beta1, beta2 = d["betas"] if betas is None else _betas(betas)
    eps = d["eps"] if eps is None else _real(eps, "eps", positive=True)
    nesterov = d["nesterov"] if nesterov is None else nesterov
    if not isinstance(nesterov, bool):
        raise BadRequest(f"nesterov must be True or False, not {nesterov!r}")
    if nesterov and momentum <= 0:
        raise BadRequest("nesterov=True needs a momentum > 0 (as in torch.optim.SGD)")
    return {
        "kind": kind,
        "lr": float(lr),
        "momentum": float(momentum),
        "weight_decay": float(weight_decay),
        "nesterov": nesterov,
        "beta1": float(beta1),
        "beta2": float(beta2),
        "eps": float(eps),
    }


# -- loss ---------------------------------------------------------------------------------------


def resolve_loss(loss: str | None, model: Any, scripted: torch.jit.ScriptModule) -> str:
    """The loss the job trains with: the one named, else ``"module"`` when the scripted model
    exports ``training_loss(x, y)``, else ``"cross_entropy"``. The wire always carries a name.

    A ``training_loss`` that TorchScript dropped (not marked ``@torch.jit.export``) is refused
    rather than silently replaced by cross_entropy.

    Example::

        loss = resolve_loss(None, model, script_model(model))   # "module" or "cross_entropy"
    """
    exported = hasattr(scripted, "training_loss")
    if not exported and loss in (None, "module") and callable(getattr(model, "training_loss", None)):
        raise InvalidModel(
            f"{type(model).__name__} defines training_loss but it is not marked @torch.jit.export, so "
            "TorchScript left it out and the grid cannot call it. Mark it @torch.jit.export, or name "
            "another loss (loss='cross_entropy', 'mse', …)"
        )
    if loss == "module" and not exported:
        raise InvalidModel(
            "loss='module' needs a method `training_loss(self, x, y) -> Tensor` marked @torch.jit.export"
        )
    if loss is None:
        return "module" if exported else "cross_entropy"
    return loss


# -- preflight: one trial step on the caller's CPU -----------------------------------------------

#: The trial step runs on the first ``min(batch_size, PREFLIGHT_ROWS)`` rows of each split.
PREFLIGHT_ROWS = 64
#: torch's default ``ignore_index`` of cross_entropy and nll_loss (the trainer's too).
_IGNORE_INDEX = -100
_MENU = {
    "cross_entropy": F.cross_entropy,
    "nll": F.nll_loss,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
}


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def _describe(t: torch.Tensor) -> str:
    """``float32 of shape (64, 1)``."""
    return f"{str(t.dtype).removeprefix('torch.')} of shape {_shape(t)}"


def _has(t: torch.Tensor) -> str:
    """``has shape (64, 1) (float32)``."""
    return f"has shape {_shape(t)} ({str(t.dtype).removeprefix('torch.')})"


def _per_sample(shape: Sequence[int]) -> str:
    """``(N,)`` for a per-row shape ``(64,)``, ``(N, 3)`` for ``(64, 3)``."""
    rest = [str(d) for d in shape[1:]]
    return f"(N, {', '.join(rest)})" if rest else "(N,)"


def _reason(e: BaseException) -> str:
    """The line of a torch error that says what went wrong (TorchScript puts it last)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


@dataclass(frozen=True)
class _Trial:
    """One split's trial rows, and the names the messages give them (``x[:64]``, ``y_val``)."""

    x: torch.Tensor
    y: torch.Tensor
    #: The split's whole ``y``, for the class-range check.
    labels: torch.Tensor
    x_name: str
    y_name: str
    y_all: str
    training: bool

    @classmethod
    def of(cls, x: torch.Tensor, y: torch.Tensor, *, rows: int, training: bool) -> _Trial:
        suffix = "" if training else "_val"
        n = min(rows, x.shape[0])
        # Copies: a forward that writes into its input must not touch the caller's tensors.
        cut = (x[:n].detach().cpu().clone(), y[:n].detach().cpu().clone())
        return cls(*cut, y, f"x{suffix}[:{n}]", f"y{suffix}[:{n}]", f"y{suffix}", training)


def _forward(copy: torch.jit.ScriptModule, loss: str, t: _Trial) -> torch.Tensor:
    try:
        out = copy(t.x)
    except Exception as e:
        raise InvalidModel(f"the model's forward failed on {t.x_name} ({_describe(t.x)}): {_reason(e)}") from e
    if not isinstance(out, torch.Tensor):
        raise InvalidModel(f"{loss}: the model's forward must return one tensor, got {type(out).__name__}")
    if not out.is_floating_point():
        raise InvalidModel(f"{loss}: the model's output on {t.x_name} is {_describe(out)}; the loss needs floats")
    return out


def _same_shape(loss: str, out: torch.Tensor, t: _Trial) -> None:
    """mse, l1, bce_with_logits compare element by element; the trainer refuses any broadcast."""
    if out.shape == t.y.shape:
        return
    try:
        how = f"they would broadcast to {tuple(torch.broadcast_shapes(out.shape, t.y.shape))}"
    except RuntimeError:
        how = "they do not match"
    if out.shape == (*t.y.shape, 1):
        fix = f"Use {t.y_all}.unsqueeze({t.y.dim()}), or a model that outputs {_per_sample(t.y.shape)}."
    elif t.y.shape == (*out.shape, 1):
        fix = f"Use {t.y_all}.squeeze({out.dim()}), or a model that outputs {_per_sample(t.y.shape)}."
    else:
        fix = "The loss compares output and target element by element, so they need the same shape."
    raise InvalidData(f"{loss}: the model's output on {t.x_name} {_has(out)} but {t.y_name} {_has(t.y)}; {how}. {fix}")


def _one_score_per_class(loss: str, out: torch.Tensor, t: _Trial) -> int:
    """The number of classes of a classification output, refusing a single output."""
    if out.dim() >= 2 and out.shape[1] > 1:
        return int(out.shape[1])
    raise InvalidModel(
        f"{loss} over a single output: the model's output on {t.x_name} {_has(out)}, but {loss} needs one "
        f"score per class, shape (N, classes); with one class the loss is 0 whatever the weights, so nothing "
        "would train. Give the last layer one output per class, or use loss='bce_with_logits' for a binary "
        "target (float y of the output's shape), loss='mse' for regression."
    )


def _labels_in_range(loss: str, classes: int, out: torch.Tensor, t: _Trial) -> None:
    labels = t.labels
    if bool((((labels >= 0) & (labels < classes)) | (labels == _IGNORE_INDEX)).all()):
        return
    used = labels[labels != _IGNORE_INDEX]
    lo, hi = int(used.min()), int(used.max())
    fix = f"Give the model {hi + 1} outputs, or relabel {t.y_all}." if hi >= classes else f"Relabel {t.y_all}."
    raise InvalidData(
        f"{loss}: {t.y_all} holds class labels from {lo} to {hi} but the model outputs {classes} classes "
        f"(output shape {_shape(out)} on {t.x_name}), so labels must lie in 0…{classes - 1} (-100 is "
        f"ignored). {fix}"
    )


def _class_targets(loss: str, out: torch.Tensor, t: _Trial) -> None:
    """cross_entropy / nll: labels of shape (N, d1…) in range, or probabilities shaped like the output."""
    classes = _one_score_per_class(loss, out, t)
    if t.y.is_floating_point():  # class probabilities (cross_entropy only; nll was refused earlier)
        if t.y.shape != out.shape:
            raise InvalidData(
                f"{loss}: the model's output on {t.x_name} {_has(out)} but {t.y_name} {_has(t.y)}; float "
                "targets are class probabilities and need the output's shape. For class labels use y.long()."
            )
        return
    want = (out.shape[0], *out.shape[2:])
    if t.y.shape != want:
        fix = f" Use {t.y_all}.squeeze(1)." if t.y.shape == (want[0], 1, *want[1:]) else ""
        raise InvalidData(
            f"{loss}: the model's output on {t.x_name} {_has(out)}, so {t.y_name} must hold one class label "
            f"per row, shape {tuple(want)}, but it {_has(t.y)}.{fix}"
        )
    _labels_in_range(loss, classes, out, t)


def _menu_loss(loss: str, out: torch.Tensor, t: _Trial) -> torch.Tensor:
    """A menu loss with torch.nn.functional's defaults, as ``of_output`` in ``trainer/loss.rs``."""
    if loss in _CLASS_LOSSES:
        _class_targets(loss, out, t)
    else:
        _same_shape(loss, out, t)
    y = t.y.to(out.dtype) if t.y.is_floating_point() or loss in _FLOAT_TARGET_LOSSES else t.y
    try:
        return _MENU[loss](out, y)
    except Exception as e:
        raise InvalidData(
            f"{loss}: the loss of the model's output on {t.x_name} ({_describe(out)}) against {t.y_name} "
            f"({_describe(t.y)}) failed: {_reason(e)}"
        ) from e


def _module_loss(copy: torch.jit.ScriptModule, t: _Trial) -> torch.Tensor:
    """The model's own ``training_loss(x, y)``, which must give a float scalar (as the trainer checks)."""
    try:
        value = copy.training_loss(t.x, t.y)
    except Exception as e:
        raise InvalidModel(
            f"module: the model's training_loss({t.x_name}, {t.y_name}) failed on {_describe(t.x)} and "
            f"{_describe(t.y)}: {_reason(e)}"
        ) from e
    if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
        got = _describe(value) if isinstance(value, torch.Tensor) else type(value).__name__
        raise InvalidModel(f"module: training_loss(x, y) must return a float scalar, got {got}")
    return value.reshape(())


def _finite(loss: str, value: torch.Tensor, t: _Trial) -> None:
    v = float(value.detach())
    if math.isfinite(v):
        return
    bad = [
        f"{name} holds {n} NaN or infinite values"
        for name, tensor in ((t.x_name, t.x), (t.y_name, t.y))
        if tensor.is_floating_point() and (n := int((~torch.isfinite(tensor)).sum()))
    ]
    if bad:
        raise InvalidData(f"{loss}: the loss on {t.x_name} is {v}: {' and '.join(bad)}. Clean the data first.")
    raise InvalidModel(
        f"{loss}: the loss on {t.x_name} is {v} although {t.x_name} and {t.y_name} are finite: the model "
        "overflows or divides by zero, and training would fail in the first epoch."
    )


def _reaches_parameters(loss: str, value: torch.Tensor, trainable: list[torch.Tensor], t: _Trial) -> None:
    grads = torch.autograd.grad(value, trainable, allow_unused=True) if value.requires_grad else [None]
    if any(g is not None for g in grads):
        return
    raise InvalidModel(
        f"{loss}: the loss on {t.x_name} depends on none of the model's trainable parameters (no gradient "
        "reaches them), so training would not change the model. Does forward or training_loss detach its "
        "result (.detach(), .item(), torch.no_grad()) or ignore the model's layers?"
    )


def _trial(copy: torch.jit.ScriptModule, loss: str, trainable: list[torch.Tensor], t: _Trial) -> None:
    """One trial step on a split: training mode with autograd, validation in eval mode without."""
    copy.train(t.training)
    with torch.enable_grad() if t.training else torch.no_grad():
        value = _module_loss(copy, t) if loss == "module" else _menu_loss(loss, _forward(copy, loss, t), t)
        _finite(loss, value, t)
        if t.training:
            _reaches_parameters(loss, value, trainable, t)


def preflight(
    model_bytes: bytes,
    *,
    loss: str,
    batch_size: int,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Refuse, before any upload, what cannot train: one forward and the loss, as the worker's
    trainer computes them, on the first ``min(batch_size, 64)`` rows of each split.

    Runs on a copy loaded from ``model_bytes`` (the caller's module, its gradients, mode and
    torch's RNG are untouched). Refuses output/target shapes that would broadcast, a
    classification loss over a single output, class labels outside the output's range, a
    non-finite loss, and a loss that no trainable parameter reaches, with
    :class:`~helium_grid.InvalidData` or :class:`~helium_grid.InvalidModel` naming the shapes.
    ``train``/``validation`` hold targets as :func:`prepare_submission` sends them (class
    labels as int64).

    Example::

        preflight(sub.model_bytes, loss="mse", batch_size=32, train=(x, y))   # or raises
    """
    # Out of any inference mode of the caller's, so that the copy and the rows can record autograd;
    # and on a forked RNG, so that dropout in the trial does not move the caller's.
    with torch.inference_mode(False), torch.random.fork_rng(devices=[]):
        with quiet_torchscript():
            copy = torch.jit.load(io.BytesIO(model_bytes), map_location="cpu")  # our own bytes
        trainable = [p for p in copy.parameters() if p.requires_grad]
        if not trainable:
            raise InvalidModel("every parameter of the model has requires_grad=False: training would change nothing")
        rows = min(batch_size, PREFLIGHT_ROWS)
        trials = [_Trial.of(*train, rows=rows, training=True)]
        if validation is not None:
            trials.append(_Trial.of(*validation, rows=rows, training=False))
        for t in trials:
            _trial(copy, loss, trainable, t)


# -- the whole submission -----------------------------------------------------------------------


def _requirements(
    *, device: str, min_memory_gb: Any, max_price: Any, budget: Any, deadline: Any
) -> dict[str, Any]:
    min_memory_gb = _real(min_memory_gb, "min_memory_gb", positive=False)
    max_price_micro = credits_to_micro(max_price, what="max_price")
    budget_micro = credits_to_micro(budget, what="budget")
    if max_price_micro == 0:
        raise BadRequest("max_price must be positive (credits per device-hour)")
    if budget_micro == 0:
        raise BadRequest("budget must be positive (at least 0.000001 credits)")
    return {
        "device": _choice(device, "device", DEVICES),
        "min_memory_bytes": int(min_memory_gb * 2**30),
        "max_price_per_hour": max_price_micro,
        "budget": budget_micro,
        "deadline_ms": deadline_to_ms(deadline),
    }


def _splits(
    train: Any, validation: Any
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    x, y = _check_pair(train, "train")
    if validation is None:
        return (x, y), None
    xv, yv = _check_pair(validation, "validation")
    if xv.shape[1:] != x.shape[1:]:
        raise BadRequest(f"validation: x_val has sample shape {tuple(xv.shape[1:])}, x has {tuple(x.shape[1:])}")
    return (x, y), (xv, yv)


#: Seconds of training between checkpoints when ``checkpoint_every`` is not given (the broker's
#: default too), and the shortest time interval a job may ask for.
DEFAULT_CHECKPOINT_SECS = 30.0
MIN_CHECKPOINT_SECS = 1.0
_UNITS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "second": 1.0, "seconds": 1.0, "m": 60.0, "min": 60.0,
          "mins": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0, "hour": 3600.0, "hours": 3600.0}


def checkpoint_policy(every: int | str | _dt.timedelta | None) -> dict[str, float | int] | None:
    """``checkpoint_every`` → the wire's ``CheckpointEvery`` (``None``: the grid's default, every
    30 s of training). An ``int`` counts optimizer steps; a ``timedelta`` or a string such as
    ``"30s"``, ``"5 min"``, ``"1h"`` or ``"500 steps"`` says what it counts. A bare float is
    refused as ambiguous.

    A worker that is lost is paid up to its last verified checkpoint and the job resumes there:
    a longer interval redoes more work per failure, a shorter one moves more checkpoint bytes.

    Example::

        >>> checkpoint_policy(500), checkpoint_policy("2 min"), checkpoint_policy(None)
        ({'steps': 500}, {'secs': 120.0}, None)
    """
    if every is None:
        return None
    if isinstance(every, bool):
        raise BadRequest(f"checkpoint_every must be a number of steps or a duration, not {every!r}")
    if isinstance(every, int):
        if not 1 <= every < 2**64:
            raise BadRequest(f"checkpoint_every must be at least 1 step, not {every}")
        return {"steps": every}
    if isinstance(every, _dt.timedelta):
        secs = every.total_seconds()
    elif isinstance(every, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", every.lower())
        if m and m.group(2) in ("step", "steps"):
            if "." in m.group(1):
                raise BadRequest(f"checkpoint_every={every!r}: steps are whole numbers")
            return checkpoint_policy(int(m.group(1)))
        if not m or m.group(2) not in _UNITS:
            raise BadRequest(
                f"checkpoint_every={every!r} is not understood: say '30s', '5 min', '1h' or '500 steps'"
            )
        secs = float(m.group(1)) * _UNITS[m.group(2)]
    elif isinstance(every, float):
        raise BadRequest(
            f"checkpoint_every={every!r} is ambiguous: pass '{every:g}s' (or a timedelta) for seconds, "
            f"or an int for optimizer steps"
        )
    else:
        raise BadRequest(f"checkpoint_every must be steps (int) or a duration, not {type(every).__name__}")
    if not (math.isfinite(secs) and secs >= MIN_CHECKPOINT_SECS):
        raise BadRequest(f"checkpoint_every must be at least {MIN_CHECKPOINT_SECS:g} second, not {secs:g} s")
    return {"secs": secs}


#: ``submit`` arguments that shape the training but not the price: ``quote`` accepts (and
#: ignores) them, so the same keyword arguments serve both.
TRAINING_ONLY = frozenset(
    {"batch_size", "loss", "optimizer", "lr", "momentum", "weight_decay", "nesterov", "betas", "eps", "seed",
     "shuffle", "validation", "name", "checkpoint_every"}
)  # fmt: skip


def prepare_quote(
    model: torch.nn.Module,
    *,
    train: Any,
    epochs: Any,
    max_price: Any,
    budget: Any,
    min_memory_gb: Any = 0.0,
    device: Any = "any",
    deadline: Any = None,
    **training: Any,
) -> dict[str, Any]:
    """The ``job.quote`` request for what ``submit`` with the same arguments would ask: the
    job's constraints and its declared work (parameters × samples × epochs). Nothing is
    scripted, run or uploaded.

    Example::

        >>> import torch
        >>> q = prepare_quote(torch.nn.Linear(4, 2), train=(torch.zeros(8, 4), torch.zeros(8)),
        ...                   epochs=3, max_price=1, budget=1, batch_size=4)
        >>> q["work"]
        {'parameters': 10, 'samples': 8, 'epochs': 3}
    """
    unknown = sorted(set(training) - TRAINING_ONLY)
    if unknown:
        raise BadRequest(f"quote() got unknown arguments: {', '.join(unknown)}")
    if not isinstance(model, torch.nn.Module):
        raise InvalidModel(f"model must be a torch.nn.Module, not {type(model).__name__}")
    epochs = _positive_int(epochs, "epochs")
    requirements = _requirements(
        device=device, min_memory_gb=min_memory_gb, max_price=max_price, budget=budget, deadline=deadline
    )
    x, _ = _check_pair(train, "train")
    parameters = sum(p.numel() for p in model.parameters())
    if parameters == 0:
        raise InvalidModel("the model has no parameters to train")
    return {
        "requirements": requirements,
        "work": {"parameters": int(parameters), "samples": int(x.shape[0]), "epochs": epochs},
    }


def prepare_submission(
    model: torch.nn.Module,
    *,
    train: tuple[torch.Tensor, torch.Tensor],
    epochs: int,
    batch_size: int,
    max_price: float,
    budget: float,
    loss: str | None = None,
    optimizer: str = "adam",
    lr: float | None = None,
    momentum: float | None = None,
    weight_decay: float | None = None,
    nesterov: bool | None = None,
    betas: tuple[float, float] | None = None,
    eps: float | None = None,
    seed: int = 0,
    shuffle: bool = True,
    min_memory_gb: float = 0.0,
    device: str = "any",
    deadline: float | _dt.datetime | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    name: str | None = None,
    checkpoint_every: int | str | _dt.timedelta | None = None,
) -> Submission:
    """Check every argument of ``grid.submit``, run the :func:`preflight` trial step, and
    serialize the model and the data.

    Cheap checks come first, so a typo fails before the model is scripted. ``loss=None`` is
    resolved by :func:`resolve_loss`; optimizer settings left as ``None`` take torch.optim's
    defaults (:func:`optimizer_spec`).

    Example::

        sub = prepare_submission(torch.nn.Linear(4, 2), train=(torch.randn(8, 4), torch.randint(0, 2, (8,))),
                                 epochs=1, batch_size=4, max_price=1.0, budget=0.5)
    """
    if loss is not None:
        loss = _choice(loss, "loss", LOSSES)
    every = checkpoint_policy(checkpoint_every)
    optim = optimizer_spec(
        optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, betas=betas, eps=eps
    )
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise BadRequest(f"seed must be an integer in [0, 2**64), not {seed!r}")
    if not isinstance(shuffle, bool):
        raise BadRequest(f"shuffle must be True or False, not {shuffle!r}")
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"name must be a string, not {name!r}")
    requirements = _requirements(
        device=device, min_memory_gb=min_memory_gb, max_price=max_price, budget=budget, deadline=deadline
    )
    (x, y), val = _splits(train, validation)

    scripted = script_model(model)
    loss = resolve_loss(loss, model, scripted)
    parameters = sum(p.numel() for p in scripted.parameters())
    if parameters == 0:
        raise InvalidModel("the model has no parameters to train")
    tensors = {"x": x, "y": _targets_for(loss, y, "train")}
    if val is not None:
        tensors["x_val"], tensors["y_val"] = val[0], _targets_for(loss, val[1], "validation")
    model_bytes = _model_bytes(scripted)
    preflight(
        model_bytes,
        loss=loss,
        batch_size=batch_size,
        train=(x, tensors["y"]),
        validation=None if val is None else (tensors["x_val"], tensors["y_val"]),
    )

    return Submission(
        model_bytes=model_bytes,
        data_bytes=pack_data(tensors),
        training={
            "epochs": epochs,
            "batch_size": batch_size,
            "loss": loss,
            "optimizer": optim,
            "seed": seed,
            "shuffle": shuffle,
            **({} if every is None else {"checkpoint_every": every}),
        },
        requirements=requirements,
        work={"parameters": int(parameters), "samples": int(x.shape[0]), "epochs": epochs},
        name=name,
        state=manifest(scripted),
    )
