"""Writing a SIF around an existing squashfs costs about one file copy.

Builds a ~500 MB squashfs (mksquashfs, incompressible data so it stays that big),
then compares on the same disk: a plain copy (cp, shutil.copyfile, and copyfile
followed by the fsyncs write_sif also does for durability: the fair floor) against
write_sif with an ID given by the caller (the image converter's case: the image
digest is known) and with the ID derived from the content (hashes every byte).

    .venv/bin/python bench/sif_write.py [--dir DIR] [--size-mb 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from sycri.sif import JsonObject, PartitionObject, sif_id_for, write_sif


def build_squashfs(tmp: str, size_mb: int) -> str:
    src = os.path.join(tmp, "rootfs")
    os.makedirs(src)
    per_file = 50
    for i in range(-(-size_mb // per_file)):
        with open(os.path.join(src, f"blob{i}"), "wb") as f:
            for _ in range(min(per_file, size_mb - i * per_file)):
                f.write(os.urandom(1 << 20))  # incompressible, no duplicates
    out = os.path.join(tmp, "rootfs.sqfs")
    subprocess.run(
        ["mksquashfs", src, out, "-noappend", "-no-progress", "-quiet", "-comp", "lz4"],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(src)
    return out


def copy_fsync(src: str, dest: str) -> None:
    """What write_sif does for durability: the copy, then fsync of file and directory."""
    shutil.copyfile(src, dest)
    fd = os.open(dest, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    fd = os.open(os.path.dirname(dest), os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def timed(fn, rounds: int, cleanup) -> float:
    times = []
    for _ in range(rounds):
        cleanup()
        os.sync()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    cleanup()
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=None)
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=opts.dir, prefix="sycri-bench-sif-") as tmp:
        sqfs = build_squashfs(tmp, opts.size_mb)
        size = os.path.getsize(sqfs)
        dest = os.path.join(tmp, "out")

        def rm() -> None:
            if os.path.exists(dest):
                os.unlink(dest)

        objs = [JsonObject("oci-config.json", b'{"config":{}}'), PartitionObject(sqfs)]
        results = {
            "cp": timed(lambda: subprocess.run(["cp", sqfs, dest], check=True), opts.rounds, rm),
            "shutil.copyfile": timed(lambda: shutil.copyfile(sqfs, dest), opts.rounds, rm),
            "copyfile + fsync (floor)": timed(lambda: copy_fsync(sqfs, dest), opts.rounds, rm),
            "write_sif (sif_id given)": timed(
                lambda: write_sif(dest, objs, sif_id=sif_id_for("bench")), opts.rounds, rm
            ),
            "write_sif (id from content)": timed(lambda: write_sif(dest, objs), opts.rounds, rm),
        }
        floor = results["copyfile + fsync (floor)"]
        print(f"squashfs {size} bytes ({size / 1e6:.0f} MB), median of {opts.rounds} rounds")
        for name, secs in results.items():
            print(
                f"{name:<28} {secs:7.3f} s  {size / secs / 1e9:6.2f} GB/s  ratio vs floor {secs / floor:5.2f}"
            )


if __name__ == "__main__":
    main()
