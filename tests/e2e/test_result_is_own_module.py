"""``job.result()`` through the real grid: the researcher's own module (their class, their
code, what they submitted) with the tensors the worker trained copied in. The result the worker
uploaded is a safetensors state file of tensors only: no module archive, nothing that runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from helium_grid._state import load_state
from safetensors.torch import load as load_safetensors
from torch import nn

pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")]


class Tagged(nn.Module):
    """BatchNorm (buffers the worker updates) and an exported method only this class has."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))

    @torch.jit.export
    def tag(self) -> str:
        return "researcher's own code"


def test_the_result_is_the_researchers_module_with_the_trained_tensors(
    connect: Callable[[str], Any], operator: Any
) -> None:
    operator.grant("rita", 10)
    rita = connect("rita")
    torch.manual_seed(2)
    x, y = torch.randn(96, 6), torch.randint(0, 3, (96,))
    model = Tagged()
    scripted = torch.jit.script(model)
    before = {k: v.clone() for k, v in scripted.state_dict().items()}
    job = rita.submit(scripted, train=(x, y), epochs=3, batch_size=16, lr=1e-2, max_price=10, budget=5)
    job.wait(progress=False, timeout=240)

    blob = job.result_bytes()
    assert not blob.startswith(b"PK") and b"PK\x03\x04" not in blob and b"code/" not in blob
    tensors = load_safetensors(blob)
    expected = {f"param/{n}" for n, _ in scripted.named_parameters()} | {f"buffer/{n}" for n, _ in scripted.named_buffers()}
    assert set(tensors) == expected

    trained = job.result()
    assert isinstance(trained, torch.jit.ScriptModule)
    assert trained.tag() == "researcher's own code"
    assert trained.code == scripted.code and trained.original_name == "Tagged"
    # Exactly the tensors the worker trained, parameters and buffers.
    for name, p in trained.named_parameters():
        assert torch.equal(p, tensors[f"param/{name}"]), name
    for name, b in trained.named_buffers():
        assert torch.equal(b, tensors[f"buffer/{name}"]), name
    assert trained.bn.num_batches_tracked.item() == 3 * 6
    assert not torch.equal(trained.fc1.weight, before["fc1.weight"]), "the weights were trained"

    # A handle from a fresh connection has no uploaded bytes: it fetches the job's own model.
    again = connect("rita").job(job.id).result()
    assert again.tag() == "researcher's own code"
    for (name, a), (_, b) in zip(again.state_dict().items(), trained.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_result_that_does_not_fit_the_module_is_refused() -> None:
    """What job.result() does with the downloaded bytes: strictly by name, shape and dtype."""
    from helium_grid import InvalidState
    from safetensors.torch import save

    module = torch.jit.script(Tagged())
    good = {f"param/{n}": p.detach().clone() for n, p in module.named_parameters()}
    good |= {f"buffer/{n}": b.clone() for n, b in module.named_buffers()}
    cases = {
        "missing": {k: v for k, v in good.items() if k != "buffer/bn.running_var"},
        "extra": {**good, "module.torchscript": torch.zeros(8, dtype=torch.uint8)},
        "reshaped": {**good, "param/fc1.weight": torch.zeros(6, 16)},
        "retyped": {**good, "param/fc1.weight": torch.zeros(16, 6, dtype=torch.float64)},
    }
    weight = module.fc1.weight.detach().clone()
    for name, tensors in cases.items():
        with pytest.raises(InvalidState):
            load_state(module, save(tensors))
        assert torch.equal(module.fc1.weight, weight), f"{name}: the module was left as it was"
    with pytest.raises(InvalidState):
        load_state(module, b"PK\x03\x04 a zip, not tensors")
    load_state(module, save({**good, "param/fc1.weight": torch.ones(16, 6)}))
    assert torch.equal(module.fc1.weight, torch.ones(16, 6))
