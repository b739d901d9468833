"""One blob streamed into a file: digest, bounds, stalls and cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from pathlib import Path

import pytest
from sycri.errors import DeadlineExceeded, InvalidArgument
from sycri.images.download import stream_to_file


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _reader(chunks: list[bytes], gate: asyncio.Event | None = None):
    it = iter(chunks)

    async def read(n: int) -> bytes:
        chunk = next(it, b"")
        if not chunk and gate is not None:
            await gate.wait()
        return chunk

    return read


def _stream(read, dest: Path, limit: int = 1 << 30, timeout: float = 30.0, seen=None):
    return stream_to_file(
        read,
        dest,
        limit=limit,
        too_long=lambda n: InvalidArgument(f"more than {limit}: {n}"),
        stalled=lambda n: DeadlineExceeded(f"stalled after {n}"),
        progress_timeout=timeout,
        on_chunk=(seen.append if seen is not None else lambda n: None),
    )


def test_every_byte_is_written_hashed_and_counted(tmp_path):
    chunks = [os.urandom(1 << 20) for _ in range(5)] + [b"tail"]
    seen: list[int] = []
    got = asyncio.run(_stream(_reader(chunks), tmp_path / "blob", seen=seen))
    data = b"".join(chunks)
    assert (tmp_path / "blob").read_bytes() == data
    assert got.size == len(data) and seen == [len(c) for c in chunks]
    assert got.digest == "sha256:" + hashlib.sha256(data).hexdigest()


def test_past_the_limit_fails_before_the_chunk_is_written(tmp_path):
    before = _open_fds()
    with pytest.raises(InvalidArgument, match="more than 1500"):
        asyncio.run(_stream(_reader([b"a" * 1000, b"b" * 1000]), tmp_path / "blob", limit=1500))
    assert (tmp_path / "blob").read_bytes() == b"a" * 1000
    assert _open_fds() == before


def test_a_stalled_read_fails(tmp_path):
    async def go():
        gate = asyncio.Event()  # never set: the server sends nothing more
        await _stream(_reader([b"x" * 10], gate), tmp_path / "blob", timeout=0.2)

    with pytest.raises(DeadlineExceeded, match="stalled after 10"):
        asyncio.run(go())


def test_a_cancelled_download_waits_for_its_writer_and_closes_the_file(tmp_path):
    """Cancelled while a chunk is being written: the cancellation returns only after the
    writer thread finished and closed the file, so the caller may remove the directory."""
    writing = threading.Event()
    release = threading.Event()
    real_write = os.write

    def slow_write(fd: int, data) -> int:
        if len(data) >= 4096 and threading.current_thread().name.startswith("sycri-blob"):
            writing.set()
            release.wait(10)
        return real_write(fd, data)

    async def go() -> None:
        gate = asyncio.Event()
        task = asyncio.create_task(_stream(_reader([b"y" * 8192], gate), tmp_path / "blob"))
        await asyncio.to_thread(writing.wait, 10)
        task.cancel()
        await asyncio.sleep(0)
        assert not task.done()  # still waiting for the thread
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    before = _open_fds()
    os.write = slow_write  # type: ignore[assignment]
    try:
        asyncio.run(go())
    finally:
        os.write = real_write
    assert _open_fds() == before
    assert (tmp_path / "blob").read_bytes() == b"y" * 8192
