"""Version, Status and RuntimeConfig: what the runtime says about itself."""

from __future__ import annotations

import os
import shutil

from sycri import __version__
from sycri.api import api_pb2
from sycri.network.readiness import readiness
from sycri.node import Node
from sycri.runtime.oci import features

CRI_VERSION = "0.1.0"  # the value kubelet expects in VersionResponse.version
API_VERSION = "v1"


async def version(node: Node, request: api_pb2.VersionRequest) -> api_pb2.VersionResponse:
    return api_pb2.VersionResponse(
        version=CRI_VERSION,
        runtime_name="sycri",
        runtime_version=__version__,
        runtime_api_version=API_VERSION,
    )


def runtime_condition(node: Node) -> api_pb2.RuntimeCondition:
    cfg = node.config
    handler = cfg.runtimes[cfg.default_runtime]
    binary = shutil.which(handler.binary)
    if binary is None:
        return api_pb2.RuntimeCondition(
            type="RuntimeReady",
            status=False,
            reason="RuntimeBinaryMissing",
            message=f"OCI runtime {handler.binary!r} of handler {cfg.default_runtime!r} not found",
        )
    if shutil.which(cfg.conmon) is None:
        return api_pb2.RuntimeCondition(
            type="RuntimeReady",
            status=False,
            reason="ConmonMissing",
            message=f"container monitor {cfg.conmon!r} not found",
        )
    if not os.access(cfg.root_dir, os.W_OK):
        return api_pb2.RuntimeCondition(
            type="RuntimeReady",
            status=False,
            reason="RootDirNotWritable",
            message=f"{cfg.root_dir} is not writable",
        )
    return api_pb2.RuntimeCondition(type="RuntimeReady", status=True)


def network_condition(node: Node) -> api_pb2.RuntimeCondition:
    r = readiness(node.config.cni)
    return api_pb2.RuntimeCondition(
        type="NetworkReady", status=r.ready, reason=r.reason, message=r.message
    )


async def status(node: Node, request: api_pb2.StatusRequest) -> api_pb2.StatusResponse:
    cfg = node.config
    handlers = []
    # "" is the default handler (what a pod without a RuntimeClass gets), then each by name.
    for name in ["", *sorted(cfg.runtimes)]:
        feats = await features.probe(cfg.runtimes[name or cfg.default_runtime].binary)
        handlers.append(
            api_pb2.RuntimeHandler(
                name=name,
                features=api_pb2.RuntimeHandlerFeatures(
                    recursive_read_only_mounts=feats.recursive_read_only,
                    user_namespaces=feats.user_namespaces,
                ),
            )
        )
    resp = api_pb2.StatusResponse(
        status=api_pb2.RuntimeStatus(conditions=[runtime_condition(node), network_condition(node)]),
        runtime_handlers=handlers,
        # Strict is honoured by runtime.users; the status reports the process's groups.
        features=api_pb2.RuntimeFeatures(supplemental_groups_policy=True),
    )
    if request.verbose:
        import json

        resp.info["config"] = json.dumps(cfg.as_dict(), sort_keys=True)
        # kubelet (1.32, 1.33) checks no CRI field for image volumes: it sends Mount.image
        # when its ImageVolume gate is on. Said here for people and tools (crictl info).
        resp.info["features"] = json.dumps(
            {"imageVolumes": True, "imageVolumeSubPath": True, "sifStores": True}
        )
    return resp


async def runtime_config(
    node: Node, request: api_pb2.RuntimeConfigRequest
) -> api_pb2.RuntimeConfigResponse:
    driver = api_pb2.SYSTEMD if node.cgroup_driver == "systemd" else api_pb2.CGROUPFS
    return api_pb2.RuntimeConfigResponse(
        linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=driver)
    )


RPCS = {"Version": version, "Status": status, "RuntimeConfig": runtime_config}
