"""The Python client's copy of the subject names (helium_grid/_subjects.py) against the Rust one
(protocol/src/subjects.rs), as printed by ``helium-broker print-subjects``.

Expected output: one JSON object on stdout mapping a key to a subject template, with placeholders
``{principal}``, ``{worker}`` and ``{job}`` where the builder takes an id::

    {
      "api.job.submit":       "helium.v1.api.{principal}.job.submit",
      ...                     one "api.<verb>" for every verb of subjects::api::ALL
      "events":               "helium.v1.events.{principal}.{job}",
      "stream.events":        "HELIUM_EVENTS"
    }

Those keys are required. The broker may print more; every further key it prints must be one the
Python copy knows, with the same value. The keys the Python copy knows are:

    "worker.<verb>"          "helium.v1.worker.{worker}.<verb>"     (agent.register, agent.heartbeat,
                                                                     run.event, artifact.begin|chunk|commit|read)
    "dispatch.<verb>"        "helium.v1.dispatch.{worker}.<verb>"   (auction.invite, job.award, job.cancel)
    "stream.events.subjects" "helium.v1.events.>"
    "stream.runs"            "HELIUM_RUNS"
    "stream.runs.subjects"   "helium.v1.worker.*.run.event"
    "stream.runs.consumer"   "helium-broker-runs"
    "stream.ledger"          "HELIUM_LEDGER"
    "stream.ledger.subject"  "helium.v1.ledger.journal"
    "bucket.jobs"            "helium_jobs"
    "service.api"            "helium-api"
    "service.worker_gateway" "helium-worker-gateway"
    "queue.broker"           "helium-broker"
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helium_grid import _subjects

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def rust_templates(find_helium_bin: Callable[[str], Path]) -> dict[str, str]:
    out = subprocess.run(
        [str(find_helium_bin("helium-broker")), "print-subjects"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, f"helium-broker print-subjects failed ({out.returncode}):\n{out.stderr}"
    printed = json.loads(out.stdout)
    assert isinstance(printed, dict) and all(isinstance(v, str) for v in printed.values()), printed
    return printed


def test_required_keys_match(rust_templates: dict[str, str]) -> None:
    ours = _subjects.templates()
    required = [f"api.{verb}" for verb in _subjects.API_ALL] + ["events", "stream.events"]
    for key in required:
        assert key in rust_templates, f"helium-broker print-subjects lacks {key!r}"
        assert rust_templates[key] == ours[key], key


def test_the_api_verbs_are_the_same_set(rust_templates: dict[str, str]) -> None:
    rust_verbs = {k for k in rust_templates if k.startswith("api.")}
    python_verbs = {f"api.{verb}" for verb in _subjects.API_ALL}
    assert rust_verbs == python_verbs, (
        f"only in Rust: {sorted(rust_verbs - python_verbs)}; only in Python: {sorted(python_verbs - rust_verbs)}"
    )


def test_every_further_key_has_the_same_value_in_python(rust_templates: dict[str, str]) -> None:
    ours = _subjects.templates()
    unknown = sorted(set(rust_templates) - set(ours))
    assert not unknown, f"the Python copy lacks {unknown}; add them to helium_grid/_subjects.py"
    differing = {k: (v, ours[k]) for k, v in rust_templates.items() if ours[k] != v}
    assert not differing, f"Rust vs Python: {differing}"
