"""critest's own benchmark (``critest --benchmark``) against containerd and sycri, in turn,
in one run, with per-operation medians and the ratio sycri/containerd.

This is the measurement issue 18 was filed with: critest v1.32's pod, container and
image lifecycle and image listing benchmarks, serial (the parameters of
``../shared/critest/bench-params.yaml``: 100 pods, 100 containers, 50 pulls). It needs
critest on PATH (or ``--critest``) and the offline critest kit of ``../shared/critest``
(its registry on 127.0.0.1:5000 holds the images critest pulls; prefix mode).
containerd runs as in ``bench/side_by_side.py`` (Debian's 1.6, CRI plugin + runc, its own
socket, root, bridge and subnet) and may pull from that registry over plain HTTP.

Run as root from the repository root:
  .venv/bin/python bench/critest_bench.py [--rounds 2] [--kit ../shared/critest]
Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]

from bench.report import ms, ratio_table  # noqa: E402
from tests.support import registry  # noqa: E402
from tests.support.containerd import containerd  # noqa: E402
from tests.support.node import served  # noqa: E402

KIT_REGISTRY = "localhost:5000"  # critest's prefix mode pulls from here
FILES = (
    ("pod_benchmark_data.json", "pod"),
    ("container_benchmark_data.json", "container"),
    ("image_lifecycle_benchmark_data.json", "image"),
    ("image_listing_benchmark_data.json", "listing"),
)


def durations(out: Path) -> dict[str, list[float]]:
    """Milliseconds per operation, from critest's ``--benchmarking-output-dir`` JSON."""
    found: dict[str, list[float]] = {}
    for name, group in FILES:
        path = out / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for i, op in enumerate(data["operationsNames"]):
            found.setdefault(f"{group} {op}", []).extend(
                p["operationsDurationsNs"][i] / 1e6 for p in data["datapoints"]
            )
    return found


def run_critest(kit: Path, critest: str, name: str, endpoint: str, out: Path) -> None:
    (out / "data").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CRITEST": critest, "CRITEST_TMP": str(out / "tmp")}
    proc = subprocess.run(
        [str(kit / "run_critest.sh"), endpoint, str(out), "--benchmark",
         "--benchmarking-params-file", str(kit / "bench-params.yaml"),
         "--benchmarking-output-dir", str(out / "data")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    summary = (proc.stdout.strip().splitlines() or ["(no summary)"])[-1]
    print(f"  {name}: {summary} (rc {proc.returncode})", flush=True)


def report(results: dict[str, dict[str, list[float]]]) -> None:
    ctrd, sy = results["containerd"], results["sycri"]
    print()
    ratio_table(((op, ctrd[op], sy.get(op, [])) for op in ctrd), label="operation", fmt=ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kit", type=Path, default=ROOT.parent / "shared" / "critest")
    ap.add_argument("--critest", default=shutil.which("critest") or "critest")
    ap.add_argument("--rounds", type=int, default=1, help="runs per runtime, alternating")
    ap.add_argument(
        "--sycri-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="a flag for sycri serve, repeatable (--sycri-flag=--images-mount-idle-seconds=0)",
    )
    args = ap.parse_args()
    tag = secrets.token_hex(3)
    work = Path(f"/tmp/sycb-{tag}")  # short: conmon socket paths
    work.mkdir()
    reg = registry.start(work / "registry")  # holds containerd's pause image
    results: dict[str, dict[str, list[float]]] = {"containerd": {}, "sycri": {}}
    try:
        with (
            containerd(
                work / "c", reg, f"sycb-c{tag}", plain_http=(KIT_REGISTRY,), ip_masq=True
            ) as ctrd,
            served(
                work / "s",
                flags=["--log-level", "info", *args.sycri_flag],
                cgroup_root=f"sycb-s{tag}",
            ) as (server, _net),
        ):
            endpoints = {"containerd": ctrd.endpoint, "sycri": server.endpoint}
            print(f"# critest --benchmark, containerd vs sycri, {args.rounds} round(s)")
            if args.sycri_flag:
                print(f"sycri flags: {' '.join(args.sycri_flag)}")
            print(f"host: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start")
            for r in range(args.rounds):
                order = ("containerd", "sycri") if r % 2 == 0 else ("sycri", "containerd")
                for name in order:
                    out = work / f"out-{name}-{r}"
                    run_critest(args.kit, args.critest, name, endpoints[name], out)
                    for op, ms in durations(out / "data").items():
                        results[name].setdefault(op, []).extend(ms)
            report(results)
            print(f"\nload {os.getloadavg()[0]:.2f} at end")
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
