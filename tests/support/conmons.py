"""Processes standing in for conmon: what sycri reads of a live conmon (its pid in
``<bundle>/conmon.pid``, a /proc command line naming conmon and the container) without
a container behind it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


class StandInConmon:
    """A shell whose /proc cmdline reads ``conmon ... <id>``, blocked on its stdin, with
    its pid written to ``bundle/conmon.pid``."""

    def __init__(self, bundle: Path, cid: str) -> None:
        bundle.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["conmon", "-c", "read line", cid], executable="/bin/sh", stdin=subprocess.PIPE
        )
        # conmon writes its pid file once it runs; right after exec the cmdline may
        # still read empty for a moment.
        cmdline = Path(f"/proc/{self.proc.pid}/cmdline")
        for _ in range(10_000):
            if cmdline.read_bytes().startswith(b"conmon"):
                break
            time.sleep(0.001)
        else:
            raise AssertionError(f"{cmdline} never read conmon")
        (bundle / "conmon.pid").write_text(f"{self.proc.pid}\n")
        self.bundle, self.cid = bundle, cid

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
