"""library:// against a local server speaking the Sylabs library API, and registry
misbehaviour (5xx, stalls) from a small HTTP server that speaks the distribution API."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from pathlib import Path

import pytest
from aiohttp import web
from sycri import errors
from sycri.images.credentials import Credentials

from tests.support import oci
from tests.support.images import make_images, mounted, siftool_list

pytestmark = pytest.mark.root
SEEN = web.AppKey("seen", list)


@pytest.fixture(scope="module")
def sif_bytes(registry, tmp_path_factory) -> bytes:
    r = "test/" + secrets.token_hex(4)
    oci.push(registry, r, "latest", oci.busybox_image(cmd=["from-library"]))
    images = make_images(tmp_path_factory.mktemp("lib-src"))
    image = asyncio.run(images.pull(f"{registry.host}/{r}"))
    return Path(image.sif_path).read_bytes()


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def library_app(sif: bytes, token: str = "", redirect: dict | None = None) -> web.Application:
    digest = hashlib.sha256(sif).hexdigest()
    seen: list[str] = []

    def authorised(request: web.Request) -> bool:
        return not token or request.headers.get("Authorization") == f"Bearer {token}"

    async def oci_redirect(request: web.Request):
        seen.append(f"redirect {request.query.get('namespace')}")
        if redirect is None:
            raise web.HTTPNotFound()
        return web.json_response(redirect)

    async def image(request: web.Request):
        seen.append(f"image {request.match_info['ref']} arch={request.query.get('arch')}")
        if not authorised(request):
            raise web.HTTPUnauthorized()
        if request.match_info["ref"] != "alice/tools/busybox:1.0":
            raise web.HTTPNotFound()
        return web.json_response({"data": {"hash": f"sha256.{digest}", "size": len(sif)}})

    async def imagefile(request: web.Request):
        if not authorised(request):
            raise web.HTTPUnauthorized()
        return web.Response(body=sif, content_type="application/octet-stream")

    app = web.Application()
    app[SEEN] = seen
    app.router.add_get("/v1/oci-redirect", oci_redirect)
    app.router.add_get("/v1/images/{ref:.+}", image)
    app.router.add_get("/v1/imagefile/{ref:.+}", imagefile)
    return app


def _pull_library(tmp_path, app, ref, creds=None):
    async def go():
        runner, url = await _serve(app)
        try:
            images = make_images(tmp_path, library_url=url)
            return images, await images.pull(ref, creds)
        finally:
            await runner.cleanup()

    return asyncio.run(go())


def test_library_legacy_routes_with_token(tmp_path, sif_bytes):
    app = library_app(sif_bytes, token="s3cret")
    _, got = _pull_library(
        tmp_path, app, "library://alice/tools/busybox:1.0", Credentials(registry_token="s3cret")
    )
    assert Path(got.sif_path).read_bytes() == sif_bytes
    assert got.id == "sha256:" + hashlib.sha256(sif_bytes).hexdigest()
    assert got.config.cmd == ("from-library",)
    assert got.repo_tags == ("library://alice/tools/busybox:1.0",)
    assert "image alice/tools/busybox:1.0 arch=amd64" in app[SEEN]
    siftool_list(got.sif_path)
    with mounted(got.sif_path) as root:
        assert (root / "bin/busybox").exists()


def test_library_without_token_is_refused_clearly(tmp_path, sif_bytes):
    with pytest.raises(errors.Unauthenticated, match="requires a token"):
        _pull_library(
            tmp_path, library_app(sif_bytes, token="x"), "library://alice/tools/busybox:1.0"
        )


def test_library_unknown_image_is_not_found(tmp_path, sif_bytes):
    with pytest.raises(errors.NotFound):
        _pull_library(tmp_path, library_app(sif_bytes), "library://alice/tools/other:1.0")


def test_library_oci_redirect_pulls_the_sif_artifact_from_the_registry(
    registry, tmp_path, sif_bytes
):
    repo = "library/" + secrets.token_hex(4)
    _, cfg_digest = oci.push_sif(registry, repo, "1.0", sif_bytes)
    app = library_app(sif_bytes, redirect={"url": registry.url, "token": "", "name": repo})
    _, got = _pull_library(tmp_path, app, "library://alice/tools/busybox:1.0")
    assert got.id == oci.sha256(sif_bytes) != cfg_digest
    assert Path(got.sif_path).read_bytes() == sif_bytes
    assert app[SEEN] == ["redirect alice/tools/busybox"]


def test_library_oci_redirect_refuses_an_index_inside_an_index(registry, tmp_path, sif_bytes):
    """The redirect's registry is resolved as docker:// is: one index level, no more (an
    index entry that says it is a manifest but is an index is refused)."""
    from sycri.images.reference import node_arch

    repo = "library/" + secrets.token_hex(4)
    platform = {"architecture": node_arch()[0], "os": "linux"}

    def index(mt: str, digest: str, size: int) -> bytes:
        entry = {"mediaType": mt, "digest": digest, "size": size, "platform": platform}
        return json.dumps(
            {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [entry]}
        ).encode()

    img = oci.busybox_image()
    digest = oci.push(registry, repo, "leaf", img)
    inner = index(img.media_type, digest, len(img.manifest()))
    inner_digest = oci.push_manifest(registry, repo, "inner", inner, oci.OCI_INDEX)
    outer = index(img.media_type, inner_digest, len(inner))
    oci.push_manifest(registry, repo, "1.0", outer, oci.OCI_INDEX)
    app = library_app(sif_bytes, redirect={"url": registry.url, "token": "", "name": repo})
    with pytest.raises(errors.InvalidArgument, match="an index inside an index"):
        _pull_library(tmp_path, app, "library://alice/tools/busybox:1.0")


# -- a misbehaving registry -------------------------------------------------------------------


def flaky_registry(img: oci.Image, failures: int, stall: bool) -> web.Application:
    blobs = {oci.sha256(img.config()): img.config()}
    blobs.update({layer.digest: layer.blob for layer in img.layers})
    state = {"failures": failures}

    async def ping(request):
        return web.json_response({})

    async def manifest(request):
        if state["failures"] > 0:
            state["failures"] -= 1
            raise web.HTTPServiceUnavailable()
        return web.Response(body=img.manifest(), content_type=img.media_type)

    async def blob(request):
        data = blobs[request.match_info["digest"]]
        if stall and data != img.config():
            resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
            await resp.prepare(request)
            await resp.write(data[:100])
            await asyncio.sleep(3)
            return resp
        return web.Response(body=data)

    app = web.Application()
    app.router.add_get("/v2/", ping)
    app.router.add_get("/v2/x/y/manifests/{ref}", manifest)
    app.router.add_get("/v2/x/y/blobs/{digest}", blob)
    return app


def _pull_flaky(tmp_path, app, **settings):
    async def go():
        runner, url = await _serve(app)
        try:
            images = make_images(tmp_path, **settings)
            return await images.pull(url.removeprefix("http://") + "/x/y:t")
        finally:
            await runner.cleanup()

    return asyncio.run(go())


def test_registry_5xx_is_retried_then_succeeds(tmp_path):
    img = oci.busybox_image(cmd=["retried"])
    got = _pull_flaky(tmp_path, flaky_registry(img, failures=2, stall=False))
    assert got.id == img.id


def test_registry_5xx_beyond_the_retries_is_unavailable(tmp_path):
    img = oci.busybox_image()
    with pytest.raises(errors.Unavailable, match="HTTP 503"):
        _pull_flaky(tmp_path, flaky_registry(img, failures=10, stall=False))


def test_a_stalled_layer_download_fails_naming_the_layer(tmp_path):
    img = oci.busybox_image()
    with pytest.raises(
        errors.DeadlineExceeded, match=r"layer 1/1 sha256:[0-9a-f]{64}: no progress"
    ):
        _pull_flaky(
            tmp_path, flaky_registry(img, failures=0, stall=True), pull_progress_timeout_seconds=0.5
        )
    images = make_images(tmp_path)
    assert images.list() == [] and list(images.store.tmp_dir.iterdir()) == []


def test_cli_pull_prints_the_image(registry, tmp_path):
    import subprocess

    from tests.support.server import sycri_cmd, sycri_env

    r = "test/" + secrets.token_hex(4)
    img = oci.busybox_image(cmd=["cli"])
    oci.push(registry, r, "latest", img)
    out = subprocess.run(
        sycri_cmd("pull", "--json", "--root-dir", str(tmp_path / "root"), f"{registry.host}/{r}"),
        env=sycri_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["id"] == img.id
    assert Path(shown["sif"]).is_file()
    bad = subprocess.run(
        sycri_cmd("pull", "--root-dir", str(tmp_path / "root"), "Not A Ref"),
        env=sycri_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr


def endless_library(sent: list[int], size: int | None) -> web.Application:
    """A legacy library whose image file never ends (or is longer than it says)."""

    async def image(request: web.Request):
        data = {"hash": "sha256." + "0" * 64}
        if size is not None:
            data["size"] = size
        return web.json_response({"data": data})

    async def imagefile(request: web.Request):
        resp = web.StreamResponse()
        await resp.prepare(request)
        chunk = b"\0" * (1 << 20)
        try:
            for _ in range(4096):  # 4 GiB at most, if the client never stopped reading
                await resp.write(chunk)
                sent[0] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def no_redirect(request: web.Request):
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/v1/oci-redirect", no_redirect)
    app.router.add_get("/v1/images/{ref:.+}", image)
    app.router.add_get("/v1/imagefile/{ref:.+}", imagefile)
    return app


@pytest.mark.parametrize("size", [None, 1 << 20])
def test_library_download_is_bounded_while_it_streams(tmp_path, size):
    """Past images.max_image_bytes (no size given) or past the size the library stated,
    the download stops at once: the server never gets to send its 4 GiB."""
    sent = [0]

    async def go():
        runner, url = await _serve(endless_library(sent, size))
        try:
            images = make_images(tmp_path, library_url=url, max_image_bytes=8 << 20)
            await images.pull("library://alice/tools/endless:1.0")
        finally:
            await runner.cleanup()

    want = errors.ResourceExhausted if size is None else errors.InvalidArgument
    with pytest.raises(want) as err:
        asyncio.run(go())
    assert ("images.max_image_bytes" if size is None else "more than the 1048576") in str(err.value)
    assert sent[0] < 1 << 30
    leftovers = [p for p in (tmp_path / "root/images").rglob("*") if p.is_file()]
    assert all(p.name.startswith("index.db") for p in leftovers)


def test_library_image_larger_than_allowed_is_refused_before_download(tmp_path):
    sent = [0]

    async def go():
        runner, url = await _serve(endless_library(sent, 64 << 20))
        try:
            images = make_images(tmp_path, library_url=url, max_image_bytes=8 << 20)
            await images.pull("library://alice/tools/endless:1.0")
        finally:
            await runner.cleanup()

    with pytest.raises(errors.ResourceExhausted, match=r"67108864 bytes, more than images\.max"):
        asyncio.run(go())
    assert sent[0] == 0
