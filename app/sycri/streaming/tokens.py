"""Single-use, expiring tokens naming one pending stream request.

The URL returned by Exec, Attach or PortForward carries the token; whoever presents
it first within the time-to-live gets the request, and nobody after that.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_PENDING = 10000  # a flood of unused URLs must not grow memory without bound


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool = False
    stdin: bool = False
    stdout: bool = True
    stderr: bool = True


@dataclass(frozen=True)
class PortForwardRequest:
    sandbox_id: str
    ports: tuple[int, ...] = ()


class TokenCache(Generic[T]):
    """token → request, each taken at most once and only before it expires."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[str, tuple[float, T]] = {}

    def issue(self, request: T) -> str:
        self._expire()
        if len(self._entries) >= MAX_PENDING:
            oldest = min(self._entries, key=lambda k: self._entries[k][0])
            del self._entries[oldest]
        token = secrets.token_urlsafe(24)
        self._entries[token] = (self._clock() + self.ttl, request)
        return token

    def take(self, token: str) -> T | None:
        """The request, removing it; None when unknown, used or expired."""
        entry = self._entries.pop(token, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def _expire(self) -> None:
        now = self._clock()
        for k in [k for k, (deadline, _) in self._entries.items() if deadline <= now]:
            del self._entries[k]

    def __len__(self) -> int:
        return len(self._entries)
