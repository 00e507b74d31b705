"""The operator's drills on a real local grid (`deploy/grid.sh`, in its own directory and port):
`kill <component>` SIGKILLs it and `restart <component>` brings it back on the same data. A job
submitted before the broker is killed completes after its restart, the books balanced, and a
restarted worker serves again.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import helium_grid as hg
import pytest
import torch

from conftest import helium_bin
from books import assert_books_balanced
from faultjobs import assert_accuracy_as_uninterrupted, digits, first_event, reference_accuracy, wide_mlp

pytestmark = pytest.mark.timeout(600)

GRID_SH = Path(__file__).resolve().parents[2] / "deploy" / "grid.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalGrid:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {
            **os.environ,
            "HELIUM_GRID_DIR": str(root),
            "HELIUM_PORT": str(free_port()),
            "HELIUM_BIN_DIR": str(helium_bin("helium-broker").parent),
        }

    def sh(self, *args: str) -> str:
        done = subprocess.run([str(GRID_SH), *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"grid.sh {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def pid(self, component: str) -> int | None:
        f = self.root / "pids" / component
        return int(f.read_text()) if f.exists() else None

    def url(self) -> str:
        return (self.root / "url").read_text().strip()

    def books(self) -> None:
        assert_books_balanced((self.url(), self.root / "creds" / "operator.creds"))

    def grid(self, principal: str) -> hg.Grid:
        return hg.Grid(self.url(), creds=self.root / "creds" / f"{principal}.creds", timeout=60)


@pytest.fixture()
def local_grid(tmp_path: Path) -> Iterator[LocalGrid]:
    g = LocalGrid(tmp_path / "grid")
    g.sh("up")
    try:
        yield g
    finally:
        g.sh("down")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_kill_and_restart_the_broker_and_a_worker(local_grid: LocalGrid) -> None:
    with local_grid.grid("operator") as operator:
        operator.grant("researcher", 10)
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = (x.sum(1) > 0).long()
    with local_grid.grid("researcher") as researcher:
        before = researcher.balance().micro
        job = researcher.submit(torch.nn.Linear(8, 2), train=(x, y), epochs=200, batch_size=16, lr=0.05,
                                max_price=10, budget=5)  # fmt: skip
        broker = local_grid.pid("broker")
        assert broker is not None and alive(broker)
        assert "broker killed" in local_grid.sh("kill", "broker")
        assert not alive(broker) and local_grid.pid("broker") is None
        assert "broker restarted" in local_grid.sh("restart", "broker")
        final = job.wait(progress=False, timeout=300)
        assert final.state is hg.JobState.COMPLETED
        assert researcher.balance().micro == before - final.paid_micro

        worker = local_grid.pid("worker-cheap")
        assert "worker-cheap restarted" in local_grid.sh("restart", "worker-cheap")
        assert worker is not None and not alive(worker)
        again = researcher.submit(torch.nn.Linear(8, 2), train=(x, y), epochs=5, batch_size=16, lr=0.05,
                                  max_price=10, budget=5)  # fmt: skip
        assert again.wait(progress=False, timeout=300).state is hg.JobState.COMPLETED
    local_grid.books()
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run([str(GRID_SH), "kill", "scheduler"], env=local_grid.env, check=True, capture_output=True)


def test_restart_nats_mid_run_loses_nothing(local_grid: LocalGrid) -> None:
    """nats-server SIGKILLed and started again on its data while a job trains: the broker, the
    workers and the researcher's ``wait()`` reconnect, the job completes where it was (checkpoints
    never move back), and what the researcher paid is what the owners earned."""
    with local_grid.grid("operator") as operator:
        operator.grant("researcher", 10)
    x, y = digits()
    with local_grid.grid("researcher") as researcher:
        before = researcher.balance().micro
        job = researcher.submit(wide_mlp(), train=(x, y), epochs=10, batch_size=32, lr=1e-3,
                                max_price=10, budget=5, checkpoint_every=20)  # fmt: skip
        researcher._run(first_event(researcher, job.id, lambda e: e.kind == "checkpointed"))
        nats = local_grid.pid("nats")
        assert "nats restarted" in local_grid.sh("restart", "nats")
        assert nats is not None and not alive(nats)
        final = job.wait(progress=False, timeout=300)
        assert final.state is hg.JobState.COMPLETED, final
        events = job.events()
        assert len([e for e in events if isinstance(e, hg.Awarded)]) == 1, "the job was trained again"
        steps = [e.raw["step"] for e in events if e.kind == "checkpointed"]
        assert steps == sorted(set(steps)), f"checkpoints moved back: {steps}"
        assert researcher.balance().micro == before - final.paid_micro
        earned = 0
        for owner in ("gpu-owner-1", "gpu-owner-2"):
            with local_grid.grid(owner) as g:
                earned += g.balance().micro
        assert earned == final.paid_micro
        reference = reference_accuracy(wide_mlp(), x, y, epochs=10, batch_size=32, lr=1e-3)
        assert_accuracy_as_uninterrupted(job.result(), reference, x, y)
    local_grid.books()
