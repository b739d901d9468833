"""The RPC wrapper: credentials never reach the logs."""

from __future__ import annotations

from sycri.api import api_pb2
from sycri.cri.service import redacted


def test_auth_fields_are_redacted_everywhere():
    req = api_pb2.PullImageRequest(
        image=api_pb2.ImageSpec(image="busybox"),
        auth=api_pb2.AuthConfig(
            username="alice", password="hunter2", auth="YWxpY2U6aHVudGVyMg==", identity_token="tok"
        ),
    )
    text = str(redacted(req))
    assert "alice" in text
    for secret in ("hunter2", "YWxpY2U6aHVudGVyMg==", 'tok"'):
        assert secret not in text
    assert req.auth.password == "hunter2"  # the request itself is untouched
