"""Argument checks and serialization of grid.submit, all before any network traffic."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helium_grid import BadRequest, InvalidModel
from helium_grid._submission import pack_data, prepare_submission, script_model
from safetensors.torch import load as load_safetensors


def mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


class NumpyForward(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return torch.from_numpy(np.tanh(self.lin(x).detach().numpy()))


X = torch.randn(10, 4)
Y = torch.randint(0, 3, (10,))
GOOD = dict(train=(X, Y), epochs=2, batch_size=4, lr=0.01, max_price=1.0, budget=0.5)


def test_a_good_submission_serializes_model_data_and_spec() -> None:
    model = mlp()
    sub = prepare_submission(model, **GOOD, seed=7, name="t", deadline=60, validation=(X[:4], Y[:4]))
    loaded = torch.jit.load(io.BytesIO(sub.model_bytes))
    assert torch.allclose(loaded(X), model(X))
    data = load_safetensors(sub.data_bytes)
    assert set(data) == {"x", "y", "x_val", "y_val"}
    assert torch.equal(data["x"], X) and data["y"].dtype == torch.int64
    assert sub.work == {"parameters": 4 * 8 + 8 + 8 * 3 + 3, "samples": 10, "epochs": 2}
    assert sub.training["optimizer"] == {
        "kind": "adam",
        "lr": 0.01,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "nesterov": False,
        "beta1": 0.9,
        "beta2": 0.999,
        "eps": 1e-8,
    }
    assert sub.training["loss"] == "cross_entropy" and sub.training["seed"] == 7
    req = sub.requirements
    assert req["max_price_per_hour"] == 1_000_000 and req["budget"] == 500_000 and req["device"] == "any"
    assert req["deadline_ms"] > 0
    body = sub.submit_body(model_upload="u1", data_upload="u2")
    assert body["model_upload"] == "u1" and body["name"] == "t"


def test_views_of_one_buffer_are_saved_separately() -> None:
    big = torch.arange(20.0).reshape(10, 2)
    blob = pack_data({"x": big[:6], "x_val": big[6:], "y": torch.zeros(6)})
    back = load_safetensors(blob)
    assert torch.equal(back["x_val"], big[6:])


def test_script_modules_and_traces_pass_through() -> None:
    traced = torch.jit.trace(mlp(), X)
    assert script_model(traced) is traced
    sub = prepare_submission(traced, **GOOD)
    assert torch.jit.load(io.BytesIO(sub.model_bytes))(X).shape == (10, 3)


def test_unscriptable_model_is_a_clear_invalid_model() -> None:
    with pytest.raises(InvalidModel, match=r"torch\.jit\.trace") as info:
        prepare_submission(NumpyForward(), **GOOD)
    assert "NumpyForward" in str(info.value)
    with pytest.raises(InvalidModel):
        prepare_submission("not a model", **GOOD)  # type: ignore[arg-type]


def test_module_loss_needs_training_loss() -> None:
    with pytest.raises(InvalidModel, match="training_loss"):
        prepare_submission(mlp(), **{**GOOD, "loss": "module"})


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"train": (X, Y[:9])}, "same number of samples"),
        ({"train": (X.numpy(), Y)}, "torch.Tensor"),
        ({"train": (X,)}, "pair"),
        ({"train": (X[:0], Y[:0])}, "no samples"),
        ({"validation": (X[:3], Y[:2])}, "same number of samples"),
        ({"validation": (torch.randn(3, 5), Y[:3])}, "sample shape"),
        ({"loss": "hinge"}, "unknown loss 'hinge'"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"device": "tpu"}, "unknown device"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"lr": 0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": -0.1}, "momentum"),
        ({"budget": 0}, "budget"),
        ({"budget": -1}, "budget"),
        ({"max_price": 0}, "max_price"),
        ({"deadline": -3}, "deadline"),
        ({"seed": -1}, "seed"),
        ({"loss": "mse"}, "floating-point targets"),
        ({"loss": "nll", "train": (X, Y.float())}, "integer class targets"),
    ],
)
def test_bad_arguments_fail_before_any_network(change: dict, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        prepare_submission(mlp(), **{**GOOD, **change})


def test_int32_labels_are_widened_for_class_losses() -> None:
    sub = prepare_submission(mlp(), **{**GOOD, "train": (X, Y.to(torch.int32))})
    assert load_safetensors(sub.data_bytes)["y"].dtype == torch.int64


def test_submitting_does_not_change_the_model() -> None:
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepare_submission(model, **GOOD)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
