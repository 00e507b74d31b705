"""A nats-server node SIGKILLed mid-run in a 3-node cluster, through the real grid.

The cluster is the one operators run (``deploy/nats-cluster.sh``); the broker keeps its streams
and bucket at three replicas (``--replicas 3``) and, like the workers and the researcher, is
given every node's URL. Before the job, the broker's node is made leader of every stream, of the
broker's run-event consumer and of the JetStream meta group, and it is SIGKILLed after the job's
first checkpoint: the worst node to lose. The broker and any worker on it reconnect to another
node, the streams elect new leaders, and the job completes: nothing is lost (every epoch's
progress is reported once, checkpoints only move forward, what the researcher paid is what the
owners earned), and the model is as accurate as one trained by plain torch without the outage.
The killed node then rejoins and its replicas catch up.

Printed: the time from the kill to the broker hearing the worker's next report, to the job
completing, and to ``job.wait()`` returning. 12 epochs (about 7 s of training here) so that the
run outlasts the leader elections (4-9 s).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helium_grid as hg
import pytest
import torch
import torch.nn.functional as F

from faultjobs import digits, first_event, wide_mlp

from conftest import NatsCluster, WorkerSpec, start_nats_cluster, start_worker

pytestmark = pytest.mark.timeout(600)

EPOCHS = 12
BATCH = 32
LR = 1e-3
STREAMS = ["HELIUM_LEDGER", "HELIUM_RUNS", "HELIUM_EVENTS", "KV_helium_jobs"]


@pytest.fixture(scope="module")
def nats_server(grid_dir: Path) -> Iterator[NatsCluster]:
    cluster = start_nats_cluster(grid_dir, 3)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def broker_args() -> list[str]:
    return ["--replicas", "3"]


@pytest.fixture(scope="module")
def workers(grid_dir: Path, nats_server: NatsCluster, broker: Any) -> Iterator[dict[str, Any]]:
    """Two workers, each listing the nodes in another order (the client still picks at random
    among them, as NATS clients spread their load)."""
    specs = [
        (WorkerSpec("w-one", "owner-one", 1.0), nats_server.ordered(2, 3, 1)),
        (WorkerSpec("w-two", "owner-two", 1.5), nats_server.ordered(3, 1, 2)),
    ]
    started: dict[str, Any] = {}
    try:
        for spec, view in specs:
            started[spec.worker_id] = start_worker(grid_dir, view, spec)
        yield started
    finally:
        for proc in reversed(list(started.values())):
            proc.stop()


def node_of(cluster: NatsCluster, client_name: str) -> int:
    """The node whose monitoring endpoint lists a client connection named ``client_name``."""
    for i in sorted(cluster.procs):
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.monitor_port(i)}/connz?limit=1024", timeout=5) as r:
            if any(c.get("name") == client_name for c in json.load(r)["connections"]):
                return i
    raise AssertionError(f"{client_name} is connected to no node")


def nats_cli(cluster: NatsCluster, creds: Path, *args: str, check: bool = True) -> str:
    """The operators' ``nats`` CLI (``$HELIUM_NATS_CLI``) against the cluster; its stdout."""
    argv = [os.environ.get("HELIUM_NATS_CLI", "nats"), "--server", cluster.url, "--creds", str(creds), *args]
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30).stdout


def stream_info(cluster: NatsCluster, stream: str) -> dict[str, Any]:
    """``nats stream info`` with the broker's credential."""
    return json.loads(nats_cli(cluster, cluster.creds("broker", "broker"), "stream", "info", stream, "--json"))


def lead_from(cluster: NatsCluster, node: int) -> None:
    """Moves the JetStream meta leader, every stream's leader and the broker's run-event
    consumer's onto ``node``, so that losing it loses every leader at once (the worst case)."""
    name, broker = f"nats-{node}", cluster.creds("broker", "broker")
    # Each step-down answers an error when ``name`` already leads; the checks below decide.
    nats_cli(cluster, cluster.keys / "system.creds", "server", "cluster", "step-down", "--host", name, check=False)
    for stream in STREAMS:
        nats_cli(cluster, broker, "stream", "cluster", "step-down", stream, "--preferred", name, check=False)
    nats_cli(cluster, broker, "consumer", "cluster", "step-down", "HELIUM_RUNS", "helium-broker-runs", "--preferred", name, check=False)
    for stream in STREAMS:
        assert stream_info(cluster, stream)["cluster"]["leader"] == name, stream
    consumer = json.loads(nats_cli(cluster, broker, "consumer", "info", "HELIUM_RUNS", "helium-broker-runs", "--json"))
    assert consumer["cluster"]["leader"] == name, consumer["cluster"]


def reference_accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
    """The same model, data and hyper-parameters trained by plain torch here, uninterrupted
    (Adam, cross-entropy, shuffled batches: the grid's defaults), scored on the data."""
    model = wide_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(x), generator=g).split(BATCH):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_a_node_lost_mid_run_loses_nothing(
    connect: Callable[[str], Any], operator: Any, nats_server: NatsCluster, broker: Any, workers: dict[str, Any]
) -> None:
    cluster = nats_server
    for stream in STREAMS:
        info = stream_info(cluster, stream)
        assert info["config"]["num_replicas"] == 3, (stream, info["config"])
        assert len(info["cluster"]["replicas"]) == 2, (stream, info["cluster"])

    victim = node_of(cluster, "helium-broker")
    placement = {w: node_of(cluster, f"helium-worker {w}") for w in workers}
    lead_from(cluster, victim)

    operator.grant("alice", 20)
    alice = connect("alice")
    before = alice.balance().micro
    x, y = digits()
    job = alice.submit(wide_mlp(), train=(x, y), epochs=EPOCHS, batch_size=BATCH, lr=LR,
                       max_price=10, budget=5, checkpoint_every=20)  # fmt: skip
    alice._run(first_event(alice, job.id, lambda e: e.kind == "checkpointed"))
    trainer = job.status().worker
    killed_ms = time.time() * 1000
    cluster.kill_node(victim)
    final = job.wait(progress=False, timeout=400)
    waited_s = time.time() - killed_ms / 1000

    assert final.state is hg.JobState.COMPLETED, final
    assert node_of(cluster, "helium-broker") != victim
    events = job.events()
    # Training went on through the failover, and none of its reports was lost: every epoch's
    # progress once, the completion once (the events' times are the broker's). A checkpoint
    # may be superseded unsent (the result stands for it); those verified only move forward.
    epochs = [e.raw["epoch"] for e in events if e.kind == "progress"]
    assert epochs == list(range(1, EPOCHS + 1)), epochs
    later = [e for e in events if e.kind in ("progress", "checkpointed") and e.at_ms > killed_ms]
    assert later, "\n".join(f"{e.kind} {e.at_ms - killed_ms:+.0f}ms {dict(e.raw)}" for e in events)
    done = [e for e in events if isinstance(e, hg.StateChanged) and e.state is hg.JobState.COMPLETED]
    assert len(done) == 1, events
    print(
        f"\nnode {victim} (the broker's, leading every stream) killed; workers on nodes {placement}, "
        f"{trainer} training: its next report ({later[0].kind}, step {later[0].raw['step']}) reached the broker "
        f"{(later[0].at_ms - killed_ms) / 1000:.1f}s later, the job completed {(done[0].at_ms - killed_ms) / 1000:.1f}s "
        f"later, wait() returned {waited_s:.1f}s later"
    )
    awards = [e for e in events if isinstance(e, hg.Awarded)]
    assert 1 <= len(awards) <= 2, awards  # one award, or a resume elsewhere
    steps = [e.raw["step"] for e in events if e.kind == "checkpointed"]
    assert steps == sorted(set(steps)), f"checkpoints moved back: {steps}"

    # The books: what the researcher paid is what the owners earned, and what the job says.
    paid = before - alice.balance().micro
    earned = sum(connect(owner).balance().micro for owner in ("owner-one", "owner-two"))
    assert paid == earned == final.paid_micro, (paid, earned, final.paid_micro)
    assert paid > 0

    trained = job.result()
    with torch.no_grad():
        accuracy = (trained(x).argmax(1) == y).float().mean().item()
    reference = reference_accuracy(x, y)
    assert abs(accuracy - reference) <= 0.03, (accuracy, reference)

    # The killed node rejoins and its replicas catch up (polling the streams' view: the cluster
    # publishes no event for it).
    cluster.start_node(victim)
    name = f"nats-{victim}"
    deadline = time.monotonic() + 60
    for stream in STREAMS:
        while True:
            info = stream_info(cluster, stream)["cluster"]
            peers = [info.get("leader")] + [r["name"] for r in info.get("replicas", []) if r.get("current")]
            if name in peers:
                break
            assert time.monotonic() < deadline, (stream, info)
            time.sleep(0.5)
