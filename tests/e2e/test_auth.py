"""Identity from the client's side: the principal is the credential's, nats-server refuses what
a credential may not do (promptly, as ``Unauthorized``), a revoked credential stops working at
once, and the nats CLI uses the same ``.creds`` files. The broker runs with the project's own
generated operator config (``conftest.start_nats``)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import helium_grid as hg

from conftest import helium_bin

REPO = Path(__file__).resolve().parents[2]


def helium(nats_server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``helium creds ARGS --keys <the grid's keys>``, whatever its exit status."""
    argv = [str(helium_bin("helium")), "creds", *args, "--keys", str(nats_server.keys)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_the_principal_is_the_credentials(nats_server: Any, broker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = nats_server.creds("researcher", "alice")
    with hg.Grid(nats_server.url, creds=alice) as grid:
        assert grid.principal == "alice"
        assert grid.balance().micro == 0
    with pytest.raises(hg.CredentialError, match="not bob's"):
        hg.Grid(nats_server.url, creds=alice, principal="bob")
    monkeypatch.setenv(hg.CREDS_ENV, str(alice))
    with hg.Grid(nats_server.url) as grid:
        assert grid.principal == "alice"
    monkeypatch.delenv(hg.CREDS_ENV)
    with pytest.raises(hg.CredentialError, match="no credential"):
        hg.Grid(nats_server.url)
    # A worker's credential is not a notebook's; a file that is no credential says so.
    with pytest.raises(hg.CredentialError, match="worker credential"):
        hg.Grid(nats_server.url, creds=nats_server.creds("worker", "w-x", "alice"))
    bogus = nats_server.keys.parent / "bogus.creds"
    bogus.write_text("hello")
    with pytest.raises(hg.CredentialError, match="not a NATS credentials file"):
        hg.Grid(nats_server.url, creds=bogus)


def test_a_connection_without_a_credential_is_refused(nats_server: Any) -> None:
    with pytest.raises(hg.Unauthorized, match="refused the connection with no credential"):
        hg.Grid(nats_server.url, principal="alice", connect_timeout=5)


def test_a_researcher_cannot_mint_and_is_told_at_once(connect: Callable[[str], Any]) -> None:
    researcher = connect("minter")
    with pytest.raises(hg.Unauthorized, match="may not publish to helium.v1.api.minter.account.grant"):
        researcher.grant("minter", 1_000)
    assert researcher.balance().micro == 0
    # The operator's credential may.
    assert connect("operator").grant("minter", 1).credits == 1


def test_a_researcher_sees_only_its_own_jobs(connect: Callable[[str], Any]) -> None:
    import torch

    connect("operator").grant("owner-of-job", 5)
    mine = connect("owner-of-job")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    job = mine.submit(model, train=(x, y), epochs=1, batch_size=8, max_price=2, budget=1)
    job.wait(progress=False)
    other = connect("snoop")
    with pytest.raises(hg.NotFound):
        other.job(job.id).status()
    for artifact in ("model", "data", "result"):
        with pytest.raises(hg.NotFound):
            other._run(other._async._download(job.id, artifact))
    assert job.result()(x[:2]).shape == (2, 3)


def test_a_revoked_credential_stops_working_at_once(nats_server: Any, broker: Any) -> None:
    creds = nats_server.creds("researcher", "revokee", fresh=True)
    grid = hg.Grid(nats_server.url, creds=creds, timeout=5)
    assert grid.balance().micro == 0
    out = nats_server.revoke("revokee")
    assert "revoked researcher revokee" in out
    with pytest.raises(hg.Unauthorized, match="refused the connection"):
        hg.Grid(nats_server.url, creds=creds, connect_timeout=5)
    # The open connection was dropped and cannot get back in.
    with pytest.raises((hg.Unavailable, hg.Unauthorized)):
        grid.balance()
    grid.close()
    # A new credential for the same principal works.
    with hg.Grid(nats_server.url, creds=nats_server.creds("researcher", "revokee", fresh=True)) as again:
        assert again.balance().micro == 0


def test_a_worker_id_stays_with_its_first_owner(nats_server: Any) -> None:
    assert helium(nats_server, "issue", "worker", "w-owned", "--owner", "alice").returncode == 0
    taken = helium(nats_server, "issue", "worker", "w-owned", "--owner", "bob")
    assert taken.returncode != 0 and taken.stdout == ""
    assert "worker w-owned was issued to alice; it cannot be issued to bob" in taken.stderr
    # Revoking alice's worker does not free the id for bob; alice may have it again (rotation).
    assert helium(nats_server, "revoke", "w-owned", "--nats", nats_server.url).returncode == 0
    assert helium(nats_server, "issue", "worker", "w-owned", "--owner", "bob").returncode != 0
    again = helium(nats_server, "issue", "worker", "w-owned", "--owner", "alice")
    assert again.returncode == 0 and "BEGIN NATS USER JWT" in again.stdout


def test_a_revocation_not_pushed_says_so(nats_server: Any, broker: Any) -> None:
    creds = nats_server.creds("researcher", "offline-revokee", fresh=True)
    # Neither --nats nor --offline: refused, nothing revoked.
    bare = helium(nats_server, "revoke", "offline-revokee")
    assert bare.returncode != 0 and "--offline" in bare.stderr and "--nats" in bare.stderr
    mine = [line for line in helium(nats_server, "list").stdout.splitlines() if " offline-revokee " in line]
    assert mine and not any(line.endswith(" revoked") for line in mine), mine
    # --offline: done, loudly, and true to its word: the running server still takes it.
    offline = helium(nats_server, "revoke", "offline-revokee", "--offline")
    assert offline.returncode == 0, offline.stderr
    assert "WARNING" in offline.stderr and "keeps accepting" in offline.stderr
    with hg.Grid(nats_server.url, creds=creds, timeout=5) as grid:
        assert grid.balance().micro == 0
    # Pushed, it takes effect.
    assert helium(nats_server, "revoke", "offline-revokee", "--nats", nats_server.url).returncode == 0
    with pytest.raises(hg.Unauthorized, match="refused the connection"):
        hg.Grid(nats_server.url, creds=creds, connect_timeout=5)


def test_an_expired_credential_cannot_connect(nats_server: Any, broker: Any, tmp_path: Path) -> None:
    brief = helium(nats_server, "issue", "researcher", "short-lived", "--expires", "1s")
    assert brief.returncode == 0, brief.stderr
    creds = tmp_path / "short-lived.creds"
    creds.write_text(brief.stdout)
    time.sleep(2.5)
    with pytest.raises(hg.Unauthorized, match="refused the connection"):
        hg.Grid(nats_server.url, creds=creds, connect_timeout=5)
    listed = [line for line in helium(nats_server, "list").stdout.splitlines() if " short-lived " in line]
    assert listed and listed[-1].endswith(" expired"), listed
    for bad in ("0d", "12", "x", "1w", "99999999999999999d"):
        refused = helium(nats_server, "issue", "researcher", "short-lived", "--expires", bad)
        assert refused.returncode != 0 and "is not a lifetime" in refused.stderr, (bad, refused.stderr)


def nats_cli() -> Path:
    path = Path(os.environ.get("HELIUM_NATS_CLI", REPO / ".helium" / "bin" / "nats"))
    if not path.exists():
        message = f"{path} not installed (make nats-cli)"
        if os.environ.get("HELIUM_REQUIRE_BINARIES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_the_nats_cli_uses_the_same_credentials(nats_server: Any, broker: Any) -> None:
    cli = nats_cli()
    ops = nats_server.creds("operator", "operator")

    def nats(creds: Path, inbox: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(cli), "--server", nats_server.url, "--creds", str(creds), "--inbox-prefix", inbox, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60)

    services = nats(ops, "_INBOX.p.operator", "micro", "ls")
    assert services.returncode == 0, services.stderr
    assert "helium-api" in services.stdout and "helium-worker-gateway" in services.stdout
    streams = nats(ops, "_INBOX.p.operator", "stream", "ls", "--names")
    assert streams.returncode == 0, streams.stderr
    assert {"HELIUM_EVENTS", "HELIUM_RUNS", "HELIUM_LEDGER"} <= set(streams.stdout.split())
    # A researcher's credential may not list the grid's streams or write the journal.
    alice = nats_server.creds("researcher", "alice")
    listed = nats(alice, "_INBOX.p.alice", "stream", "ls", "--names", "--timeout", "2s")
    assert listed.returncode != 0
    forged = nats(alice, "_INBOX.p.alice", "pub", "helium.v1.ledger.journal", "x")
    assert "permissions violation" in (forged.stdout + forged.stderr).lower()
    # Without a credential the CLI is refused.
    anonymous = subprocess.run([str(cli), "--server", nats_server.url, "micro", "ls"], capture_output=True,
                               text=True, timeout=60)  # fmt: skip
    assert anonymous.returncode != 0 and "authorization" in (anonymous.stdout + anonymous.stderr).lower()
