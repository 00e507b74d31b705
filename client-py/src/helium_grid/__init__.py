"""helium_grid: train PyTorch models on a Helium grid from a notebook.

A researcher hands the grid an untrained model, its training data and constraints; GPU owners'
workers bid in a reverse auction, the winner trains, and the trained module comes back.

Example::

    import torch
    from helium_grid import Grid

    grid = Grid("nats://127.0.0.1:4222", creds="alice.creds")   # or $HELIUM_CREDS
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    before = grid.balance()
    job = grid.submit(model, train=(x, y), epochs=30, batch_size=64, lr=1e-2,
                      max_price=5.0, budget=2.0)   # loss, optimizer settings: sensible defaults
    job.wait()                      # progress bar: epoch/epochs, loss
    trained = job.result()          # your own module (TorchScript) with the trained weights
    job.history()                   # a DataFrame: epoch, loss, val_loss, ..., worker, time
    job.plot()                      # the loss and validation curves (matplotlib)
    print(f"spent {before - grid.balance():.6f} credits")

# Layout
- ``_sync``: :class:`Grid` and :class:`Job`, the blocking facade (a private loop in a thread).
- ``_async``: :class:`AsyncGrid` and :class:`AsyncJob`, the asyncio core (requests, events).
- ``_submission``: argument checks, defaults (loss, optimizer), the trial step that refuses what
  cannot train, and serialization (TorchScript, safetensors), all before upload.
- ``_artifacts``: chunked, SHA-256-checked upload and download.
- ``_creds``: the principal a ``.creds`` file names (the grid's operator issues them);
  ``_connect``: the NATS connection (credential, inbox prefix, TLS, refusals as ``Unauthorized``).
- ``_state``: the model's state manifest sent at submit, and loading a result's tensors (never
  code) into the researcher's own module.
- ``_wire``: MessagePack codec and the ``{v, ok | error}`` reply envelope.
- ``_subjects``: subject, stream and bucket names (a checked copy of the Rust protocol's).
- ``_limits``: chunk sizes and unit conversions (credits ↔ micro-credits, deadlines).
- ``_progress``: the ``tqdm.auto`` progress bar of ``wait``.
- ``_burst``: many jobs at once: sweep grids, the combined progress bar of ``wait_all`` and
  its DataFrame of outcomes.
- ``_statement``: ``grid.statement()`` (a DataFrame of the account's postings),
  ``grid.earnings()`` (earned, spent, net) and ``grid.plot_statement()``.
- ``_history``: ``job.history()`` (a pandas DataFrame of per-epoch metrics from the events) and
  ``job.plot()`` (the matplotlib figure of its curves).
- ``records``: the public dataclasses; ``errors``: the exception hierarchy.
"""

from __future__ import annotations

from ._async import AsyncGrid, AsyncJob
from ._creds import CREDS_ENV, CredentialError
from ._limits import MICRO_PER_CREDIT, credits_to_micro, micro_to_credits
from ._submission import DEVICES, LOSSES, OPTIMIZER_DEFAULTS, OPTIMIZERS
from ._sync import Grid, Job, wait_all
from ._wire import PROTOCOL_VERSION
from .errors import (
    BadRequest,
    Conflict,
    DigestMismatch,
    HeliumError,
    InsufficientFunds,
    Internal,
    InvalidData,
    InvalidState,
    QuotaExceeded,
    InvalidModel,
    JobFailed,
    NotFound,
    ProtocolError,
    TooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedVersion,
    WaitTimeout,
)
from .records import (
    AuctionNote,
    ArtifactInfo,
    Awarded,
    Balance,
    Checkpointed,
    Earnings,
    JobEvent,
    JobState,
    JobStatus,
    Progress,
    Quote,
    StateChanged,
    StatementLine,
    WorkerInfo,
)

__version__ = "0.1.0"

__all__ = [
    "AuctionNote",
    "Grid",
    "Job",
    "wait_all",
    "AsyncGrid",
    "AsyncJob",
    "JobState",
    "JobStatus",
    "JobEvent",
    "StateChanged",
    "Awarded",
    "Progress",
    "Checkpointed",
    "ArtifactInfo",
    "Balance",
    "StatementLine",
    "Earnings",
    "WorkerInfo",
    "Quote",
    "HeliumError",
    "BadRequest",
    "UnsupportedVersion",
    "Unauthorized",
    "CredentialError",
    "CREDS_ENV",
    "NotFound",
    "TooLarge",
    "Conflict",
    "InsufficientFunds",
    "InvalidModel",
    "InvalidData",
    "InvalidState",
    "QuotaExceeded",
    "DigestMismatch",
    "Unavailable",
    "Internal",
    "ProtocolError",
    "JobFailed",
    "WaitTimeout",
    "LOSSES",
    "OPTIMIZERS",
    "OPTIMIZER_DEFAULTS",
    "DEVICES",
    "MICRO_PER_CREDIT",
    "PROTOCOL_VERSION",
    "credits_to_micro",
    "micro_to_credits",
    "__version__",
]
