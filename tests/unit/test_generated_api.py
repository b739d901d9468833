"""The generated CRI code is current and serves every RPC of the proto."""

from __future__ import annotations

import re
from pathlib import Path

from sycri.api import api_pb2, regen

PROTO = Path(__file__).resolve().parents[2] / "proto" / "api.proto"


def test_generated_code_matches_proto():
    assert regen.main(["--check"]) == 0


def test_every_rpc_of_the_proto_is_in_the_descriptor():
    declared = set(re.findall(r"^\s*rpc (\w+)\(", PROTO.read_text(), re.M))
    services = api_pb2.DESCRIPTOR.services_by_name
    served = {m.name for s in ("RuntimeService", "ImageService") for m in services[s].methods}
    assert served == declared
    assert len(served) == 43
