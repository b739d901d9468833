"""The wheel the Dockerfile builds and copies: built the same way, from the same context.

The build context is what .dockerignore lets through, so a file the image needs but
the ignore file drops fails here.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.chart import ROOT


def _docker_context(dest: Path) -> Path:
    """Copy the files .dockerignore admits (its `*` then `!path` form) to ``dest``."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*"
    admitted = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    excluded = [r for r in rules[1:] if not r.startswith("!")]
    for top in admitted:
        src = ROOT / top
        for path in [src] if src.is_file() else sorted(src.rglob("*")):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_dir() or any(
                fnmatch.fnmatch(rel, pat.replace("**/", "*")) for pat in excluded
            ):
                continue
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    context = _docker_context(tmp_path_factory.mktemp("context"))
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q",
         "--wheel-dir", str(out), "."],
        cwd=context, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    [whl] = out.glob("sycri-*.whl")
    return whl


def test_wheel_holds_every_module_and_the_console_script(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    package = {n for n in names if n.startswith("sycri/")}
    source = {
        p.relative_to(ROOT / "app").as_posix()
        for p in (ROOT / "app" / "sycri").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    missing = source - package
    assert not missing, f"not in the wheel: {sorted(missing)}"
    for needed in ("sycri/api/api_pb2.py", "sycri/k8s/agent.py", "sycri/health.py", "sycri/py.typed"):  # fmt: skip
        assert needed in names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "sycri = sycri.cli:main" in text
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    meta = zipfile.ZipFile(wheel).read(metadata).decode()
    for dep in ("grpcio", "protobuf", "PyYAML"):
        assert f"Requires-Dist: {dep}" in meta or f"Requires-Dist: {dep.lower()}" in meta
    # the node agent's client is an extra (the node image installs it by default)
    assert re.search(r"^Requires-Dist: kubernetes.*; extra == \"node-agent\"$", meta, re.M)
    assert "sycri-node = sycri.iptables:main" in text


def test_installed_wheel_runs_the_commands_the_image_uses(wheel: Path, tmp_path: Path):
    """Install it (deps from this environment, as the image's venv has them) and run it."""
    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "-q"]
    subprocess.run(
        [*install, "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SYCRI_")}
    env["PYTHONPATH"] = str(target)
    script = target / "bin" / "sycri"
    assert script.exists()

    def run(*args: str) -> subprocess.CompletedProcess:
        main = "import sys; from sycri.cli import main; sys.exit(main())"
        return subprocess.run(
            [sys.executable, "-c", main, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )

    where = subprocess.run(
        [sys.executable, "-c", "import sycri; print(sycri.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(target))
    version = run("version")
    assert version.returncode == 0 and version.stdout.startswith("sycri 0.1.0"), version.stderr
    # What the image's RUN writes to /etc/sycri/config.yaml, and what HEALTHCHECK runs.
    shown = run("config", "show")
    assert shown.returncode == 0 and "socket: /run/sycri/sycri.sock" in shown.stdout
    health = run("health", "--live", "--socket", str(tmp_path / "none.sock"), "--timeout", "1")
    assert health.returncode == 1 and health.stdout.startswith("unhealthy:")
