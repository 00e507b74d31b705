"""Every NATS subject, stream and bucket name the client uses: a checked copy of
``protocol/src/subjects.rs``.

Shape: ``helium.v1.<role>.<id>.<resource>.<verb>``. The ``<id>`` token is the caller's identity
(principal or worker id). ``tests/e2e/test_subjects_match.py`` compares :func:`templates` with
``helium-broker print-subjects`` so the two copies cannot drift apart.

Example::

    >>> api("alice", JOB_SUBMIT)
    'helium.v1.api.alice.job.submit'
"""

from __future__ import annotations

import re

__all__ = [
    "PREFIX",
    "API_SERVICE",
    "WORKER_GATEWAY_SERVICE",
    "BROKER_QUEUE",
    "JOB_SUBMIT",
    "JOB_STATUS",
    "JOB_CANCEL",
    "JOB_LIST",
    "JOB_FOLLOW",
    "JOB_QUOTE",
    "ACCOUNT_BALANCE",
    "ACCOUNT_GRANT",
    "ACCOUNT_STATEMENT",
    "WORKER_LIST",
    "WORKER_LOG",
    "ARTIFACT_BEGIN",
    "ARTIFACT_CHUNK",
    "ARTIFACT_COMMIT",
    "ARTIFACT_READ",
    "API_ALL",
    "WORKER_REGISTER",
    "WORKER_HEARTBEAT",
    "WORKER_RUN_EVENT",
    "WORKER_REQUESTS",
    "DISPATCH_INVITE",
    "DISPATCH_AWARD",
    "DISPATCH_CANCEL",
    "DISPATCH_SETTLED",
    "DISPATCH_AUCTION_RESULT",
    "EVENTS_STREAM",
    "EVENTS_SUBJECTS",
    "RUNS_STREAM",
    "RUNS_SUBJECTS",
    "RUNS_CONSUMER",
    "LEDGER_STREAM",
    "LEDGER_SUBJECT",
    "JOBS_BUCKET",
    "api",
    "api_any",
    "worker",
    "worker_any",
    "dispatch",
    "job_events",
    "identity_of",
    "valid_id",
    "templates",
]

#: First two tokens of every Helium subject.
PREFIX = "helium.v1"

#: Micro service names (discoverable with ``nats micro ls``).
API_SERVICE = "helium-api"
WORKER_GATEWAY_SERVICE = "helium-worker-gateway"
#: Queue group for load-balanced broker endpoints.
BROKER_QUEUE = "helium-broker"

# Researcher/operator API verbs, each ``helium.v1.api.<principal>.<verb>`` (Rust ``subjects::api``).
JOB_SUBMIT = "job.submit"
JOB_STATUS = "job.status"
JOB_CANCEL = "job.cancel"
JOB_LIST = "job.list"
JOB_FOLLOW = "job.follow"
JOB_QUOTE = "job.quote"
ACCOUNT_BALANCE = "account.balance"
ACCOUNT_GRANT = "account.grant"
ACCOUNT_STATEMENT = "account.statement"
WORKER_LIST = "worker.list"
WORKER_LOG = "worker.log"
ARTIFACT_BEGIN = "artifact.begin"
ARTIFACT_CHUNK = "artifact.chunk"
ARTIFACT_COMMIT = "artifact.commit"
ARTIFACT_READ = "artifact.read"
#: Every API verb, in the order of Rust's ``subjects::api::ALL``.
API_ALL: tuple[str, ...] = (
    JOB_SUBMIT,
    JOB_STATUS,
    JOB_CANCEL,
    JOB_LIST,
    JOB_FOLLOW,
    JOB_QUOTE,
    ACCOUNT_BALANCE,
    ACCOUNT_GRANT,
    ACCOUNT_STATEMENT,
    WORKER_LIST,
    WORKER_LOG,
    ARTIFACT_BEGIN,
    ARTIFACT_CHUNK,
    ARTIFACT_COMMIT,
    ARTIFACT_READ,
)

# Worker → broker verbs, each ``helium.v1.worker.<worker>.<verb>`` (Rust ``subjects::worker``).
WORKER_REGISTER = "agent.register"
WORKER_HEARTBEAT = "agent.heartbeat"
WORKER_RUN_EVENT = "run.event"
#: Request/reply verbs served by the broker's worker gateway.
WORKER_REQUESTS: tuple[str, ...] = (
    WORKER_REGISTER,
    ARTIFACT_BEGIN,
    ARTIFACT_CHUNK,
    ARTIFACT_COMMIT,
    ARTIFACT_READ,
)

# Broker → worker verbs, each ``helium.v1.dispatch.<worker>.<verb>`` (Rust ``subjects::dispatch``).
DISPATCH_INVITE = "auction.invite"
DISPATCH_AWARD = "job.award"
DISPATCH_CANCEL = "job.cancel"
DISPATCH_SETTLED = "job.settled"
#: A plain publish: why the worker's bid did not win (``AuctionNote``).
DISPATCH_AUCTION_RESULT = "auction.result"

# JetStream streams and KV buckets (Rust ``subjects::streams``).
EVENTS_STREAM = "HELIUM_EVENTS"
EVENTS_SUBJECTS = "helium.v1.events.>"
RUNS_STREAM = "HELIUM_RUNS"
RUNS_SUBJECTS = "helium.v1.worker.*.run.event"
RUNS_CONSUMER = "helium-broker-runs"
LEDGER_STREAM = "HELIUM_LEDGER"
LEDGER_SUBJECT = "helium.v1.ledger.journal"
JOBS_BUCKET = "helium_jobs"

_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def api(principal: str, verb: str) -> str:
    """``helium.v1.api.<principal>.<verb>``.

    Example::

        >>> api("alice", ACCOUNT_BALANCE)
        'helium.v1.api.alice.account.balance'
    """
    return f"{PREFIX}.api.{principal}.{verb}"


def api_any(verb: str) -> str:
    """The wildcard the broker serves one API verb on: ``helium.v1.api.*.<verb>``.

    Example::

        >>> api_any(JOB_SUBMIT)
        'helium.v1.api.*.job.submit'
    """
    return f"{PREFIX}.api.*.{verb}"


def worker(worker_id: str, verb: str) -> str:
    """``helium.v1.worker.<worker>.<verb>``.

    Example::

        >>> worker("w1", WORKER_RUN_EVENT)
        'helium.v1.worker.w1.run.event'
    """
    return f"{PREFIX}.worker.{worker_id}.{verb}"


def worker_any(verb: str) -> str:
    """The wildcard the broker serves one worker verb on: ``helium.v1.worker.*.<verb>``.

    Example::

        >>> worker_any(WORKER_REGISTER)
        'helium.v1.worker.*.agent.register'
    """
    return f"{PREFIX}.worker.*.{verb}"


def dispatch(worker_id: str, verb: str) -> str:
    """``helium.v1.dispatch.<worker>.<verb>``.

    Example::

        >>> dispatch("w1", DISPATCH_AWARD)
        'helium.v1.dispatch.w1.job.award'
    """
    return f"{PREFIX}.dispatch.{worker_id}.{verb}"


def job_events(principal: str, job_id: str) -> str:
    """``helium.v1.events.<principal>.<job>``: a job's replayable history.

    Example::

        >>> job_events("alice", "j1")
        'helium.v1.events.alice.j1'
    """
    return f"{PREFIX}.events.{principal}.{job_id}"


def valid_id(token: str) -> bool:
    """Principals, worker ids and job ids are single subject tokens: 1–64 of ``[A-Za-z0-9_-]``.

    Example::

        >>> valid_id("gpu-owner_2"), valid_id("a.b"), valid_id("")
        (True, False, False)
    """
    return _ID.fullmatch(token) is not None


def identity_of(subject: str) -> str | None:
    """The identity token of a subject built by :func:`api`, :func:`worker` or :func:`dispatch`.

    Example::

        >>> identity_of("helium.v1.api.alice.job.submit")
        'alice'
    """
    tokens = subject.split(".")
    if len(tokens) >= 4 and tokens[0] == "helium" and tokens[1] == "v1" and valid_id(tokens[3]):
        return tokens[3]
    return None


def templates() -> dict[str, str]:
    """Every name above as a template, keyed as ``helium-broker print-subjects`` prints them.

    Placeholders are ``{principal}``, ``{worker}`` and ``{job}``.

    Example::

        >>> templates()["api.job.submit"]
        'helium.v1.api.{principal}.job.submit'
    """
    out: dict[str, str] = {}
    for verb in API_ALL:
        out[f"api.{verb}"] = api("{principal}", verb)
    for verb in (WORKER_REGISTER, WORKER_HEARTBEAT, WORKER_RUN_EVENT, *WORKER_REQUESTS):
        out[f"worker.{verb}"] = worker("{worker}", verb)
    for verb in (DISPATCH_INVITE, DISPATCH_AWARD, DISPATCH_CANCEL, DISPATCH_SETTLED, DISPATCH_AUCTION_RESULT):
        out[f"dispatch.{verb}"] = dispatch("{worker}", verb)
    out["events"] = job_events("{principal}", "{job}")
    out["stream.events"] = EVENTS_STREAM
    out["stream.events.subjects"] = EVENTS_SUBJECTS
    out["stream.runs"] = RUNS_STREAM
    out["stream.runs.subjects"] = RUNS_SUBJECTS
    out["stream.runs.consumer"] = RUNS_CONSUMER
    out["stream.ledger"] = LEDGER_STREAM
    out["stream.ledger.subject"] = LEDGER_SUBJECT
    out["bucket.jobs"] = JOBS_BUCKET
    out["service.api"] = API_SERVICE
    out["service.worker_gateway"] = WORKER_GATEWAY_SERVICE
    out["queue.broker"] = BROKER_QUEUE
    return out
