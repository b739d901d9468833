"""A Debian guest with systemd as init on a pure cgroup v2 hierarchy, under QEMU (TCG).

The image is built by ``build_image.sh`` once per set of builder inputs and cached in
``/var/cache/sycri-vm/<hash>``; each boot writes to a copy-on-write overlay, so the
cached image stays clean. The guest mounts this repository (9p) at the same absolute
path, so the host's ``.venv`` (same Debian python3) runs there unchanged, runs
``tests/vm/guest_run.sh`` and writes its results to a second 9p share.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CACHE = Path(os.environ.get("SYCRI_VM_CACHE", "/var/cache/sycri-vm"))
BUILDER_INPUTS = ("build_image.sh", "guest_boot.sh")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
NEEDED = ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4")


class VMUnavailable(RuntimeError):
    """The guest cannot be had on this machine; the message says why."""


@dataclass(frozen=True)
class Image:
    dir: Path
    built_s: float  # 0.0 when it came from the cache

    @property
    def disk(self) -> Path:
        return self.dir / "base.img"


@dataclass(frozen=True)
class Run:
    results: Path
    rc: int | None  # the guest script's exit status; None when it never wrote one
    boot_s: float  # QEMU start to the guest's "booted" mark
    total_s: float  # QEMU start to power-off
    console: str
    attempts: int = 1  # boots it took (a guest that died before booting is tried again)


def image_key() -> str:
    h = hashlib.sha256()
    for name in BUILDER_INPUTS:
        h.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def apt_mirror() -> str:
    """The Debian mirror this host's apt uses (the guest is built from the same one)."""
    if os.environ.get("SYCRI_VM_MIRROR"):
        return os.environ["SYCRI_VM_MIRROR"]
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(d.iterdir())
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for m in re.finditer(r"(?:^URIs:\s*|^deb\s+(?:\[[^\]]*\]\s+)?)(\S+)", text, re.M):
            url = m.group(1)
            if url.rstrip("/").endswith("/debian"):
                return url
    return DEFAULT_MIRROR


def missing_tools() -> list[str]:
    return [t for t in NEEDED if shutil.which(t) is None]


def image() -> Image:
    """The cached guest image, built first if this machine has none for these inputs."""
    if missing := missing_tools():
        raise VMUnavailable(f"missing {', '.join(missing)} (see .ci/apt-packages.txt)")
    CACHE.mkdir(parents=True, exist_ok=True)
    out = CACHE / image_key()
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per machine; others wait and reuse
        if (out / "base.img").exists():
            return Image(out, 0.0)
        t0 = time.monotonic()
        proc = subprocess.run(
            [str(HERE / "build_image.sh"), str(out), apt_mirror()],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise VMUnavailable(
                f"guest image build failed ({proc.returncode}): {proc.stderr[-3000:]}"
            )
        return Image(out, time.monotonic() - t0)


def snapshot(dest: Path, repo: Path = REPO) -> Path:
    """A copy of the repository's files (without .git and .venv) at ``dest``, for a long
    guest run that edits of the working tree must not reach half way (the guest reads
    the repository live over 9p). Boot it with ``repo=dest, venv=repo / ".venv"``."""
    dest.mkdir(parents=True)
    tar = subprocess.Popen(
        ["tar", "-C", str(repo), "--exclude=./.git", "--exclude=./.venv",
         "--exclude=__pycache__", "--exclude=.*_cache", "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    subprocess.run(["tar", "-C", str(dest), "-xf", "-"], stdin=tar.stdout, check=True)
    if tar.wait() != 0:
        raise RuntimeError(f"could not copy {repo}")
    return dest


def boot(
    img: Image,
    work: Path,
    *,
    timeout: float = 1200.0,
    repo: Path = REPO,
    shares: dict[str, Path] | None = None,
    task: str = "checks",
    venv: Path | None = None,
) -> Run:
    """Boot the guest once on an overlay of ``img``; it runs the guest script and powers
    off. Results land in ``work/results``.

    ``shares``: more host directories (9p tag → path), mounted in the guest at the same
    path by ``guest_run.sh``. ``task``: what the guest runs (``checks``: the pytest
    guest checks; ``critest``: ``guest_critest.sh``). ``venv``: the host virtualenv
    whose packages the guest uses, when it is not ``repo/.venv``."""
    results = work / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "task").write_text(task + "\n")
    shares = dict(shares or {})
    for tag in shares:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,15}", tag) or tag in ("repo", "results"):
            raise ValueError(f"bad 9p tag {tag!r}")
    overlay = work / "overlay.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(img.disk), "-F", "raw",
         str(overlay)],
        check=True,
    )  # fmt: skip
    append = (
        f"root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 quiet sycri.repo={repo}"
    )
    if venv is not None:
        shares["venv"] = venv
        append += f" sycri.venv={venv}"
    if shares:
        append += " sycri.shares=" + ",".join(f"{t}:{p}" for t, p in shares.items())
    argv = [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max",
        "-smp", str(min(2, os.cpu_count() or 1)), "-m", "2048",
        "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio",
        "-kernel", str(img.dir / "vmlinuz"), "-initrd", str(img.dir / "initrd.img"),
        "-append", append,
        "-drive", f"file={overlay},format=qcow2,if=virtio",
        "-virtfs", f"local,path={repo},mount_tag=repo,security_model=none",
        "-virtfs", f"local,path={results},mount_tag=results,security_model=none",
    ]  # fmt: skip
    for tag, path in shares.items():
        argv += ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none"]
    console = work / "console.log"
    t0 = time.monotonic()
    boot_s = 0.0
    attempts = 0
    while True:
        attempts += 1
        # A guest that dies before it boots (seen now and then under TCG: QEMU exits
        # within seconds, nothing on the console) is booted again, at most twice.
        with open(console, "ab") as out:
            out.write(f"--- boot attempt {attempts}\n".encode())
            out.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            try:
                while proc.poll() is None:
                    if not boot_s and (results / "booted").exists():
                        boot_s = time.monotonic() - t0
                    if time.monotonic() - t0 > timeout:
                        proc.kill()
                        proc.wait()
                        break
                    time.sleep(0.5)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if (results / "booted").exists() or attempts == 3 or time.monotonic() - t0 > timeout:
            break
        overlay.unlink()
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(img.disk), "-F", "raw",
             str(overlay)],
            check=True,
        )  # fmt: skip
    total = time.monotonic() - t0
    overlay.unlink(missing_ok=True)
    rc_file = results / "rc"
    rc = int(rc_file.read_text().strip()) if rc_file.exists() else None
    return Run(results, rc, boot_s, total, console.read_text(errors="replace"), attempts)
