"""critest v1.32 in the cgroup v2 + systemd VM guest: a measurement, not a test of the
suite (under TCG emulation it takes far longer than the guest checks).

    .venv/bin/python -m tests.vm.critest --critest /work/tools/bin/critest \\
        --critest-dir ../shared/critest --out /tmp/vm-critest [--args '--ginkgo.focus=...']

The test images are built on the host into a registry storage directory (the shared
critest folder's ``build_test_images.py`` pushing to a ``docker-registry`` on a free
loopback port), which the guest serves on 127.0.0.1:5000 as ``registries.conf``
expects. critest, the critest folder and that storage reach the guest over 9p at
their host paths; the guest runs ``guest_critest.sh``. Results: ``OUT/results``
(critest.log, junit.xml, summary.txt, sycri.log). docs/conformance.md records them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.vm import vm


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_storage(critest_dir: Path, data: Path) -> None:
    """Push critest's images into a registry whose storage is ``data/storage`` (kept: a
    second run pushes nothing)."""
    env = {**os.environ, "REGISTRY_ADDR": f"127.0.0.1:{free_port()}"}
    reg = str(critest_dir / "registry.sh")
    subprocess.run([reg, "start", str(data)], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        subprocess.run(
            [sys.executable, str(critest_dir / "build_test_images.py"),
             "--registry", env["REGISTRY_ADDR"]],
            env=env, check=True,
        )  # fmt: skip
    finally:
        subprocess.run([reg, "stop", str(data)], env=env, check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--critest", required=True, type=Path, help="the critest v1.32 binary")
    ap.add_argument("--critest-dir", required=True, type=Path, help="../shared/critest")
    ap.add_argument("--out", required=True, type=Path, help="where the results go")
    ap.add_argument("--data", type=Path, default=Path("/var/tmp/sycri-vm-critest"),
                    help="the test images' registry storage (reused)")  # fmt: skip
    ap.add_argument("--args", default="", help="more critest flags (no spaces inside one)")
    ap.add_argument("--timeout", type=float, default=5400.0, help="guest run limit, seconds")
    opts = ap.parse_args(argv)
    critest = opts.critest.resolve()
    cdir = opts.critest_dir.resolve()
    data = opts.data.resolve()
    build_storage(cdir, data)
    img = vm.image()
    opts.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="vm-critest-", dir=opts.out))
    repo = vm.snapshot(work / "repo")  # a run this long must not see later edits
    (work / "results").mkdir()
    (work / "results" / "critest.env").write_text(
        f"CRITEST={critest}\nCRITEST_DIR={cdir}\n"
        f"REGISTRY_STORAGE={data / 'storage'}\nCRITEST_ARGS='{opts.args}'\n"
        # critest stops itself (and writes its report) well before the guest is cut off
        f"GINKGO_TIMEOUT={max(5, int(opts.timeout / 60) - 8)}m\n"
    )
    run = vm.boot(
        img, work, timeout=opts.timeout, task="critest", repo=repo, venv=vm.REPO / ".venv",
        shares={"critest": critest.parent, "critestdir": cdir, "registry": data},
    )  # fmt: skip
    print(
        f"vm: boot {run.boot_s:.0f} s, whole run {run.total_s:.0f} s, guest rc {run.rc}, "
        f"{run.attempts} boot(s)"
    )
    summary = run.results / "summary.txt"
    if summary.exists():
        print(summary.read_text())
    else:
        log = run.results / "guest.log"
        print(log.read_text(errors="replace")[-3000:] if log.exists() else run.console[-3000:])
    if (work / "console.log").exists():
        shutil.copy(work / "console.log", run.results)
    print(f"results in {run.results}")
    shutil.rmtree(repo, ignore_errors=True)
    return 0 if summary.exists() else 1


if __name__ == "__main__":
    sys.exit(main())
