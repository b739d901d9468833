"""CDI devices through the socket, with real runc: a spec shaped like NVIDIA's (common
edits plus per-device edits, bind-mount options, a createContainer hook) gives the
container its device node, library file, env, and runs its hook, whether kubelet asks
through ``CDI_devices`` or the device plugin's ``cdi.k8s.io/*`` annotation. A GPU is not
needed: the device is /dev/full under another name (docs/gpu.md has the GPU run)."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from sycri.api import api_pb2

from tests.e2e.test_containers_cri import container, log_of, pull, wait_state
from tests.support.node import served
from tests.support.pods import pod_config
from tests.support.server import SycriServer

pytestmark = pytest.mark.root


def cdi_spec(drv: Path, hook_out: Path) -> dict:
    return {
        "cdiVersion": "0.5.0",
        "kind": "sycri.test/accel",
        "containerEdits": {
            "env": ["ACCEL_VISIBLE_DEVICES=void"],
            "mounts": [
                {
                    "hostPath": str(drv / "libaccel.so.1.2.3"),
                    "containerPath": "/usr/lib/libaccel.so.1",
                    "options": ["ro", "nosuid", "nodev", "bind"],
                }
            ],
            "hooks": [
                {
                    "hookName": "createContainer",
                    "path": "/bin/sh",
                    "args": ["sh", "-c", f'cat > "{hook_out}/$HOOK_TAG.json"'],
                    "env": ["HOOK_TAG=created"],
                }
            ],
        },
        "devices": [
            {
                "name": "0",
                "containerEdits": {
                    "deviceNodes": [{"path": "/dev/accel0", "hostPath": "/dev/full"}],
                    "env": ["ACCEL_INDEX=0"],
                },
            }
        ],
    }


@pytest.fixture
def node() -> Iterator[tuple[SycriServer, Path]]:
    base = Path("/tmp") / f"sycdi-{secrets.token_hex(4)}"
    extra = base.with_name(base.name + "-x")
    (extra / "cdi").mkdir(parents=True)
    (extra / "drv").mkdir()
    (extra / "hook").mkdir()
    (extra / "drv/libaccel.so.1.2.3").write_text("the driver library\n")
    spec = cdi_spec(extra / "drv", extra / "hook")
    (extra / "cdi/accel.yaml").write_text(yaml.safe_dump(spec))
    try:
        with served(base, flags=["--cdi-spec-dirs", str(extra / "cdi")]) as (server, _net):
            yield server, extra
    finally:
        shutil.rmtree(extra, ignore_errors=True)


SCRIPT = (
    "test -c /dev/accel0 && echo char device; "
    "echo x > /dev/accel0 || echo write refused; "  # /dev/full: ENOSPC, not EPERM
    "cat /usr/lib/libaccel.so.1; echo $ACCEL_VISIBLE_DEVICES $ACCEL_INDEX"
)


@pytest.mark.parametrize("how", ["field", "annotation"])
def test_cdi_device_reaches_the_container(node, registry, how):
    server, extra = node
    rt = server.runtime()
    image = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    cfg = pod_config("cdi")
    cfg.log_directory = str(server.base / "pods" / "cdi")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    ask: dict = (
        {"CDI_devices": [api_pb2.CDIDevice(name="sycri.test/accel=0")]}
        if how == "field"
        else {"annotations": {"cdi.k8s.io/accel-plugin_dev0": "sycri.test/accel=0"}}
    )
    req = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod, config=container("gpu", image, [SCRIPT], **ask), sandbox_config=cfg
    )
    cid = rt.CreateContainer(req).container_id
    assert not (extra / "hook/created.json").exists()  # no runc create before the start
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    state = json.loads((extra / "hook/created.json").read_text())  # the hook ran at runc create
    assert state["id"] == cid and state["status"] == "creating"
    st = wait_state(rt, cid, api_pb2.CONTAINER_EXITED)
    lines = [text for _, text in log_of(st.log_path)]
    assert st.exit_code == 0, lines
    assert "char device" in lines and "write refused" in lines
    assert "the driver library" in lines and "void 0" in lines
    assert any("No space left on device" in line for line in lines), lines


def test_unknown_cdi_device_is_refused_naming_it(node, registry):
    server, _extra = node
    rt = server.runtime()
    image = pull(server, registry, entrypoint=["/bin/sh", "-c"], cmd=["true"])
    cfg = pod_config("cdi")
    cfg.log_directory = str(server.base / "pods" / "cdi")
    pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
    req = api_pb2.CreateContainerRequest(
        pod_sandbox_id=pod,
        config=container(
            "gpu", image, ["true"], CDI_devices=[api_pb2.CDIDevice(name="nvidia.com/gpu=all")]
        ),
        sandbox_config=cfg,
    )
    with pytest.raises(grpc.RpcError) as err:
        rt.CreateContainer(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no CDI spec defines 'nvidia.com/gpu=all'" in err.value.details()
    assert not rt.ListContainers(api_pb2.ListContainersRequest()).containers
