"""rlimits: the node's ``default_ulimits``, changed per pod within the node's ceilings."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sycri.errors import InvalidArgument, excerpt

RLIMITS = {
    "as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
    "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack",
}  # fmt: skip
ULIMITS_ANNOTATION = "sycri.io/ulimits"  # pod annotation: "memlock=-1:-1,nofile=4096"


def rlimits(
    defaults: tuple[str, ...],
    pod_annotations: Mapping[str, str],
    ceilings: tuple[str, ...] = (),
    own: Mapping[str, tuple[int, int]] | None = None,
    can_raise_hard: bool = True,
) -> list[dict[str, Any]]:
    """The node's rlimits (``default_ulimits``), changed per pod by ``sycri.io/ulimits``.

    rlimits are the node's decision: runc applies them as root, so a pod author could
    otherwise take ``rtprio=99`` or ``memlock=unlimited``. A pod may ask for any soft
    limit up to its hard limit, and for a hard limit up to the node's (its default, else
    sycri's own, ``own``) or up to the node's ceiling (``max_ulimits``). Without
    CAP_SYS_RESOURCE (``can_raise_hard`` False) no hard limit can exceed sycri's own.
    """
    node: dict[str, tuple[int, int]] = {}
    for item in defaults:
        name, soft, hard = _parse_ulimit(item, "default_ulimits")
        node[name] = (soft, hard)
    ceiling: dict[str, int] = {}
    for item in ceilings:
        name, _, hard = _parse_ulimit(item, "max_ulimits")
        ceiling[name] = hard
    limits = dict(node)
    raw = pod_annotations.get(ULIMITS_ANNOTATION, "")
    where = f"annotation {ULIMITS_ANNOTATION}"
    for item in (p.strip() for p in raw.split(",")):
        if not item:
            continue
        name, soft, hard = _parse_ulimit(item, where)
        base = node.get(name) or (own or {}).get(name)
        allowed = max(base[1] if base else 0, ceiling.get(name, 0))
        if hard > allowed:
            raise InvalidArgument(
                f"{where}: {name} hard limit {_shown(hard)} is above the node's "
                f"{_shown(allowed)}; only max_ulimits on the node can allow more"
            )
        mine = (own or {}).get(name)
        if not can_raise_hard and mine is not None and hard > mine[1]:
            raise InvalidArgument(
                f"{where}: {name} hard limit {_shown(hard)} is above sycri's own "
                f"{_shown(mine[1])}, and the node lacks CAP_SYS_RESOURCE to raise it"
            )
        limits[name] = (soft, hard)
    return [
        {"type": "RLIMIT_" + n.upper(), "soft": s, "hard": h}
        for n, (s, h) in sorted(limits.items())
    ]


def _shown(value: int) -> str:
    return "unlimited" if value >= _UNLIMITED else str(value)


_UNLIMITED = 2**64 - 1


def _parse_ulimit(item: str, where: str) -> tuple[str, int, int]:
    """``name=soft[:hard]``; -1 or ``unlimited`` means no limit."""
    name, sep, values = item.partition("=")
    name = name.strip().lower().removeprefix("rlimit_")
    if not sep or name not in RLIMITS:
        raise InvalidArgument(f"{where}: {excerpt(item)} is not NAME=SOFT[:HARD]")
    soft_s, _, hard_s = values.partition(":")

    def num(s: str) -> int:
        s = s.strip().lower()
        if s in ("-1", "unlimited"):
            return _UNLIMITED
        if not s.isdigit():
            raise InvalidArgument(f"{where}: {excerpt(item)} has a bad number")
        return int(s)

    soft = num(soft_s)
    hard = num(hard_s) if hard_s else soft
    if soft > hard:
        raise InvalidArgument(f"{where}: {excerpt(item)}: soft limit above hard limit")
    return name, soft, hard


# --- security --------------------------------------------------------------------------
