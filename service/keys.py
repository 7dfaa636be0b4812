"""API keys: issued once, stored only as an argon2 hash, looked up by their public id.

A key reads ``dpt_<id>_<secret>``: ``id`` (16 hex digits) is the row to look up, ``secret`` (43 URL-safe characters,
256 random bits) is checked against the stored argon2id hash, so a stolen database yields no usable key.

Scopes are ordered, each including the ones before it: ``score`` < ``read`` < ``label`` < ``admin``. A ``read`` key
can also score; a ``label`` key can also read what it labels; an ``admin`` key can do everything.

Verifying argon2 costs tens of milliseconds and megabytes by design, too much for every request, so ``KeyVerifier``
remembers a key it has verified for ``ttl_s`` seconds (by the key's sha256, never the key itself). The price: a revoked
key keeps working for at most ``ttl_s`` in a process that saw it recently.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.models import ApiKey, utcnow

SCOPES = ("score", "read", "label", "admin")  # ordered: each scope includes the ones before it
PREFIX = "dpt"
KEY_PATTERN = re.compile(rf"^{PREFIX}_(?P<id>[0-9a-f]{{16}})_(?P<secret>[A-Za-z0-9_-]{{43}})$")

# OWASP's minimum argon2id settings (19 MiB, 2 passes): the secret is random, so the hash needs no more stretching.
_hasher = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's id, its name and its scope."""

    key_id: str
    name: str
    scope: str

    def allows(self, required: str) -> bool:
        """True if this key's scope is ``required`` or above it."""
        return scope_allows(self.scope, required)


@dataclass(frozen=True)
class IssuedKey:
    """A new key; ``token`` is shown to its owner once and never stored."""

    principal: Principal
    token: str


def scope_allows(granted: str, required: str) -> bool:
    """``admin`` allows every scope; ``label`` allows ``read`` and ``score``; ``read`` allows ``score``.

    >>> scope_allows("label", "read"), scope_allows("score", "read"), scope_allows("label", "admin")
    (True, False, False)
    """
    return SCOPES.index(granted) >= SCOPES.index(required)


def check_scope(scope: str) -> str:
    """``scope`` if it is a known scope, else a ``ValueError`` naming the known ones."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}; found {scope!r}")
    return scope


def create_key(session: Session, scope: str, name: str) -> IssuedKey:
    """Store a new key with ``scope`` and return it, secret included (the only time it is available)."""
    check_scope(scope)
    if not name.strip() or len(name) > 100:
        raise ValueError(f"name must be 1-100 characters; found {len(name)}")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    session.add(ApiKey(id=key_id, name=name, scope=scope, secret_hash=_hasher.hash(secret)))
    session.commit()
    return IssuedKey(Principal(key_id, name, scope), f"{PREFIX}_{key_id}_{secret}")


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of ``token``, or None if it is malformed, unknown, revoked or has the wrong secret."""
    match = KEY_PATTERN.match(token)
    if match is None:
        return None
    row = session.get(ApiKey, match["id"])
    if row is None or row.revoked_at is not None:
        return None
    try:
        _hasher.verify(row.secret_hash, match["secret"])
    except (VerificationError, InvalidHashError):
        return None
    return Principal(row.id, row.name, row.scope)


def list_keys(session: Session) -> list[ApiKey]:
    """Every key, oldest first (hashes included: callers show only ids, names and scopes)."""
    return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke the key ``key_id``; False if there is no such key or it was already revoked."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    session.commit()
    return True


def shown(key_id: str) -> str:
    """How a key is shown once issued: its prefix only, ``dpt_<id>_…`` (the secret is never shown again)."""
    return f"{PREFIX}_{key_id}_…"


def key_id_in(reference: str) -> str | None:
    """The key id in what a person types to name a key: ``<id>``, ``dpt_<id>``, ``dpt_<id>_…`` or the whole key."""
    match = re.match(rf"^(?:{PREFIX}_)?(?P<id>[0-9a-f]{{16}})(?:_.*)?$", reference.strip())
    return match["id"] if match else None


def key_id_of(token: str) -> str | None:
    """The public id inside a well-formed token (for error messages); None if malformed."""
    match = KEY_PATTERN.match(token)
    return match["id"] if match else None


class KeyVerifier:
    """``authenticate`` with a short memory of keys verified recently (see the module docstring)."""

    def __init__(self, ttl_s: float = 60.0, size: int = 1024) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._seen: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()  # guards _seen
        self._verifying = threading.Lock()

    def verify(self, session: Session, token: str) -> Principal | None:
        """The principal of ``token``, from memory if verified less than ``ttl_s`` ago."""
        digest = hashlib.sha256(token.encode()).digest()
        principal = self._remembered(digest)
        if principal is not None:
            return principal
        # One argon2 verification at a time (~20 ms, 19 MiB each): a burst of requests with a new key verifies it
        # once instead of once per thread, and memory stays bounded whatever the burst.
        with self._verifying:
            principal = self._remembered(digest) or authenticate(session, token)
            if principal is not None:
                self._remember(digest, principal)
        return principal

    def _remembered(self, digest: bytes) -> Principal | None:
        with self._lock:
            remembered = self._seen.get(digest)
        return remembered[0] if remembered is not None and remembered[1] > time.monotonic() else None

    def _remember(self, digest: bytes, principal: Principal) -> None:
        with self._lock:
            self._seen[digest] = (principal, time.monotonic() + self.ttl_s)
            self._seen.move_to_end(digest)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
