"""The loop check (sycri.blocking): blocking calls on the event-loop thread are recorded,
the same calls in worker threads are not, and nothing is recorded before it is armed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sycri import blocking

from tests.support import loopcheck
from tests.support.server import sycri_env

SCRIPT = textwrap.dedent(
    """
    import asyncio, hashlib, os, socket, sqlite3, subprocess, sys, time
    from sycri import blocking

    blocking.install(sys.argv[1])

    async def main(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT)
        os.fsync(fd)  # not armed yet: start-up is not an RPC
        blocking.arm()
        os.fsync(fd)
        os.write(fd, b"small")
        os.write(fd, b"x" * blocking.LARGE)
        hashlib.sha256(b"y" * blocking.LARGE).hexdigest()
        hashlib.sha256(b"small").hexdigest()
        db = sqlite3.connect(":memory:")
        db.execute("SELECT 1")
        db.commit()
        time.sleep(0)
        subprocess.Popen(["true"]).wait()
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path + ".sock")
        srv.listen(4)
        socket.socket(socket.AF_UNIX).connect(path + ".sock")
        quiet = socket.socket(socket.AF_UNIX)
        quiet.setblocking(False)  # what asyncio does: never recorded
        quiet.connect(path + ".sock")
        # off the loop: none of these is recorded
        await asyncio.to_thread(os.fsync, fd)
        await asyncio.to_thread(lambda: hashlib.sha256(b"z" * blocking.LARGE).digest())
        await asyncio.to_thread(lambda: sqlite3.connect(":memory:").execute("SELECT 1"))
        await asyncio.to_thread(time.sleep, 0)
        blocking.arm(False)
        os.fsync(fd)

    asyncio.run(main(sys.argv[1] + ".data"))
    """
)


def test_blocking_calls_on_the_loop_thread_are_recorded_and_others_are_not(tmp_path):
    out = tmp_path / "calls.jsonl"
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)], env=sycri_env(), check=True, timeout=60
    )
    calls = [c["call"] for c in blocking.recorded(out)]
    assert calls == [
        "os.fsync",
        "os.write (large)",
        "hashlib.sha256.update",
        "sqlite3.execute",
        "sqlite3.commit",
        "time.sleep",
        "subprocess.Popen.wait",
        "socket.connect (blocking)",
    ]


def test_a_record_fails_the_test_unless_a_known_site_made_it(monkeypatch):
    # KNOWN empties as records move off the loop: the test brings its own entry.
    site = ("os.fsync", "runtime/container/container_store.py save")
    monkeypatch.setitem(loopcheck.KNOWN, site, "test")
    known = {"call": "os.fsync", "where": "fsutil.py:24 atomic_write",
             "stack": ["fsutil.py:24 atomic_write", "runtime/container/container_store.py:164 save"]}  # fmt: skip
    other = {"call": "os.fsync", "where": "fsutil.py:24 atomic_write",
             "stack": ["fsutil.py:24 atomic_write", "images/store.py:1 add"]}  # fmt: skip
    loopcheck.fail_on([known])
    try:
        loopcheck.fail_on([known, other])
    except AssertionError as exc:
        assert "images/store.py:1 add" in str(exc) and "container_store.py" not in str(exc)
    else:
        raise AssertionError("an unknown blocking call passed")
