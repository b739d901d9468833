"""How the benches report figures: one percentile rule, the markdown table of the
side-by-side benchmarks (one row an operation, containerd beside sycri: medians, the
ratio sycri/containerd, p99s) and a one-line median and p99, so every bench reads the same."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``: the nearest rank, no interpolation."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def median_p99(seconds: list[float]) -> str:
    """``median … ms   p99 … ms`` of durations in seconds: a bench's one-line figures."""
    return (
        f"median {statistics.median(seconds) * 1e3:8.2f} ms   "
        f"p99 {percentile(seconds, 99) * 1e3:8.2f} ms"
    )


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def ms_or_s(value: float) -> str:
    """Milliseconds, or seconds from one second up (a pull of a large image)."""
    return f"{value / 1000:.2f} s" if value >= 1000 else ms(value)


def ratio_table(
    rows: Iterable[tuple[str, list[float], list[float]]],
    label: str = "op",
    fmt: Callable[[float], str] = ms_or_s,
) -> None:
    """Print ``(operation, containerd ms, sycri ms)`` rows; an operation one runtime has
    no figures for is left out. ``n`` counts sycri's calls."""
    print(
        f"| {label} | n | containerd median | sycri median | ratio | containerd p99 | sycri p99 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for op, c, s in rows:
        if not c or not s:
            continue
        cm, sm = statistics.median(c), statistics.median(s)
        print(
            f"| {op} | {len(s)} | {fmt(cm)} | {fmt(sm)} | {sm / cm:.2f}x "
            f"| {fmt(percentile(c, 99))} | {fmt(percentile(s, 99))} |"
        )
