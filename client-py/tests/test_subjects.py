"""The Python copy of the subject names against the literal values in protocol/src/subjects.rs
(the cross-language check against the broker binary is tests/e2e/test_subjects_match.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helium_grid import _subjects as s

RUST = Path(__file__).resolve().parents[2] / "protocol" / "src" / "subjects.rs"


def test_builders_have_the_documented_shape() -> None:
    assert s.api("alice", s.JOB_SUBMIT) == "helium.v1.api.alice.job.submit"
    assert s.api_any(s.JOB_SUBMIT) == "helium.v1.api.*.job.submit"
    assert s.worker("w1", s.WORKER_RUN_EVENT) == "helium.v1.worker.w1.run.event"
    assert s.dispatch("w1", s.DISPATCH_AWARD) == "helium.v1.dispatch.w1.job.award"
    assert s.job_events("alice", "j1") == "helium.v1.events.alice.j1"
    assert s.identity_of("helium.v1.api.alice.job.submit") == "alice"
    assert s.identity_of("helium.v1.api.a*b.job.submit") is None
    assert s.identity_of("other.v1.api.alice.job.submit") is None
    assert not s.valid_id("a.b") and not s.valid_id("") and not s.valid_id("x" * 65)
    assert s.valid_id("gpu-owner_2")


@pytest.mark.skipif(not RUST.exists(), reason="protocol sources not next to the client")
def test_every_rust_string_constant_has_the_same_value_here() -> None:
    """Each `pub const NAME: &str = "value";` in subjects.rs appears among our constants."""
    import re

    rust = dict(re.findall(r'pub const (\w+): &str = "([^"]*)";', RUST.read_text()))
    ours = {k: v for k, v in vars(s).items() if k.isupper() and isinstance(v, str)}
    for name, value in rust.items():
        assert value in ours.values(), f"subjects.rs {name} = {value!r} has no Python twin"
    api_all = re.search(r"pub const ALL: \[&str; \d+\] = \[(.*?)\];", RUST.read_text(), re.S)
    assert api_all is not None
    names = re.findall(r"\w+", api_all.group(1))
    assert tuple(rust[n] for n in names) == s.API_ALL
