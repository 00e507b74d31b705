"""The worker as a GPU owner installs it: the wheel that ``make wheel`` builds, installed into a
fresh virtualenv with nothing of this repository in it, puts ``helium-worker`` on that venv's
PATH; the binary loads the libtorch of the torch wheel installed beside it (relative rpath, no
``LD_LIBRARY_PATH``), joins a real grid, trains a digits MLP that a researcher submitted from
the Python client, and its owner is paid exactly what the researcher spent.

The wheel is the one ``helium_worker-*.whl`` in ``$HELIUM_WHEEL_DIR`` (default
``<repo>/.helium/wheels``; ``make test`` runs ``make wheel`` first). Missing, the tests are
skipped, or fail under ``HELIUM_REQUIRE_BINARIES=1``, as the binaries are. It is installed with
the project venv's ``uv`` (whose cache makes torch's 4.7 GB a hard link away), or with the
fresh venv's pip when there is no uv.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helium_grid as hg
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from books import assert_books_balanced
from conftest import REPO, NatsServer, Proc
from faultjobs import accuracy

pytestmark = pytest.mark.timeout(900)

WHEEL_DIR = Path(os.environ.get("HELIUM_WHEEL_DIR", REPO / ".helium" / "wheels"))
EPOCHS = 20
BATCH = 64
LR = 1e-2
SEED = 0
#: Held-out accuracy the digits MLP reaches (test_digits_end_to_end's bar).
MIN_ACCURACY = 0.90
INSTALL_TIMEOUT_S = 600


@dataclass(frozen=True)
class Installed:
    venv: Path
    #: ``<venv>/bin/helium-worker``, as pip wrote it.
    exe: Path
    install_s: float


def torch_pin() -> str:
    """The torch the workspace is built against (``requirements-dev.txt``): the wheel's binary
    links that libtorch, so the wheel must require exactly it."""
    lines = (REPO / "requirements-dev.txt").read_text().splitlines()
    return next(line.strip() for line in lines if line.startswith("torch=="))


def workspace_version() -> str:
    return tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["package"]["version"]


def owner_env(venv: Path) -> dict[str, str]:
    """What an owner's shell has after ``source <venv>/bin/activate``: nothing of this repository,
    no ``LD_LIBRARY_PATH``."""
    return {
        "PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "VIRTUAL_ENV": str(venv),
        "LANG": "C.UTF-8",
    }


@pytest.fixture(scope="module")
def wheel() -> Path:
    wheels = sorted(WHEEL_DIR.glob("helium_worker-*.whl"), key=lambda p: p.stat().st_mtime)
    if not wheels:
        message = f"no helium_worker wheel in {WHEEL_DIR} (make wheel, or set HELIUM_WHEEL_DIR)"
        if os.environ.get("HELIUM_REQUIRE_BINARIES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return wheels[-1]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """The wheel installed into a new virtualenv (``python -m venv``: no site packages)."""
    venv = tmp_path_factory.mktemp("owner") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = venv / "bin" / "python"
    uv = Path(sys.executable).parent / "uv"
    argv = (
        [str(uv), "pip", "install", "--quiet", "--python", str(python), str(wheel)]
        if uv.exists()
        else [str(python), "-m", "pip", "install", "--quiet", str(wheel)]
    )
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, cwd=venv.parent)
    install_s = time.perf_counter() - started
    assert done.returncode == 0, f"$ {' '.join(argv)}\n{done.stdout}\n{done.stderr}"
    print(f"\ninstalled {wheel.name} and its torch into a fresh venv in {install_s:.1f}s ({Path(argv[0]).name})")
    return Installed(venv, venv / "bin" / "helium-worker", install_s)


def test_the_wheel_declares_torch_and_carries_only_the_binary(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"Requires-Dist: {torch_pin()}" in meta.splitlines()
    assert f"Version: {workspace_version()}" in meta.splitlines()
    scripts = [n for n in names if ".data/scripts/" in n]
    assert [n.rsplit("/", 1)[1] for n in scripts] == ["helium-worker"]
    assert not any(n.endswith(".so") or ".so." in n for n in names), "libtorch must come from the torch wheel"


def test_helium_worker_is_on_the_venvs_path_and_runs_from_anywhere(installed: Installed, tmp_path: Path) -> None:
    env = owner_env(installed.venv)
    assert shutil.which("helium-worker", path=env["PATH"]) == str(installed.exe)
    done = subprocess.run(["helium-worker", "--version"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"helium-worker {workspace_version()}"


def test_it_loads_the_libtorch_installed_beside_it(installed: Installed) -> None:
    """The first RUNPATH entry is relative, and the loader resolves every libtorch library to
    the fresh venv's torch wheel (not the build venv's, whose absolute path comes last)."""
    torch_lib = next((installed.venv / "lib").glob("python3.*/site-packages/torch/lib")).resolve()
    if shutil.which("readelf"):
        dynamic = subprocess.run(["readelf", "-d", str(installed.exe)], capture_output=True, text=True, check=True)
        runpath = next(line for line in dynamic.stdout.splitlines() if "RUNPATH" in line)
        first = runpath.split("[", 1)[1].split(":", 1)[0]
        assert first == "$ORIGIN/../lib/python3.11/site-packages/torch/lib", runpath
    ldd = subprocess.run(["ldd", str(installed.exe)], env=owner_env(installed.venv), capture_output=True, text=True)
    assert ldd.returncode == 0, ldd.stderr
    assert "not found" not in ldd.stdout, ldd.stdout
    resolved = {}
    for line in ldd.stdout.splitlines():
        name, _, rest = line.strip().partition(" => ")
        if name.startswith(("libtorch", "libc10")):
            resolved[name] = Path(rest.split(" (", 1)[0]).resolve()
    assert {"libtorch_cpu.so", "libtorch_cuda.so", "libc10.so"} <= resolved.keys(), ldd.stdout
    for name, path in resolved.items():
        assert path.parent == torch_lib, f"{name} resolved to {path}, not {torch_lib}"


# -- the installed worker on a real grid -------------------------------------------------------


@pytest.fixture(scope="module")
def worker_specs(installed: Installed) -> list[dict[str, object]]:
    """One worker, started as its owner would: the device detected, the start-up benchmark run."""
    return [
        {"worker_id": "w-wheel", "owner": "owner-wheel", "price": 1.0, "throughput": None, "device": "auto",
         "binary": str(installed.exe)}
    ]  # fmt: skip


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=SEED, stratify=y)
    scaler = StandardScaler().fit(x_train)
    as_x = lambda a: torch.tensor(scaler.transform(a), dtype=torch.float32)  # noqa: E731
    return as_x(x_train), torch.tensor(y_train), as_x(x_test), torch.tensor(y_test)


def mapped_libraries(proc: Proc) -> set[Path]:
    """The shared libraries a running process has mapped (its ``/proc/<pid>/maps``)."""
    maps = Path(f"/proc/{proc.popen.pid}/maps").read_text()
    return {Path(f[5]) for f in (line.split() for line in maps.splitlines()) if len(f) > 5 and ".so" in f[5]}


def test_the_installed_worker_trains_a_job_and_its_owner_is_paid(
    installed: Installed,
    workers: dict[str, Proc],
    nats_server: NatsServer,
    connect: Callable[[str], Any],
    operator: Any,
) -> None:
    worker = workers["w-wheel"]
    assert worker.argv[0] == str(installed.exe)
    device = "Cuda" if torch.cuda.is_available() else "Cpu"
    worker.wait_for_line("stderr", rf"start-up benchmark done .*device={device} param_samples_per_sec=\d")
    torch_lib = next((installed.venv / "lib").glob("python3.*/site-packages/torch/lib")).resolve()
    libtorch = [p for p in mapped_libraries(worker) if p.name == "libtorch_cpu.so"]
    assert [p.parent for p in libtorch] == [torch_lib], f"the worker mapped {libtorch}"

    researcher, owner = connect("researcher"), connect("owner-wheel")
    operator.grant("researcher", 100)
    before = {g.principal: g.balance().micro for g in (researcher, owner)}
    x_train, y_train, x_test, y_test = digits()
    torch.manual_seed(SEED)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))

    job = researcher.submit(
        model, train=(x_train, y_train), epochs=EPOCHS, batch_size=BATCH, lr=LR, loss="cross_entropy",
        optimizer="adam", seed=SEED, max_price=5.0, budget=10.0, name="digits-from-the-wheel",
    )  # fmt: skip
    try:
        final = job.wait(timeout=300, progress=False)
    finally:
        if not job.status().is_terminal:
            job.cancel()
    assert final.state is hg.JobState.COMPLETED, f"{final}\n{worker.tail()}"
    assert final.worker == "w-wheel"
    assert final.epochs_done == EPOCHS

    got = accuracy(job.result(), x_test, y_test)
    print(f"held-out accuracy of the job trained by the wheel's worker: {got:.3f}")
    assert got >= MIN_ACCURACY

    # The job's last event can come before its settlement is journaled: audit (which waits for
    # the escrow to empty) before reading balances.
    assert_books_balanced(nats_server)
    after = {g.principal: g.balance().micro for g in (researcher, owner)}
    spent = before["researcher"] - after["researcher"]
    earned = after["owner-wheel"] - before["owner-wheel"]
    assert spent > 0
    assert spent == earned == final.paid_micro
