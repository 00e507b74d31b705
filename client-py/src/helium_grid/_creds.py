"""Which principal a NATS credential (``.creds`` file) is, and the inbox its connection uses.

A grid's nats-server accepts only connections with a credential its operator issued
(``helium creds issue researcher alice > alice.creds``); the permissions inside it let the
connection publish only under its own principal and read only its own inbox and job events. The
client therefore takes the principal from the credential, never from an argument. The JWT is
read without checking its signature: the server checks it at connect.

Example::

    >>> who = principal_of(Path("alice.creds"))  # doctest: +SKIP
    >>> who.name, who.inbox_prefix  # doctest: +SKIP
    ('alice', '_INBOX.p.alice')
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import Unauthorized

__all__ = ["Credential", "CredentialError", "CREDS_ENV", "principal_of", "find_creds"]

#: The environment variable naming a ``.creds`` file when ``creds=`` is not given.
CREDS_ENV = "HELIUM_CREDS"
_ROLE_TAG = "role:"
_ROLES = ("researcher", "operator")


class CredentialError(Unauthorized):
    """A ``.creds`` file that is missing, unreadable, or not a researcher's or operator's."""


@dataclass(frozen=True)
class Credential:
    """What a ``.creds`` file says about its holder."""

    path: Path
    name: str
    role: str

    @property
    def inbox_prefix(self) -> str:
        """Replies to this principal's requests arrive under it; no one else may read there."""
        return f"_INBOX.p.{self.name}"


def find_creds(creds: str | os.PathLike[str] | None) -> Path | None:
    """``creds``, else ``$HELIUM_CREDS``, else ``None``."""
    if creds is not None:
        return Path(creds)
    env = os.environ.get(CREDS_ENV)
    return Path(env) if env else None


def principal_of(path: Path) -> Credential:
    """The principal and role of the credential in ``path`` (a researcher or an operator)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise CredentialError(f"cannot read the credential {path}: {e.strerror or e}") from e
    claims = _claims(_section(text, "NATS USER JWT", path))
    name = claims.get("name")
    tags = claims.get("nats", {}).get("tags") or []
    role = next((t[len(_ROLE_TAG) :] for t in tags if isinstance(t, str) and t.startswith(_ROLE_TAG)), None)
    if not isinstance(name, str) or not name:
        raise CredentialError(f"{path} names no principal")
    if role not in _ROLES:
        raise CredentialError(
            f"{path} is a {role or 'non-Helium'} credential; a notebook connects as a researcher or an operator"
        )
    return Credential(path=path, name=name, role=role)


def _section(text: str, label: str, path: Path) -> str:
    lines = [line.strip() for line in text.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("-----BEGIN") and label in line and i + 1 < len(lines) and lines[i + 1]:
            return lines[i + 1]
    raise CredentialError(f"{path} is not a NATS credentials file (no {label} section)")


def _claims(token: str) -> dict:
    parts = token.split(".")
    if len(parts) != 3:
        raise CredentialError("the credential's JWT is not three base64url parts")
    body = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(body))
    except (ValueError, UnicodeDecodeError) as e:
        raise CredentialError(f"the credential's JWT is unreadable: {e}") from e
    if not isinstance(claims, dict):
        raise CredentialError("the credential's JWT claims are not an object")
    return claims
