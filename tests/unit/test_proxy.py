"""The CRI proxy's pure parts: the routing table, response merging, settings, the
systemd unit and start script it installs, and the installer on a host tree."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path, PurePosixPath

import pytest
from sycri.api import api_pb2
from sycri.config import ConfigError
from sycri.errors import FailedPrecondition, InvalidArgument
from sycri.proxy import install, merge, routes, settings, unit
from sycri.proxy.routes import Kind

ALL_METHODS = {
    f"/{svc.full_name}/{m.name}"
    for svc in api_pb2.DESCRIPTOR.services_by_name.values()
    for m in svc.methods
}


def test_every_cri_method_has_a_route():
    assert set(routes.TABLE) == ALL_METHODS
    # a method from a newer CRI goes to the existing runtime unchanged
    assert routes.route("/runtime.v1.RuntimeService/SomethingNew").kind is Kind.PRIMARY


def test_routed_requests_carry_the_field_they_are_routed_by():
    for method, r in routes.TABLE.items():
        if r.kind in (Kind.BY_POD, Kind.BY_CONTAINER):
            assert r.field in r.request.DESCRIPTOR.fields_by_name, method
            name = method.rsplit("/", 1)[1]
            svc = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]
            assert svc.methods_by_name[name].input_type is r.request.DESCRIPTOR


def test_streaming_methods_are_the_server_streams():
    streams = {
        f"/{svc.full_name}/{m.name}"
        for svc in api_pb2.DESCRIPTOR.services_by_name.values()
        for m in svc.methods
        if m.server_streaming
    }
    assert streams == routes.STREAMING


@pytest.mark.parametrize(
    "method",
    sorted(m for m, r in routes.TABLE.items() if r.kind in (Kind.MERGE, Kind.MERGE_STREAM)),
)
def test_merged_answers_are_concatenations_of_repeated_fields(method):
    """The proxy merges these by concatenating bytes: valid only if every field of the
    response is repeated (then protobuf appends)."""
    out = routes.output_type(method)
    assert out.fields and all(f.is_repeated for f in out.fields), method


def test_concatenated_listings_parse_as_the_merged_listing():
    a = api_pb2.ListPodSandboxResponse(items=[api_pb2.PodSandbox(id="a" * 64)])
    b = api_pb2.ListPodSandboxResponse(
        items=[api_pb2.PodSandbox(id="b"), api_pb2.PodSandbox(id="c")]
    )
    merged = api_pb2.ListPodSandboxResponse.FromString(
        a.SerializeToString() + b.SerializeToString()
    )
    assert [p.id for p in merged.items] == ["a" * 64, "b", "c"]
    fs = api_pb2.ImageFsInfoResponse.FromString(
        api_pb2.ImageFsInfoResponse(
            image_filesystems=[api_pb2.FilesystemUsage(timestamp=1)]
        ).SerializeToString()
        + api_pb2.ImageFsInfoResponse(
            image_filesystems=[api_pb2.FilesystemUsage(timestamp=2)],
            container_filesystems=[api_pb2.FilesystemUsage(timestamp=3)],
        ).SerializeToString()
    )
    assert [f.timestamp for f in fs.image_filesystems] == [1, 2]
    assert len(fs.container_filesystems) == 1


def _status(ready: bool, handlers=()) -> api_pb2.StatusResponse:
    s = api_pb2.StatusResponse(info={"config": "{}"})
    s.status.conditions.add(type="RuntimeReady", status=ready)
    s.status.conditions.add(type="NetworkReady", status=True)
    for h in handlers:
        s.runtime_handlers.add(name=h)
    return s


def test_status_keeps_the_existing_runtimes_readiness_and_adds_sycris():
    out = merge.status(
        _status(True, ["", "runc"]), _status(False, ["", "runc", "kata"]), frozenset({"kata"})
    )
    conds = {c.type: c.status for c in out.status.conditions}
    assert conds == {
        "RuntimeReady": True,
        "NetworkReady": True,
        "SycriRuntimeReady": False,
        "SycriNetworkReady": True,
    }
    assert [h.name for h in out.runtime_handlers] == ["", "runc", "kata"]
    assert out.info["sycri.config"] == "{}" and out.info["config"] == "{}"


def test_status_without_sycri_says_why():
    out = merge.status(_status(True), None, frozenset({"runc"}), "sycri (unix:///x) is down")
    sycri = [c for c in out.status.conditions if c.type == "SycriRuntimeReady"]
    assert [(c.status, c.reason, c.message) for c in sycri] == [
        (False, "SycriUnavailable", "sycri (unix:///x) is down")
    ]
    assert {c.type: c.status for c in out.status.conditions}["RuntimeReady"] is True


BAD_SETTINGS = {
    "the empty handler (pods without a RuntimeClass, sycri's own)": {"sycri_handlers": [""]},
    "no handlers": {"sycri_handlers": []},
    "handler with a space": {"sycri_handlers": ["ru nc"]},
    "tcp endpoint": {"runtime_endpoint": "tcp://127.0.0.1:1"},
    "relative socket": {"listen": "unix://cri.sock"},
    "listening on sycri's socket": {"listen": settings.DEFAULT_SYCRI},
    "unknown key": {"port": 1},
    "log level": {"log_level": "loud"},
}


@pytest.mark.parametrize("case", sorted(BAD_SETTINGS))
def test_bad_settings_are_refused(case):
    with pytest.raises(ConfigError):
        settings.parse(BAD_SETTINGS[case])


def test_settings_file_and_overrides(tmp_path):
    f = tmp_path / "proxy.yaml"
    f.write_text("sycri_handlers: [sycri, kata]\nruntime_endpoint: unix:///run/crio/crio.sock\n")
    s = settings.load(str(f), {"listen": "unix:///run/p/cri.sock", "log_level": None})
    assert s.sycri_handlers == ("sycri", "kata")
    assert s.runtime_endpoint == "unix:///run/crio/crio.sock"
    assert s.listen_path == Path("/run/p/cri.sock")
    assert settings.parse(s.as_dict()) == s


# --- what goes on the host -------------------------------------------------------------


def test_systemd_unit_passes_systemd_analyze(tmp_path):
    text = unit.systemd_unit(
        PurePosixPath("/opt/sycri/0.2.0/rootfs"), PurePosixPath("/opt/sycri/proxy.yaml"), "0.2.0"
    )
    path = tmp_path / unit.UNIT_NAME
    path.write_text(text)
    res = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60
    )
    complaints = [
        line
        for line in (res.stdout + res.stderr).splitlines()
        # ExecStart is looked up on this machine, not under RootDirectory=
        if line.strip() and "/opt/sycri/bin/sycri is not executable" not in line
    ]
    assert complaints == []
    keys = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert keys["Restart"] == "always"  # kill -9: systemd brings it back
    assert keys["WantedBy"] == "multi-user.target"  # and after a reboot
    assert keys["Before"] == "kubelet.service"
    assert keys["RootDirectory"] == "/opt/sycri/0.2.0/rootfs"
    assert keys["BindPaths"] == "/run"  # the three sockets
    assert keys["ExecStart"] == f"{unit.SYCRI} proxy serve --config {unit.CONFIG_IN_ROOT}"


def test_systemd_analyze_is_not_vacuous(tmp_path):
    path = tmp_path / unit.UNIT_NAME
    path.write_text(
        unit.systemd_unit(PurePosixPath("/r"), PurePosixPath("/c"), "1").replace(
            "Restart=always", "Restart=always\nRestartEvery=1"
        )
    )
    res = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    assert "RestartEvery" in res.stdout + res.stderr


def test_start_script_is_valid_shell():
    text = unit.start_script(
        PurePosixPath("/opt/sycri/1/rootfs"),
        PurePosixPath("/opt/sycri/proxy.yaml"),
        install.PIDFILE,
    )
    res = subprocess.run(["sh", "-n"], input=text, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert f"proxy supervise --config {unit.CONFIG_IN_ROOT} --pidfile {install.PIDFILE}" in text
    assert str(install.PIDFILE).startswith("/run/")  # the same path inside its root
    # set -u stops at an unset variable: every one the script reads it sets itself
    assigned = set(re.findall(r"^\s*(?:for\s+)?([A-Za-z_]\w*)(?:=|\s+in\s)", text, re.M))
    read = set(re.findall(r"\$\{?([A-Za-z_]\w*)", text))
    assert read <= assigned, read - assigned


def _image(root: Path) -> Path:
    """A small stand-in for the node image's root: merged /usr and sycri's venv."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin/python3").write_text("#!/bin/true\n")
    (root / "bin").symlink_to("usr/bin")
    (root / "etc").mkdir()
    (root / "etc/os-release").write_text("ID=debian\n")
    (root / "opt/sycri/bin").mkdir(parents=True)
    (root / "opt/sycri/bin/sycri").write_text("#!/bin/true\n")
    (root / "opt/other").mkdir()  # not part of the proxy's root
    (root / "usr/share/doc/runc").mkdir(parents=True)  # left out of it
    (root / "usr/lib/cni").mkdir(parents=True)
    return root


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_install_upgrade_and_uninstall_on_a_host_without_systemd(tmp_path):
    image = _image(tmp_path / "image")
    host = install.Host(tmp_path / "host")
    (host.root / "opt").mkdir(parents=True)  # the host's own
    cfg = settings.ProxySettings()
    install.install(host, "0.1.0", cfg, image, start=False)
    rootfs = host.root / "opt/sycri/0.1.0/rootfs"
    assert (rootfs / "opt/sycri/bin/sycri").read_text() == "#!/bin/true\n"
    assert (rootfs / "bin").is_symlink() and os.readlink(rootfs / "bin") == "usr/bin"
    assert not (rootfs / "opt/other").exists()
    assert not (rootfs / "usr/share/doc").exists() and not (rootfs / "usr/lib/cni").exists()
    assert {"proc", "sys", "dev", "run", "tmp"} <= {p.name for p in rootfs.iterdir()}
    assert os.readlink(host.root / "opt/sycri/current") == "0.1.0"
    script = (host.root / "opt/sycri/sycri-proxy.sh").read_text()
    assert "opt/sycri/0.1.0/rootfs" in script
    assert settings.load(str(host.root / "opt/sycri/proxy.yaml")) == cfg
    assert not (host.root / "etc/systemd").exists()
    # upgrades keep the version before (a rollback copies nothing) and drop older ones
    install.install(host, "0.2.0", cfg, image, start=False)
    install.install(host, "0.3.0", cfg, image, start=False)
    assert os.readlink(host.root / "opt/sycri/current") == "0.3.0"
    assert {p.name for p in (host.root / "opt/sycri").iterdir()} == {
        "0.2.0", "0.3.0", "current", "proxy.yaml", "sycri-proxy.sh",
    }  # fmt: skip
    install.uninstall(host, cfg.listen, start=False)
    assert _tree(host.root) == {"opt"}  # as it was


def test_install_on_a_systemd_host_writes_the_unit(tmp_path):
    image = _image(tmp_path / "image")
    host = install.Host(tmp_path / "host")
    (host.root / "run/systemd/system").mkdir(parents=True)
    (host.root / "etc/systemd/system").mkdir(parents=True)
    (host.root / "opt").mkdir()
    install.install(host, "0.1.0", settings.ProxySettings(), image, start=False)
    text = (host.root / "etc/systemd/system/sycri-proxy.service").read_text()
    assert "RootDirectory=/opt/sycri/0.1.0/rootfs" in text
    assert not (host.root / "opt/sycri/sycri-proxy.sh").exists()
    install.uninstall(host, settings.DEFAULT_LISTEN, start=False)
    assert _tree(host.root) == {
        "opt",
        "run",
        "run/systemd",
        "run/systemd/system",
        "etc",
        "etc/systemd",
        "etc/systemd/system",
    }


def test_a_version_name_cannot_leave_opt_sycri(tmp_path):
    host = install.Host(tmp_path / "host")
    with pytest.raises(InvalidArgument):
        install.install(host, "../../etc", settings.ProxySettings(), tmp_path, start=False)
    assert not (tmp_path / "host").exists()


@pytest.mark.parametrize(
    "where", ["/var/lib/kubelet/config.yaml", "/var/lib/kubelet/kubeadm-flags.env"]
)
def test_uninstall_is_refused_while_kubelet_uses_the_proxy(tmp_path, where):
    image = _image(tmp_path / "image")
    host = install.Host(tmp_path / "host")
    cfg = settings.ProxySettings()
    install.install(host, "0.1.0", cfg, image, start=False)
    conf = host.path(where)
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f"containerRuntimeEndpoint: {cfg.listen}\n")
    with pytest.raises(FailedPrecondition, match="point kubelet back"):
        install.uninstall(host, cfg.listen, start=False)
    assert (host.root / "opt/sycri/0.1.0/rootfs").is_dir()  # nothing removed
    conf.write_text("containerRuntimeEndpoint: unix:///run/containerd/containerd.sock\n")
    install.uninstall(host, cfg.listen, start=False)
    assert not (host.root / "opt/sycri").exists()


def test_an_openrc_host_starts_the_proxy_at_boot(tmp_path):
    image = _image(tmp_path / "image")
    host = install.Host(tmp_path / "host")
    (host.root / "etc/local.d").mkdir(parents=True)
    install.install(host, "0.1.0", settings.ProxySettings(), image, start=False)
    boot = host.root / "etc/local.d/sycri-proxy.start"
    assert boot.read_text() == "#!/bin/sh\nexec /bin/sh /opt/sycri/sycri-proxy.sh\n"
    assert os.access(boot, os.X_OK)
    install.uninstall(host, settings.DEFAULT_LISTEN, start=False)
    assert not boot.exists() and (host.root / "etc/local.d").is_dir()
