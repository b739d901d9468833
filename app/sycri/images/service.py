"""The image service: pull (docker://, oras://, library://, local SIF), look up, remove.

This is what the CRI ImageService adapter and the containers code call (``node.images``):

- ``await images.pull(text, credentials)`` -> :class:`Image` (shares in-flight pulls),
- ``await images.resolve(text)`` -> :class:`Image` by id, id prefix, tag, digest or
  reference; NotFound otherwise (``images.find`` returns None instead),
- ``images.list()``, ``await images.remove(text)``, ``images.fs_usage()``,
- ``images.users``: callables ``image_id -> str | None`` naming a container that uses the
  image; RemoveImage refuses with FAILED_PRECONDITION when one answers,
- ``images.mount_method(image_id)``: ``loop`` (kernel squashfs) or ``squashfuse``.

An image id always names the bytes that run (docs/images.md): an OCI image's config
digest, with every layer checked against the config's diff_ids while it unpacks; the
digest of the SIF itself for SIFs made elsewhere (Singularity and Apptainer push the same
``{}`` config for every SIF, so a config digest names nothing there).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import aiohttp
from opentelemetry.trace import Span

from sycri import crashpoint, sif
from sycri.config import Config
from sycri.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SycriError,
    Unauthenticated,
    Unavailable,
    excerpt,
)
from sycri.images import credentials as creds_mod
from sycri.images import manifest as mf
from sycri.images import reference, registries
from sycri.images.convert import CONFIG_OBJECT, build_sif, converting, fetch_and_apply, in_thread
from sycri.images.credentials import Credentials
from sycri.images.library import LibraryClient, redirect_endpoint
from sycri.images.reference import Reference
from sycri.images.registry import RegistryClient, new_session
from sycri.images.sif_stores import SifStores
from sycri.images.store import Image, Store, usage
from sycri.images.unpack import Applier, LimitExceeded, Limits
from sycri.observability import metrics, tracing
from sycri.sif import policy as sif_policy
from sycri.sif.verify import load_keys

log = logging.getLogger("sycri.images")

__all__ = ["Image", "Images"]


def tag_key(ref: Reference) -> str:
    """How a reference's tag is stored: ``registry/repo:tag`` (plus transport if not docker)."""
    if ref.transport == "file":
        return ref.path
    key = f"{ref.name}:{ref.tag}"
    return key if ref.transport == "docker" else f"{ref.transport}://{key}"


def digest_key(ref: Reference, digest: str) -> str:
    key = f"{ref.name}@{digest}"
    return key if ref.transport == "docker" else f"{ref.transport}://{key}"


def default_sif_config(arch: str) -> bytes:
    """The OCI config given to a SIF that carries none: run its runscript."""
    cfg = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Cmd": ["/.singularity.d/runscript"],
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        },
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return json.dumps(cfg, sort_keys=True).encode()


def _sif_config(path: Path, arch: str) -> bytes:
    """The ``oci-config.json`` object of a SIF, after checking it has a squashfs to run."""
    try:
        with sif.open_sif(path) as img:
            part = img.primary_partition()
            if part.fstype != sif.FsType.SQUASHFS:
                raise InvalidArgument(f"SIF {path}: primary partition is not squashfs")
            found = img.find(name=CONFIG_OBJECT)
            if found:
                data = img.read_object(found[0], limit=mf.MAX_CONFIG)
                mf.parse_config(data)
                return data
    except sif.SifError as exc:
        raise InvalidArgument(f"{path} is not a usable SIF file: {exc}") from None
    return default_sif_config(arch)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


class Images:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = Store(Path(cfg.root_dir) / "images")
        self.registries = registries.load(cfg.images.registries_conf)
        self.keys = load_keys(cfg.images.trusted_keyrings) if cfg.images.trusted_keyrings else None
        self.limits = Limits.of(cfg.images)
        self.arch, self.variant = reference.node_arch()
        self.users: list[Callable[[str], str | None]] = []
        self.container_usage: Callable[[], tuple[Path, int, int] | None] | None = None
        self._pulls: dict[str, asyncio.Task[Image]] = {}
        self._converting: dict[str, asyncio.Future[Image]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()
        # Shared read-only SIF stores (images.sif_stores): served in place, never removed.
        self.sif_stores = SifStores(
            cfg.images.sif_stores,
            self.store.root / "sif-stores.json",
            name_key=lambda name: tag_key(reference.parse(name)),
            config_of=lambda path: _sif_config(path, self.arch),
            trust_of=lambda path: sif_policy.evaluate(path, self.keys),
            policy=cfg.images.sif_policy,
        )

    def start(self) -> None:
        """Remove what unfinished pulls left (kill -9, crash) before serving."""
        self.store.recover()

    def close(self) -> None:
        self.store.close()

    # -- lookups ----------------------------------------------------------------------------

    def find(self, text: str) -> Image | None:
        return self._lookup(text)[0]

    def _lookup(self, text: str) -> tuple[Image | None, bool]:
        """The image ``text`` names, and whether it named it by id (or id prefix)
        rather than by tag or digest."""
        text = text.strip()
        if not text:
            raise InvalidArgument("image name is empty")
        stores = self.sif_stores
        if reference.is_image_id(text):
            image_id = text if text.startswith("sha256:") else "sha256:" + text
            return stores.get(image_id) or self.store.get(image_id), True
        hexpart = text.removeprefix("sha256:")
        if 6 <= len(hexpart) < 64 and all(c in "0123456789abcdef" for c in hexpart):
            ids = set(self.store.by_id_prefix(hexpart)) | set(stores.by_id_prefix(hexpart))
            if len(ids) == 1:
                (image_id,) = ids
                return stores.get(image_id) or self.store.get(image_id), True
            if len(ids) > 1:
                raise InvalidArgument(f"image id prefix {excerpt(text)} is ambiguous")
        ref = reference.parse(text)
        if ref.digest:
            return self.store.by_digest(digest_key(ref, ref.digest)), False
        if ref.transport != "file":
            found = stores.by_key(tag_key(ref))  # a store's name wins over a pulled tag
            if found is not None:
                return found, False
        return self.store.by_tag(tag_key(ref)), False

    async def resolve(self, text: str) -> Image:
        """The image, for running: a local SIF whose file changed is hashed again first."""
        image = self.find(text)
        if image is None:
            why = self.sif_stores.error_for(_store_key(text))
            if why is not None:  # an image of a SIF store that is down now
                raise why
            raise NotFound(f"image {excerpt(text)} is not present on this node")
        if self.sif_stores.store_of(image.id):
            return await self.sif_stores.check(image)
        if image.local:
            image = await self._recheck_local(image)
        return image

    def mount_method(self, image_id: str) -> str:
        """How the runtime mounts this image's partition (``images.kernel_mount``)."""
        image = self.sif_stores.get(image_id) or self.store.get(image_id)
        if image is None:
            return "squashfuse"
        ok = sif_policy.kernel_mount_ok(
            self.cfg.images.kernel_mount, image.origin, bool(image.signer)
        )
        return "loop" if ok else "squashfuse"

    def list(self) -> list[Image]:
        shared = self.sif_stores.list()
        ids = {i.id for i in shared}
        return [*(i for i in self.store.list() if i.id not in ids), *shared]

    # -- removal -----------------------------------------------------------------------------

    async def remove(self, text: str) -> Image | None:
        """Remove by id, tag or digest. A tag shared with other tags only untags; an image a
        container uses is refused. Returns the image removed (None if it was not there)."""
        image, by_id = self._lookup(text)
        if image is None:
            return None
        if self.sif_stores.store_of(image.id):
            raise self.sif_stores.refuse_removal(image)
        # By id only when it was found by id: a tag whose text happens to occur in the
        # id ("e0d" in "sha256:e0d...") is still a tag, and untags.
        by_tag = not by_id
        try:
            ref = reference.parse(text) if by_tag else None
        except SycriError:
            ref = None
        if ref is not None and not ref.digest and len(image.repo_tags) > 1:
            await in_thread(self.store.untag, tag_key(ref))
            return image
        for user in self.users:
            who = user(image.id)
            if who:
                raise FailedPrecondition(
                    f"image {image.id} is in use by container {who}; remove the container first"
                )
        return await in_thread(self.store.remove, image.id)

    # -- file system usage ------------------------------------------------------------------

    def fs_usage(self) -> tuple[Path, int, int]:
        """(mountpoint dir, bytes, inodes) of the image store."""
        used, inodes = usage(self.store.root)
        return self.store.root, used, inodes

    # -- pull --------------------------------------------------------------------------------

    async def pull(self, text: str, auth: Credentials | None = None) -> Image:
        """Pull ``text`` (shares a pull of the same reference already in flight)."""
        ref = reference.parse(text)
        if ref.transport == "file":
            with metrics.pull("local"), _span(text, "local"):
                return await self._import_local(ref, text)
        if self.sif_stores.stores and not ref.digest:
            # A name a shared SIF store holds: served in place, no download, no copy.
            await self.sif_stores.refresh_for(tag_key(ref))
            shared = self.sif_stores.by_key(tag_key(ref))
            if shared is not None:
                return await self.sif_stores.check(shared)
            refused = self.sif_stores.error_for(tag_key(ref))
            if refused is not None:
                raise refused
        # Pulls share a download only when they would show the registry the same credentials.
        key = str(ref) + "\0" + _fingerprint(auth)
        task = self._pulls.get(key)
        if task is None:
            task = asyncio.create_task(self._pull(ref, text, auth), name=f"pull {key}")
            self._pulls[key] = task
            task.add_done_callback(lambda _t: self._pulls.pop(key, None))
        return await asyncio.shield(task)

    async def _once(
        self,
        image_id: str,
        make: Callable[[], Awaitable[Image]],
        text: str,
        tags: Sequence[str],
        digests: Sequence[str],
    ) -> Image:
        """One conversion per image id, shared by pulls of different names (each adds its
        own tags and digests once the image is stored)."""
        task = self._converting.get(image_id)
        if task is None:
            task = asyncio.ensure_future(make())
            self._converting[image_id] = task
            task.add_done_callback(lambda _t: self._converting.pop(image_id, None))
            return await asyncio.shield(task)
        image = await asyncio.shield(task)
        return await self._tag(image, text, tags, digests)

    async def _tag(
        self, image: Image, text: str, tags: Sequence[str], digests: Sequence[str]
    ) -> Image:
        return await in_thread(
            lambda: self.store.add(
                image.id,
                image.sif_path,
                image.size,
                _raw(image),
                tags=tags,
                digests=digests,
                user_ref=text,
                now=time.time(),
            )
        )

    def _credentials(self, host: str, auth: Credentials | None) -> Credentials | None:
        if auth:
            return auth
        return creds_mod.from_docker_config(self.cfg.images.docker_config, host)

    async def _pull(self, ref: Reference, text: str, auth: Credentials | None) -> Image:
        """The one download of a (possibly shared) pull: measured and traced here, once."""
        t0 = time.monotonic()
        with metrics.pull(ref.transport) as p, _span(text, ref.transport):
            async with new_session() as session:
                if ref.transport == "library":
                    image = await self._pull_library(session, ref, text, auth, p)
                else:
                    image = await self._pull_registry(session, ref, text, auth, p)
        log.info("pulled %s as %s in %.2fs", text, image.id, time.monotonic() - t0)
        return image

    async def _pull_registry(
        self,
        session: aiohttp.ClientSession,
        ref: Reference,
        text: str,
        auth: Credentials | None,
        p: metrics.Pull,
    ) -> Image:
        errors: list[SycriError] = []
        endpoints = self.registries.endpoints(ref)
        for i, ep in enumerate(endpoints):
            client = RegistryClient(
                session,
                ep,
                self._credentials(ep.host, auth),
                progress_timeout=self.cfg.images.pull_progress_timeout_seconds,
                on_bytes=p.downloaded,
            )
            try:
                return await self._pull_from(client, ref, text, p)
            except (NotFound, Unavailable, Unauthenticated) as exc:
                if i == len(endpoints) - 1 or not ep.mirror:
                    if errors and isinstance(exc, NotFound):
                        raise type(exc)(
                            f"{exc.message} (also tried: {'; '.join(e.message for e in errors)})"
                        ) from None
                    raise
                log.info("mirror %s failed for %s: %s; trying the next", ep.host, text, exc)
                errors.append(exc)
        raise AssertionError("no endpoint")  # pragma: no cover - endpoints is never empty

    async def _pull_from(
        self, client: RegistryClient, ref: Reference, text: str, p: metrics.Pull
    ) -> Image:
        top, manifest = await client.image_manifest(
            ref.digest or ref.tag, self.arch, self.variant, text
        )
        tags = [tag_key(ref)] if ref.tag else []
        digests = [digest_key(ref, top.digest)]
        if manifest.config.media_type == mf.SIF_CONFIG:
            return await self._sif_artifact(client, manifest, text, tags, digests, p)
        if ref.transport == "oras":
            raise InvalidArgument(
                f"{text}: oras:// expects a SIF artifact (config {mf.SIF_CONFIG}), "
                f"got {excerpt(manifest.config.media_type)}"
            )
        if len(manifest.layers) > self.cfg.images.max_layers:
            raise LimitExceeded(
                f"{text}: {len(manifest.layers)} layers, more than images.max_layers "
                f"({self.cfg.images.max_layers})"
            )
        # The config names the content: every layer is checked against its diff_ids.
        image_id = manifest.config.digest
        existing = self.store.get(image_id)
        if existing is not None:
            self._enforce_stored(existing, text)
            return await self._tag(existing, text, tags, digests)
        make = lambda: self._convert(client, manifest, text, tags, digests, p)  # noqa: E731
        return await self._once(image_id, make, text, tags, digests)

    async def _sif_artifact(
        self,
        client: RegistryClient,
        manifest: mf.Manifest,
        text: str,
        tags: Sequence[str],
        digests: Sequence[str],
        p: metrics.Pull,
    ) -> Image:
        """An oras SIF artifact: its id is the SIF's digest, never the config's."""
        if len(manifest.layers) != 1 or manifest.layers[0].media_type != mf.SIF_LAYER:
            raise InvalidArgument(
                f"{text}: a SIF artifact has exactly one layer of type {mf.SIF_LAYER}"
            )
        layer = manifest.layers[0]
        self._check_sif_size(layer.size, text)
        image_id = layer.digest
        existing = self.store.get(image_id)
        if existing is not None:
            self._enforce_stored(existing, text)
            return await self._tag(existing, text, tags, digests)
        return await self._once(
            image_id,
            lambda: self._store_sif_artifact(client, layer, text, tags, digests, p),
            text,
            tags,
            digests,
        )

    def _check_sif_size(self, size: int, text: str) -> None:
        if size > self.cfg.images.max_image_bytes:
            raise LimitExceeded(
                f"{text}: the SIF is {size} bytes, more than images.max_image_bytes "
                f"({self.cfg.images.max_image_bytes})"
            )

    def _enforce_stored(self, image: Image, text: str) -> None:
        """The SIF policy holds for an image already stored too (the policy may be newer)."""
        if image.origin == sif_policy.OWN:
            return
        why = (
            "not signed by a trusted key"
            if image.signed
            else "no valid signature covers its system partition"
        )
        sif_policy.enforce(
            self.cfg.images.sif_policy,
            sif_policy.Trust(image.signed, image.signer, why),
            f"{text} (SIF {image.id})",
        )

    async def _trust(self, path: Path, what: str) -> sif_policy.Trust:
        trust = await sif_policy.evaluate(path, self.keys)
        sif_policy.enforce(self.cfg.images.sif_policy, trust, what)
        return trust

    def _workdir(self, image_id: str) -> Path:
        return Path(
            tempfile.mkdtemp(prefix=image_id.split(":")[-1][:16] + ".", dir=self.store.tmp_dir)
        )

    async def _commit(
        self,
        image_id: str,
        built: Path,
        config: bytes,
        text: str,
        tags: Sequence[str],
        digests: Sequence[str],
        layers: Sequence[str] = (),
        trust: sif_policy.Trust | None = None,
    ) -> Image:
        final = self.store.sif_path_for(image_id)
        os.chmod(built, 0o644)
        os.replace(built, final)
        crashpoint.reach("pull.renamed")
        size = os.stat(final).st_size
        return await in_thread(
            lambda: self.store.add(
                image_id,
                str(final),
                size,
                config,
                tags=tags,
                digests=digests,
                user_ref=text,
                layers=layers,
                now=time.time(),
                origin=sif_policy.OWN if trust is None else sif_policy.FOREIGN,
                signed=bool(trust and trust.signed),
                signer=trust.signer if trust else "",
            )
        )

    async def _convert(
        self,
        client: RegistryClient,
        manifest: mf.Manifest,
        text: str,
        tags: Sequence[str],
        digests: Sequence[str],
        p: metrics.Pull,
    ) -> Image:
        image_id = manifest.config.digest
        config_bytes = await client.blob_bytes(manifest.config, mf.MAX_CONFIG, "image config")
        raw, config = mf.parse_config(config_bytes)
        if config.os and config.os != "linux":
            raise InvalidArgument(f"{text}: image is for {excerpt(config.os)}, not linux")
        try:
            diff_ids = mf.diff_ids(raw, len(manifest.layers))
        except InvalidArgument as exc:
            raise InvalidArgument(f"{text}: {exc.message}") from None
        work = self._workdir(image_id)
        committed = False
        try:
            applier = Applier(self.limits)
            blobs = await fetch_and_apply(
                client,
                manifest.layers,
                work,
                applier,
                self.cfg.images.max_concurrent_downloads,
                self.store.blob_dir if self.cfg.images.keep_layers else None,
                on_layer=p.layer,
                diff_ids=diff_ids,
            )
            crashpoint.reach("pull.fetched")
            with metrics.conversion(), converting():
                built = await build_sif(
                    image_id=image_id,
                    config_bytes=config_bytes,
                    config=config,
                    tree=applier.root,
                    layers=blobs,
                    work=work,
                    compression=self.cfg.images.squashfs_compression,
                    arch=config.architecture or self.arch,
                )
            crashpoint.reach("pull.built")
            image = await self._commit(
                image_id,
                built,
                config_bytes,
                text,
                tags,
                digests,
                [d.digest for d in manifest.layers] if self.cfg.images.keep_layers else [],
            )
            committed = True
            return image
        except BaseException:
            await in_thread(self.store.prune_blobs)  # no image was built from them
            raise
        finally:
            if committed:
                self._discard(work)
            else:
                await in_thread(shutil.rmtree, work, True)

    def _discard(self, work: Path) -> None:
        """Delete a converted image's work dir after the reply: the image is committed,
        and deleting a work dir (once the unpacked tree) need not hold the reply. What a
        deletion cut short (a restart) goes at the next start (``Store.recover``)."""
        task = asyncio.create_task(in_thread(shutil.rmtree, work, True), name=f"rm {work}")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _store_sif_artifact(
        self,
        client: RegistryClient,
        layer: mf.Descriptor,
        text: str,
        tags: Sequence[str],
        digests: Sequence[str],
        p: metrics.Pull | None = None,
    ) -> Image:
        image_id = layer.digest  # blob_to_file refuses bytes with any other digest
        work = self._workdir(image_id)
        try:
            path = work / "image.sif"
            with tracing.span(
                "layer.fetch", **{"layer.digest": layer.digest, "layer.size": layer.size}
            ):
                await client.blob_to_file(layer, path, what="SIF")
            if p is not None:
                p.layer(reused=False)
            config = await in_thread(_sif_config, path, self.arch)
            trust = await self._trust(path, f"{text} (SIF {image_id})")
            return await self._commit(image_id, path, config, text, tags, digests, trust=trust)
        finally:
            await in_thread(shutil.rmtree, work, True)

    async def _pull_library(
        self,
        session: aiohttp.ClientSession,
        ref: Reference,
        text: str,
        auth: Credentials | None,
        p: metrics.Pull,
    ) -> Image:
        token = (auth.registry_token or auth.password) if auth else ""
        base = f"https://{ref.registry}" if ref.registry else self.cfg.images.library_url
        lib = LibraryClient(
            session,
            base,
            token,
            progress_timeout=self.cfg.images.pull_progress_timeout_seconds,
            on_bytes=p.downloaded,
        )
        tags = [tag_key(ref)]
        redirect = await lib.oci_redirect(ref)
        if redirect is not None:
            ep = redirect_endpoint(redirect)
            client = RegistryClient(
                session,
                ep,
                Credentials(registry_token=redirect.token) if redirect.token else None,
                progress_timeout=self.cfg.images.pull_progress_timeout_seconds,
                on_bytes=p.downloaded,
            )
            oref = Reference("oras", ep.host, ep.repository, ref.tag)
            top, manifest = await client.image_manifest(ref.tag, self.arch, self.variant, text)
            digests = [digest_key(oref, top.digest)]
            return await self._sif_artifact(client, manifest, text, tags, digests, p)
        digest, size = await lib.image_meta(ref, self.arch)
        if isinstance(size, int):
            self._check_sif_size(size, text)
        existing = self.store.get(digest)
        if existing is not None:
            self._enforce_stored(existing, text)
            return await self._tag(existing, text, tags, [])

        async def make() -> Image:
            work = self._workdir("library")
            try:
                path = work / "image.sif"
                await lib.download(
                    ref, self.arch, path, digest, size, self.cfg.images.max_image_bytes
                )
                p.layer(reused=False)
                config = await in_thread(_sif_config, path, self.arch)
                trust = await self._trust(path, f"{text} (SIF {digest})")
                return await self._commit(digest, path, config, text, tags, [], trust=trust)
            finally:
                await in_thread(shutil.rmtree, work, True)

        return await self._once(digest, make, text, tags, [])

    async def _import_local(self, ref: Reference, text: str) -> Image:
        """A local SIF is used in place: indexed by its path, never copied or deleted."""
        path = Path(ref.path)
        if not path.is_file():
            raise NotFound(f"local SIF {excerpt(ref.path)} does not exist or is not a file")
        config = await in_thread(_sif_config, path, self.arch)
        image_id, st = await in_thread(_hash_stable, path)
        existing = self.store.get(image_id)
        if existing is not None and not existing.local:
            raise FailedPrecondition(
                f"{ref.path} is identical to stored image {image_id}; use that image"
            )
        trust = await self._trust(path, f"{text} (SIF {image_id})")
        return await in_thread(
            lambda: self.store.add(
                image_id,
                str(path),
                st.st_size,
                config,
                tags=[ref.path],
                user_ref=text,
                local=True,
                now=time.time(),
                origin=sif_policy.FOREIGN,
                signed=trust.signed,
                signer=trust.signer,
                stat=_stat_key(st),
            )
        )

    async def _recheck_local(self, image: Image) -> Image:
        """A local SIF is used in place: when its size, mtime or inode changed since it
        was hashed, hash it again; other bytes than the id names are refused."""
        path = Path(image.sif_path)
        try:
            st = await in_thread(os.stat, path)
        except OSError as exc:
            raise FailedPrecondition(
                f"local SIF {image.sif_path} of image {image.id} cannot be read: {exc.strerror}"
            ) from None
        if _stat_key(st) == image.stat:
            return image
        digest, st = await in_thread(_hash_stable, path)
        if digest != image.id:
            raise FailedPrecondition(
                f"local SIF {image.sif_path} changed since it was pulled as image {image.id} "
                f"(its content is now {digest}); pull it again"
            )
        trust = await self._trust(path, f"{image.sif_path} (SIF {image.id})")
        return await in_thread(
            lambda: self.store.add(
                image.id,
                image.sif_path,
                st.st_size,
                _raw(image),
                user_ref=image.user_ref,
                local=True,
                now=time.time(),
                origin=sif_policy.FOREIGN,
                signed=trust.signed,
                signer=trust.signer,
                stat=_stat_key(st),
            )
        )


def _store_key(text: str) -> str:
    """How the SIF stores know ``text``: an image id, or a name's tag key."""
    text = text.strip()
    if reference.is_image_id(text):
        return text if text.startswith("sha256:") else "sha256:" + text
    try:
        return tag_key(reference.parse(text))
    except SycriError:
        return text


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _hash_stable(path: Path) -> tuple[str, os.stat_result]:
    """The file's digest and the stat it was taken under; refused if it changed meanwhile."""
    before = os.stat(path)
    digest = _sha256_file(path)
    after = os.stat(path)
    if _stat_key(before) != _stat_key(after):
        raise Unavailable(f"{path} changed while it was being hashed; try again")
    return digest, after


def _span(text: str, source: str) -> AbstractContextManager[Span]:
    return tracing.span("image.pull", **{"image.reference": text[:512], "image.source": source})


def _fingerprint(auth: Credentials | None) -> str:
    if not auth:
        return ""
    raw = "\0".join((auth.username, auth.password, auth.identity_token, auth.registry_token))
    return hashlib.sha256(raw.encode()).hexdigest()


def _raw(image: Image) -> bytes:
    return json.dumps(image.raw_config, sort_keys=True).encode()
