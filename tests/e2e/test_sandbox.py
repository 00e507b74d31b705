"""Hostile models against the trainer's sandbox (DESIGN §7): TorchScript that reads a file
outside its job directory or another job's files through ``torch.from_file`` (in ``forward``
and in ``__setstate__``, which runs inside ``torch.jit.load``), writes outside its job
directory, never returns from ``forward``, or allocates without bound. Each fails its job with
a clear reason, leaves the files as they were, and the same worker then completes a good job.

The hostile bytes go to the grid as the client would send them, but past the client's
preflight (which would run the model here): ``submit_hostile`` and ``a_good_job_completes``
come from conftest.py. Hostile native code (the trainer's pid and IPC namespaces, its
environment, its terminal, the seccomp filter's argument rules) is tried by the sandbox probe
(``worker-actors/tests/sandbox_hostile.rs``): TorchScript cannot make system calls.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, List, Tuple

import helium_grid as hg
import pytest
import torch
from helium_grid._sync import Job
from torch import Tensor

pytestmark = pytest.mark.timeout(300)

WORKER = "w-sandbox"
#: Advertised memory; the trainer's address-space limit follows from it (sandbox::limits).
MEMORY_GB = 1


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
def stored(researcher: Any, grid_dir: Path, a_good_job_completes: Callable[[Any], None]) -> Path:
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


def fails(job: Job, timeout: float = 120) -> str:
    """The reason the job failed with; fails the test if it did not fail."""
    final = job.wait(timeout=timeout, progress=False, raise_on_failure=False)
    assert final.state is hg.JobState.FAILED, final
    assert final.reason, final
    print(f"failed: {final.reason}")
    assert len(final.reason) < 1000, "reasons stay short"
    return final.reason


MODULES = {"forward": TouchesInForward, "setstate": TouchesAtLoad}
Submit = Callable[..., Job]
GoodJob = Callable[[Any], None]


# -- tests -------------------------------------------------------------------------------------


def test_the_worker_advertises_its_sandbox(researcher: Any) -> None:
    [worker] = [w for w in researcher.workers() if w.worker_id == WORKER]
    assert set(worker.sandbox) == {
        "user_namespace",
        "network_namespace",
        "pid_namespace",
        "ipc_namespace",
        "landlock",
        "seccomp",
        "rlimits",
    }


@pytest.mark.parametrize("target", ["secret", "stored", "sibling"], indirect=True)
@pytest.mark.parametrize("where", sorted(MODULES))
def test_reading_outside_the_job_directory_fails_the_job(
    researcher: Any, where: str, target: Path, submit_hostile: Submit, a_good_job_completes: GoodJob
) -> None:
    before = target.read_bytes()
    job = submit_hostile(researcher, MODULES[where](str(target), 64, False))
    reason = fails(job)
    assert "Permission denied" in reason and str(target) in reason
    assert target.read_bytes() == before
    a_good_job_completes(researcher)


@pytest.mark.parametrize("where", sorted(MODULES))
def test_overwriting_a_file_outside_the_job_directory_fails_the_job(
    researcher: Any, where: str, secret: Path, stored: Path, submit_hostile: Submit, a_good_job_completes: GoodJob
) -> None:
    for target in (secret, stored):
        before = target.read_bytes()
        reason = fails(submit_hostile(researcher, MODULES[where](str(target), 64, True)))
        assert "Permission denied" in reason and str(target) in reason
        assert target.read_bytes() == before, f"{target} was changed"
    a_good_job_completes(researcher)


@pytest.mark.parametrize("where", sorted(MODULES))
def test_creating_a_file_outside_the_job_directory_fails_the_job(
    researcher: Any, where: str, tmp_path: Path, grid_dir: Path, submit_hostile: Submit, a_good_job_completes: GoodJob
) -> None:
    for created in (tmp_path / "planted.bin", grid_dir / "workers" / WORKER / "planted.bin"):
        reason = fails(submit_hostile(researcher, MODULES[where](str(created), 64, True)))
        assert "Permission denied" in reason
        assert not created.exists(), f"the model created {created}"
    a_good_job_completes(researcher)


def test_an_endless_forward_is_killed_at_its_wall_clock_limit(
    researcher: Any, submit_hostile: Submit, a_good_job_completes: GoodJob
) -> None:
    # The deadline bounds the run twice: the worker kills the trainer when it passes (its
    # wall-clock limit), and the broker expires the job at its first tick after it and cancels
    # the run. Whichever is first, the endless forward is stopped: the worker then serves the
    # next job.
    job = submit_hostile(researcher, Endless(), deadline=20)
    final = job.wait(progress=False, timeout=90, raise_on_failure=False)
    if final.state is hg.JobState.FAILED:
        assert "wall-clock limit" in (final.reason or "") and "deadline" in (final.reason or ""), final
    else:
        assert final.state is hg.JobState.EXPIRED and final.reason_code == "deadline_passed", final
    a_good_job_completes(researcher)


def test_a_memory_bomb_fails_the_job_not_the_machine(
    researcher: Any, submit_hostile: Submit, a_good_job_completes: GoodJob
) -> None:
    job = submit_hostile(researcher, MemoryBomb())
    reason = fails(job)
    assert "allocate" in reason.lower() and "memory" in reason.lower()
    a_good_job_completes(researcher)


class LinearLike(torch.nn.Module):
    """A ``Linear(64, 10)`` by its state's names (``weight``, ``bias``), so its result fits the
    manifest the submission was prepared with, and the job can complete."""

    def __init__(self) -> None:
        super().__init__()
        lin = torch.nn.Linear(64, 10)
        self.weight = lin.weight
        self.bias = lin.bias


class FillsItsDirectory(LinearLike):
    """Creates ``count`` files of ``size`` bytes in its job directory (the trainer's working
    directory) on the first batch: ``torch.from_file(shared=True)`` creates and sizes each."""

    def __init__(self, count: int, size: int) -> None:
        super().__init__()
        self.count = count
        self.size = size
        self.done = False

    def forward(self, x: Tensor) -> Tensor:
        kept = torch.zeros(1)
        if not self.done:
            self.done = True
            for i in range(self.count):
                made = torch.from_file("fill-" + str(i), True, self.size, dtype=torch.uint8)
                kept = kept + made[0].float()  # used, so the call is not optimized away
        return torch.nn.functional.linear(x, self.weight, self.bias) + kept * 0.0


class Loud(LinearLike):
    """Prints ``megabytes`` MB (lines of 64 KiB) on the first batch, then trains normally."""

    def __init__(self, megabytes: int) -> None:
        super().__init__()
        self.megabytes = megabytes
        self.line = "flood " * (64 * 1024 // 6)
        self.done = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.done:
            self.done = True
            for _ in range(self.megabytes * 16):
                print(self.line)
        return torch.nn.functional.linear(x, self.weight, self.bias)


def test_many_files_are_stopped_at_the_job_directory_bound(
    researcher: Any, submit_hostile: Submit, a_good_job_completes: GoodJob
) -> None:
    # 200,000 files would take the trainer a while; the agent stops it within a second of the
    # 1,025th (sandbox::limits::JOB_DIR_ENTRIES), or at the end of the run, whichever first.
    reason = fails(submit_hostile(researcher, FillsItsDirectory(200_000, 1)))
    assert "more than 1024 files in its job directory" in reason
    a_good_job_completes(researcher)


def test_many_large_files_are_stopped_at_the_job_directory_bytes(
    researcher: Any, submit_hostile: Submit, a_good_job_completes: GoodJob
) -> None:
    # Each file is at most RLIMIT_FSIZE (1 GiB and a little), sparse: the bound counts sizes.
    reason = fails(submit_hostile(researcher, FillsItsDirectory(8, 1 << 30)))
    assert "filled its job directory past its limit of" in reason
    a_good_job_completes(researcher)


def vm_peak_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    [kib] = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    return int(kib) * 1024


def test_a_100_mb_stderr_flood_is_bounded_in_the_workers_log_and_memory(
    researcher: Any, workers: dict[str, Any], submit_hostile: Submit, a_good_job_completes: GoodJob
) -> None:
    worker = workers[WORKER]
    log_before = worker.log_path.stat().st_size
    peak_before = vm_peak_bytes(worker.popen.pid)
    job = submit_hostile(researcher, Loud(100))
    final = job.wait(timeout=180, progress=False, raise_on_failure=False)
    assert final.state is hg.JobState.COMPLETED, final
    grown = worker.log_path.stat().st_size - log_before
    # 1 MiB of the trainer's output (sandbox::stderr::TOTAL_BYTES), plus the log's own framing.
    assert grown < 3 << 20, f"the worker's log grew by {grown} bytes"
    assert vm_peak_bytes(worker.popen.pid) - peak_before < 64 << 20
    assert any("the rest is dropped" in line for line in worker.lines["stderr"])
    a_good_job_completes(researcher)
