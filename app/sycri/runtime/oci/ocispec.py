"""The OCI runtime spec of a container: a pure function of what kubelet asked for.

``build(SpecInput) -> BuiltSpec`` reads nothing from the host: every fact it needs
(the image's config and /etc/passwd, the sandbox's namespace paths, host devices and
paths, CDI specs, seccomp profiles, sycri's own oom_score_adj) is gathered at the edge
by ``hostfacts.gather`` and passed in. That keeps every rule here unit-testable
without root, and a request that cannot run fails before anything is created.

The rules live by concern beside this module: ``inputs`` (what build takes), ``process``,
``capabilities``, ``rlimits``, ``security`` (seccomp, AppArmor, masked paths), ``linux``
(namespaces, sysctls, cgroup path), ``resources``, ``devices``, ``mounts``.
"""

from __future__ import annotations

from typing import Any

from sycri.errors import InvalidArgument
from sycri.runtime.oci import argv, cdi, users
from sycri.runtime.oci.capabilities import ALL_CAPS, DEFAULT_CAPS, ambient, capabilities
from sycri.runtime.oci.devices import nodes_and_rules
from sycri.runtime.oci.inputs import (
    BuiltSpec,
    CgroupFacts,
    DeviceNode,
    HostFacts,
    ImageConfig,
    Sandbox,
    Settings,
    SpecInput,
)
from sycri.runtime.oci.linux import cgroup_path, check_mapped, namespaces, sysctls
from sycri.runtime.oci.mounts import mounts, rootfs_propagation
from sycri.runtime.oci.process import (
    DEFAULT_PATH,
    environment,
    process_args,
    stop_signal,
    user_request,
    working_dir,
)
from sycri.runtime.oci.resources import cgroup_resources, ranged
from sycri.runtime.oci.rlimits import ULIMITS_ANNOTATION, rlimits
from sycri.runtime.oci.security import DEFAULT_MASKED, DEFAULT_READONLY, apparmor, seccomp_profile
from sycri.runtime.pod import idmaps

# What callers name through this module: the inputs and a few rules they reuse.
__all__ = [
    "ALL_CAPS",
    "DEFAULT_CAPS",
    "DEFAULT_PATH",
    "ULIMITS_ANNOTATION",
    "BuiltSpec",
    "CgroupFacts",
    "DeviceNode",
    "HostFacts",
    "ImageConfig",
    "Sandbox",
    "Settings",
    "SpecInput",
    "build",
    "cgroup_resources",
    "rlimits",
]


def build(inp: SpecInput) -> BuiltSpec:
    """The complete OCI runtime spec for one container; InvalidArgument names a bad field."""
    cfg = inp.config
    linux_cfg = cfg.linux
    sc = linux_cfg.security_context
    pod_sc = inp.sandbox_config.linux.security_context
    privileged = sc.privileged
    if privileged and not pod_sc.privileged:
        raise InvalidArgument(
            "security_context.privileged: a privileged container needs a privileged pod"
        )

    user = users.resolve(user_request(sc), inp.image.user, inp.passwd, inp.group)
    id_maps = inp.sandbox.userns_maps if inp.sandbox.userns else None
    idmaps.container_mode_ok(
        id_maps, sc.namespace_options if sc.HasField("namespace_options") else None
    )
    if id_maps is not None:
        check_mapped(user, id_maps)
    caps = capabilities(sc.capabilities, privileged, inp.host.bounding_caps)
    cdi_edits = cdi.edits_for(cdi.requested(cfg), list(inp.host.cdi_specs))
    args = process_args(cfg, inp.image)
    env = environment(cfg, inp.image, inp.sandbox, cdi_edits.env)
    argv.check("command, args and envs", args, env, limit=inp.host.arg_max)
    process: dict[str, Any] = {
        "terminal": cfg.tty,
        "args": args,
        "env": env,
        "cwd": working_dir(cfg, inp.image),
        "user": {
            "uid": user.uid,
            "gid": user.gid,
            "additionalGids": list(
                dict.fromkeys([*user.additional_gids, *cdi_edits.additional_gids])
            ),
        },
        "capabilities": {
            "bounding": caps,
            "effective": caps,
            "permitted": caps,
            "ambient": ambient(sc.capabilities, caps),
        },
        "rlimits": rlimits(
            inp.settings.default_ulimits,
            inp.sandbox_config.annotations,
            inp.settings.max_ulimits,
            inp.host.own_rlimits,
            "CAP_SYS_RESOURCE" in inp.host.bounding_caps,
        ),
        "noNewPrivileges": sc.no_new_privs,
        "oomScoreAdj": max(
            ranged(linux_cfg.resources.oom_score_adj, "oom_score_adj", -1000, 1000),
            inp.host.own_oom_score_adj,
        ),
    }
    profile_name = apparmor(sc, inp.host, inp.settings, privileged)
    if profile_name:
        process["apparmorProfile"] = profile_name

    cg_path = cgroup_path(inp)
    resources = cgroup_resources(
        linux_cfg.resources, inp.host.cgroup_v2, inp.host.hugetlb_sizes, inp.host.cgroups
    )
    devices, device_rules = nodes_and_rules(cfg, inp.host, privileged, cdi_edits)
    resources["devices"] = device_rules
    linux: dict[str, Any] = {
        "namespaces": namespaces(inp.sandbox_config, sc, inp.sandbox, inp.host.cgroup_v2),
        "resources": resources,
        "cgroupsPath": cg_path,
        "devices": devices,
        "sysctl": sysctls(inp.sandbox_config),
    }
    if id_maps is not None:
        # runc joins the pod's user namespace by path; it still wants the mappings.
        linux["uidMappings"] = [id_maps.uids.oci()]
        linux["gidMappings"] = [id_maps.gids.oci()]
    if not privileged:
        linux["maskedPaths"] = list(sc.masked_paths) or list(DEFAULT_MASKED)
        linux["readonlyPaths"] = list(sc.readonly_paths) or list(DEFAULT_READONLY)
    profile = seccomp_profile(sc, inp.host, caps, privileged)
    if profile is not None:
        linux["seccomp"] = profile

    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": inp.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts(cfg, inp.sandbox, inp.host, privileged, sc.readonly_rootfs, cdi_edits),
        "annotations": _annotations(inp),
        "linux": linux,
    }
    propagation = rootfs_propagation(cfg)
    if propagation:
        linux["rootfsPropagation"] = propagation
    if cdi_edits.hooks:
        spec["hooks"] = cdi.oci_hooks(cdi_edits, inp.host.cdi_sources)
    return BuiltSpec(spec, user, stop_signal(cfg, inp.image), cg_path)


def _annotations(inp: SpecInput) -> dict[str, str]:
    out = dict(inp.config.annotations)
    meta = inp.sandbox_config.metadata
    out.update(
        {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": inp.config.metadata.name,
            "io.kubernetes.cri.sandbox-id": inp.sandbox.id,
            "io.kubernetes.cri.sandbox-name": meta.name,
            "io.kubernetes.cri.sandbox-namespace": meta.namespace,
            "io.kubernetes.cri.image-name": inp.config.image.image,
        }
    )
    return out
