"""The image service: pull (docker://, oras://, library://, local SIF), look up, remove.

This is what the CRI ImageService adapter and the containers code call (``node.images``):

- ``await images.pull(text, credentials)`` -> :class:`Image` (shares in-flight pulls),
- ``await images.resolve(text)`` -> :class:`Image` by id, id prefix, tag, digest or
  reference; NotFound otherwise (``images.find`` returns None instead),
- ``images.list()``, ``await images.remove(text)``, ``images.fs_usage()``,
- ``images.users``: callables ``image_id -> str | None`` naming a container that uses the
  image; RemoveImage refuses with FAILED_PRECONDITION when one answers,
- ``images.before_remove``: coroutines ``image_id -> None`` awaited before an image's SIF
  is deleted, to let go of what holds it open (an idle image mount),
- ``images.mount_method(image_id)``: ``loop`` (kernel squashfs) or ``squashfuse``.

A pull picks its source by transport (``sources/``: registry, library, local file), after
the shared SIF stores, which serve their names in place; the steps every source shares
(tagging a stored image, one conversion per id, the commit) are :mod:`intake`'s. An
image id always names the bytes that run (docs/images.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from pathlib import Path

from opentelemetry.trace import Span

from sycri.config import Config
from sycri.errors import FailedPrecondition, InvalidArgument, NotFound, SycriError, excerpt
from sycri.images import reference, registries, siffile
from sycri.images.convert import in_thread
from sycri.images.credentials import Credentials
from sycri.images.intake import Intake
from sycri.images.reference import Reference, store_key, tag_key
from sycri.images.registry import new_session
from sycri.images.sif_stores import SifStores
from sycri.images.sources.library import LibrarySource
from sycri.images.sources.local import LocalSource
from sycri.images.sources.registry import RegistrySource
from sycri.images.store import Store, usage
from sycri.images.store_index import Image
from sycri.images.unpack import Limits
from sycri.observability import metrics, tracing
from sycri.sif import policy as sif_policy
from sycri.sif.verify import load_keys

log = logging.getLogger("sycri.images")

__all__ = ["Image", "Images"]


class Images:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.store = Store(Path(cfg.root_dir) / "images")
        self.registries = registries.load(cfg.images.registries_conf)
        self.keys = load_keys(cfg.images.trusted_keyrings) if cfg.images.trusted_keyrings else None
        self.limits = Limits.of(cfg.images)
        self.arch, self.variant = reference.node_arch()
        self.users: list[Callable[[str], str | None]] = []
        self.before_remove: list[Callable[[str], Awaitable[None]]] = []
        self._pulls: dict[str, asyncio.Task[Image]] = {}
        self.intake = Intake(cfg, self.store, self.keys, self.arch)
        self.oci = RegistrySource(
            cfg, self.intake, self.registries, self.limits, self.arch, self.variant
        )
        self.library = LibrarySource(cfg, self.intake, self.oci)
        self.local = LocalSource(self.intake)
        # Shared read-only SIF stores (images.sif_stores): served in place, never removed.
        self.sif_stores = SifStores(
            cfg.images.sif_stores,
            self.store.root / "sif-stores.json",
            name_key=lambda name: tag_key(reference.parse(name)),
            config_of=lambda path: siffile.config_of(path, self.arch),
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
        rather than by tag or digest. The name is parsed once (``reference.lookup``
        keeps it); each form is then one dict lookup, an id prefix a scan of the ids."""
        key = reference.lookup(text)
        stores = self.sif_stores
        if key.image_id:
            return stores.get(key.image_id) or self.store.get(key.image_id), True
        if key.prefix:
            ids = set(self.store.by_id_prefix(key.prefix)) | set(stores.by_id_prefix(key.prefix))
            if len(ids) == 1:
                (image_id,) = ids
                return stores.get(image_id) or self.store.get(image_id), True
            if len(ids) > 1:
                raise InvalidArgument(f"image id prefix {excerpt(text.strip())} is ambiguous")
        if key.digest:
            return self.store.by_digest(key.digest), False
        if key.shared:
            found = stores.by_key(key.tag)  # a store's name wins over a pulled tag
            if found is not None:
                return found, False
        return self.store.by_tag(key.tag), False

    async def resolve(self, text: str) -> Image:
        """The image, for running: a local SIF whose file changed is hashed again first."""
        image = self.find(text)
        if image is None:
            why = self.sif_stores.error_for(store_key(text))
            if why is not None:  # an image of a SIF store that is down now
                raise why
            raise NotFound(f"image {excerpt(text)} is not present on this node")
        if self.sif_stores.store_of(image.id):
            return await self.sif_stores.check(image)
        if image.local:
            image = await self.local.recheck(image)
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
        for let_go in self.before_remove:
            await let_go(image.id)
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
                return await self.local.pull(ref, text)
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

    async def _pull(self, ref: Reference, text: str, auth: Credentials | None) -> Image:
        """The one download of a (possibly shared) pull: measured and traced here, once."""
        t0 = time.monotonic()
        with metrics.pull(ref.transport) as p, _span(text, ref.transport):
            async with new_session() as session:
                source = self.library if ref.transport == "library" else self.oci
                image = await source.pull(session, ref, text, auth, p)
        log.info("pulled %s as %s in %.2fs", text, image.id, time.monotonic() - t0)
        return image


def _span(text: str, source: str) -> AbstractContextManager[Span]:
    return tracing.span("image.pull", **{"image.reference": text[:512], "image.source": source})


def _fingerprint(auth: Credentials | None) -> str:
    if not auth:
        return ""
    raw = "\0".join((auth.username, auth.password, auth.identity_token, auth.registry_token))
    return hashlib.sha256(raw.encode()).hexdigest()
