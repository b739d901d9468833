"""Pull + convert to SIF of a ~100 MB multi-layer image from a local registry, against
the floor: fetching the same blobs and extracting them with plain ``tar`` into a directory.

Prints both times, their ratio, and bytes on disk of the SIF versus the extracted tree.
Run as root from the repository root: ``.venv/bin/python bench/image_pull.py [--mb 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]

from tests.support import oci, registry  # noqa: E402
from tests.support.images import make_images  # noqa: E402


def payload_layer(seed: int, mb: int) -> oci.Layer:
    """``mb`` MB of files, half random bytes and half text: compresses like real binaries."""
    rng = random.Random(seed)
    entries = [oci.directory(f"data{seed}")]
    words = [rng.randbytes(6).hex() for _ in range(2000)]
    size = 0
    i = 0
    while size < mb * 1024 * 1024:
        n = rng.choice((4096, 65536, 262144, 1048576))
        if i % 2:
            data = rng.randbytes(n)
        else:
            data = " ".join(rng.choice(words) for _ in range(n // 13 + 1)).encode()[:n]
        entries.append(oci.file(f"data{seed}/f{i:05d}", data))
        size += n
        i += 1
    return oci.layer(entries)


def du(path: str) -> int:
    out = subprocess.run(["du", "-sB1", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def floor(reg, repo: str, img: oci.Image, dest: Path) -> float:
    """Fetch each layer blob over HTTP and pipe it through ``tar -xz`` (sequential)."""
    t0 = time.perf_counter()
    dest.mkdir()
    for layer in img.layers:
        with urllib.request.urlopen(f"{reg.url}/v2/{repo}/blobs/{layer.digest}") as r:
            tar = subprocess.Popen(["tar", "-xzf", "-", "-C", str(dest)], stdin=subprocess.PIPE)
            assert tar.stdin is not None
            shutil.copyfileobj(r, tar.stdin, 1 << 20)
            tar.stdin.close()
            assert tar.wait() == 0
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100, help="approximate uncompressed size")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compression", default="lz4")
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sycri-bench-pull."))
    reg = registry.start(work / "registry")
    try:
        third = max(1, opts.mb // 3)
        img = oci.Image(
            layers=[oci.layer(oci.busybox_entries())] + [payload_layer(s, third) for s in (1, 2, 3)]
        )
        repo = "bench/big"
        oci.push(reg, repo, "latest", img)
        compressed = sum(len(layer.blob) for layer in img.layers)
        pulls, floors = [], []
        sif_bytes = tree_bytes = 0
        for run in range(opts.runs):
            images = make_images(work / f"node{run}", squashfs_compression=opts.compression)
            t0 = time.perf_counter()
            image = asyncio.run(images.pull(f"{reg.host}/{repo}"))
            pulls.append(time.perf_counter() - t0)
            sif_bytes = os.path.getsize(image.sif_path)
            images.close()
            tree = work / f"tree{run}"
            floors.append(floor(reg, repo, img, tree))
            tree_bytes = du(str(tree))
            shutil.rmtree(tree)
            shutil.rmtree(work / f"node{run}")
        p, f = statistics.median(pulls), statistics.median(floors)
        print(f"image: {len(img.layers)} layers, {compressed / 1e6:.1f} MB compressed")
        print(
            f"sycri pull+convert (squashfs {opts.compression}): median {p:.2f}s  runs {' '.join(f'{x:.2f}' for x in pulls)}"
        )
        print(
            f"floor fetch + tar -xz:              median {f:.2f}s  runs {' '.join(f'{x:.2f}' for x in floors)}"
        )
        print(f"ratio sycri/floor: {p / f:.2f}x")
        print(
            f"bytes on disk: SIF {sif_bytes / 1e6:.1f} MB, extracted tree {tree_bytes / 1e6:.1f} MB "
            f"({sif_bytes / tree_bytes:.2f}x)"
        )
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
