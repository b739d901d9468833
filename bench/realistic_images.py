"""Realistic images built on this machine, for pull benches: a Debian bookworm minbase
(``debootstrap``) as the base layer, nginx-light or python3-minimal installed over it in
a second layer that also deletes files (whiteouts), a layer of 100,000 small files, and
a large image (the minbase plus 1.2 GB of files, half of them incompressible).

Everything built is cached under ``/var/cache/sycri-bench`` (the debootstrap tree and
each layer's gzip blob with its diff_id), so only the first run pays for apt.
Run alone to build and print the sizes: ``.venv/bin/python bench/realistic_images.py``.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import random
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]

from tests.support import oci  # noqa: E402

CACHE = Path(os.environ.get("SYCRI_BENCH_CACHE", "/var/cache/sycri-bench"))
MIRROR = "http://deb.debian.org/debian"
GZIP_MEDIA = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Not part of an image: apt's download cache and package lists (as debian:*-slim does).
BASE_EXCLUDES = ("./var/cache/apt/*", "./var/lib/apt/lists/*", "./dev/*", "./proc/*", "./sys/*")
# Deleted by the application layer: files of the base, so the layer carries whiteouts.
APP_DELETES = ("/usr/share/doc", "/usr/share/man", "/usr/share/info", "/var/log/apt")
APP_PACKAGES = {"nginx": "nginx-light", "python": "python3-minimal"}
APP_CMDS = {"nginx": ["nginx", "-g", "daemon off;"], "python": ["python3"]}


def minbase() -> Path:
    """The debootstrap minbase bookworm tree, built once."""
    tree = CACHE / "minbase"
    if (tree / "etc/debian_version").exists():
        return tree
    tmp = CACHE / "minbase.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(tmp), MIRROR],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    tmp.rename(tree)
    return tree


def _gzip_blob(raw_stream: io.BufferedReader, out: Path) -> str:
    """Write the tar stream gzip'ed to ``out``; return the diff_id of the raw tar."""
    h = hashlib.sha256()
    with open(out, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as gz:
        while chunk := raw_stream.read(1 << 20):
            h.update(chunk)
            gz.write(chunk)
    return "sha256:" + h.hexdigest()


def _cached(name: str, build) -> oci.Layer:
    """The layer ``name`` from the cache, or built by ``build(blob_path) -> diff_id``."""
    d = CACHE / "layers"
    d.mkdir(parents=True, exist_ok=True)
    blob, diff = d / f"{name}.tar.gz", d / f"{name}.diffid"
    if not (blob.exists() and diff.exists()):
        tmp = d / f"{name}.tmp"
        diff_id = build(tmp)
        tmp.rename(blob)
        diff.write_text(diff_id)
    return oci.Layer(blob.read_bytes(), diff.read_text().strip(), GZIP_MEDIA)


def base_layer() -> oci.Layer:
    def build(out: Path) -> str:
        argv = ["tar", "-C", str(minbase()), "--numeric-owner", "--xattrs", "-cf", "-"]
        argv += [f"--exclude={e}" for e in BASE_EXCLUDES] + ["."]
        tar = subprocess.Popen(argv, stdout=subprocess.PIPE)
        assert tar.stdout is not None
        diff_id = _gzip_blob(tar.stdout, out)
        if tar.wait() != 0:
            raise RuntimeError("tar of the minbase tree failed")
        return diff_id

    return _cached("bookworm-minbase", build)


def _upper_to_tar(upper: Path, out: Path) -> str:
    """An overlayfs upper dir as an OCI layer: 0/0 char devices become ``.wh.`` files,
    opaque dirs get ``.wh..wh..opq``."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(upper):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, upper)
            for name in sorted(dirnames + filenames):
                path = os.path.join(dirpath, name)
                arc = os.path.normpath(os.path.join(rel_dir, name))
                st = os.lstat(path)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    info = tarfile.TarInfo(os.path.join(os.path.dirname(arc), ".wh." + name))
                    tar.addfile(info)
                    continue
                info = tar.gettarinfo(path, arc)
                info.uname = info.gname = ""
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
                if stat.S_ISDIR(st.st_mode):
                    with contextlib.suppress(OSError):
                        if os.getxattr(path, "trusted.overlay.opaque") == b"y":
                            tar.addfile(tarfile.TarInfo(arc + "/.wh..wh..opq"))
    raw.seek(0)
    return _gzip_blob(raw, out)  # type: ignore[arg-type]


def app_layer(kind: str) -> oci.Layer:
    """``apt-get install`` of the kind's package over the minbase, captured as the
    overlay's upper dir; it deletes docs and apt's lists (whiteouts of base files)."""

    def build(out: Path) -> str:
        lower = minbase()
        with tempfile.TemporaryDirectory(prefix="sycri-bench-layer.", dir=CACHE) as tmp:
            upper, work, merged = (Path(tmp) / n for n in ("upper", "work", "merged"))
            for d in (upper, work, merged):
                d.mkdir()
            opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True
            )
            try:
                subprocess.run(["mount", "-t", "proc", "proc", str(merged / "proc")], check=True)
                try:
                    policy = merged / "usr/sbin/policy-rc.d"
                    policy.write_text("#!/bin/sh\nexit 101\n")
                    policy.chmod(0o755)
                    script = (
                        "apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq install"
                        f" -y --no-install-recommends {APP_PACKAGES[kind]} >/dev/null"
                        " && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d "
                        + " ".join(APP_DELETES)
                    )
                    subprocess.run(["chroot", str(merged), "sh", "-c", script], check=True)
                finally:
                    subprocess.run(["umount", str(merged / "proc")], check=True)
            finally:
                subprocess.run(["umount", str(merged)], check=True)
            shutil.rmtree(work)
            return _upper_to_tar(upper, out)

    return _cached(f"bookworm-{kind}", build)


def files_layer(count: int = 100_000) -> oci.Layer:
    """``count`` small files (16 B to 4 KiB, text-like) in 1,000 directories."""

    def build(out: Path) -> str:
        rng = random.Random(100_000)
        words = [rng.randbytes(4).hex() for _ in range(512)]
        entries = [oci.directory("many")]
        for i in range(count):
            if i % 100 == 0:
                entries.append(oci.directory(f"many/d{i // 100:04d}"))
            size = rng.choice((16, 100, 300, 1000, 4096))
            data = " ".join(rng.choice(words) for _ in range(size // 9 + 1)).encode()[:size]
            entries.append(oci.file(f"many/d{i // 100:04d}/f{i:06d}", data))
        return _gzip_blob(io.BytesIO(oci.tar_bytes(entries)), out)  # type: ignore[arg-type]

    return _cached(f"files-{count}", build)


def large_layer(files: int = 48, size: int = 24 << 20) -> oci.Layer:
    """``files`` files of ``size`` bytes (1.2 GB by default), alternately random bytes
    (incompressible: media, models, compiled blobs) and repetitive text."""

    def build(out: Path) -> str:
        rng = random.Random(1200)
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_dir_info("data"))
            for i in range(files):
                if i % 2:
                    line = " ".join(rng.randbytes(6).hex() for _ in range(12)).encode() + b"\n"
                    data = (line * (size // len(line) + 1))[:size]
                else:
                    data = rng.randbytes(size)
                info = tarfile.TarInfo(f"data/blob{i:02d}")
                info.size, info.mtime, info.mode = size, oci.MTIME, 0o644
                tar.addfile(info, io.BytesIO(data))
        raw.seek(0)
        return _gzip_blob(raw, out)  # type: ignore[arg-type]

    return _cached(f"large-{files}x{size >> 20}M", build)


def _dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, oci.MTIME
    return info


NAMES = ("nginx", "python", "files100k", "large")


def images(only: tuple[str, ...] = NAMES) -> dict[str, oci.Image]:
    """name → image, every layer from the cache (built when missing)."""
    out = {}
    for kind in APP_PACKAGES:
        if kind in only:
            out[kind] = oci.Image(layers=[base_layer(), app_layer(kind)], cmd=APP_CMDS[kind])
    if "files100k" in only:
        out["files100k"] = oci.Image(layers=[oci.layer(oci.busybox_entries()), files_layer()])
    if "large" in only:
        out["large"] = oci.Image(layers=[base_layer(), large_layer()], cmd=["sh"])
    return out


def main() -> None:
    for name, img in images().items():
        sizes = ", ".join(f"{len(layer.blob) / 1e6:.1f}" for layer in img.layers)
        total = sum(len(layer.blob) for layer in img.layers) / 1e6
        print(f"{name:10s} {len(img.layers)} layers, {total:6.1f} MB compressed ({sizes} MB)")


if __name__ == "__main__":
    main()
