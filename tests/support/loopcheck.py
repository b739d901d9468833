"""Fail a test whose sycri made a blocking call on its event loop (sycri.blocking).

A blocking call on the loop stalls every RPC in flight, streaming included. A record
names the primitive and the sycri frames that called it, innermost first.

``KNOWN``: call sites in runtime/container, whose records are being rewritten into
metadata and status stores persisted off the loop (issue 19; pod records already are).
A record is tolerated when one of its frames is such a site. Each entry is a debt: remove it when its
code moves off the loop. A blocking call anywhere else fails the test.
"""

from __future__ import annotations

import re

KNOWN: dict[tuple[str, str], str] = {
    ("os.fsync", "runtime/container/container_store.py save"): (
        "a container record written by a lifecycle call, or by a status query folding in "
        "an exit (refresh)"
    ),
    ("os.fsync", "runtime/container/containers.py create"): "the bundle's config.json",
}


def _site(frame: str) -> str:
    return re.sub(r":\d+ ", " ", frame)


def tolerated(call: dict) -> bool:
    return any((call["call"], _site(f)) in KNOWN for f in call["stack"])


def fail_on(calls: list[dict]) -> None:
    bad = [c for c in calls if not tolerated(c)]
    if not bad:
        return
    seen: dict[tuple[str, str], int] = {}
    for c in bad:
        key = (c["call"], " <- ".join(c["stack"][:5]))
        seen[key] = seen.get(key, 0) + 1
    lines = [f"{n}x {call} at {stack}" for (call, stack), n in sorted(seen.items())]
    raise AssertionError(
        "sycri made blocking calls on its event loop (each stalls every RPC):\n"
        + "\n".join(lines)
    )
