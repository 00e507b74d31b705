"""The ledger's books audited as an operator would, at the end of a test: ``helium ledger check
--jobs --json`` with the operator's credential (read-only), which replays the whole journal
through the broker's own ``Book`` and checks the invariants (docs/OPERATIONS.md, "Auditing the
books")."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import OPERATOR, NatsServer, helium_bin

#: How long a finished job's settlement may take to reach the journal after its last event.
SETTLE_TIMEOUT_S = 30.0


def ledger_check(url: str, creds: Path, *, jobs: bool = True) -> subprocess.CompletedProcess[str]:
    argv = [str(helium_bin("helium")), "ledger", "check", "--json", "--nats", url, "--creds", str(creds)]
    if jobs:
        argv.append("--jobs")
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def assert_books_balanced(grid: NatsServer | tuple[str, Path], *, jobs: bool = True) -> dict[str, Any]:
    """Fails with ``check``'s output unless every ledger rule holds (and, with ``jobs``, no
    finished job still holds credits in escrow); returns its summary. ``grid`` is the
    ``nats_server`` fixture (its operator's credential is used) or ``(url, creds)``.

    A job's last event can reach the researcher before its settlement reaches the journal, so
    an open hold of a finished job is asked about again for up to ``SETTLE_TIMEOUT_S``; any
    other violation fails at once."""
    url, creds = (grid.url, grid.principal_creds(OPERATOR)) if isinstance(grid, NatsServer) else grid
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        proc = ledger_check(url, creds, jobs=jobs)
        if proc.returncode == 0:
            return json.loads(proc.stdout)
        summary = json.loads(proc.stdout) if proc.returncode == 1 else None
        settling = summary is not None and all(v["kind"] == "open_hold" for v in summary["violations"])
        if not settling or time.monotonic() > deadline:
            pytest.fail(f"the books do not balance (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        time.sleep(0.5)  # polling the journal: a settlement publishes nothing an operator can await
