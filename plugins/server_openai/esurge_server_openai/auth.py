"""API keys: stored as sha256 digests, matched in constant time, with per-key usage."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from esurge_server_openai.errors import APIError
from esurge_server_openai.request_guard import SCOPE_API_KEY


@dataclass(slots=True)
class KeyUsage:
    """What one API key has consumed."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(slots=True)
class ApiKeyRecord:
    """A registered key: its digest, its label (the prefix-cache salt) and its usage."""

    digest: bytes
    label: str
    usage: KeyUsage = field(default_factory=KeyUsage)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeyStore:
    """The keys a server accepts; the plaintext of a key is never stored."""

    def __init__(self, api_keys: Mapping[str, Mapping[str, Any]] | None = None):
        self._records: list[ApiKeyRecord] = []
        self._total = KeyUsage()
        self._lock = threading.Lock()
        for key, meta in (api_keys or {}).items():
            self.add(key, label=str(meta.get("label", "")) or None)

    def add(self, key: str, label: str | None = None) -> ApiKeyRecord:
        """Accept ``key``; ``label`` defaults to a short digest prefix (never the key)."""
        if not key:
            raise ValueError("an API key must be a non-empty string")
        digest = _digest(key)
        record = ApiKeyRecord(digest, label or f"key-{digest.hex()[:12]}")
        with self._lock:
            if self._find(digest) is not None:
                raise ValueError(f"an API key with label {record.label!r} is already registered")
            self._records.append(record)
        return record

    def generate(self, label: str | None = None) -> str:
        """Create, register and return a new random key (shown once, stored as a digest)."""
        key = "sk-esurge-" + secrets.token_urlsafe(32)
        self.add(key, label)
        return key

    def revoke(self, key: str) -> ApiKeyRecord | None:
        """Stop accepting ``key`` (effective for the next request); its record, if any."""
        digest = _digest(key)
        with self._lock:
            record = self._find(digest)
            if record is not None:
                self._records.remove(record)
            return record

    def lookup(self, key: str) -> ApiKeyRecord | None:
        """The record of ``key``, compared digest against digest in constant time."""
        digest = _digest(key)
        with self._lock:
            return self._find(digest)

    def _find(self, digest: bytes) -> ApiKeyRecord | None:
        found = None
        for record in self._records:  # no early exit: timing does not depend on position
            if hmac.compare_digest(record.digest, digest):
                found = record
        return found

    def usage(self) -> dict[str, KeyUsage]:
        """Usage per key label."""
        with self._lock:
            return {r.label: KeyUsage(**_usage_fields(r.usage)) for r in self._records}

    def total(self) -> KeyUsage:
        """Usage of every request served, with or without a key."""
        with self._lock:
            return KeyUsage(**_usage_fields(self._total))

    def record_usage(
        self, record: ApiKeyRecord | None, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Add one served request to the totals and to ``record``'s (if a key was used)."""
        with self._lock:
            self._total.requests += 1
            self._total.prompt_tokens += prompt_tokens
            self._total.completion_tokens += completion_tokens
            if record is None:
                return
            record.usage.requests += 1
            record.usage.prompt_tokens += prompt_tokens
            record.usage.completion_tokens += completion_tokens


def _usage_fields(usage: KeyUsage) -> dict[str, int]:
    return {
        "requests": usage.requests,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
    }


def presented_key(request: Request) -> str | None:
    """The key a client sent: ``Authorization: Bearer``, ``X-API-Key`` or ``?api_key=``
    (which ``RequestGuard`` has moved out of the query string into the scope)."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    header = request.headers.get("x-api-key")
    if header:
        return header.strip()
    from_query = request.scope.get(SCOPE_API_KEY)
    if from_query is None and SCOPE_API_KEY not in request.scope:
        from_query = request.query_params.get("api_key")
    return from_query or None


def authenticate(store: ApiKeyStore, request: Request, required: bool) -> ApiKeyRecord | None:
    """The caller's key record; raises a 401 when a valid key is required and absent."""
    key = presented_key(request)
    record = store.lookup(key) if key else None
    if required and record is None:
        message = (
            "missing API key: send 'Authorization: Bearer KEY', 'X-API-Key: KEY' or ?api_key=KEY"
            if key is None
            else "invalid API key"
        )
        raise APIError(message, status=401, type="authentication_error", code="invalid_api_key")
    return record
