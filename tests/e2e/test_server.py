"""The real server through its socket: identity, status, errors, signals and sockets."""

from __future__ import annotations

import json
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from sycri import __version__
from sycri.api import api_pb2, api_pb2_grpc

from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer, sycri_cmd, sycri_env


def test_version_names_sycri_and_api_v1(sycri):
    v = sycri.runtime().Version(api_pb2.VersionRequest())
    assert v.runtime_name == "sycri"
    assert v.runtime_version == __version__
    assert v.runtime_api_version == "v1"
    assert v.version == "0.1.0"


def test_socket_is_0660(sycri):
    assert sycri.socket.stat().st_mode & 0o777 == 0o660


def test_runtime_config_reports_cgroup_driver(sycri):
    r = sycri.runtime().RuntimeConfig(api_pb2.RuntimeConfigRequest())
    assert r.linux.cgroup_driver == api_pb2.CGROUPFS  # no systemd on these machines


def conditions(server: SycriServer) -> dict[str, api_pb2.RuntimeCondition]:
    status = server.runtime().Status(api_pb2.StatusRequest()).status
    return {c.type: c for c in status.conditions}


def test_status_is_ready_with_real_runc_and_cni_plugins(tmp_path):
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-test.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "t", "plugins": [{"type": "bridge"}]})
    )
    server = SycriServer(
        tmp_path / "s", flags=["--cni-conf-dir", str(conf), "--cni-bin-dirs", "/usr/lib/cni"]
    ).start()
    try:
        c = conditions(server)
        assert c["RuntimeReady"].status is True
        assert c["NetworkReady"].status is True
    finally:
        server.stop()


def test_status_reports_the_features_that_work_here(sycri):
    """critest and kubelet run the rro and SupplementalGroupsPolicy paths only when Status
    says so; "" is the default handler. runc 1.1.5 on a 6.x kernel can do rro, and
    joins the pod user namespaces sycri makes (tests/e2e/test_userns.py)."""
    st = sycri.runtime().Status(api_pb2.StatusRequest())
    handlers = {h.name: h.features for h in st.runtime_handlers}
    assert set(handlers) == {"", "runc"}
    for feats in handlers.values():
        assert feats.recursive_read_only_mounts is True
        assert feats.user_namespaces is True  # runc joins a userns; squashfs idmaps here
    assert st.features.supplemental_groups_policy is True


def test_runtime_without_features_verb_claims_no_rro(tmp_path):
    fake = tmp_path / "oldruntime"
    fake.write_text("#!/bin/sh\necho 'no such command' >&2\nexit 1\n")
    fake.chmod(0o755)
    cfg = tmp_path / "sycri.yaml"
    cfg.write_text(f"runtimes:\n  runc:\n    binary: runc\n  old:\n    binary: {fake}\n")
    server = SycriServer(tmp_path / "s", flags=["--config", str(cfg)]).start()
    try:
        st = server.runtime().Status(api_pb2.StatusRequest())
        handlers = {h.name: h.features for h in st.runtime_handlers}
        assert handlers["old"].recursive_read_only_mounts is False
        assert handlers["runc"].recursive_read_only_mounts is True
    finally:
        server.stop()


def test_network_not_ready_names_missing_plugins(tmp_path):
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-test.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "t", "plugins": [{"type": "flannel"}]})
    )
    server = SycriServer(
        tmp_path / "s", flags=["--cni-conf-dir", str(conf), "--cni-bin-dirs", "/usr/lib/cni"]
    ).start()
    try:
        net = conditions(server)["NetworkReady"]
        assert net.status is False
        assert net.reason == "NetworkPluginNotReady"
        assert "flannel" in net.message
    finally:
        server.stop()


def test_network_not_ready_without_config_or_plugins(tmp_path):
    server = SycriServer(
        tmp_path / "s",
        flags=["--cni-conf-dir", str(tmp_path / "none"), "--cni-bin-dirs", str(tmp_path / "bin")],
    ).start()
    try:
        net = conditions(server)["NetworkReady"]
        assert net.status is False
        assert "bridge" in net.message
    finally:
        server.stop()


def test_runtime_not_ready_when_runtime_binary_missing(tmp_path):
    cfg = tmp_path / "sycri.yaml"
    cfg.write_text("runtimes:\n  runc:\n    binary: /nonexistent/runc\n")
    server = SycriServer(tmp_path / "s", flags=["--config", str(cfg)]).start()
    try:
        rt = conditions(server)["RuntimeReady"]
        assert rt.status is False
        assert "/nonexistent/runc" in rt.message
    finally:
        server.stop()


def test_unimplemented_rpc_names_itself(sycri):
    with pytest.raises(grpc.RpcError) as err:
        sycri.runtime().CheckpointContainer(api_pb2.CheckpointContainerRequest())
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CheckpointContainer" in err.value.details()
    assert "CRIU" in err.value.details()  # and why


def test_bad_config_exits_2_before_creating_anything(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("root_dir: relative\n")
    base = tmp_path / "never"
    proc = subprocess.run(
        sycri_cmd("serve", "--config", str(cfg), "--socket", str(base / "s.sock")),
        env=sycri_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "root_dir: must be an absolute path" in proc.stderr
    assert not base.exists()


def test_config_show_prints_effective_values(tmp_path):
    proc = subprocess.run(
        sycri_cmd("config", "show", "--root-dir", "/srv/sycri"),
        env=sycri_env({"SYCRI_LOG_FORMAT": "json"}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "root_dir: /srv/sycri" in proc.stdout
    assert "format: json" in proc.stdout


def test_sigterm_drains_exits_0_and_removes_socket(tmp_path):
    server = SycriServer(tmp_path / "s").start()
    server.signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not server.socket.exists()


def test_sigterm_ends_open_event_streams_instead_of_waiting_out_the_grace():
    """kubelet keeps GetContainerEvents open: on SIGTERM the stream must finish cleanly
    (kubelet reconnects to the next sycri), not be cut when a long grace runs out."""
    base = Path("/tmp") / f"sysig-{secrets.token_hex(4)}"
    with served(base, flags=["--shutdown-grace-seconds", "3600"], forgiving=True) as (
        server,
        _net,
    ):
        stream = server.runtime().GetContainerEvents(api_pb2.GetEventsRequest())
        rt = server.runtime()
        rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_config("sig")))
        assert next(stream).pod_sandbox_status.metadata.name == "sig"  # subscribed
        server.signal(signal.SIGTERM)
        for _ in stream:  # what it still held, then the end: an error would raise here
            pass
        assert stream.code() == grpc.StatusCode.OK
        assert server.wait() == 0
        server.start()  # the teardown removes the pod through it


def test_stale_socket_is_replaced(tmp_path):
    base = tmp_path / "s"
    base.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(base / "sycri.sock"))  # bound, never listening: what a crash leaves
    stale.close()
    server = SycriServer(base).start()
    try:
        assert server.runtime().Version(api_pb2.VersionRequest()).runtime_name == "sycri"
    finally:
        server.stop()


def test_live_socket_is_not_taken_over(sycri):
    proc = subprocess.run(
        sycri_cmd(*SycriServer(sycri.base).args()),
        env=sycri_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert "held by a running server" in proc.stderr
    assert sycri.socket.exists()
    assert sycri.runtime().Version(api_pb2.VersionRequest()).runtime_name == "sycri"


def test_a_sycri_started_while_the_old_one_drains_keeps_its_socket(tmp_path):
    """A DaemonSet upgrade: the old sycri drains a pull (stalled at a registry that never
    answers) while the new one starts on the same socket and dirs. When the old one
    exits, the socket is still the new one's."""
    silent = socket.socket()  # a "registry" that accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.settimeout(60)
    held: list[socket.socket] = []
    old = SycriServer(tmp_path / "s", flags=["--shutdown-grace-seconds", "600"]).start()
    new = SycriServer(old.base)
    try:
        pull = old.images().PullImage.future(
            api_pb2.PullImageRequest(
                image=api_pb2.ImageSpec(image=f"127.0.0.1:{silent.getsockname()[1]}/x/y:1")
            )
        )
        held.append(silent.accept()[0])  # the pull is in flight
        old.signal(signal.SIGTERM)
        while True:  # the old one stops listening when it starts to drain
            probe = socket.socket(socket.AF_UNIX)
            try:
                probe.connect(str(old.socket))
            except (ConnectionRefusedError, FileNotFoundError):
                break
            finally:
                probe.close()
            time.sleep(0.05)
        assert old.proc.poll() is None  # still draining
        new.start()
        silent.close()  # the pull fails, the old sycri's drain ends
        for conn in held:
            conn.close()
        assert pull.exception(60) is not None
        assert old.wait() == 0
        assert new.socket.exists()
        fresh = grpc.insecure_channel(new.endpoint)
        try:
            stub = api_pb2_grpc.RuntimeServiceStub(fresh)
            assert stub.Version(api_pb2.VersionRequest(), timeout=10).runtime_name == "sycri"
        finally:
            fresh.close()
    finally:
        silent.close()
        for conn in held:
            conn.close()
        old.stop()
        new.stop()
