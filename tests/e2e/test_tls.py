"""deploy/nats-tls.conf as shipped, with certificates from deploy/tls.sh (a self-signed CA):
the broker and a researcher connect over TLS with their credentials; a client that does not
trust the CA, or speaks plain NATS, is refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import helium_grid as hg

from conftest import Proc, helium_bin, nats_server_bin

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tls_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("tls-grid")
    shutil.copy(REPO / "deploy" / "nats-tls.conf", root / "nats-tls.conf")
    subprocess.run([str(REPO / "deploy" / "tls.sh"), str(root / "tls")], check=True, capture_output=True)
    helium = str(helium_bin("helium"))
    keys = root / "keys"
    subprocess.run([helium, "creds", "init", "--keys", str(keys), "--resolver-dir", str(root / "jwt")], check=True)

    def creds(role: str, name: str) -> Path:
        path = root / f"{name}.creds"
        path.write_text(subprocess.run([helium, "creds", "issue", role, name, "--keys", str(keys)],
                                       check=True, capture_output=True, text=True).stdout)  # fmt: skip
        return path

    # The shipped config, from its own directory (its paths are relative); only the port moves.
    nats = Proc("nats-server", [str(nats_server_bin()), "-c", "nats-tls.conf", "-a", "127.0.0.1", "-p", "-1"],
                root / "logs", cwd=root)  # fmt: skip
    broker = None
    try:
        m = nats.wait_for_line("stderr", r"Listening for client connections on [^\s]+:(\d+)")
        nats.wait_for_line("stderr", r"Server is ready")
        url = f"tls://127.0.0.1:{m.group(1)}"
        (root / "store").mkdir()
        broker = Proc("helium-broker", [str(helium_bin("helium-broker")), "--nats-url", url,
                                        "--tls-ca", str(root / "tls" / "ca.pem"),
                                        "--creds", str(creds("broker", "broker")),
                                        "--store", f"file://{root / 'store'}"], root / "logs")  # fmt: skip
        broker.wait_for_line("stdout", r"^ready$")
        yield {"url": url, "port": m.group(1), "ca": root / "tls" / "ca.pem", "creds": creds}
    finally:
        if broker is not None:
            broker.stop()
        nats.stop()


def test_the_broker_and_a_researcher_speak_tls_with_their_credentials(tls_grid: dict[str, Any]) -> None:
    ops = tls_grid["creds"]("operator", "ops")
    with hg.Grid(tls_grid["url"], creds=ops, tls_ca=tls_grid["ca"]) as operator:
        operator.grant("alice", 3)
    with hg.Grid(tls_grid["url"], creds=tls_grid["creds"]("researcher", "alice"), tls_ca=tls_grid["ca"]) as alice:
        assert alice.balance().credits == 3


def test_a_client_that_does_not_trust_the_ca_is_refused(tls_grid: dict[str, Any]) -> None:
    alice = tls_grid["creds"]("researcher", "alice")
    with pytest.raises(hg.Unavailable, match="certificate verify failed"):
        hg.Grid(tls_grid["url"], creds=alice, connect_timeout=5)


def test_plain_nats_is_refused(tls_grid: dict[str, Any]) -> None:
    alice = tls_grid["creds"]("researcher", "alice")
    with pytest.raises((hg.Unavailable, hg.Unauthorized)):
        hg.Grid(f"nats://127.0.0.1:{tls_grid['port']}", creds=alice, connect_timeout=5)
