"""The trainer child (``helium-worker train --job-dir DIR``) against a plain PyTorch loop.

DESIGN §7: "trained on the grid must equal trained at home". Each test builds a job directory
(spec.json, TorchScript model.pt, data.safetensors), runs the real binary, and compares
``result.safetensors`` (tensors only), loaded into the job's own ``model.pt`` as ``job.result()``
does, with the same training done by torch.optim in this process. No grid is needed.

The batch order, the optimizers and the loop are ported in ``athome.py`` (splitmix64 +
Fisher–Yates, as in ``worker-actors/src/trainer/data.rs``), so shuffled runs can be reproduced
exactly at home; the fault tests reuse them for their reference runs.

Environment: ``HELIUM_BIN_DIR`` (default ``<repo>/target/release``); a missing binary skips
these tests unless ``HELIUM_REQUIRE_BINARIES=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helium_grid._state import load_state
from safetensors.torch import load_file, save_file
from torch import nn

from athome import epoch_order, train_loop

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("HELIUM_BIN_DIR", REPO / "target" / "release"))
RUN_TIMEOUT_S = 300

pytestmark = [
    pytest.mark.timeout(600),
    # torch.jit is deprecated upstream, but TorchScript is the format the grid carries.
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
]


# -- models and job directories ----------------------------------------------------------------


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class LogSoftmaxMlp(Mlp):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc2(F.relu(self.fc1(x))), dim=1)


class OwnLoss(Mlp):
    """Uses loss ``module``: the trainer calls this exported method instead of a menu loss."""

    @torch.jit.export
    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.smooth_l1_loss(self.forward(x), y) + 0.01 * self.fc1.weight.pow(2).sum()


class Chatty(Mlp):
    """TorchScript has ``print``; it must not corrupt the JSON lines on stdout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        print("hello from the model", x.shape)
        return self.fc2(F.relu(self.fc1(x)))


class Regularised(nn.Module):
    """BatchNorm (buffers) and Dropout (randomness) make resuming exactly non-trivial."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.2)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.relu(self.bn(self.fc1(x)))))


def optimizer_spec(kind: str, **kw: object) -> dict:
    return {"kind": kind, "lr": 0.05, **kw}


def make_job(
    job: Path,
    model: nn.Module,
    data: dict[str, torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    loss: str = "cross_entropy",
    optimizer: dict | None = None,
    seed: int = 0,
    shuffle: bool = False,
    checkpoint_every: dict | None = None,
) -> Path:
    job.mkdir(parents=True, exist_ok=True)
    torch.jit.script(model).save(str(job / "model.pt"))
    save_file({k: v.contiguous() for k, v in data.items()}, str(job / "data.safetensors"))
    spec = {
        "epochs": epochs,
        "batch_size": batch_size,
        "loss": loss,
        "optimizer": optimizer or optimizer_spec("adam"),
        "seed": seed,
        "shuffle": shuffle,
    }
    if checkpoint_every is not None:
        spec["checkpoint_every"] = checkpoint_every
    (job / "spec.json").write_text(json.dumps(spec))
    return job


def classification_data(n: int = 64, gen_seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(gen_seed)
    return {"x": torch.randn(n, 8, generator=g), "y": torch.randint(0, 3, (n,), generator=g)}


# -- running the binary ------------------------------------------------------------------------


def worker_bin() -> Path:
    path = BIN_DIR / "helium-worker"
    if not path.exists():
        message = f"{path} not built (cargo build -p helium-worker-actors, or set HELIUM_BIN_DIR)"
        if os.environ.get("HELIUM_REQUIRE_BINARIES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


class Run:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.stderr = proc.stderr
        self.events = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["event"] == kind]


def train(job: Path, *extra: str) -> Run:
    argv = [str(worker_bin()), "train", "--job-dir", str(job), "--device", "cpu", "--threads", "1", *extra]
    # A clean environment proves the binary finds libtorch by itself (rpath).
    env = {"PATH": "/usr/bin:/bin", "RUST_LOG": "warn"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)
    run = Run(proc)
    assert "panicked" not in run.stderr, run.stderr
    return run


def train_ok(job: Path) -> Run:
    run = train(job)
    assert run.code == 0 and run.of("completed"), f"exit {run.code}\n{run.events}\n{run.stderr}"
    return run


# -- the same training at home ------------------------------------------------------------------

def train_at_home(job: Path, model: nn.Module) -> tuple[nn.Module, list[float]]:
    """A plain PyTorch loop with the job's spec, starting from the weights in model.pt."""
    spec = json.loads((job / "spec.json").read_text())
    data = load_file(str(job / "data.safetensors"))
    model.load_state_dict(torch.jit.load(str(job / "model.pt")).state_dict())
    return model, train_loop(model, data["x"], data["y"], spec)


def trained_module(job: Path) -> torch.jit.ScriptModule:
    """The job's own model.pt with the trainer's result tensors copied in, strictly."""
    return load_state(torch.jit.load(str(job / "model.pt")), (job / "result.safetensors").read_bytes())


def assert_same_parameters(job: Path, home: nn.Module, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    trained = dict(trained_module(job).named_parameters())
    expected = dict(home.named_parameters())
    assert trained.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(trained[name], value.detach(), rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


# -- tests -------------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": optimizer_spec("sgd", momentum=0.9, weight_decay=0.01),
    "sgd_nesterov": optimizer_spec("sgd", momentum=0.8, weight_decay=0.001, nesterov=True),
    "adam": optimizer_spec("adam", weight_decay=0.01),
    "adamw": optimizer_spec("adamw", weight_decay=0.1, beta1=0.8, beta2=0.99),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_full_batch_training_matches_torch_optim(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    epochs = 8
    job = make_job(tmp_path / "job", Mlp(), classification_data(), epochs=epochs, batch_size=64,
                   optimizer=OPTIMIZERS[name])
    run = train_ok(job)

    (started,) = run.of("started")
    assert started == {"event": "started", "device": "cpu", "parameters": 8 * 4 + 4 + 4 * 3 + 3, "samples": 64}
    progress = run.of("progress")
    assert [p["epoch"] for p in progress] == list(range(1, epochs + 1))
    assert all(p["epochs"] == epochs for p in progress)
    assert [p["step"] for p in progress] == list(range(1, epochs + 1)), "full batch: one step per epoch"
    assert progress[-1]["loss"] < progress[0]["loss"]
    assert run.events[-1] == {"event": "completed"}

    home, losses = train_at_home(job, Mlp())
    assert_same_parameters(job, home)
    assert [p["loss"] for p in progress] == pytest.approx(losses, rel=1e-5)


def regression_data(n: int, binary: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(n, 8, generator=g)
    y = (torch.rand(n, 3, generator=g) > 0.5).float() if binary else torch.randn(n, 3, generator=g)
    return {"x": x, "y": y}


@pytest.mark.parametrize(
    ("loss", "model_cls", "data"),
    [
        ("mse", Mlp, lambda: regression_data(48, binary=False)),
        ("l1", Mlp, lambda: regression_data(48, binary=False)),
        ("bce_with_logits", Mlp, lambda: regression_data(48, binary=True)),
        ("nll", LogSoftmaxMlp, lambda: classification_data(48)),
        ("module", OwnLoss, lambda: regression_data(48, binary=False)),
    ],
)
def test_each_loss_matches_torch(tmp_path: Path, loss: str, model_cls: type[nn.Module], data) -> None:
    torch.manual_seed(3)
    job = make_job(tmp_path / "job", model_cls(), data(), epochs=4, batch_size=48, loss=loss)
    run = train_ok(job)
    home, losses = train_at_home(job, model_cls())
    assert_same_parameters(job, home)
    assert [p["loss"] for p in run.of("progress")] == pytest.approx(losses, rel=1e-5)


def test_shuffled_minibatches_follow_the_documented_order(tmp_path: Path) -> None:
    """50 rows in batches of 16 (last batch 2 rows), shuffled by (seed, epoch): the Python port
    of the order reproduces the grid's training step for step."""
    torch.manual_seed(4)
    job = make_job(tmp_path / "job", Mlp(), classification_data(50), epochs=3, batch_size=16, shuffle=True,
                   seed=12345, optimizer=OPTIMIZERS["sgd"])
    run = train_ok(job)
    assert [p["step"] for p in run.of("progress")] == [4, 8, 12]
    home, losses = train_at_home(job, Mlp())
    assert_same_parameters(job, home)
    assert [p["loss"] for p in run.of("progress")] == pytest.approx(losses, rel=1e-5)
    assert epoch_order(50, 12345, 1) != epoch_order(50, 12345, 2)
    # Pinned on both sides (worker-actors/src/trainer/data.rs has the same values).
    assert epoch_order(10, 42, 1) == [1, 4, 6, 8, 5, 2, 7, 3, 9, 0]


def test_checkpoints_follow_the_step_policy(tmp_path: Path) -> None:
    """50 rows in batches of 16: 4 steps an epoch, 12 in 3 epochs. Every 5 steps gives
    checkpoints after steps 5 and 10, mid-epoch both; none at step 12, where the result stands."""
    torch.manual_seed(7)
    job = make_job(tmp_path / "job", Mlp(), classification_data(50), epochs=3, batch_size=16, shuffle=True,
                   checkpoint_every={"steps": 5})
    run = train_ok(job)
    assert [(c["step"], c["epoch"]) for c in run.of("checkpoint")] == [(5, 1), (10, 2)]
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["10.safetensors", "5.safetensors"]
    kinds = [e["event"] for e in run.events]
    assert kinds.index("checkpoint") > kinds.index("progress"), "step 5 comes after epoch 1's progress"
    assert kinds[-1] == "completed"


def resume_from(tmp_path: Path, name: str, model: nn.Module, data: dict, checkpoint: Path, **kw) -> Run:
    resumed = make_job(tmp_path / name, model, data, **kw)
    shutil.copy(checkpoint, resumed / "resume.safetensors")
    return train_ok(resumed)


def assert_same_result(a: Path, b: Path) -> None:
    x, y = trained_module(a), trained_module(b)
    for (name, p), (_, q) in zip(x.state_dict().items(), y.state_dict().items(), strict=True):
        assert torch.equal(p, q), name  # parameters and BatchNorm buffers, bit for bit


def test_resume_continues_the_same_trajectory(tmp_path: Path) -> None:
    """Resumed from a checkpoint at an epoch's end or in the middle of one, a run (BatchNorm,
    Dropout, shuffled minibatches) ends bit for bit where the uninterrupted run ends."""
    torch.manual_seed(5)
    model, data = Regularised(), classification_data(50)
    kw = dict(epochs=4, batch_size=16, shuffle=True, seed=9, optimizer=OPTIMIZERS["adam"])
    whole = make_job(tmp_path / "whole", model, data, checkpoint_every={"steps": 6}, **kw)
    run_whole = train_ok(whole)
    assert [(c["step"], c["epoch"]) for c in run_whole.of("checkpoint")] == [(6, 1), (12, 3)]
    losses = [p["loss"] for p in run_whole.of("progress")]

    mid = resume_from(tmp_path, "mid", model, data, whole / "checkpoints" / "6.safetensors", **kw)
    assert [p["epoch"] for p in mid.of("progress")] == [2, 3, 4]
    assert [p["step"] for p in mid.of("progress")] == [8, 12, 16]
    assert [p["loss"] for p in mid.of("progress")] == losses[1:], "epoch 2's mean includes its steps before 6"
    assert_same_result(whole, tmp_path / "mid")

    boundary = resume_from(tmp_path, "boundary", model, data, whole / "checkpoints" / "12.safetensors", **kw)
    assert [p["epoch"] for p in boundary.of("progress")] == [4]
    assert [p["loss"] for p in boundary.of("progress")] == losses[3:]
    assert_same_result(whole, tmp_path / "boundary")

    ck = load_file(str(whole / "checkpoints" / "6.safetensors"))
    assert ck["meta/step"].item() == 6 and ck["meta/epoch"].item() == 1
    assert ck["meta/loss_sum"].dtype == torch.float64 and ck["meta/loss_sum"].item() > 0
    assert {"param/fc1.weight", "buffer/bn.running_mean", "buffer/bn.num_batches_tracked",
            "optim/exp_avg/fc1.weight", "optim/exp_avg_sq/bn.bias", "optim/step/fc2.bias"} <= ck.keys()
    assert ck["buffer/bn.num_batches_tracked"].item() == 6


def assert_tensors_only(path: Path) -> None:
    """A state file holds named tensors of the documented prefixes, and no module archive."""
    raw = path.read_bytes()
    assert b"PK\x03\x04" not in raw and b"constants.pkl" not in raw and b"code/" not in raw
    names = load_file(str(path)).keys()
    assert names and all(n.split("/", 1)[0] in {"param", "buffer", "optim", "meta"} for n in names), names


def test_checkpoints_and_results_hold_tensors_only(tmp_path: Path) -> None:
    torch.manual_seed(4)
    job = make_job(tmp_path / "job", Regularised(), classification_data(50), epochs=2, batch_size=16,
                   checkpoint_every={"steps": 3})
    train_ok(job)
    assert not (job / "result.pt").exists()
    assert_tensors_only(job / "result.safetensors")
    assert {n.split("/", 1)[0] for n in load_file(str(job / "result.safetensors"))} == {"param", "buffer"}
    for ck in (job / "checkpoints").iterdir():
        assert_tensors_only(ck)


def test_a_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path: Path) -> None:
    """Resume loads the job's own model.pt and copies the checkpoint in strictly: a missing,
    extra or reshaped tensor fails the run in words, never loads anything else."""
    torch.manual_seed(3)
    model, data = Regularised(), classification_data(50)
    first = make_job(tmp_path / "first", model, data, epochs=2, batch_size=16, checkpoint_every={"steps": 3})
    train_ok(first)
    ck = load_file(str(first / "checkpoints" / "3.safetensors"))
    cases = {
        "missing": ({k: v for k, v in ck.items() if k != "buffer/bn.running_mean"}, "it lacks buffer/bn.running_mean"),
        "extra": ({**ck, "param/evil": torch.zeros(1)}, "it has param/evil, which the model does not"),
        "reshaped": ({**ck, "param/fc1.weight": torch.zeros(2, 2)}, "param/fc1.weight is Float [2, 2] there"),
        "archive": ({**ck, "module.torchscript": torch.zeros(4, dtype=torch.uint8)}, "unexpected tensor module.torchscript"),
    }
    for name, (tensors, reason) in cases.items():
        job = make_job(tmp_path / name, model, data, epochs=2, batch_size=16)
        save_file(tensors, str(job / "resume.safetensors"))
        assert reason in failure(job), name


def test_a_checkpoint_from_another_batch_size_is_refused(tmp_path: Path) -> None:
    torch.manual_seed(8)
    model, data = Mlp(), classification_data(50)
    first = make_job(tmp_path / "first", model, data, epochs=2, batch_size=16, checkpoint_every={"steps": 6})
    train_ok(first)
    other = make_job(tmp_path / "other", model, data, epochs=2, batch_size=8)
    shutil.copy(first / "checkpoints" / "6.safetensors", other / "resume.safetensors")
    assert failure(other) == ("resume.safetensors does not fit this job: it was taken at step 6 after 1 epochs, "
                              "which this job (2 epochs of 7 steps) does not have")


def test_validation_metrics_are_reported(tmp_path: Path) -> None:
    torch.manual_seed(6)
    data = classification_data(64)
    val = classification_data(20, gen_seed=7)
    data.update(x_val=val["x"], y_val=val["y"])
    job = make_job(tmp_path / "job", Mlp(), data, epochs=2, batch_size=32)
    run = train_ok(job)
    for p in run.of("progress"):
        assert p["val_loss"] > 0 and 0.0 <= p["val_accuracy"] <= 1.0
    trained = trained_module(job).eval()
    with torch.no_grad():
        out = trained(val["x"])
    assert run.of("progress")[-1]["val_loss"] == pytest.approx(F.cross_entropy(out, val["y"]).item(), rel=1e-5)
    assert run.of("progress")[-1]["val_accuracy"] == pytest.approx((out.argmax(1) == val["y"]).float().mean().item())


def test_model_output_on_stdout_goes_to_the_logs(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", Chatty(), classification_data(), epochs=2, batch_size=32)
    run = train_ok(job)  # every stdout line parsed as JSON
    assert [e["event"] for e in run.events] == ["started", "progress", "progress", "completed"]
    assert "hello from the model" in run.stderr


def failure(job: Path) -> str:
    run = train(job)
    assert run.code != 0
    (failed,) = run.of("failed")
    assert not run.of("completed")
    return failed["reason"]


def test_a_pickle_is_not_a_torchscript_model(tmp_path: Path) -> None:
    job = make_job(tmp_path / "job", Mlp(), classification_data(), epochs=1, batch_size=8)
    torch.save(Mlp().state_dict(), job / "model.pt")
    assert failure(job).startswith("model.pt cannot be loaded (not a TorchScript archive")


def test_mismatched_rows_are_reported(tmp_path: Path) -> None:
    data = {"x": torch.randn(100, 8), "y": torch.randint(0, 3, (99,))}
    job = make_job(tmp_path / "job", Mlp(), data, epochs=1, batch_size=8)
    assert failure(job) == "x has 100 rows but y has 99"


def test_bad_inputs_fail_in_words(tmp_path: Path) -> None:
    data = {"x": torch.randn(10, 8), "y": torch.zeros(10)}
    job = make_job(tmp_path / "float_labels", Mlp(), data, epochs=1, batch_size=8)
    assert failure(job) == "loss cross_entropy needs integer class labels in y, got Float"

    data = {"x": torch.randn(10, 5), "y": torch.randint(0, 3, (10,))}
    job = make_job(tmp_path / "wrong_width", Mlp(), data, epochs=1, batch_size=8)
    assert failure(job) == ("the model's forward failed on a batch of x with shape [8, 5]: "
                            "mat1 and mat2 shapes cannot be multiplied (8x5 and 8x4)")

    data = {"x": torch.full((10, 8), float("nan")), "y": torch.randint(0, 3, (10,))}
    job = make_job(tmp_path / "nan", Mlp(), data, epochs=1, batch_size=8)
    assert failure(job).startswith("the training loss became NaN in epoch 1")

    job = make_job(tmp_path / "bad_spec", Mlp(), classification_data(), epochs=1, batch_size=8)
    (job / "spec.json").write_text(json.dumps({"epochs": 1, "batch_size": 8, "loss": "hinge",
                                                "optimizer": optimizer_spec("sgd")}))
    assert failure(job).startswith("spec.json is not a valid training spec: unknown variant `hinge`")
