"""Pod user namespaces: what a request may ask for, and what a container's spec gets."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sycri.api import api_pb2
from sycri.errors import InvalidArgument
from sycri.runtime.oci import features
from sycri.runtime.pod import userns
from sycri.runtime.pod.userns import IDMap, Mappings

from tests.unit.test_ocispec import POD, SANDBOX, build, config

MAPS = Mappings(IDMap(0, 1000, 100000), IDMap(0, 2000, 65536))


def nsopt(mode=api_pb2.POD, uids=((0, 1000, 100000),), gids=((0, 1000, 100000),), **modes):
    opt = api_pb2.NamespaceOption(**modes)
    opt.userns_options.mode = mode
    for c, h, n in uids:
        opt.userns_options.uids.add(container_id=c, host_id=h, length=n)
    for c, h, n in gids:
        opt.userns_options.gids.add(container_id=c, host_id=h, length=n)
    return opt


def test_pod_mode_gives_the_one_mapping_each():
    maps = userns.plan(nsopt(gids=((0, 5000, 70000),)))
    assert maps == Mappings(IDMap(0, 1000, 100000), IDMap(0, 5000, 70000))
    assert (maps.root_uid, maps.root_gid) == (1000, 5000)
    assert Mappings.from_json(json.loads(json.dumps(maps.to_json()))) == maps


def test_node_mode_and_no_options_mean_the_hosts():
    assert userns.plan(api_pb2.NamespaceOption()) is None
    assert userns.plan(nsopt(api_pb2.NODE, uids=(), gids=())) is None


@pytest.mark.parametrize(
    ("opt", "match"),
    [
        (nsopt(uids=((0, 1000, 100000), (0, 2000, 100000))), "uids: exactly one mapping"),
        (nsopt(gids=()), "gids: exactly one mapping is supported, got 0"),
        (nsopt(uids=((1, 1000, 100000),)), "container id 0 must be mapped"),
        (nsopt(gids=((0, 0, 65536),)), "must not include host id 0"),
        (nsopt(uids=((0, 1000, 0),)), "empty or out of range"),
        (nsopt(uids=((0, 2**32 - 10, 100),)), "empty or out of range"),
        (nsopt(api_pb2.CONTAINER, uids=(), gids=()), "mode CONTAINER is not supported"),
        (nsopt(api_pb2.TARGET, uids=(), gids=()), "mode TARGET is not supported"),
        (nsopt(api_pb2.NODE), "NODE mode takes no uid or gid mappings"),
        (nsopt(network=api_pb2.NODE), "host's network namespace"),
        (nsopt(ipc=api_pb2.NODE), "host's ipc namespace"),
        (nsopt(pid=api_pb2.NODE), "host's pid namespace"),
    ],
)
def test_requests_sycri_cannot_honour_are_invalid(opt, match):
    with pytest.raises(InvalidArgument, match=match):
        userns.plan(opt)


IN_USERNS = dataclasses.replace(SANDBOX, userns="/run/sycri/pods/p/ns/user", userns_maps=MAPS)


def test_container_joins_the_pods_user_namespace_with_its_mappings():
    spec = build(sandbox=IN_USERNS)
    kinds = {n["type"]: n.get("path") for n in spec["linux"]["namespaces"]}
    assert kinds["user"] == "/run/sycri/pods/p/ns/user"
    assert kinds["network"] == SANDBOX.netns
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1000, "size": 100000}]
    assert spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 2000, "size": 65536}]


def test_container_without_a_pod_user_namespace_has_no_mappings():
    spec = build()
    assert "user" not in {n["type"] for n in spec["linux"]["namespaces"]}
    assert "uidMappings" not in spec["linux"]


def sc_with(**kw) -> api_pb2.LinuxContainerSecurityContext:
    sc = api_pb2.LinuxContainerSecurityContext()
    for k, v in kw.items():
        if k == "userns_mode":
            sc.namespace_options.userns_options.mode = v
        elif k in ("run_as_user", "run_as_group"):
            getattr(sc, k).value = v
        elif k == "groups":
            sc.supplemental_groups.extend(v)
        else:
            setattr(sc.namespace_options, k, v)
    return sc


@pytest.mark.parametrize(
    ("sandbox", "sc", "match"),
    [
        (IN_USERNS, sc_with(userns_mode=api_pb2.NODE), "must use its pod's user namespace"),
        (SANDBOX, sc_with(userns_mode=api_pb2.POD), "must use its pod's user namespace"),
        (IN_USERNS, sc_with(network=api_pb2.NODE), "network: a container in a pod user"),
        (IN_USERNS, sc_with(run_as_user=100000), "user 100000 is not mapped"),
        (IN_USERNS, sc_with(run_as_user=1, run_as_group=65536), "group 65536 is not mapped"),
        (IN_USERNS, sc_with(run_as_user=1, groups=[70000]), "group 70000 is not mapped"),
    ],
)
def test_container_requests_outside_the_pods_user_namespace_are_invalid(sandbox, sc, match):
    with pytest.raises(InvalidArgument, match=match):
        build(config(sc=sc), sandbox=sandbox)


def test_container_at_the_edge_of_the_mapping_is_fine():
    spec = build(config(sc=sc_with(run_as_user=99999, run_as_group=65535)), sandbox=IN_USERNS)
    assert spec["process"]["user"]["uid"] == 99999


RUNC = json.dumps({"mountOptions": ["rro"], "linux": {"namespaces": ["mount", "user", "net"]}})


@pytest.mark.parametrize(
    ("doc", "kernel", "idmap", "claimed"),
    [
        (RUNC, "6.1.0", True, True),
        (RUNC, "5.19.0", True, True),
        (RUNC, "5.18.9", True, False),  # overlayfs takes no idmapped lower layer
        (RUNC, "6.1.0", False, False),  # the probe could not idmap a squashfs
        (json.dumps({"linux": {"namespaces": ["mount", "net"]}}), "6.1.0", True, False),
        (json.dumps({"linux": {"namespaces": "user"}}), "6.1.0", True, False),
        ("", "6.1.0", True, False),
    ],
)
def test_user_namespaces_claimed_only_when_every_part_works(doc, kernel, idmap, claimed):
    assert features.parse(doc, kernel, idmap).user_namespaces is claimed


def test_unchanged_pod_config_is_fine():
    assert userns.plan(POD.linux.security_context.namespace_options) is None


def test_only_private_volumes_of_the_request_are_idmapped():
    spec = {
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": []},
            {"destination": "/etc/hosts", "type": "bind", "source": "/r/hosts", "options": ["rbind", "rprivate", "ro"]},
            {"destination": "/data", "type": "bind", "source": "/h/data", "options": ["rbind", "rprivate", "rw"]},
            {"destination": "/shared", "type": "bind", "source": "/h/s", "options": ["rbind", "rshared", "rw"]},
        ]
    }  # fmt: skip
    assert userns.volume_mounts(spec, {"/data", "/shared"}) == [2]
