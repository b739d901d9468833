"""CDI specs as NVIDIA's toolkit writes them (``nvidia-ctk cdi generate``): every edit —
device nodes, driver-library mounts, env, createContainer hooks — reaches the OCI spec
runc gets, whether kubelet asks through ``CDI_devices`` or the device plugin's
``cdi.k8s.io/*`` annotations; broken specs are skipped at load, naming the fault."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sycri.api import api_pb2
from sycri.errors import InvalidArgument
from sycri.runtime.oci import cdi
from sycri.runtime.oci.hostfacts import cdi_host_paths
from sycri.runtime.oci.ocispec import DeviceNode, HostFacts

from tests.unit.test_ocispec import IMAGE, build, config, mount_at

UUID = "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"
DRIVER = "580.95.05"
LIB = "/usr/lib/x86_64-linux-gnu"

# The shape of `nvidia-ctk cdi generate` output (toolkit 1.17) for a one-GPU node.
NVIDIA_YAML = f"""---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: {UUID}
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
  - path: /dev/nvidia-uvm
  - path: /dev/nvidia-uvm-tools
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args:
    - nvidia-cdi-hook
    - create-symlinks
    - --link
    - libcuda.so.1::{LIB}/libcuda.so
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args:
    - nvidia-cdi-hook
    - update-ldcache
    - --folder
    - {LIB}
    env:
    - NVIDIA_CTK_DEBUG=false
  mounts:
  - hostPath: {LIB}/libcuda.so.{DRIVER}
    containerPath: {LIB}/libcuda.so.{DRIVER}
    options: [ro, nosuid, nodev, bind]
  - hostPath: {LIB}/libnvidia-ml.so.{DRIVER}
    containerPath: {LIB}/libnvidia-ml.so.{DRIVER}
    options: [ro, nosuid, nodev, bind]
  - hostPath: /usr/bin/nvidia-smi
    containerPath: /usr/bin/nvidia-smi
    options: [ro, nosuid, nodev, bind]
  - hostPath: /lib/firmware/nvidia/{DRIVER}/gsp_ga10x.bin
    containerPath: /lib/firmware/nvidia/{DRIVER}/gsp_ga10x.bin
    options: [ro, nosuid, nodev, bind]
  - hostPath: /run/nvidia-persistenced/socket
    containerPath: /run/nvidia-persistenced/socket
    options: [ro, nosuid, nodev, bind, noexec]
"""

NODES = {
    "/dev/nvidia0": DeviceNode("/dev/nvidia0", "c", 195, 0, 0o666),
    "/dev/nvidiactl": DeviceNode("/dev/nvidiactl", "c", 195, 255, 0o666),
    "/dev/nvidia-uvm": DeviceNode("/dev/nvidia-uvm", "c", 509, 0, 0o666),
    "/dev/nvidia-uvm-tools": DeviceNode("/dev/nvidia-uvm-tools", "c", 509, 1, 0o666),
}


def noted(annotations: dict[str, str], **kw) -> api_pb2.ContainerConfig:
    cfg = config(**kw)
    cfg.annotations.update(annotations)
    return cfg


def nvidia_spec() -> cdi.Spec:
    return cdi.parse("/var/run/cdi/nvidia.yaml", NVIDIA_YAML)


def gpu_spec(cfg: api_pb2.ContainerConfig, **facts) -> dict:
    return build(cfg, host=HostFacts(cdi_specs=(nvidia_spec(),), devices=NODES, **facts))


@pytest.mark.parametrize("name", ["all", "0", UUID])
def test_nvidia_ctk_spec_reaches_the_oci_spec(name):
    spec = gpu_spec(config(CDI_devices=[api_pb2.CDIDevice(name=f"nvidia.com/gpu={name}")]))

    devices = {d["path"]: d for d in spec["linux"]["devices"]}
    assert set(devices) == set(NODES)
    assert (devices["/dev/nvidia0"]["major"], devices["/dev/nvidia0"]["minor"]) == (195, 0)
    allowed = {
        (r.get("major"), r.get("minor"), r["access"]) for r in spec["linux"]["resources"]["devices"]
    }
    assert {(195, 0, "rwm"), (195, 255, "rwm"), (509, 0, "rwm"), (509, 1, "rwm")} <= allowed

    smi = mount_at(spec, "/usr/bin/nvidia-smi")
    assert smi["source"] == "/usr/bin/nvidia-smi" and smi["type"] == "bind"
    assert smi["options"] == ["ro", "nosuid", "nodev", "bind"]
    for path in (
        f"{LIB}/libcuda.so.{DRIVER}",
        f"{LIB}/libnvidia-ml.so.{DRIVER}",
        f"/lib/firmware/nvidia/{DRIVER}/gsp_ga10x.bin",
    ):
        assert mount_at(spec, path)["source"] == path
    assert "noexec" in mount_at(spec, "/run/nvidia-persistenced/socket")["options"]

    assert "NVIDIA_VISIBLE_DEVICES=void" in spec["process"]["env"]

    hooks = spec["hooks"]
    assert list(hooks) == ["createContainer"]
    assert [h["args"][1] for h in hooks["createContainer"]] == ["create-symlinks", "update-ldcache"]
    assert hooks["createContainer"][1] == {
        "path": "/usr/bin/nvidia-cdi-hook",
        "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", LIB],
        "env": ["NVIDIA_CTK_DEBUG=false"],
    }


def test_device_plugin_annotations_ask_like_the_cri_field():
    """NVIDIA's device plugin with DEVICE_LIST_STRATEGY=cdi-annotations: kubelet passes
    ``cdi.k8s.io/nvidia-device-plugin_<id>`` container annotations."""
    by_field = gpu_spec(config(CDI_devices=[api_pb2.CDIDevice(name="nvidia.com/gpu=all")]))
    by_note = gpu_spec(noted({f"cdi.k8s.io/nvidia-device-plugin_{UUID}": f"nvidia.com/gpu={UUID}"}))
    for key in ("devices",):
        assert by_note["linux"][key] == by_field["linux"][key]
    assert by_note["mounts"] == by_field["mounts"]
    assert by_note["hooks"] == by_field["hooks"]


def test_requested_merges_field_and_annotations_once_each():
    cfg = noted(
        {
            "cdi.k8s.io/b": "nvidia.com/gpu=0, vendor.com/net=x",
            "cdi.k8s.io/a": "nvidia.com/gpu=all",
            "other.io/cdi": "nvidia.com/gpu=1",
        },
        CDI_devices=[api_pb2.CDIDevice(name="nvidia.com/gpu=0")],
    )
    assert cdi.requested(cfg) == ["nvidia.com/gpu=0", "nvidia.com/gpu=all", "vendor.com/net=x"]


def test_unknown_annotated_device_is_refused_naming_it():
    cfg = noted({"cdi.k8s.io/x": "nvidia.com/gpu=7"})
    with pytest.raises(InvalidArgument, match=r"no CDI spec defines 'nvidia.com/gpu=7'"):
        gpu_spec(cfg)


def test_cdi_mount_replaces_a_request_mount_at_the_same_path():
    cfg = config(
        CDI_devices=[api_pb2.CDIDevice(name="nvidia.com/gpu=0")],
        mounts=[api_pb2.Mount(container_path="/usr/bin/nvidia-smi", host_path="/bin/true")],
    )
    spec = build(
        cfg,
        host=HostFacts(cdi_specs=(nvidia_spec(),), devices=NODES, paths={"/bin/true": "file"}),
    )
    at = [m for m in spec["mounts"] if m["destination"] == "/usr/bin/nvidia-smi"]
    assert [m["source"] for m in at] == ["/usr/bin/nvidia-smi"]


def test_host_root_resolves_mount_sources_and_hook_programs():
    """In the node image the host's driver files are under host_root (/host)."""
    specs = (nvidia_spec(),)
    sources = cdi_host_paths(["nvidia.com/gpu=all"], specs, lambda p: "/host" + p)
    spec = gpu_spec(config(CDI_devices=[api_pb2.CDIDevice(name="nvidia.com/gpu=all")]),
                    cdi_sources=sources)  # fmt: skip
    assert mount_at(spec, "/usr/bin/nvidia-smi")["source"] == "/host/usr/bin/nvidia-smi"
    assert {h["path"] for h in spec["hooks"]["createContainer"]} == {
        "/host/usr/bin/nvidia-cdi-hook"
    }


def test_host_root_path_that_cannot_be_resolved_is_refused():
    def missing(path: str) -> str:
        raise FileNotFoundError(2, "No such file or directory")

    with pytest.raises(
        InvalidArgument,
        match=r"host path '/usr/lib/.*/libcuda.so.580.95.05' cannot be used: No such file",
    ):
        cdi_host_paths(["nvidia.com/gpu=0"], (nvidia_spec(),), missing)


def test_spec_node_fields_and_gids_win():
    doc = {
        "cdiVersion": "0.6.0",
        "kind": "vendor.com/dev",
        "devices": [
            {
                "name": "a",
                "containerEdits": {
                    "deviceNodes": [
                        {
                            "path": "/dev/x",
                            "hostPath": "/dev/nvidia0",
                            "fileMode": 0o660,
                            "gid": 44,
                            "permissions": "rw",
                        }
                    ],
                    "additionalGids": [44],
                },
            }
        ],
    }
    spec = build(
        config(CDI_devices=[api_pb2.CDIDevice(name="vendor.com/dev=a")]),
        host=HostFacts(cdi_specs=(cdi.parse("/etc/cdi/x.json", json.dumps(doc)),), devices=NODES),
    )
    node = next(d for d in spec["linux"]["devices"] if d["path"] == "/dev/x")
    assert (node["major"], node["fileMode"], node["gid"]) == (195, 0o660, 44)
    assert {"allow": True, "type": "c", "major": 195, "minor": 0, "access": "rw"} in spec["linux"][
        "resources"
    ]["devices"]
    assert 44 in spec["process"]["user"]["additionalGids"]


def test_spec_numbers_win_for_the_node_and_its_cgroup_rule():
    doc = _doc(deviceNodes=[{"path": "/dev/x", "hostPath": "/dev/nvidia0", "minor": 7}])
    spec = build(
        config(CDI_devices=[api_pb2.CDIDevice(name="vendor.com/dev=a")]),
        host=HostFacts(cdi_specs=(cdi.parse("/etc/cdi/x.json", json.dumps(doc)),), devices=NODES),
    )
    node = next(d for d in spec["linux"]["devices"] if d["path"] == "/dev/x")
    assert (node["major"], node["minor"]) == (195, 7)
    rules = spec["linux"]["resources"]["devices"]
    assert {"allow": True, "type": "c", "major": 195, "minor": 7, "access": "rwm"} in rules
    assert not any(r.get("major") == 195 and r.get("minor") == 0 for r in rules)


def _doc(**edits) -> dict:
    return {
        "cdiVersion": "0.6.0",
        "kind": "vendor.com/dev",
        "devices": [{"name": "a", "containerEdits": edits or {"env": ["A=1"]}}],
    }


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({**_doc(), "cdiVersion": "9.9.9"}, "cdiVersion"),
        ({**_doc(), "cdiVersion": None}, "cdiVersion"),
        ({**_doc(), "kind": "vendor.com"}, "bad kind"),
        ({**_doc(), "kind": "-v.com/x"}, "bad kind"),
        ({**_doc(), "devices": []}, "no devices"),
        (
            {**_doc(), "devices": [{"name": "a-", "containerEdits": {"env": ["A=1"]}}]},
            "device name",
        ),
        ({**_doc(), "devices": [{"name": "a"}]}, "no containerEdits"),
        ({**_doc(), "devices": _doc()["devices"] * 2}, "defined twice"),
        (_doc(env=["NOVALUE"]), "want NAME=value"),
        (_doc(hooks=[{"path": "/bin/true"}]), "hook name 'None'"),
        (_doc(hooks=[{"hookName": "preStart", "path": "/bin/true"}]), "hook name 'preStart'"),
        (_doc(hooks=[{"hookName": "poststop", "path": "true"}]), "hook path"),
        (_doc(hooks=[{"hookName": "poststop", "path": "/x", "timeout": 0}]), "timeout"),
        (_doc(hooks=[{"hookName": "poststop", "path": "/x", "args": "a b"}]), "hook args"),
        (_doc(deviceNodes=[{"path": "dev/x"}]), "device node path"),
        (_doc(deviceNodes=[{"path": "/dev/x", "type": "z"}]), "device node type"),
        (_doc(deviceNodes=[{"path": "/dev/x", "permissions": "rwx"}]), "permissions"),
        (_doc(deviceNodes=[{"path": "/dev/x", "major": -1}]), "major"),
        (_doc(mounts=[{"hostPath": "/a"}]), "containerPath"),
        (_doc(mounts=[{"containerPath": "/a"}]), "hostPath"),
        (_doc(mounts=[{"hostPath": "/a", "containerPath": "/a", "options": "ro"}]), "options"),
        (_doc(additionalGids=["x"]), "additionalGids"),
        (_doc(netDevices=[{"hostInterfaceName": "eth1", "name": "net1"}]), "not supported"),
    ],
)
def test_broken_specs_are_refused_naming_the_fault(doc, match):
    with pytest.raises(InvalidArgument, match=match):
        cdi.parse("/etc/cdi/bad.json", json.dumps(doc))


def test_a_broken_spec_is_skipped_and_the_good_ones_still_serve(tmp_path, caplog):
    early, late = tmp_path / "etc", tmp_path / "run"
    early.mkdir()
    late.mkdir()
    (early / "nvidia.yaml").write_text(NVIDIA_YAML)
    (early / "bad.json").write_text(json.dumps({**_doc(), "cdiVersion": "9.9.9"}))
    override = NVIDIA_YAML.replace("NVIDIA_VISIBLE_DEVICES=void", "FROM_RUN=1")
    (late / "nvidia.yaml").write_text(override)
    specs = cdi.load((str(early), str(late)))
    assert [s.path for s in specs] == [str(early / "nvidia.yaml"), str(late / "nvidia.yaml")]
    assert "bad.json" in caplog.text and "cdiVersion" in caplog.text
    edits = cdi.edits_for(["nvidia.com/gpu=0"], specs)
    assert edits.env == ["FROM_RUN=1"]  # the later directory wins


def test_cdi_env_overrides_the_image_but_not_the_request():
    cfg = config(
        CDI_devices=[api_pb2.CDIDevice(name="nvidia.com/gpu=0")],
        envs=[api_pb2.KeyValue(key="NVIDIA_VISIBLE_DEVICES", value=b"mine")],
    )
    spec = build(
        cfg,
        host=HostFacts(cdi_specs=(nvidia_spec(),), devices=NODES),
        image=dataclasses.replace(IMAGE, env=("NVIDIA_VISIBLE_DEVICES=image",)),
    )
    assert [e for e in spec["process"]["env"] if e.startswith("NVIDIA_VISIBLE")] == [
        "NVIDIA_VISIBLE_DEVICES=mine"
    ]
