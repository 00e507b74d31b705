"""Hostile models against the trainer's sandbox (DESIGN §7): TorchScript that reads a file
outside its job directory or another job's files through ``torch.from_file`` (in ``forward``
and in ``__setstate__``, which runs inside ``torch.jit.load``), writes outside its job
directory, never returns from ``forward``, or allocates without bound. Each fails its job with
a clear reason, leaves the files as they were, and the same worker then completes a good job.

The hostile bytes go to the grid as the client would send them, but past the client's
preflight (which would run the model here): the submission is prepared with a harmless model
of the same shape and its model bytes replaced.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, List, Tuple

import helium_grid as hg
import pytest
import torch
from helium_grid._submission import prepare_submission, quiet_torchscript
from helium_grid._sync import Job
from torch import Tensor

pytestmark = pytest.mark.timeout(300)

WORKER = "w-sandbox"
#: Advertised memory; the trainer's address-space limit follows from it (sandbox::limits).
MEMORY_GB = 1
GOOD: dict[str, Any] = dict(epochs=1, batch_size=32, lr=1e-2, max_price=5.0, budget=1.0)


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    return [{"worker_id": WORKER, "owner": "owner-sandbox", "price": 1.0, "extra": ("--memory-gb", str(MEMORY_GB))}]


@pytest.fixture(scope="module")
def researcher(connect: Callable[[str], Any], operator: Any) -> Any:
    operator.grant("researcher", 100)
    return connect("researcher")


# -- the files to protect ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file of the worker's user outside every job directory (the owner's own data)."""
    path = tmp_path_factory.mktemp("outside") / "secret.bin"
    path.write_bytes(os.urandom(4096))
    return path


@pytest.fixture(scope="module")
def stored(researcher: Any, grid_dir: Path) -> Path:
    """Another job's artifact in the broker's store, after a good job ran."""
    a_good_job_completes(researcher)
    files = sorted(p for p in (grid_dir / "store").rglob("*") if p.is_file() and p.stat().st_size >= 64)
    assert files, "the good job left no artifact in the store"
    return files[0]


@pytest.fixture(scope="module")
def sibling(grid_dir: Path) -> Path:
    """Another job's directory on the same worker (beside the one the trainer gets)."""
    other = grid_dir / "workers" / WORKER / "award-of-another-job"
    other.mkdir(parents=True, exist_ok=True)
    path = other / "data.safetensors"
    path.write_bytes(os.urandom(4096))
    return path


@pytest.fixture()
def target(request: pytest.FixtureRequest) -> Path:
    path: Path = request.getfixturevalue(request.param)
    return path


# -- hostile modules ---------------------------------------------------------------------------


class TouchesInForward(torch.nn.Module):
    """``torch.from_file(path)`` on every batch; ``shared=True`` opens it read-write (creating
    it if missing) and zeroes it."""

    def __init__(self, path: str, size: int, shared: bool) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)
        self.path = path
        self.size = size
        self.shared = shared

    def forward(self, x: Tensor) -> Tensor:
        stolen = torch.from_file(self.path, self.shared, self.size, dtype=torch.uint8)
        if self.shared:
            stolen.fill_(0)
        return self.lin(x) + stolen.float().sum() * 0.0


class Trap(torch.nn.Module):
    """The same from ``__setstate__``: it runs while the worker loads the model."""

    def __init__(self, path: str, size: int, shared: bool) -> None:
        super().__init__()
        self.path = path
        self.size = size
        self.shared = shared
        self.seen = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, int, bool, Tensor, bool]:
        return (self.path, self.size, self.shared, self.seen, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, int, bool, Tensor, bool]) -> None:
        self.path = state[0]
        self.size = state[1]
        self.shared = state[2]
        self.training = state[4]
        stolen = torch.from_file(self.path, self.shared, self.size, dtype=torch.uint8)
        if self.shared:
            stolen.fill_(0)
        self.seen = stolen.float().sum().reshape(1)

    def forward(self, x: Tensor) -> Tensor:
        return x


class TouchesAtLoad(torch.nn.Module):
    def __init__(self, path: str, size: int, shared: bool) -> None:
        super().__init__()
        self.trap = Trap(path, size, shared)
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(self.trap(x))


class Endless(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        i = 0
        while i >= 0:
            i += 1
        return self.lin(x)


class MemoryBomb(torch.nn.Module):
    """Keeps 256 MiB tensors, written so the pages are real, until something gives."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        hoard: List[Tensor] = []
        for _ in range(4096):
            hoard.append(torch.full([64 * 1024 * 1024], 1.0) * x[0, 0])
        kept = torch.zeros(1)
        for t in hoard:  # every tensor is used, so none can be optimized away
            kept = kept + t[-1]
        return self.lin(x) + kept * 0.0


# -- helpers -----------------------------------------------------------------------------------


def data(n: int = 128) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(n)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def a_good_job_completes(grid: Any) -> None:
    torch.manual_seed(0)
    job = grid.submit(torch.nn.Linear(64, 10), train=data(), **GOOD, name="good")
    final = job.wait(timeout=120, progress=False)
    assert final.state is hg.JobState.COMPLETED, final
    assert job.result()(torch.randn(3, 64)).shape == (3, 10)


def submit_hostile(grid: Any, module: torch.nn.Module, **kwargs: Any) -> Job:
    """Submits ``module`` as TorchScript without running it here (no preflight)."""
    torch.manual_seed(0)
    sub = prepare_submission(torch.nn.Linear(64, 10), train=data(), **{**GOOD, **kwargs})
    buf = io.BytesIO()
    with quiet_torchscript():
        torch.jit.save(torch.jit.script(module), buf)
    sub = dataclasses.replace(sub, model_bytes=buf.getvalue(), name="hostile")
    return Job(grid, grid._run(grid._async.submit_prepared(sub)))


def fails(job: Job, timeout: float = 120) -> str:
    """The reason the job failed with; fails the test if it did not fail."""
    final = job.wait(timeout=timeout, progress=False, raise_on_failure=False)
    assert final.state is hg.JobState.FAILED, final
    assert final.reason, final
    print(f"failed: {final.reason}")
    assert len(final.reason) < 1000, "reasons stay short"
    return final.reason


MODULES = {"forward": TouchesInForward, "setstate": TouchesAtLoad}


# -- tests -------------------------------------------------------------------------------------


def test_the_worker_advertises_its_sandbox(researcher: Any) -> None:
    [worker] = [w for w in researcher.workers() if w.worker_id == WORKER]
    assert set(worker.sandbox) == {"user_namespace", "network_namespace", "landlock", "seccomp", "rlimits"}


@pytest.mark.parametrize("target", ["secret", "stored", "sibling"], indirect=True)
@pytest.mark.parametrize("where", sorted(MODULES))
def test_reading_outside_the_job_directory_fails_the_job(researcher: Any, where: str, target: Path) -> None:
    before = target.read_bytes()
    job = submit_hostile(researcher, MODULES[where](str(target), 64, False))
    reason = fails(job)
    assert "Permission denied" in reason and str(target) in reason
    assert target.read_bytes() == before
    a_good_job_completes(researcher)


@pytest.mark.parametrize("where", sorted(MODULES))
def test_overwriting_a_file_outside_the_job_directory_fails_the_job(
    researcher: Any, where: str, secret: Path, stored: Path
) -> None:
    for target in (secret, stored):
        before = target.read_bytes()
        reason = fails(submit_hostile(researcher, MODULES[where](str(target), 64, True)))
        assert "Permission denied" in reason and str(target) in reason
        assert target.read_bytes() == before, f"{target} was changed"
    a_good_job_completes(researcher)


@pytest.mark.parametrize("where", sorted(MODULES))
def test_creating_a_file_outside_the_job_directory_fails_the_job(
    researcher: Any, where: str, tmp_path: Path, grid_dir: Path
) -> None:
    for created in (tmp_path / "planted.bin", grid_dir / "workers" / WORKER / "planted.bin"):
        reason = fails(submit_hostile(researcher, MODULES[where](str(created), 64, True)))
        assert "Permission denied" in reason
        assert not created.exists(), f"the model created {created}"
    a_good_job_completes(researcher)


def test_an_endless_forward_is_killed_at_its_wall_clock_limit(researcher: Any) -> None:
    # The deadline bounds the run: the worker kills the trainer when it passes.
    job = submit_hostile(researcher, Endless(), deadline=20)
    reason = fails(job, timeout=90)
    assert "wall-clock limit" in reason and "deadline" in reason
    a_good_job_completes(researcher)


def test_a_memory_bomb_fails_the_job_not_the_machine(researcher: Any) -> None:
    job = submit_hostile(researcher, MemoryBomb())
    reason = fails(job)
    assert "allocate" in reason.lower() and "memory" in reason.lower()
    a_good_job_completes(researcher)
