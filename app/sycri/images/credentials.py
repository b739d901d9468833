"""Registry credentials: from the CRI AuthConfig, else from a docker ``config.json``."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path

from sycri.api import api_pb2
from sycri.errors import InvalidArgument

DOCKER_HUB_KEYS = (
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
)


@dataclass(frozen=True)
class Credentials:
    """What a registry may be shown. ``registry_token`` is used as a bearer token as-is;
    ``identity_token`` is an OAuth2 refresh token exchanged at the token realm."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.identity_token or self.registry_token)

    def __repr__(self) -> str:  # never print secrets
        return f"Credentials(username={self.username!r}, password=<redacted>)"


def decode_auth(auth: str, where: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(auth, validate=False).decode()
    except (binascii.Error, ValueError):  # ValueError: a str that is not ASCII
        raise InvalidArgument(f"{where}: 'auth' is not base64 of user:password") from None
    user, sep, password = text.partition(":")
    if not sep:
        raise InvalidArgument(f"{where}: 'auth' is not base64 of user:password")
    return user, password


def _printable(value: str, field_name: str) -> str:
    """Credentials travel in HTTP headers (Basic, Bearer): printable ASCII only."""
    if any(not 0x20 <= ord(c) < 0x7F for c in value):
        raise InvalidArgument(
            f"AuthConfig.{field_name}: only printable ASCII characters can be sent to a registry"
        )
    return value


def from_auth_config(auth: api_pb2.AuthConfig | None) -> Credentials | None:
    """Credentials from a CRI ``AuthConfig`` message (or None when it holds none)."""
    if auth is None:
        return None
    user, password = auth.username, auth.password
    if auth.auth and not user:
        user, password = decode_auth(auth.auth, "AuthConfig")
    if ":" in user:
        raise InvalidArgument("AuthConfig.username: a user name cannot contain ':'")
    creds = Credentials(
        _printable(user, "username"),
        _printable(password, "password"),
        _printable(auth.identity_token, "identity_token"),
        _printable(auth.registry_token, "registry_token"),
    )
    return creds or None


def _host_of(key: str) -> str:
    key = key.split("://", 1)[-1]
    return key.split("/", 1)[0]


def from_docker_config(path: str, registry: str) -> Credentials | None:
    """The entry of ``registry`` in a docker ``config.json`` (``auths``), if any."""
    if not path:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"docker config {path} cannot be read: {exc}") from None
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        return None
    wanted = {registry}
    if registry in DOCKER_HUB_KEYS:
        wanted.update(DOCKER_HUB_KEYS)
    for key, entry in auths.items():
        if (key in wanted or _host_of(key) in wanted) and isinstance(entry, dict):
            user, password = entry.get("username", ""), entry.get("password", "")
            if entry.get("auth"):
                user, password = decode_auth(entry["auth"], f"{path} entry {key}")
            creds = Credentials(
                user, password, entry.get("identitytoken", ""), entry.get("registrytoken", "")
            )
            if creds:
                return creds
    return None
