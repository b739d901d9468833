"""Registry credentials from a CRI AuthConfig: what cannot be sent is refused, by name."""

from __future__ import annotations

import base64

import pytest
from sycri.api import api_pb2
from sycri.errors import InvalidArgument
from sycri.images.credentials import from_auth_config


def test_auth_field_that_is_not_ascii_is_invalid_argument():
    """Found by the fuzz test: base64 of a str with non-ASCII raised a bare ValueError."""
    with pytest.raises(InvalidArgument, match="'auth' is not base64"):
        from_auth_config(api_pb2.AuthConfig(auth="\u00e9t\u00e9"))


@pytest.mark.parametrize(
    "auth, field",
    [(api_pb2.AuthConfig(username="j\u00fcrgen", password="pw"), "username"),
     (api_pb2.AuthConfig(username="u", password="p\u00e4ss"), "password"),
     (api_pb2.AuthConfig(auth=base64.b64encode("j\u00fcrgen:pw".encode()).decode()), "username"),
     (api_pb2.AuthConfig(registry_token="tok\r\nX-Evil: 1"), "registry_token"),
     (api_pb2.AuthConfig(identity_token="\x7f"), "identity_token"),
     (api_pb2.AuthConfig(username="a:b", password="pw"), "username")],
)  # fmt: skip
def test_credentials_that_cannot_travel_in_a_header_are_refused(auth, field):
    with pytest.raises(InvalidArgument, match=f"AuthConfig.{field}"):
        from_auth_config(auth)


def test_printable_credentials_pass():
    creds = from_auth_config(api_pb2.AuthConfig(username="alice", password="s3cr3t!~ x"))
    assert creds is not None and (creds.username, creds.password) == ("alice", "s3cr3t!~ x")
