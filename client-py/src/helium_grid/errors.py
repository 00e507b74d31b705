"""The exceptions of ``helium_grid``: one base, :class:`HeliumError`, and a subclass per wire
error code (``protocol/src/envelope.rs``'s ``ErrorCode``), plus a few the client raises itself.

Every error carries ``code`` (the wire code, or a client-side one) and the human message. Input
problems found before any network traffic raise the same classes the broker would reply with,
so one ``except`` covers both.

Example::

    from helium_grid import Grid, BadRequest, InsufficientFunds

    try:
        job = grid.submit(model, train=(x, y), epochs=5, batch_size=32, max_price=2.0, budget=1.0)
    except InsufficientFunds as e:
        print("top up first:", e)
    except BadRequest as e:          # also InvalidModel / InvalidData: what cannot train
        print("fix the request:", e)
"""

from __future__ import annotations

__all__ = [
    "HeliumError",
    "BadRequest",
    "UnsupportedVersion",
    "Unauthorized",
    "NotFound",
    "TooLarge",
    "Conflict",
    "InsufficientFunds",
    "InvalidModel",
    "InvalidData",
    "DigestMismatch",
    "InvalidState",
    "QuotaExceeded",
    "Unavailable",
    "Internal",
    "ProtocolError",
    "JobFailed",
    "WaitTimeout",
    "error_from_wire",
]


class HeliumError(Exception):
    """Base of every error this package raises.

    Example::

        try:
            grid.balance()
        except HeliumError as e:
            print(e.code, e.message)
    """

    #: The wire error code this class stands for (``None`` for client-only errors).
    default_code: str | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code if code is not None else self.default_code

    def __str__(self) -> str:
        return self.message


class BadRequest(HeliumError):
    """The request is malformed or a value is out of range (``bad_request``).

    Example::

        grid.submit(model, train=(x, y[:-1]), ...)  # raises BadRequest: x and y lengths differ
    """

    default_code = "bad_request"


class UnsupportedVersion(HeliumError):
    """The peer speaks another protocol version (``unsupported_version``).

    Example::

        except UnsupportedVersion: print("upgrade helium-grid to match the broker")
    """

    default_code = "unsupported_version"


class Unauthorized(HeliumError):
    """The caller may not do this, e.g. grant credits without being an operator (``unauthorized``).

    Example::

        Grid(url, principal="researcher").grant("researcher", 1e6)  # raises Unauthorized
    """

    default_code = "unauthorized"


class NotFound(HeliumError):
    """No such job, upload or artifact for this principal (``not_found``).

    Example::

        grid.job("no-such-job").status()  # raises NotFound
    """

    default_code = "not_found"


class TooLarge(HeliumError):
    """A payload, chunk or artifact is over the grid's limits (``too_large``).

    Example::

        except TooLarge: print("subsample the data set")
    """

    default_code = "too_large"


class Conflict(HeliumError):
    """A state conflict: an id reused with other content, a job already finished (``conflict``).

    Example::

        job.result()  # on a job still running raises Conflict
    """

    default_code = "conflict"


class InsufficientFunds(HeliumError):
    """The account cannot cover the hold (``insufficient_funds``).

    Example::

        except InsufficientFunds: grid.balance()
    """

    default_code = "insufficient_funds"


class InvalidModel(BadRequest):
    """The model is not TorchScript, cannot be scripted, or cannot train: its forward fails on
    the data, cross_entropy over a single output, a non-finite loss on finite data, a loss no
    trainable parameter reaches (``invalid_model``).

    Example::

        grid.submit(model_using_numpy, ...)  # raises InvalidModel, suggesting torch.jit.trace
    """

    default_code = "invalid_model"


class InvalidData(BadRequest):
    """The data is not safetensors with matching ``x`` and ``y``, or does not fit the model's
    output: shapes that would broadcast, class labels outside the output's range, non-finite
    values that make the loss NaN (``invalid_data``).

    Example::

        grid.submit(regressor, train=(x, y), loss="mse", ...)
        # InvalidData: mse: the model's output on x[:64] has shape (64, 1) (float32) but y[:64]
        # has shape (64,) (float32); they would broadcast to (64, 64). Use y.unsqueeze(1), …
    """

    default_code = "invalid_data"


class InvalidState(HeliumError):
    """A result or checkpoint is not a safetensors state file whose names, shapes and dtypes
    match the job's model (``invalid_state``). The broker refuses such an upload from a worker;
    the client checks again before copying a result into the researcher's module.

    Example::

        job.result()  # raises InvalidState if the result does not fit the submitted model
    """

    default_code = "invalid_state"


class DigestMismatch(HeliumError):
    """A SHA-256 or size did not match what was declared (``digest_mismatch``).

    Example::

        job.result()  # raises DigestMismatch if the download was corrupted
    """

    default_code = "digest_mismatch"


class QuotaExceeded(HeliumError):
    """The caller is over one of the grid's quotas (``quota_exceeded``): open jobs, staged
    bytes, or checkpoints per award. The same request succeeds once under it.

    Example::

        except QuotaExceeded: job.wait(); grid.submit(...)  # one finished: room for another
    """

    default_code = "quota_exceeded"


class Unavailable(HeliumError):
    """The grid cannot serve this now; retrying may work (``unavailable``). Also raised when no
    broker answers or NATS cannot be reached.

    Example::

        Grid("nats://127.0.0.1:1", principal="me")  # raises Unavailable
    """

    default_code = "unavailable"


class Internal(HeliumError):
    """The broker failed in a way it did not expect (``internal``).

    Example::

        except Internal as e: print("report this:", e)
    """

    default_code = "internal"


class ProtocolError(HeliumError):
    """A reply could not be understood (not MessagePack, neither ``ok`` nor ``error``).

    Example::

        except ProtocolError: print("client and broker disagree about the wire format")
    """

    default_code = "protocol"


class JobFailed(HeliumError):
    """The job ended ``failed`` or ``expired``; ``status`` holds its last :class:`JobStatus`.

    Example::

        try:
            job.wait()
        except JobFailed as e:
            print(e.status.state, e.status.reason)
    """

    default_code = "job_failed"

    def __init__(self, message: str, *, status: object = None) -> None:
        super().__init__(message)
        self.status = status


class WaitTimeout(HeliumError, TimeoutError):
    """``Job.wait(timeout=…)`` ran out of time; the job goes on.

    Example::

        try:
            job.wait(timeout=60)
        except WaitTimeout:
            job.cancel()
    """

    default_code = "timeout"


_BY_CODE: dict[str, type[HeliumError]] = {
    cls.default_code: cls
    for cls in (
        BadRequest,
        UnsupportedVersion,
        Unauthorized,
        NotFound,
        TooLarge,
        Conflict,
        InsufficientFunds,
        InvalidModel,
        InvalidData,
        DigestMismatch,
        InvalidState,
        QuotaExceeded,
        Unavailable,
        Internal,
    )
}


def error_from_wire(code: str, message: str) -> HeliumError:
    """The exception for a wire ``error: {code, message}``; unknown codes give a plain
    :class:`HeliumError` that keeps the code.

    Example::

        >>> type(error_from_wire("insufficient_funds", "balance 3 < 5")).__name__
        'InsufficientFunds'
    """
    cls = _BY_CODE.get(code, HeliumError)
    return cls(message or code, code=code)
