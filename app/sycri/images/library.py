"""A client of the Sylabs library API (``library://``), pull only.

First the OCI-redirect route (``GET /v1/oci-redirect``): the library names an OCI
registry, a bearer token and the mapped repository, and the SIF comes from there as
an oras artifact. A library without that route gets the legacy pair: ``GET
/v1/images/REF?arch=`` for the image's hash and size, then ``GET /v1/imagefile/REF?arch=``
for the bytes, checked against both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from sycri.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SycriError,
    Unauthenticated,
    Unavailable,
    excerpt,
)
from sycri.images.download import stream_to_file
from sycri.images.reference import Reference, is_digest
from sycri.images.registries import Endpoint
from sycri.observability import tracing


@dataclass(frozen=True)
class Redirect:
    registry_url: str
    token: str
    name: str


class LibraryClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str = "",
        *,
        progress_timeout: float = 300.0,
        on_bytes: Callable[[int], None] | None = None,
    ) -> None:
        self.session = session
        self.base = base_url.rstrip("/")
        self.token = token
        self.progress_timeout = progress_timeout
        self.on_bytes = on_bytes or (lambda n: None)  # told of every SIF byte received

    @contextlib.asynccontextmanager
    async def _get(
        self, url: str, params: dict[str, str], timeout: aiohttp.ClientTimeout | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """``session.get`` with the token, in a ``registry.request`` span (the token is a
        header, not in the URL). Unless ``timeout`` says otherwise the whole exchange gets
        the progress timeout: the answers are small."""
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=self.progress_timeout)
        with tracing.span(
            "registry.request", **{"http.request.method": "GET", "url.full": url}
        ) as sp:
            async with self.session.get(
                url, params=params, headers=self._headers(), timeout=timeout
            ) as r:
                sp.set_attribute("http.response.status_code", r.status)
                yield r

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _check(self, status: int, what: str) -> None:
        if status == 401:
            raise Unauthenticated(
                f"{what}: the library refused the token"
                if self.token
                else f"{what}: the library requires a token and none was given"
            )
        if status == 403:
            raise PermissionDenied(f"{what}: the library refused access with this token")
        if status == 404:
            raise NotFound(f"{what}: not found in the library at {self.base}")
        if status >= 500:
            raise Unavailable(f"{what}: library {self.base} answered HTTP {status}")
        if status >= 300:
            raise InvalidArgument(f"{what}: library {self.base} answered HTTP {status}")

    async def _json(self, url: str, what: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            async with self._get(url, params) as r:
                self._check(r.status, what)
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{what}: library {self.base} unreachable: {exc}") from None
        except ValueError:
            raise InvalidArgument(f"{what}: library answer is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidArgument(f"{what}: library answer is not a JSON object")
        return body

    async def oci_redirect(self, ref: Reference) -> Redirect | None:
        """The OCI registry holding ``ref``, or None when the library has no such route."""
        url = f"{self.base}/v1/oci-redirect"
        params = {"namespace": ref.repository, "mapped": "1", "accessTypes": "pull"}
        try:
            async with self._get(url, params) as r:
                if r.status in (404, 405, 501):
                    return None
                self._check(r.status, f"library {ref.repository}")
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"library {self.base} unreachable: {exc}") from None
        except ValueError:
            return None
        if not isinstance(body, dict) or not body.get("url"):
            return None
        return Redirect(
            str(body["url"]), str(body.get("token", "")), str(body.get("name") or ref.repository)
        )

    async def image_meta(self, ref: Reference, arch: str) -> tuple[str, int | None]:
        """Legacy route: the image's sha256 digest and size, as the library states them."""
        path = f"{ref.repository}:{ref.tag}"
        what = f"library image {path}"
        meta = await self._json(f"{self.base}/v1/images/{path}", what, {"arch": arch})
        data = meta.get("data") or {}
        want = str(data.get("hash", ""))
        if not want.startswith("sha256.") or not is_digest("sha256:" + want[7:]):
            raise InvalidArgument(f"{what}: library gives no sha256 hash ({excerpt(want)})")
        size = data.get("size")
        ok = isinstance(size, int) and not isinstance(size, bool) and size > 0
        return "sha256:" + want.split(".", 1)[1], size if ok else None

    async def download(
        self, ref: Reference, arch: str, dest: Path, digest: str, size: int | None, limit: int
    ) -> None:
        """Legacy route: fetch the SIF into ``dest``, refused as soon as it streams past
        ``size`` (what the library said) or ``limit`` (images.max_image_bytes)."""
        path = f"{ref.repository}:{ref.tag}"
        what = f"library image {path}"
        bound = min(size, limit) if size is not None else limit

        def too_long(n: int) -> SycriError:
            if bound == limit:
                return ResourceExhausted(
                    f"{what}: the SIF is more than images.max_image_bytes ({limit} bytes)"
                )
            return InvalidArgument(f"{what}: more than the {size} bytes the library says")

        def stalled(n: int) -> SycriError:
            return DeadlineExceeded(f"{what}: no progress for {self.progress_timeout:g}s")

        try:
            async with self._get(
                f"{self.base}/v1/imagefile/{path}",
                {"arch": arch},
                aiohttp.ClientTimeout(total=None, sock_read=self.progress_timeout),
            ) as r:
                self._check(r.status, what)
                got = await stream_to_file(
                    r.content.read,
                    dest,
                    limit=bound,
                    too_long=too_long,
                    stalled=stalled,
                    progress_timeout=self.progress_timeout,
                    on_chunk=self.on_bytes,
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Unavailable(f"{what}: download failed: {exc}") from None
        if size is not None and got.size != size:
            raise InvalidArgument(f"{what}: got {got.size} bytes, the library says {size}")
        if got.digest != digest:
            raise InvalidArgument(f"{what}: content has digest {got.digest}, library says {digest}")


def redirect_endpoint(redirect: Redirect) -> Endpoint:
    """The registry endpoint an OCI redirect names."""
    parts = urlsplit(redirect.registry_url)
    host = parts.netloc or parts.path
    return Endpoint(host, redirect.name, insecure=parts.scheme == "http")
