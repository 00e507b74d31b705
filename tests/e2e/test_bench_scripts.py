"""The benchmark scripts of ``make bench`` still run against the grid as it is now.

``make bench`` is not part of CI (its figures need a quiet machine), so a protocol change can
break a script unnoticed (it did once: the artifact bench still submitted without a state
manifest). Each script runs here once at its smallest size and must print its result table.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, args: list[str], nats_server, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "operator.creds").write_bytes(nats_server.principal_creds("operator").read_bytes())
    (creds / "researcher.creds").write_bytes(nats_server.creds("researcher", "researcher").read_bytes())
    env = {**os.environ, "HELIUM_NATS_URL": nats_server.url, "HELIUM_CREDS_DIR": str(creds), "HELIUM_WORKER_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args], env=env, capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_artifact_bench_prints_its_ratios(nats_server, connect, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_bench("artifacts.py", ["--sizes", "1", "--runs", "1", "--store", str(tmp_path)], nats_server, tmp_path)
    row = [line.split() for line in out.splitlines() if line.strip().startswith("1MB")]
    assert len(row) == 1 and len(row[0]) == 6, out
    assert all(float(v) > 0 for v in row[0][1:]), out


def test_grid_vs_plain_bench_prints_its_ratios(nats_server, connect, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_bench("grid_vs_plain.py", ["--runs", "1", "--cases", "small"], nats_server, tmp_path)
    assert "ratio grid/plain" in out and "submit -> training start" in out, out


def test_sweep_bench_prints_its_ratio(nats_server, connect, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run_bench("sweep.py", ["--jobs", "2", "--epochs", "1"], nats_server, tmp_path)
    assert "ratio sweep/one job" in out and "sweep of 2" in out, out
