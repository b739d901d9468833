"""An async client of the OCI distribution API v2 (what docker:// and oras:// speak).

Auth is the registry's choice, discovered from its ``WWW-Authenticate`` challenge
(:mod:`sycri.images.registry_auth`). Every blob is hashed and counted while it streams;
a blob that is longer, shorter or different from its descriptor is refused. 5xx answers and dropped connections are retried a bounded number
of times; a read that makes no progress for ``progress_timeout`` seconds fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from sycri.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    SycriError,
    Unavailable,
    excerpt,
)
from sycri.images import manifest as mf
from sycri.images.credentials import Credentials
from sycri.images.download import CHUNK, Streamed, sha256, stream_to_file
from sycri.images.registries import Endpoint
from sycri.images.registry_auth import BACKOFF, RETRIES, RegistryAuth
from sycri.observability import tracing

log = logging.getLogger("sycri.images.registry")

LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")


class DigestMismatch(InvalidArgument):
    """A blob's bytes do not match its descriptor: the image is rejected, nothing stored."""


@dataclass
class Fetched:
    data: bytes
    media_type: str
    digest: str


class RegistryClient:
    """Talks to one endpoint (host + repository) with one set of credentials."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        credentials: Credentials | None = None,
        *,
        progress_timeout: float = 300.0,
        retries: int = RETRIES,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.creds = credentials or Credentials()
        self.progress_timeout = progress_timeout
        self.retries = retries
        self.on_bytes = on_bytes or (lambda n: None)  # told of every byte received
        self._scheme: str | None = None
        self.auth = RegistryAuth(session, endpoint, self.creds, retries=retries, ssl=self._ssl)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.endpoint.host}/{self.endpoint.repository}"

    def _insecure(self) -> bool:
        return self.endpoint.insecure or bool(LOOPBACK.match(self.endpoint.host))

    def _ssl(self) -> ssl.SSLContext | bool:
        return not self._insecure()

    async def _base(self) -> str:
        if self._scheme is None:
            self._scheme = "https"
            if self._insecure():
                self._scheme = await self._probe_scheme()
        return f"{self._scheme}://{self.endpoint.api_host}"

    async def _probe_scheme(self) -> str:
        """An insecure registry may speak plain HTTP: try TLS first (unverified), then HTTP."""
        try:
            async with self.session.get(
                f"https://{self.endpoint.api_host}/v2/",
                ssl=False,
                timeout=aiohttp.ClientTimeout(total=10),
            ) as r:
                await r.read()
                return "https"
        except (TimeoutError, aiohttp.ClientError, ssl.SSLError):
            return "http"

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        what: str,
        reauthed: bool = False,
    ) -> aiohttp.ClientResponse:
        """A response with status 2xx (caller must release it); auth and retries handled."""
        url = await self._base() + path
        last: str = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
            hdrs = dict(headers or {})
            if self.auth.header:
                hdrs["Authorization"] = self.auth.header
            try:
                with tracing.span(
                    "registry.request", **{"http.request.method": method, "url.full": url}
                ) as span:
                    resp = await self.session.request(
                        method,
                        url,
                        headers=hdrs,
                        ssl=self._ssl(),
                        timeout=aiohttp.ClientTimeout(
                            total=None, sock_connect=30, sock_read=self.progress_timeout
                        ),
                    )
                    span.set_attribute("http.response.status_code", resp.status)
            except TimeoutError:
                last = f"no answer within {self.progress_timeout:g}s"
                continue
            except aiohttp.ClientConnectorCertificateError as exc:
                raise Unavailable(
                    f"{what}: the TLS certificate of registry {self.endpoint.host} is not "
                    f"trusted ({exc.certificate_error}); if that is intended, mark it insecure "
                    "in registries.conf"
                ) from None
            except aiohttp.ClientError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status == 401 and not reauthed:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                if await self.auth.authenticate(challenge, hdrs.get("Authorization")):
                    return await self._request(
                        method, path, headers=headers, what=what, reauthed=True
                    )
                raise self.auth.refused(401, what)
            if resp.status in (401, 403):
                resp.release()
                raise self.auth.refused(resp.status, what)
            if resp.status == 404:
                resp.release()
                raise NotFound(f"{what} not found at {self.where}")
            if resp.status == 429 or resp.status >= 500:
                last = f"HTTP {resp.status}"
                resp.release()
                continue
            if resp.status >= 300:
                body = (await resp.read())[:300].decode(errors="replace")
                raise InvalidArgument(
                    f"{what}: registry {self.endpoint.host} answered HTTP {resp.status}: "
                    f"{excerpt(body, 200)}"
                )
            return resp
        raise Unavailable(
            f"{what}: registry {self.endpoint.host} unavailable after {self.retries + 1} tries "
            f"({last})"
        )

    # -- API --------------------------------------------------------------------------------

    async def manifest(self, ref: str) -> Fetched:
        """The manifest or index named by tag or digest, digest-checked when named by one."""
        what = f"manifest {self.where}:{ref}" if ":" not in ref else f"manifest {ref}"
        resp = await self._request(
            "GET",
            f"/v2/{self.endpoint.repository}/manifests/{ref}",
            headers={"Accept": mf.ACCEPT},
            what=what,
        )
        try:
            data = await _read_limited(resp, mf.MAX_MANIFEST, what, self.progress_timeout)
        finally:
            resp.release()
        self.on_bytes(len(data))
        digest = await sha256(data)
        if ref.startswith("sha256:") and digest != ref:
            raise DigestMismatch(f"{what}: content has digest {digest}, not {ref}")
        return Fetched(data, mf.kind(data, resp.headers.get("Content-Type", "")), digest)

    async def blob_bytes(self, desc: mf.Descriptor, limit: int, what: str) -> bytes:
        if desc.size > limit:
            raise InvalidArgument(f"{what} {desc.digest} is {desc.size} bytes, over {limit}")
        resp = await self._request(
            "GET", f"/v2/{self.endpoint.repository}/blobs/{desc.digest}", what=what
        )
        try:
            data = await _read_limited(resp, desc.size, what, self.progress_timeout)
        finally:
            resp.release()
        self.on_bytes(len(data))
        _verify(Streamed(len(data), await sha256(data)), desc, what)
        return data

    async def image_manifest(
        self, ref: str, arch: str, variant: str, what: str
    ) -> tuple[Fetched, mf.Manifest]:
        """The manifest ``ref`` (tag or digest) names for this platform, and what ``ref``
        named (an index or the manifest itself: its digest is the repo digest). An index
        is resolved once: an index inside an index is refused."""
        top = await self.manifest(ref)
        fetched = top
        if top.media_type in mf.INDEXES:
            chosen = mf.choose_platform(mf.parse_index(top.data), arch, variant)
            fetched = await self.manifest(chosen.digest)
            if fetched.media_type in mf.INDEXES:
                raise InvalidArgument(f"{what}: an index inside an index is not supported")
        return top, mf.parse_manifest(fetched.data, fetched.media_type)

    async def blob_to_file(
        self,
        desc: mf.Descriptor,
        dest: Path,
        what: str,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a blob into ``dest``, hashed as it comes (in a thread, off the event
        loop); retried from scratch on resets."""
        last = ""
        told = progress or (lambda n: None)

        def on_chunk(n: int) -> None:
            self.on_bytes(n)
            told(n)

        def too_long(n: int) -> SycriError:
            return DigestMismatch(
                f"{what} {desc.digest}: more than the {desc.size} bytes its descriptor says"
            )

        def stalled(n: int) -> SycriError:
            return DeadlineExceeded(
                f"{what} {desc.digest}: no progress for "
                f"{self.progress_timeout:g}s after {n} of {desc.size} bytes"
            )

        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(BACKOFF[min(attempt - 1, len(BACKOFF) - 1)])
            resp = await self._request(
                "GET", f"/v2/{self.endpoint.repository}/blobs/{desc.digest}", what=what
            )
            try:
                got = await stream_to_file(
                    resp.content.read,
                    dest,
                    limit=desc.size,
                    too_long=too_long,
                    stalled=stalled,
                    progress_timeout=self.progress_timeout,
                    on_chunk=on_chunk,
                )
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                log.info("%s: retrying after %s", what, last)
                continue
            finally:
                resp.release()
            _verify(got, desc, what)
            return
        raise Unavailable(
            f"{what} {desc.digest}: download from {self.endpoint.host} failed "
            f"{self.retries + 1} times ({last})"
        )


def _verify(got: Streamed, desc: mf.Descriptor, what: str) -> None:
    if got.size != desc.size:
        raise DigestMismatch(
            f"{what} {desc.digest}: got {got.size} bytes, descriptor says {desc.size}"
        )
    if got.digest != desc.digest:
        raise DigestMismatch(f"{what}: content has digest {got.digest}, expected {desc.digest}")


async def _read_limited(
    resp: aiohttp.ClientResponse, limit: int, what: str, timeout: float
) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(resp.content.read(CHUNK), timeout)
        except TimeoutError:
            raise DeadlineExceeded(f"{what}: no progress for {timeout:g}s") from None
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > limit:
            raise InvalidArgument(f"{what}: larger than {limit} bytes")


def new_session() -> aiohttp.ClientSession:
    """One pooled session per pull; HTTP proxies from the environment are honoured."""
    return aiohttp.ClientSession(
        trust_env=True,
        connector=aiohttp.TCPConnector(limit=16, ttl_dns_cache=60),
        auto_decompress=False,
    )


with contextlib.suppress(Exception):  # keep aiohttp's own access logs quiet
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
