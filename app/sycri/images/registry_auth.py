"""How a registry client gets its ``Authorization`` header: the registry's choice,
read from its ``WWW-Authenticate`` challenge.

Anonymous, bearer tokens from the challenge's realm (fetched with basic credentials or an
OAuth2 refresh token), a registry token used as-is, or basic auth. A refusal names the
registry, the repository and whether credentials were given.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl as ssl_mod
from collections.abc import Callable

import aiohttp

from sycri.errors import (
    InvalidArgument,
    PermissionDenied,
    SycriError,
    Unauthenticated,
    Unavailable,
    excerpt,
)
from sycri.images.credentials import Credentials
from sycri.images.registries import Endpoint

RETRIES = 3
BACKOFF = (0.2, 0.6, 1.5)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme (lower case) and parameters of a ``WWW-Authenticate`` header."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistryAuth:
    """The ``Authorization`` header for one endpoint and one set of credentials, shared
    by the client's concurrent requests (one token fetch, not one per request)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        credentials: Credentials,
        *,
        retries: int,
        ssl: Callable[[], ssl_mod.SSLContext | bool],
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.creds = credentials
        self.retries = retries
        self.ssl = ssl  # the client's TLS setting, asked at each request
        self.header: str | None = None
        self._lock = asyncio.Lock()

    @property
    def where(self) -> str:
        return f"{self.endpoint.host}/{self.endpoint.repository}"

    def refused(self, status: int, what: str) -> SycriError:
        if self.creds:
            msg = (
                f"{what}: registry {self.endpoint.host} refused the credentials for "
                f"{self.endpoint.repository} (HTTP {status})"
            )
        else:
            msg = (
                f"{what}: registry {self.endpoint.host} requires credentials for "
                f"{self.endpoint.repository} and none were given (HTTP {status})"
            )
        return PermissionDenied(msg) if status == 403 else Unauthenticated(msg)

    async def authenticate(self, challenge: str, tried: str | None) -> bool:
        """Set ``header`` from the challenge; False when there is nothing new to try."""
        async with self._lock:
            if self.header and self.header != tried:
                return True  # another request authenticated meanwhile
            scheme, params = parse_challenge(challenge)
            if scheme == "basic":
                if not self.creds.username or (tried and tried.startswith("Basic")):
                    return False
                raw = f"{self.creds.username}:{self.creds.password}".encode()
                self.header = "Basic " + base64.b64encode(raw).decode()
                return True
            if scheme == "bearer":
                if self.creds.registry_token:
                    if tried == f"Bearer {self.creds.registry_token}":
                        return False
                    self.header = f"Bearer {self.creds.registry_token}"
                    return True
                token = await self._fetch_token(params)
                self.header = f"Bearer {token}"
                return True
            return False

    async def _fetch_token(self, params: dict[str, str]) -> str:
        realm = params.get("realm")
        if not realm or not realm.startswith(("http://", "https://")):
            raise InvalidArgument(
                f"registry {self.endpoint.host}: bad token realm {excerpt(realm)}"
            )
        scope = params.get("scope") or f"repository:{self.endpoint.repository}:pull"
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        what = f"token for {self.where}"
        timeout = aiohttp.ClientTimeout(total=60)
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
            try:
                if self.creds.identity_token:
                    form = {
                        "grant_type": "refresh_token",
                        "refresh_token": self.creds.identity_token,
                        "client_id": "sycri",
                        **query,
                    }
                    req = self.session.post(realm, data=form, ssl=self.ssl(), timeout=timeout)
                else:
                    headers = {}
                    if self.creds.username:
                        raw = f"{self.creds.username}:{self.creds.password}".encode()
                        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
                    req = self.session.get(
                        realm, params=query, headers=headers, ssl=self.ssl(), timeout=timeout
                    )
                async with req as r:
                    if r.status in (401, 403):
                        raise self.refused(r.status, what)
                    if r.status >= 500:
                        continue
                    if r.status != 200:
                        raise InvalidArgument(f"{what}: token server answered HTTP {r.status}")
                    body = await r.json(content_type=None)
            except (TimeoutError, aiohttp.ClientError):
                continue
            except ValueError:
                raise InvalidArgument(f"{what}: token server answer is not JSON") from None
            token = (body or {}).get("token") or (body or {}).get("access_token")
            if not isinstance(token, str) or not token:
                raise InvalidArgument(f"{what}: token server answer holds no token")
            return token
        raise Unavailable(f"{what}: token server {excerpt(realm)} unavailable")
