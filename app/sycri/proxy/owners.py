"""Which backend owns a pod sandbox or container id.

The existing runtime's ids pass through unchanged (pods that ran before the switch keep
their ids), so an id says nothing about its owner: the proxy remembers the owner of
every id it has seen created or listed, and on a miss rebuilds that memory from both
backends' List calls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from sycri.api import api_pb2
from sycri.proxy.backend import Backend, BackendError
from sycri.proxy.routes import RUNTIME


@dataclass
class Owners:
    primary: Backend
    sycri: Backend
    _owner: dict[str, Backend] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def remember(self, backend: Backend, ids: list[str]) -> None:
        for i in ids:
            self._owner[i] = backend

    def forget(self, id_: str) -> None:
        self._owner.pop(id_, None)

    def known(self, id_: str) -> Backend | None:
        return self._owner.get(id_)

    async def of(self, id_: str) -> Backend:
        """The owner of ``id_``. An id neither backend lists goes to the existing runtime
        (which answers NOT_FOUND as it did before the proxy). When sycri cannot be asked
        and the existing runtime does not have it, UNAVAILABLE names sycri."""
        owner = self._owner.get(id_)
        if owner is not None:
            return owner
        async with self._lock:
            owner = self._owner.get(id_)
            if owner is not None:
                return owner
            errors: dict[str, BackendError] = {}
            for backend in (self.primary, self.sycri):
                try:
                    self.remember(backend, await ids(backend))
                except BackendError as exc:
                    errors[backend.name] = exc
            owner = self._owner.get(id_)
            if owner is not None:
                return owner
            if self.sycri.name in errors:
                raise errors[self.sycri.name]
            return self.primary


async def ids(backend: Backend) -> list[str]:
    """Every pod sandbox and container id ``backend`` lists."""
    pods = await backend.unary(RUNTIME + "ListPodSandbox", b"", timeout=10)
    ctrs = await backend.unary(RUNTIME + "ListContainers", b"", timeout=10)
    return listed_ids(RUNTIME + "ListPodSandbox", pods) + listed_ids(
        RUNTIME + "ListContainers", ctrs
    )


def listed_ids(method: str, raw: bytes) -> list[str]:
    if method == RUNTIME + "ListPodSandbox":
        return [p.id for p in api_pb2.ListPodSandboxResponse.FromString(raw).items]
    return [c.id for c in api_pb2.ListContainersResponse.FromString(raw).containers]
