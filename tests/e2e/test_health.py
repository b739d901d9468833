"""``sycri health``: what the image's HEALTHCHECK and the chart's probes run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.support.server import SycriServer, sycri_cmd, sycri_env


def _health(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        sycri_cmd("health", *args), env=sycri_env(), capture_output=True, text=True, timeout=60
    )


def test_healthy_server_passes_liveness_and_readiness(sycri):
    live = _health("--live", "--socket", str(sycri.socket))
    assert live.returncode == 0, live.stdout + live.stderr
    assert live.stdout.startswith("ok: sycri ")
    ready = _health("--socket", str(sycri.socket))
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "RuntimeReady" in ready.stdout


def test_the_socket_comes_from_the_config_file_like_in_the_chart(sycri, tmp_path: Path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"socket": str(sycri.socket), "log": {"format": "json"}}))
    result = _health("--config", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_server_is_unhealthy(tmp_path: Path):
    result = _health("--socket", str(tmp_path / "absent.sock"), "--timeout", "2")
    assert result.returncode == 1
    assert result.stdout.startswith("unhealthy: no answer on unix://")
    assert "absent.sock" in result.stdout


def test_runtime_not_ready_fails_readiness_but_not_liveness(tmp_path: Path):
    server = SycriServer(tmp_path / "s", flags=["--conmon", "conmon-that-is-not-installed"])
    server.start()
    try:
        live = _health("--live", "--socket", str(server.socket))
        assert live.returncode == 0, live.stdout
        ready = _health("--socket", str(server.socket))
        assert ready.returncode == 1
        assert "RuntimeReady=false" in ready.stdout
        assert "conmon-that-is-not-installed" in ready.stdout
    finally:
        server.stop()


def test_a_bad_config_file_is_a_usage_error(tmp_path: Path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("socket: relative.sock\n")
    result = _health("--config", str(cfg))
    assert result.returncode == 2
    assert "socket: must be an absolute path" in result.stderr
