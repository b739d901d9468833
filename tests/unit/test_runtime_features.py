"""What Status claims per runtime handler comes from the runtime's own features document."""

from __future__ import annotations

import json

import pytest
from sycri.api import api_pb2
from sycri.errors import InvalidArgument
from sycri.runtime.oci import features
from sycri.runtime.oci.ocispec import HostFacts

from tests.unit.test_ocispec import build, config

RUNC_115 = json.dumps({"ociVersionMax": "1.0.2-dev", "mountOptions": ["ro", "rro", "rbind"]})


@pytest.mark.parametrize(
    ("doc", "kernel", "rro"),
    [
        (RUNC_115, "6.1.0-18-amd64", True),
        (RUNC_115, "5.12.0", True),
        (RUNC_115, "5.11.22", False),  # no mount_setattr
        (json.dumps({"mountOptions": ["ro", "rbind"]}), "6.1.0", False),  # runc 1.0
        ("", "6.1.0", False),  # no `features` verb
        ("not json", "6.1.0", False),
        ("[1, 2]", "6.1.0", False),
    ],
)
def test_recursive_read_only_needs_runtime_and_kernel(doc, kernel, rro):
    got = features.parse(doc, kernel)
    assert got.recursive_read_only is rro
    assert got.user_namespaces is False  # no idmap probe result given: never claimed


def rro_mount(**kw) -> api_pb2.ContainerConfig:
    cfg = config()
    cfg.mounts.add(host_path="/h", container_path="/mnt", recursive_read_only=True, **kw)
    return cfg


CAPABLE = HostFacts(paths={"/h": "dir"}, recursive_read_only=True)


def test_rro_mount_gets_ro_and_rro():
    spec = build(rro_mount(readonly=True), host=CAPABLE)
    (m,) = [m for m in spec["mounts"] if m["destination"] == "/mnt"]
    assert m["options"] == ["rbind", "rprivate", "ro", "rro"]


@pytest.mark.parametrize(
    ("kw", "host", "match"),
    [
        ({}, CAPABLE, "not readonly"),
        (
            {"readonly": True, "propagation": api_pb2.PROPAGATION_HOST_TO_CONTAINER},
            CAPABLE,
            "private propagation",
        ),
        (
            {"readonly": True, "propagation": api_pb2.PROPAGATION_BIDIRECTIONAL},
            CAPABLE,
            "private propagation",
        ),
        ({"readonly": True}, HostFacts(paths={"/h": "dir"}), "cannot do on this node"),
    ],
)
def test_rro_mount_refused_as_kubelet_does(kw, host, match):
    with pytest.raises(InvalidArgument, match=match):
        build(rro_mount(**kw), host=host)
