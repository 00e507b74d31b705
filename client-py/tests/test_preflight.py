"""The trial step of ``grid.submit`` (``preflight``), the default loss and the optimizer
defaults: what cannot train is refused on the caller's CPU, before any network traffic, with
a message that names the shapes; what can train passes, and the caller's model is untouched."""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helium_grid import BadRequest, InvalidData, InvalidModel
from helium_grid._submission import OPTIMIZER_DEFAULTS, optimizer_spec, prepare_submission
from torch import nn

N = 100
BASE: dict[str, Any] = dict(epochs=1, batch_size=32, max_price=1.0, budget=1.0)


def mlp(outputs: int, inputs: int = 8) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, 16), nn.ReLU(), nn.Linear(16, outputs))


def x_data() -> torch.Tensor:
    return torch.randn(N, 8, generator=torch.Generator().manual_seed(1))


def labels(classes: int = 10) -> torch.Tensor:
    return torch.randint(0, classes, (N,), generator=torch.Generator().manual_seed(2))


class Regression(nn.Module):
    """A regression head with its own MSE ``training_loss``: one output per row, shape (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    @torch.jit.export
    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.forward(x), y)


class LossIgnoresModel(Regression):
    @torch.jit.export
    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (y - y.mean()).pow(2).mean()


class LossNotExported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(self.forward(x), y)


class LossNotScalar(Regression):
    @torch.jit.export
    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.forward(x) - y).pow(2)


class Detached(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x).detach()


class Overflows(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) / 0.0


class Frozen(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 10).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Noisy(nn.Module):
    """Dropout draws from torch's RNG; BatchNorm updates buffers in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 10)
        self.bn = nn.BatchNorm1d(10)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.bn(self.lin(x)))


class WritesItsInput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.mul_(0.0)
        return self.lin(x)


def single_output_flat() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 1), nn.Flatten(0))


def log_softmax_mlp() -> nn.Module:
    return nn.Sequential(mlp(10), nn.LogSoftmax(dim=1))


def with_label(y: torch.Tensor, value: int) -> torch.Tensor:
    y = y.clone()
    y[57] = value  # beyond the trial rows: the range check reads the whole split
    return y


X = x_data()
Y = labels()
NAN_X = X.clone()
NAN_X[3, 2] = float("nan")

# (case, model factory, submit arguments, error class, facts the message must state)
REFUSALS: list[tuple[str, Callable[[], nn.Module], dict[str, Any], type[Exception], list[str]]] = [
    (
        "mse output (N, 1) against y (N,)",
        lambda: mlp(1),
        {"train": (X, torch.randn(N)), "loss": "mse"},
        InvalidData,
        ["mse:", "output on x[:32] has shape (32, 1) (float32)", "y[:32] has shape (32,) (float32)",
         "broadcast to (32, 32)", "y.unsqueeze(1)", "outputs (N,)"],
    ),
    (
        "l1 shapes that do not match",
        lambda: mlp(3),
        {"train": (X, torch.randn(N, 2)), "loss": "l1"},
        InvalidData,
        ["l1:", "has shape (32, 3)", "y[:32] has shape (32, 2)", "do not match"],
    ),
    (
        "bce_with_logits output (N,) against y (N, 1)",
        single_output_flat,
        {"train": (X, torch.rand(N, 1)), "loss": "bce_with_logits"},
        InvalidData,
        ["bce_with_logits:", "has shape (32,)", "y[:32] has shape (32, 1)", "broadcast to (32, 32)", "y.squeeze(1)"],
    ),
    (
        "cross_entropy over a single output (N, 1)",
        lambda: mlp(1),
        {"train": (X, torch.zeros(N, dtype=torch.long))},
        InvalidModel,
        ["cross_entropy over a single output", "has shape (32, 1) (float32)", "(N, classes)"],
    ),
    (
        "cross_entropy over a single output (N,)",
        single_output_flat,
        {"train": (X, torch.zeros(N, dtype=torch.long))},
        InvalidModel,
        ["cross_entropy over a single output", "has shape (32,) (float32)"],
    ),
    (
        "class label 10 of a 10-class output",
        lambda: mlp(10),
        {"train": (X, with_label(Y, 10))},
        InvalidData,
        ["cross_entropy:", "labels from 0 to 10", "outputs 10 classes", "(32, 10)", "0…9", "11 outputs"],
    ),
    (
        "negative class label",
        lambda: mlp(10),
        {"train": (X, with_label(Y, -1))},
        InvalidData,
        ["cross_entropy:", "labels from -1 to 9", "0…9"],
    ),
    (
        "nll label out of range",
        log_softmax_mlp,
        {"train": (X, Y + 1), "loss": "nll"},
        InvalidData,
        ["nll:", "labels from 1 to 10", "outputs 10 classes"],
    ),
    (
        "class labels shaped (N, 1)",
        lambda: mlp(10),
        {"train": (X, Y[:, None])},
        InvalidData,
        ["cross_entropy:", "shape (32, 10)", "shape (32,)", "has shape (32, 1) (int64)", "y.squeeze(1)"],
    ),
    (
        "class probabilities of another shape",
        lambda: mlp(10),
        {"train": (X, torch.rand(N, 9))},
        InvalidData,
        ["cross_entropy:", "has shape (32, 10)", "y[:32] has shape (32, 9)", "probabilities"],
    ),
    (
        "non-finite data",
        lambda: mlp(10),
        {"train": (NAN_X, Y)},
        InvalidData,
        ["loss on x[:32] is nan", "x[:32] holds 1 NaN or infinite values"],
    ),
    (
        "non-finite model output",
        Overflows,
        {"train": (X, Y)},
        InvalidModel,
        ["loss on x[:32] is nan", "are finite"],
    ),
    (
        "a forward that detaches its output",
        Detached,
        {"train": (X, Y)},
        InvalidModel,
        ["depends on none of the model's trainable parameters"],
    ),
    (
        "a training_loss that ignores the model",
        LossIgnoresModel,
        {"train": (X, torch.randn(N, 1))},
        InvalidModel,
        ["module:", "depends on none of the model's trainable parameters"],
    ),
    (
        "a training_loss that is not a scalar",
        LossNotScalar,
        {"train": (X, torch.randn(N, 1))},
        InvalidModel,
        ["training_loss(x, y) must return a float scalar", "(32, 1)"],
    ),
    (
        "every parameter frozen",
        Frozen,
        {"train": (X, Y)},
        InvalidModel,
        ["requires_grad=False"],
    ),
    (
        "a forward that fails on the data",
        lambda: mlp(10, inputs=7),
        {"train": (X, Y)},
        InvalidModel,
        ["forward failed on x[:32] (float32 of shape (32, 8))", "mat1 and mat2 shapes cannot be multiplied"],
    ),
    (
        "validation targets that would broadcast",
        lambda: mlp(1),
        {"train": (X, torch.randn(N, 1)), "validation": (X[:20], torch.randn(20)), "loss": "mse"},
        InvalidData,
        ["mse:", "x_val[:20] has shape (20, 1)", "y_val[:20] has shape (20,)", "broadcast to (20, 20)",
         "y_val.unsqueeze(1)"],
    ),
    (
        "validation labels out of range",
        lambda: mlp(10),
        {"train": (X, Y), "validation": (X[:20], Y[:20] + 5)},
        InvalidData,
        ["y_val holds class labels from 5 to 14", "outputs 10 classes"],
    ),
]


@pytest.mark.parametrize(
    ("make", "change", "error", "facts"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_what_cannot_train_is_refused_with_the_shapes(
    make: Callable[[], nn.Module], change: dict[str, Any], error: type[Exception], facts: list[str]
) -> None:
    with pytest.raises(error) as info:
        prepare_submission(make(), **{**BASE, **change})
    message = str(info.value)
    print(f"{type(info.value).__name__}: {message}")
    for fact in facts:
        assert fact in message, f"{fact!r} not in {message!r}"


def test_float_labels_for_cross_entropy_are_refused() -> None:
    with pytest.raises(BadRequest, match=re.escape("got float32 of shape (100,) (use y.long())")):
        prepare_submission(mlp(10), **BASE, train=(X, Y.float()))


class Segmenter(nn.Module):
    """Per-position classes: output (N, classes, length), labels (N, length)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(1))


GOOD_JOBS: list[tuple[str, Callable[[], nn.Module], dict[str, Any]]] = [
    ("cross_entropy labels", lambda: mlp(10), {"train": (X, Y)}),
    ("cross_entropy int32 labels with ignored rows", lambda: mlp(10), {"train": (X, with_label(Y, -100).int())}),
    ("cross_entropy probabilities", lambda: mlp(10), {"train": (X, torch.softmax(torch.randn(N, 10), 1))}),
    ("cross_entropy per position", Segmenter, {"train": (X, torch.randint(0, 4, (N, 8)))}),
    ("nll", log_softmax_mlp, {"train": (X, Y), "loss": "nll"}),
    ("mse (N, 1)", lambda: mlp(1), {"train": (X, torch.randn(N, 1)), "loss": "mse"}),
    ("mse (N,)", single_output_flat, {"train": (X, torch.randn(N)), "loss": "mse"}),
    ("l1 float64", lambda: mlp(3).double(), {"train": (X.double(), torch.randn(N, 3)), "loss": "l1"}),
    ("bce_with_logits", lambda: mlp(1), {"train": (X, torch.rand(N, 1)), "loss": "bce_with_logits"}),
    ("module", Regression, {"train": (X, torch.randn(N, 1)), "validation": (X[:10], torch.randn(10, 1))}),
    ("dropout and batchnorm", Noisy, {"train": (X, Y), "validation": (X[:10], Y[:10])}),
]


@pytest.mark.parametrize(("make", "change"), [g[1:] for g in GOOD_JOBS], ids=[g[0] for g in GOOD_JOBS])
def test_what_can_train_passes(make: Callable[[], nn.Module], change: dict[str, Any]) -> None:
    prepare_submission(make(), **{**BASE, **change})


def test_the_trial_leaves_the_callers_model_data_and_rng_alone() -> None:
    for mode in (True, False):
        model = Noisy().train(mode)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        rng = torch.get_rng_state()
        prepare_submission(model, **BASE, train=(X, Y))
        assert model.training is mode
        assert all(p.grad is None for p in model.parameters())
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
        assert torch.equal(torch.get_rng_state(), rng)
    x = X.clone()
    prepare_submission(WritesItsInput(), **BASE, train=(x, Y))
    assert torch.equal(x, X)


def test_the_trial_trains_even_when_called_without_autograd() -> None:
    with torch.no_grad():
        prepare_submission(mlp(10), **BASE, train=(X, Y))
    with torch.inference_mode():
        x, y = torch.randn(N, 8), torch.randint(0, 10, (N,))
        prepare_submission(mlp(10), **BASE, train=(x, y))


def test_the_trial_runs_on_at_most_one_batch_of_64_rows() -> None:
    with pytest.raises(InvalidData, match=re.escape("x[:64] has shape (64, 1)")):
        prepare_submission(mlp(1), **{**BASE, "batch_size": 500}, train=(X, torch.randn(N)), loss="mse")
    with pytest.raises(InvalidData, match=re.escape("x[:5] has shape (5, 1)")):
        prepare_submission(mlp(1), **{**BASE, "batch_size": 5}, train=(X, torch.randn(N)), loss="mse")


# -- the default loss --------------------------------------------------------------------------


def loss_of(model: nn.Module, **change: Any) -> str:
    train = change.pop("train", (X, torch.randn(N, 1)))
    return prepare_submission(model, **BASE, train=train, **change).training["loss"]


def test_a_model_that_exports_training_loss_trains_with_it_unless_another_is_named() -> None:
    assert loss_of(Regression()) == "module"
    assert loss_of(torch.jit.script(Regression())) == "module"
    assert loss_of(Regression(), loss="mse") == "mse"
    assert loss_of(mlp(10), train=(X, Y)) == "cross_entropy"


def test_a_training_loss_torchscript_dropped_is_refused_not_replaced() -> None:
    with pytest.raises(InvalidModel, match=r"LossNotExported defines training_loss .* @torch\.jit\.export"):
        loss_of(LossNotExported())
    with pytest.raises(InvalidModel, match="@torch.jit.export"):
        loss_of(LossNotExported(), loss="module")
    assert loss_of(LossNotExported(), loss="mse") == "mse"


def test_the_uploaded_model_keeps_training_loss() -> None:
    sub = prepare_submission(Regression(), **BASE, train=(X, torch.randn(N, 1)))
    loaded = torch.jit.load(io.BytesIO(sub.model_bytes))
    assert loaded.training_loss(X[:4], torch.zeros(4, 1)).dim() == 0


# -- optimizer defaults ------------------------------------------------------------------------


def torch_defaults(kind: str) -> dict[str, Any]:
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[kind]
    return cls([nn.Parameter(torch.zeros(1))]).defaults


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_optimizer_defaults_are_torch_optims(kind: str) -> None:
    want = torch_defaults(kind)
    sent = prepare_submission(mlp(10), **BASE, train=(X, Y), optimizer=kind).training["optimizer"]
    assert sent["kind"] == kind
    assert sent["lr"] == want["lr"] and sent["weight_decay"] == want["weight_decay"]
    if kind == "sgd":
        assert sent["momentum"] == want["momentum"] and sent["nesterov"] == want["nesterov"]
        assert want["dampening"] == 0  # the trainer has no dampening
    else:
        assert (sent["beta1"], sent["beta2"]) == want["betas"] and sent["eps"] == want["eps"]
        assert not want["amsgrad"]
    assert set(OPTIMIZER_DEFAULTS[kind]) <= set(want)
    assert all(OPTIMIZER_DEFAULTS[kind][k] == want[k] for k in OPTIMIZER_DEFAULTS[kind])


def test_optimizer_settings_pass_through_validated() -> None:
    assert optimizer_spec("sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4) == {
        "kind": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "nesterov": True,
        "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
    }  # fmt: skip
    spec = optimizer_spec("adamw", betas=(0.8, 0.99), eps=1e-6, weight_decay=0)
    assert (spec["beta1"], spec["beta2"], spec["eps"], spec["weight_decay"]) == (0.8, 0.99, 1e-6, 0.0)
    assert optimizer_spec("adam", momentum=0)["momentum"] == 0.0  # what it carries anyway


@pytest.mark.parametrize(
    ("kind", "settings", "match"),
    [
        ("adam", {"momentum": 0.9}, "'adam' has no momentum; momentum= applies to sgd only"),
        ("adamw", {"nesterov": True}, "'adamw' has no nesterov"),
        ("sgd", {"betas": (0.8, 0.9)}, "'sgd' has no betas; betas= applies to adam and adamw only"),
        ("sgd", {"eps": 1e-6}, "'sgd' has no eps"),
        ("sgd", {"nesterov": True}, "nesterov=True needs a momentum > 0"),
        ("sgd", {"nesterov": "yes"}, "nesterov must be True or False"),
        ("sgd", {"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
        ("adam", {"betas": (0.9, 1.0)}, r"betas\[1\] must be in \[0, 1\)"),
        ("adam", {"betas": 0.9}, "betas must be a pair"),
        ("adam", {"eps": 0}, "eps must be positive"),
        ("adam", {"lr": -1}, "lr must be positive"),
        ("adam", {"weight_decay": -1}, "weight_decay must not be negative"),
        ("lbfgs", {}, "unknown optimizer 'lbfgs'"),
    ],
)
def test_bad_optimizer_settings_are_refused(kind: str, settings: dict[str, Any], match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        prepare_submission(mlp(10), **BASE, train=(X, Y), optimizer=kind, **settings)
