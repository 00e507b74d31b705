"""The public records: what the grid tells a researcher, as dataclasses.

Money fields keep the wire's integer micro-credits (``*_micro``) and offer credits as float
properties for display. Each record has a ``from_wire`` constructor that reads the MessagePack
map of the matching Rust type (``protocol/src/api.rs``, ``artifacts.rs``, ``job.rs``).

Example::

    status = job.status()
    print(status.state, status.worker, f"{status.paid:.6f} credits")
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from fractions import Fraction
from typing import Any

from ._limits import MICRO_PER_CREDIT, micro_to_credits
from ._wire import wire_int
from .errors import ProtocolError

__all__ = [
    "JobState",
    "ArtifactInfo",
    "JobStatus",
    "Balance",
    "StatementLine",
    "Earnings",
    "WorkerInfo",
    "JobEvent",
    "StateChanged",
    "Awarded",
    "Progress",
    "Checkpointed",
    "parse_event",
]


class JobState(str, Enum):
    """``queued → auctioning → assigned → running → completed | failed | cancelled | expired``.

    Example::

        >>> JobState("running").is_terminal
        False
    """

    QUEUED = "queued"
    AUCTIONING = "auctioning"
    ASSIGNED = "assigned"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        """Whether the job can change no more."""
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.EXPIRED)

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_wire(cls, value: Any) -> JobState:
        """The state named by a wire string."""
        try:
            return cls(value)
        except ValueError as e:
            raise ProtocolError(f"unknown job state {value!r}") from e


def _req(m: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return m[key]
    except (KeyError, TypeError) as e:
        raise ProtocolError(f"{what} lacks field {key!r}: {m!r}") from e


def _opt_int(value: Any) -> int | None:
    return None if value is None else wire_int(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def credits_text(micro: int) -> str:
    """Micro-credits as exact credits with six decimals: ``3517`` → ``'0.003517'``.

    Example::

        >>> credits_text(-2_500_000)
        '-2.500000'
    """
    whole, frac = divmod(abs(micro), MICRO_PER_CREDIT)
    return f"{'-' if micro < 0 else ''}{whole}.{frac:06d}"


def _credit_repr(obj: Any, units: Mapping[str, str] | None = None) -> str:
    """A dataclass repr in which each ``<name>_micro`` field shows as ``<name>=<credits> credits``
    (``units`` may name another unit, ``credits/h``); other fields as the dataclass shows them."""
    from dataclasses import fields

    parts = []
    for f in fields(obj):
        if not f.repr:
            continue
        value = getattr(obj, f.name)
        if f.name.endswith("_micro"):
            name = f.name[: -len("_micro")]
            unit = (units or {}).get(name, "credits")
            parts.append(f"{name}=None" if value is None else f"{name}={credits_text(value)} {unit}")
        else:
            parts.append(f"{f.name}={value!r}")
    return f"{type(obj).__name__}({', '.join(parts)})"


@dataclass(frozen=True)
class ArtifactInfo:
    """A stored, verified artifact: its name, size in bytes and lower-case hex SHA-256.

    Example::

        >>> ArtifactInfo.from_wire({"name": "result", "size": 3, "sha256": "ab"}).size
        3
    """

    name: str
    size: int
    sha256: str

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> ArtifactInfo:
        """From an ``ArtifactInfo`` map."""
        return cls(
            name=str(_req(m, "name", "ArtifactInfo")),
            size=wire_int(_req(m, "size", "ArtifactInfo")),
            sha256=str(_req(m, "sha256", "ArtifactInfo")),
        )


@dataclass(frozen=True)
class JobStatus:
    """What the grid knows of a job (the wire's ``JobView``).

    Example::

        s = job.status()
        if s.state is JobState.QUEUED and s.reason:
            print("waiting:", s.reason)
    """

    job_id: str
    principal: str
    state: JobState
    epochs: int
    epochs_done: int = 0
    name: str | None = None
    #: Why the job waits or failed, in words.
    reason: str | None = None
    #: The same reason as a stable code (``no_worker``, ``worker_lost``, ``cancelled``, …;
    #: docs/PROTOCOL.md): match this, not the words.
    reason_code: str | None = None
    #: The worker that won the auction.
    worker: str | None = None
    #: Contract price held at award (second price, capped by the budget), micro-credits.
    price_micro: int | None = None
    #: Micro-credits actually paid to the worker's owner.
    paid_micro: int = 0
    last_loss: float | None = None
    result: ArtifactInfo | None = None
    created_ms: int = 0
    updated_ms: int = 0

    def __repr__(self) -> str:
        """Money in credits: ``JobStatus(..., price=0.003517 credits, paid=0.001200 credits, ...)``."""
        return _credit_repr(self)

    @property
    def is_terminal(self) -> bool:
        """Whether the job is completed, failed, cancelled or expired."""
        return self.state.is_terminal

    @property
    def price(self) -> float | None:
        """The contract price in credits."""
        return None if self.price_micro is None else micro_to_credits(self.price_micro)

    @property
    def paid(self) -> float:
        """Credits paid to the worker's owner so far."""
        return micro_to_credits(self.paid_micro)

    @property
    def created(self) -> _dt.datetime:
        """When the job was submitted (UTC)."""
        return _dt.datetime.fromtimestamp(self.created_ms / 1000, tz=_dt.timezone.utc)

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> JobStatus:
        """From a ``JobView`` map."""
        result = m.get("result")
        return cls(
            job_id=str(_req(m, "job_id", "JobView")),
            principal=str(_req(m, "principal", "JobView")),
            state=JobState.from_wire(_req(m, "state", "JobView")),
            epochs=wire_int(_req(m, "epochs", "JobView")),
            epochs_done=wire_int(m.get("epochs_done") or 0),
            name=m.get("name"),
            reason=m.get("reason"),
            reason_code=m.get("reason_code") if isinstance(m.get("reason_code"), str) else None,
            worker=m.get("worker"),
            price_micro=_opt_int(m.get("price")),
            paid_micro=wire_int(m.get("paid") or 0),
            last_loss=_opt_float(m.get("last_loss")),
            result=None if result is None else ArtifactInfo.from_wire(result),
            created_ms=wire_int(m.get("created_ms") or 0),
            updated_ms=wire_int(m.get("updated_ms") or 0),
        )


def _exact_credits(value: Any) -> Fraction | None:
    """A number of credits as an exact fraction (floats by their shortest repr, as
    ``credits_to_micro`` reads them); ``None`` for what is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal, Fraction)):
        return None
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = Decimal(repr(value))
    elif isinstance(value, Decimal) and not value.is_finite():
        return None
    return Fraction(value)


@dataclass(frozen=True, eq=False)
class Balance:
    """A principal's balance in micro-credits (``micro`` is exact), which behaves as an amount
    of credits: ``float(b)`` and ``format(b, ".2f")`` give credits, balances of one principal
    add, subtract and compare, and numbers in credits mix in.

    - ``before - grid.balance()`` is a ``Balance`` of the same principal holding the (signed)
      difference: what was spent, exact to the micro-credit. ``b + 1.5``, ``b - 0.25`` and
      ``sum(balances)`` work the same way.
    - ``b > 5``, ``b == 0.5``, ``before < after``: comparisons in credits. Balances of two
      principals are never equal, and ordering or adding them raises ``ValueError``.
    - ``int(b)`` raises ``TypeError`` (micro-credits or whole credits? say which: ``b.micro``,
      ``int(float(b))``); ``bool(b)`` is ``b.micro != 0``.

    Example::

        >>> before = Balance("alice", 10_000_000)
        >>> spent = before - Balance("alice", 9_992_973)
        >>> spent
        Balance('alice', 0.007027 credits)
        >>> f"{float(spent):.4f}", format(before, ".2f"), before > 9.5
        ('0.0070', '10.00', True)
    """

    principal: str
    micro: int

    @property
    def credits(self) -> float:
        """The balance in credits."""
        return micro_to_credits(self.micro)

    @property
    def _text(self) -> str:
        """The exact amount with six decimals, ``-0.007027``."""
        return credits_text(self.micro)

    def __str__(self) -> str:
        """``alice: 2.500000 credits``: what a person wants to read in a notebook."""
        return f"{self.principal}: {self._text} credits"

    def __repr__(self) -> str:
        return f"Balance({self.principal!r}, {self._text} credits)"

    def __format__(self, spec: str) -> str:
        """A format spec formats the credits as a float (``f"{b:.2f}"``); none gives ``str(b)``."""
        return format(self.credits, spec) if spec else str(self)

    def __float__(self) -> float:
        return self.credits

    def __int__(self) -> int:
        raise TypeError(
            "int(Balance) is ambiguous: use balance.micro for exact micro-credits, int(float(balance)) for whole credits"
        )

    def __bool__(self) -> bool:
        return self.micro != 0

    def __hash__(self) -> int:
        # Equal to the hash of the number of credits it equals, as Python's numbers do.
        return hash(Fraction(self.micro, MICRO_PER_CREDIT))

    # -- arithmetic and comparison, in credits ----------------------------------------------------

    def _micro_of(self, other: Any, op: str) -> int | None:
        """``other`` in micro-credits: a balance of this principal, or a number of credits."""
        if isinstance(other, Balance):
            if other.principal != self.principal:
                raise ValueError(f"cannot {op} balances of {self.principal!r} and {other.principal!r}")
            return other.micro
        exact = _exact_credits(other)
        if exact is None:
            return None
        micro = exact * MICRO_PER_CREDIT
        return round(micro) if micro.denominator != 1 else int(micro)  # half-even, as credits_to_micro

    def _with(self, micro: int) -> Balance:
        return Balance(self.principal, micro)

    def __add__(self, other: Any) -> Balance:
        micro = self._micro_of(other, "add")
        return NotImplemented if micro is None else self._with(self.micro + micro)

    __radd__ = __add__

    def __sub__(self, other: Any) -> Balance:
        micro = self._micro_of(other, "subtract")
        return NotImplemented if micro is None else self._with(self.micro - micro)

    def __rsub__(self, other: Any) -> Balance:
        micro = self._micro_of(other, "subtract")
        return NotImplemented if micro is None else self._with(micro - self.micro)

    def __neg__(self) -> Balance:
        return self._with(-self.micro)

    def _compare(self, other: Any) -> Fraction | float | None:
        """``other`` as exact credits for comparing (a balance must be of this principal); an
        infinite or NaN float stays as it is, and compares as floats do."""
        if isinstance(other, Balance):
            self._micro_of(other, "compare")
            return other._exact
        if isinstance(other, float) and not math.isfinite(other):
            return other
        return _exact_credits(other)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Balance):
            return (self.principal, self.micro) == (other.principal, other.micro)
        theirs = self._compare(other)
        return NotImplemented if theirs is None else self._exact == theirs

    @property
    def _exact(self) -> Fraction:
        return Fraction(self.micro, MICRO_PER_CREDIT)

    def __lt__(self, other: Any) -> bool:
        theirs = self._compare(other)
        return NotImplemented if theirs is None else self._exact < theirs

    def __le__(self, other: Any) -> bool:
        theirs = self._compare(other)
        return NotImplemented if theirs is None else self._exact <= theirs

    def __gt__(self, other: Any) -> bool:
        theirs = self._compare(other)
        return NotImplemented if theirs is None else self._exact > theirs

    def __ge__(self, other: Any) -> bool:
        theirs = self._compare(other)
        return NotImplemented if theirs is None else self._exact >= theirs

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> Balance:
        """From a ``Balance`` map (``micro`` is an i128: bin or int on the wire)."""
        return cls(principal=str(_req(m, "principal", "Balance")), micro=wire_int(_req(m, "micro", "Balance")))


@dataclass(frozen=True)
class StatementLine:
    """One posting of this principal's account: a journaled transfer into it (``amount_micro``
    > 0) or out of it (< 0), with the balance after it (the wire's ``StatementLine``).

    ``kind`` is what the transfer id names: ``grant`` (minted by an operator), ``hold`` (a job's
    award price moved into its escrow), ``pay`` (a worker you own was paid for an award),
    ``refund`` (the unpaid part of a hold came back), ``sweep`` (a finished job's stray hold
    came back) or ``other``.

    Example::

        >>> line = StatementLine.from_wire({"seq": 3, "time_ms": 0, "transfer": "pay.j1.1", "job": "j1",
        ...     "counterparty": "escrow:j1", "kind": "pay", "micro": 700, "balance": 1_000_700, "memo": ""})
        >>> line.amount, line.balance
        (0.0007, 1.0007)
    """

    #: The ledger journal entry (stream sequence) that holds the transfer.
    seq: int
    time_ms: int
    transfer: str
    job: str | None
    counterparty: str
    kind: str
    amount_micro: int
    balance_micro: int
    memo: str = ""

    def __repr__(self) -> str:
        """Money in credits: ``StatementLine(..., amount=0.000700 credits, balance=...)``."""
        return _credit_repr(self)

    @property
    def amount(self) -> float:
        """Credits into the account (negative: out of it)."""
        return micro_to_credits(self.amount_micro)

    @property
    def balance(self) -> float:
        """The balance after this line, in credits."""
        return micro_to_credits(self.balance_micro)

    @property
    def time(self) -> _dt.datetime:
        """When the ledger journaled the transfer (UTC)."""
        return _dt.datetime.fromtimestamp(self.time_ms / 1000, tz=_dt.timezone.utc)

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> StatementLine:
        """From a ``StatementLine`` map (``micro`` and ``balance`` are i128: bin or int)."""
        job = m.get("job")
        return cls(
            seq=wire_int(_req(m, "seq", "StatementLine")),
            time_ms=wire_int(_req(m, "time_ms", "StatementLine")),
            transfer=str(_req(m, "transfer", "StatementLine")),
            job=None if job is None else str(job),
            counterparty=str(_req(m, "counterparty", "StatementLine")),
            kind=str(_req(m, "kind", "StatementLine")),
            amount_micro=wire_int(_req(m, "micro", "StatementLine")),
            balance_micro=wire_int(_req(m, "balance", "StatementLine")),
            memo=str(m.get("memo") or ""),
        )


@dataclass(frozen=True)
class Earnings:
    """What one account earned and spent, exact to the micro-credit, from its statement: a GPU
    owner who also trains models sees both in the one account.

    - ``earned``: the ``pay`` postings into the account (its workers' pay for awards).
    - ``spent``: ``hold`` postings out of it, less the ``refund`` and ``sweep`` postings back:
      what its own jobs cost. A hold of an award not yet settled counts in full until its
      refund comes back.
    - ``net`` = ``earned − spent``: above 0, the workers earned more than the jobs cost.
    - ``granted``: credits minted to the account. ``granted + net`` is the balance (when the
      statement holds no ``other`` postings).

    Each is a :class:`Balance` of the principal (``.micro`` exact, ``float()`` in credits).

    Example::

        >>> e = Earnings(Balance("o", 900), Balance("o", 400), Balance("o", 1_000_000))
        >>> e.net
        Balance('o', 0.000500 credits)
    """

    earned: Balance
    spent: Balance
    granted: Balance

    @property
    def net(self) -> Balance:
        """Earned less spent."""
        return self.earned - self.spent

    @property
    def principal(self) -> str:
        return self.earned.principal


@dataclass(frozen=True)
class WorkerInfo:
    """One worker's standing ask, as ``worker.list`` shows it.

    Example::

        for w in grid.workers():
            print(w.worker_id, w.owner, w.price_per_hour, "credits/h", "busy" if w.busy_with else "idle")
    """

    worker_id: str
    owner: str
    device: str
    device_name: str
    memory_bytes: int
    price_per_hour_micro: int
    #: Parameter-samples per second from the worker's start-up benchmark.
    throughput: float
    busy_with: str | None
    alive: bool
    #: The sandbox layers its trainer runs in (``landlock``, ``seccomp``, …); empty from a
    #: worker that predates sandboxing or runs without one (``--allow-unsandboxed``).
    sandbox: tuple[str, ...] = ()
    #: ``(completed + 1) / (completed + failed + 1)``, in (0, 1]; 1 for a newcomer. Auctions
    #: invite workers by estimated cost divided by it.
    reputation: float = 1.0
    #: Awards it completed, and abandoned (lost, restarted, preempted, failed by its own
    #: fault, refused after winning), since the broker started.
    completed: int = 0
    failed: int = 0
    #: Invitations it won, lost (another bid won) and declined, and its last auction note in
    #: words (``"lost job 0192…: outbid: 1.200000 against your 1.500000 credits/h (…)"``;
    #: :meth:`helium_grid.Grid.worker_log` has them all): your own workers' only, ``None`` for
    #: others' (they name other researchers' jobs and prices).
    won: int | None = None
    lost: int | None = None
    declined: int | None = None
    last_auction: str | None = None
    #: Why it takes no jobs now, by its owner's terms (``"outside the owner's hours 22:00–07:00"``,
    #: ``"the owner is using this machine (CPU 85 % busy)"``); a paused worker is not invited.
    paused: str | None = None

    def __repr__(self) -> str:
        """The ask in credits per hour: ``WorkerInfo(..., price_per_hour=1.000000 credits/h, ...)``."""
        return _credit_repr(self, {"price_per_hour": "credits/h"})

    @property
    def price_per_hour(self) -> float:
        """The ask in credits per device-hour."""
        return micro_to_credits(self.price_per_hour_micro)

    @property
    def memory_gb(self) -> float:
        """Device memory in GiB."""
        return self.memory_bytes / 2**30

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> WorkerInfo:
        """From a ``WorkerView`` map."""
        return cls(
            worker_id=str(_req(m, "worker_id", "WorkerView")),
            owner=str(_req(m, "owner", "WorkerView")),
            device=str(_req(m, "device", "WorkerView")),
            device_name=str(m.get("device_name", "")),
            memory_bytes=wire_int(m.get("memory_bytes") or 0),
            price_per_hour_micro=wire_int(_req(m, "price_per_hour", "WorkerView")),
            throughput=float(m.get("throughput") or 0.0),
            busy_with=m.get("busy_with"),
            alive=bool(m.get("alive", True)),
            sandbox=tuple(str(layer) for layer in m["sandbox"]) if isinstance(m.get("sandbox"), list) else (),
            reputation=_opt_float(m.get("reputation")) or 1.0,
            completed=wire_int(m.get("completed") or 0),
            failed=wire_int(m.get("failed") or 0),
            won=_opt_int(m.get("won")),
            lost=_opt_int(m.get("lost")),
            declined=_opt_int(m.get("declined")),
            last_auction=None if m.get("last_auction") is None else str(m["last_auction"]),
            paused=None if m.get("paused") is None else str(m["paused"]),
        )


@dataclass(frozen=True)
class AuctionNote:
    """How one auction invitation ended for a worker, and why (``grid.worker_log``): verdict
    ``won``, ``lost`` (another bid won), ``declined`` (the worker's own reason), ``refused``
    (its bid was out of bounds) or ``no_answer``. A lost bid shows the winning price and cost
    next to its own.

    Example::

        AuctionNote(job_id='0192…', verdict='lost', reason='outbid: 1.200000 against your 1.500000 credits/h (…)', …)
    """

    job_id: str
    at_ms: int
    verdict: str
    reason: str
    price_per_hour_micro: int | None = None
    cost_micro: int | None = None
    winning_price_per_hour_micro: int | None = None
    winning_cost_micro: int | None = None

    def __repr__(self) -> str:
        return _credit_repr(self, {"price_per_hour": "credits/h", "winning_price_per_hour": "credits/h"})

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> AuctionNote:
        """From an ``AuctionNote`` map."""
        return cls(
            job_id=str(_req(m, "job_id", "AuctionNote")),
            at_ms=wire_int(_req(m, "at_ms", "AuctionNote")),
            verdict=str(_req(m, "verdict", "AuctionNote")),
            reason=str(m.get("reason") or ""),
            price_per_hour_micro=_opt_int(m.get("price_per_hour")),
            cost_micro=_opt_int(m.get("cost")),
            winning_price_per_hour_micro=_opt_int(m.get("winning_price_per_hour")),
            winning_cost_micro=_opt_int(m.get("winning_cost")),
        )


@dataclass(frozen=True)
class Quote:
    """What a job would cost and take on the grid's current asks (``grid.quote``); nothing
    was submitted or held.

    ``price`` is what the auction would charge if the workers it would invite now bid their
    asks; while the asks do not change, the price charged for the same job submitted next lies
    in ``[low, high]`` whichever of those workers are still free. ``reason`` says why no
    worker could take it (then the numbers are 0).

    Example::

        q = grid.quote(model, train=(x, y), epochs=30, batch_size=64, max_price=5, budget=2)
        print(f"{q.low:.6f}-{q.high:.6f} credits, about {q.duration}")
    """

    price_micro: int
    low_micro: int
    high_micro: int
    #: The expected winner, and its ETA for the job in seconds.
    worker: str | None
    eta_secs: float
    eta_low_secs: float
    eta_high_secs: float
    #: Workers an auction would invite now, and how many of them meet every constraint.
    invited: int
    qualifying: int
    reason: str | None = None

    def __repr__(self) -> str:
        """Money in credits: ``Quote(price=0.001390 credits, low=..., high=..., ...)``."""
        return _credit_repr(self)

    @property
    def available(self) -> bool:
        """Whether some worker could take the job now."""
        return self.reason is None

    @property
    def price(self) -> float:
        """The expected price in credits."""
        return micro_to_credits(self.price_micro)

    @property
    def low(self) -> float:
        """The lowest price the job can be charged on these asks, in credits."""
        return micro_to_credits(self.low_micro)

    @property
    def high(self) -> float:
        """The highest price the job can be charged on these asks, in credits."""
        return micro_to_credits(self.high_micro)

    @property
    def duration(self) -> _dt.timedelta:
        """The expected winner's estimate of the job's time."""
        return _dt.timedelta(seconds=self.eta_secs)

    @classmethod
    def from_wire(cls, m: Mapping[str, Any]) -> Quote:
        """From a ``Quote`` map."""
        return cls(
            price_micro=wire_int(_req(m, "price", "Quote")),
            low_micro=wire_int(_req(m, "low", "Quote")),
            high_micro=wire_int(_req(m, "high", "Quote")),
            worker=m.get("worker") if isinstance(m.get("worker"), str) else None,
            eta_secs=float(m.get("eta_secs") or 0.0),
            eta_low_secs=float(m.get("eta_low_secs") or 0.0),
            eta_high_secs=float(m.get("eta_high_secs") or 0.0),
            invited=wire_int(m.get("invited") or 0),
            qualifying=wire_int(m.get("qualifying") or 0),
            reason=m.get("reason") if isinstance(m.get("reason"), str) else None,
        )


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event stream. Kinds this client does not know arrive as a plain
    ``JobEvent`` with the raw map in ``raw``.

    Example::

        for ev in job.events():
            print(ev.at, ev.kind)
    """

    job_id: str
    at_ms: int
    kind: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def at(self) -> _dt.datetime:
        """When it happened (UTC)."""
        return _dt.datetime.fromtimestamp(self.at_ms / 1000, tz=_dt.timezone.utc)


@dataclass(frozen=True)
class StateChanged(JobEvent):
    """The job entered ``state``; ``reason`` says why it waits or failed.

    Example::

        if isinstance(ev, StateChanged) and ev.state is JobState.QUEUED:
            print("queued:", ev.reason)
    """

    state: JobState = JobState.QUEUED
    reason: str | None = None


@dataclass(frozen=True)
class Awarded(JobEvent):
    """The auction closed: ``worker`` won among ``bids`` at ``price_micro``.

    Example::

        print(f"{ev.worker} won {ev.bids} bids at {ev.price:.6f} credits, eta {ev.eta_secs:.0f}s")
    """

    worker: str = ""
    bids: int = 0
    price_micro: int = 0
    eta_secs: float = 0.0

    def __repr__(self) -> str:
        """The price in credits: ``Awarded(..., worker='w1', bids=2, price=0.003517 credits, ...)``."""
        return _credit_repr(self)

    @property
    def price(self) -> float:
        """The contract price in credits."""
        return micro_to_credits(self.price_micro)


@dataclass(frozen=True)
class Progress(JobEvent):
    """One epoch done, with its mean training loss.

    Example::

        losses = [ev.loss for ev in job.events() if isinstance(ev, Progress)]
    """

    epoch: int = 0
    epochs: int = 0
    loss: float = float("nan")
    samples_per_sec: float = 0.0
    #: Optimizer steps taken by the end of the epoch, over the whole job (``None`` from an
    #: older broker).
    step: int | None = None
    #: On the validation split given to ``submit(validation=...)``, else ``None``.
    val_loss: float | None = None
    #: Only for classification losses, else ``None``.
    val_accuracy: float | None = None


@dataclass(frozen=True)
class Checkpointed(JobEvent):
    """The broker verified a checkpoint after optimizer step ``step`` (``epoch`` epochs
    complete): the job resumes there if its worker is lost, and that worker is paid up to it.

    Example::

        last = [ev for ev in job.events() if isinstance(ev, Checkpointed)][-1:]
    """

    step: int = 0
    epoch: int = 0


def parse_event(m: Mapping[str, Any]) -> JobEvent:
    """A ``JobEvent`` map (flat, tagged by ``kind``) → the matching record.

    Example::

        >>> parse_event({"v": 1, "job_id": "j", "at_ms": 0, "kind": "state", "state": "running"}).state
        <JobState.RUNNING: 'running'>
    """
    job_id = str(_req(m, "job_id", "JobEvent"))
    at_ms = wire_int(m.get("at_ms") or 0)
    kind = str(_req(m, "kind", "JobEvent"))
    raw = dict(m)
    if kind == "state":
        return StateChanged(
            job_id, at_ms, kind, raw, state=JobState.from_wire(_req(m, "state", "state event")), reason=m.get("reason")
        )
    if kind == "awarded":
        return Awarded(
            job_id,
            at_ms,
            kind,
            raw,
            worker=str(m.get("worker", "")),
            bids=wire_int(m.get("bids") or 0),
            price_micro=wire_int(m.get("price") or 0),
            eta_secs=float(m.get("eta_secs") or 0.0),
        )
    if kind == "progress":
        return Progress(
            job_id,
            at_ms,
            kind,
            raw,
            epoch=wire_int(m.get("epoch") or 0),
            epochs=wire_int(m.get("epochs") or 0),
            step=_opt_int(m.get("step")),
            loss=float(m.get("loss", float("nan"))),
            samples_per_sec=float(m.get("samples_per_sec") or 0.0),
            val_loss=_opt_float(m.get("val_loss")),
            val_accuracy=_opt_float(m.get("val_accuracy")),
        )
    if kind == "checkpointed":
        return Checkpointed(
            job_id, at_ms, kind, raw, step=wire_int(m.get("step") or 0), epoch=wire_int(m.get("epoch") or 0)
        )
    return JobEvent(job_id, at_ms, kind, raw)
