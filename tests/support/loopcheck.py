"""Fail a test whose sycri made a blocking call on its event loop (sycri.blocking).

A blocking call on the loop stalls every RPC in flight, streaming included. A record
names the primitive and the sycri frames that called it, innermost first.

``KNOWN``: call sites still writing records on the event loop; both pod and container
records now persist off it (issue 19), so it is empty. A record is tolerated when one of
its frames is such a site. Each entry is a debt: remove it when its
code moves off the loop. A blocking call anywhere else fails the test.
"""

from __future__ import annotations

import re

KNOWN: dict[tuple[str, str], str] = {}


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
