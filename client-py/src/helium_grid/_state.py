"""Tensor state files (``protocol/src/state.rs``): a job's result and checkpoints carry tensors
only, never a module, so no code a worker wrote ever runs on the researcher's machine.

At submit the client sends the model's *state manifest*: the name, role (``param`` or
``buffer``), dtype and shape of every entry of the scripted module's ``named_parameters()`` and
``named_buffers()``; the broker refuses a result or checkpoint that does not match it. A result
holds ``param/<name>`` and ``buffer/<name>`` tensors; :func:`load_state` copies them, strictly
by name, shape and dtype, into the researcher's own module loaded from the bytes they uploaded.

Example::

    scripted = torch.jit.script(model)
    entries = manifest(scripted)                 # sent in job.submit
    trained = load_state(scripted, result_bytes) # after the job: same module, trained tensors
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import InvalidModel, InvalidState

__all__ = ["PARAM", "BUFFER", "manifest", "load_state"]

PARAM = "param/"
BUFFER = "buffer/"

#: torch dtype → safetensors' spelling, the dtypes a state file may carry.
_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

# protocol/src/state.rs
MAX_STATE_ENTRIES = 4096
MAX_STATE_NAME_BYTES = 256


def _entries(module: torch.jit.ScriptModule) -> list[tuple[str, str, torch.Tensor]]:
    params = [(PARAM + n, "param", t) for n, t in module.named_parameters()]
    buffers = [(BUFFER + n, "buffer", t) for n, t in module.named_buffers()]
    return params + buffers


def manifest(module: torch.jit.ScriptModule) -> list[dict[str, Any]]:
    """The ``state`` field of ``job.submit``: one ``{name, role, dtype, shape}`` per parameter
    and buffer, refusing what a state file cannot carry (a dtype outside the safetensors menu,
    too many entries, names too long).

    Example::

        >>> manifest(torch.jit.script(torch.nn.Linear(2, 1)))[0]
        {'name': 'weight', 'role': 'param', 'dtype': 'F32', 'shape': [1, 2]}
    """
    out = []
    for key, role, t in _entries(module):
        name = key.split("/", 1)[1]
        dtype = _DTYPES.get(t.dtype)
        if dtype is None:
            raise InvalidModel(f"the model's {role} {name} has dtype {t.dtype}, which the grid cannot carry")
        if len(name.encode()) > MAX_STATE_NAME_BYTES:
            raise InvalidModel(f"the model's {role} name {name[:40]}… is over {MAX_STATE_NAME_BYTES} bytes")
        out.append({"name": name, "role": role, "dtype": dtype, "shape": [int(d) for d in t.shape]})
    if len(out) > MAX_STATE_ENTRIES:
        raise InvalidModel(f"the model has {len(out)} parameters and buffers, over the grid's {MAX_STATE_ENTRIES}")
    return out


def load_state(module: torch.jit.ScriptModule, blob: bytes) -> torch.jit.ScriptModule:
    """Copies the tensors of a result state file into ``module`` (in place) and returns it.

    ``blob`` is parsed as safetensors (a JSON header and raw tensor bytes: nothing is
    executed); every parameter and buffer of ``module`` must be there with its shape and dtype,
    and nothing else may be, or :class:`~helium_grid.InvalidState` is raised and ``module`` is
    left as it was.

    Example::

        model = load_state(torch.jit.load("model.pt"), open("result.safetensors", "rb").read())
    """
    from safetensors.torch import load as load_safetensors  # noqa: PLC0415 (heavy, optional path)

    try:
        tensors = load_safetensors(blob)
    except Exception as e:
        raise InvalidState(f"the result is not a safetensors file: {e}") from e
    live = {key: t for key, _, t in _entries(module)}
    missing = sorted(live.keys() - tensors.keys())
    extra = sorted(tensors.keys() - live.keys())
    if missing or extra:
        raise InvalidState(f"the result does not fit the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for key, t in live.items():
        got = tensors[key]
        if got.shape != t.shape or got.dtype != t.dtype:
            raise InvalidState(
                f"the result's {key} is {got.dtype} {tuple(got.shape)}, the model's {t.dtype} {tuple(t.shape)}"
            )
    with torch.no_grad():
        for key, t in live.items():
            t.copy_(tensors[key])
    return module
