"""Listing a SIF's descriptors reads only the header and the descriptor table.

Builds a small SIF and a 1 GiB one (a real, fully written partition, not a sparse
file), then times open_sif + descriptors on each and counts the bytes actually read
(rchar from /proc/self/io). Both figures should not grow with the file size.

    .venv/bin/python bench/sif_list.py [--dir DIR] [--size-mib 1024] [--rounds 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from sycri.sif import JsonObject, PartitionObject, open_sif, write_sif


def rchar() -> int:
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return -1


def fill(path: str, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)


def measure(path: str, rounds: int) -> tuple[float, float, int]:
    times = []
    before = rchar()
    for _ in range(rounds):
        t0 = time.perf_counter()
        with open_sif(path) as img:
            n = len(img.descriptors)
        times.append(time.perf_counter() - t0)
    read_per_listing = (rchar() - before) // rounds
    assert n == 2
    return statistics.median(times), sorted(times)[int(len(times) * 0.95)], read_per_listing


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None, help="where to build the files (default: $TMPDIR)")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=200)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=opts.dir, prefix="sycri-bench-sif-") as tmp:
        cfg = JsonObject("oci-config.json", b'{"config":{}}')
        rows = []
        for label, size in (("small", 1 << 20), ("large", opts.size_mib << 20)):
            part = os.path.join(tmp, f"{label}.img")
            fill(part, size)
            sif = os.path.join(tmp, f"{label}.sif")
            write_sif(sif, [cfg, PartitionObject(part)], created=0)
            os.unlink(part)
            median, p95, nread = measure(sif, opts.rounds)
            rows.append((label, os.path.getsize(sif), median, p95, nread))
        print(
            f"{'file':<6} {'size (bytes)':>14} {'median list':>12} {'p95 list':>10} {'bytes read/list':>16}"
        )
        for label, size, median, p95, nread in rows:
            print(f"{label:<6} {size:>14} {median * 1e6:>10.0f}us {p95 * 1e6:>8.0f}us {nread:>16}")
        ratio = rows[1][2] / rows[0][2]
        print(
            f"size ratio {rows[1][1] / rows[0][1]:.0f}x, listing time ratio {ratio:.2f}x "
            f"(1.0 = independent of size)"
        )


if __name__ == "__main__":
    main()
