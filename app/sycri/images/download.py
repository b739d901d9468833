"""One blob streamed into a file: read on the event loop, hashed and written in a thread.

The registry client (layers, oras SIFs) and the library client (legacy SIF downloads)
both stream through :func:`stream_to_file`. The event loop only awaits the network and
counts bytes; each download has a worker thread of its own that hashes and writes its
chunks in order, one chunk behind the network, so a pull never stalls another RPC. A
cancelled download still waits for its thread to finish and close the file, so nothing
writes into a directory the caller is about to remove.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sycri.errors import SycriError

CHUNK = 1 << 20
# Hashing less than this on the event loop costs well under a millisecond.
SMALL = 256 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Streamed:
    size: int
    digest: str  # sha256:<hex> of every byte written


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def settle(fut: asyncio.Future[T]) -> None:
    """Wait until ``fut`` (work in a thread) is done, even when the caller is cancelled
    meanwhile; the cancellation is raised afterwards. Its result is left to the caller."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait([fut])
        except asyncio.CancelledError:
            cancelled = True
    if not fut.cancelled():
        fut.exception()  # retrieved: a failure is the caller's to raise, not the loop's
    if cancelled:
        raise asyncio.CancelledError


async def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``; off the event loop unless it is small."""
    if len(data) < SMALL:
        return "sha256:" + hashlib.sha256(data).hexdigest()
    return "sha256:" + (await asyncio.to_thread(hashlib.sha256, data)).hexdigest()


class BlobWriter:
    """Writes a blob's chunks to ``dest`` and hashes them, in order, in a thread of its own.

    ``write`` hands a chunk to the thread and returns once the previous chunk is written,
    so at most two chunks are held and the network read overlaps the disk write."""

    def __init__(self, dest: Path) -> None:
        self._dest = dest
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sycri-blob")
        self._hash = hashlib.sha256()
        self._fd = -1
        self._pending: asyncio.Future[None] | None = None

    def _run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def __aenter__(self) -> BlobWriter:
        fut = self._run(os.open, self._dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            await settle(fut)
        except asyncio.CancelledError:
            if not fut.cancelled() and fut.exception() is None:
                os.close(fut.result())
            self._pool.shutdown(wait=False)
            raise
        try:
            self._fd = fut.result()
        except BaseException:
            self._pool.shutdown(wait=False)
            raise
        return self

    def _write(self, chunk: bytes) -> None:
        self._hash.update(chunk)
        write_all(self._fd, chunk)

    async def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            await settle(pending)
            pending.result()  # a failed write (ENOSPC, ...) raises here

    async def write(self, chunk: bytes) -> None:
        await self._flush()
        self._pending = self._run(self._write, chunk)

    async def digest(self) -> str:
        """``sha256:<hex>`` of everything written, once the last chunk is on disk."""
        await self._flush()
        return "sha256:" + self._hash.hexdigest()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # The thread runs its work in order: the close follows any write still pending.
        pending, self._pending = self._pending, None
        closing = self._run(os.close, self._fd)
        try:
            if pending is not None:
                await settle(pending)
            await settle(closing)
        finally:
            self._pool.shutdown(wait=False)
        if exc_type is None:
            if pending is not None:
                pending.result()
            closing.result()


async def stream_to_file(
    read: Callable[[int], Awaitable[bytes]],
    dest: Path,
    *,
    limit: int,
    too_long: Callable[[int], SycriError],
    stalled: Callable[[int], SycriError],
    progress_timeout: float,
    on_chunk: Callable[[int], None],
) -> Streamed:
    """Read ``read(CHUNK)`` until it returns nothing, writing and hashing every byte into
    ``dest``. Past ``limit`` bytes it raises ``too_long(n)`` at once (before writing the
    chunk); a read that brings nothing for ``progress_timeout`` seconds raises
    ``stalled(n)``. ``on_chunk(len)`` is told of every chunk as it arrives."""
    n = 0
    async with BlobWriter(dest) as out:
        while True:
            try:
                chunk = await asyncio.wait_for(read(CHUNK), progress_timeout)
            except TimeoutError:
                raise stalled(n) from None
            if not chunk:
                break
            n += len(chunk)
            on_chunk(len(chunk))
            if n > limit:
                raise too_long(n)
            await out.write(chunk)
        digest = await out.digest()
    return Streamed(n, digest)
