"""Shared SIF stores (``images.sif_stores``): read-only directories of SIF files on a
file system many nodes mount (NFS, Lustre, CephFS), served in place.

Each store holds an index beside its SIFs, ``sycri-index.yaml``, that maps image names
to files (:mod:`sycri.images.sif_store_index`). The index, written by whoever administers the store, is the only source of names. The
OCI reference a SIF may record in its own descriptors is not used: that is written by
whoever built the file, and anyone who can drop a file on a shared file system could
then claim any name.

A store image is a local SIF that nobody pulls or copies: its id is the file's digest,
hashed once per node (the digest, keyed by device, inode, size and mtime, is cached in
``<root>/images/sif-stores.json``) and hashed again when any of those change; the
signature policy holds as for any SIF sycri did not build. It is ``pinned`` (kubelet's
image GC never picks it) and RemoveImage refuses it. A store that cannot be read (not
mounted, a stale handle, a server that does not answer within ``TIMEOUT``) makes its
images absent, and a pull or container of one of its names gets ``UNAVAILABLE`` naming
the store and why; nothing is mounted from it until it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from sycri.errors import (
    FailedPrecondition,
    SycriError,
    Unavailable,
    excerpt,
)
from sycri.fsutil import atomic_write_json
from sycri.images import manifest as mf
from sycri.images.sif_store_index import INDEX, Listing, NameKey, read_store
from sycri.images.siffile import hash_stable, stat_key
from sycri.images.store_index import Image
from sycri.sif import policy as sif_policy

log = logging.getLogger("sycri.images.sif_stores")

TIMEOUT = 10.0  # seconds a store may take to answer a stat or an index read
MAX_AGE = 10.0  # seconds a listing may be old before it is read again

ConfigOf = Callable[[Path], bytes]  # SIF -> its OCI config (blocking)
TrustOf = Callable[[Path], Awaitable[sif_policy.Trust]]
T = TypeVar("T")


@dataclass(frozen=True)
class Known:
    """What hashing one file established, valid while its stat key stays the same."""

    stat: str
    id: str
    size: int
    config: str  # the OCI config JSON
    signed: bool
    signer: str
    why: str  # why it is not signed / trusted, for a policy refusal


def make_image(known: Known, path: str, tags: Iterable[str]) -> Image:
    raw, config = mf.parse_config(known.config.encode())
    names = tuple(sorted(set(tags)))
    return Image(
        id=known.id,
        sif_path=path,
        size=known.size,
        repo_tags=names,
        repo_digests=(),
        config=config,
        raw_config=raw,
        user_ref=names[0] if names else path,
        pinned=True,  # kubelet's image GC never removes a pinned image
        local=True,  # used in place, never deleted
        origin=sif_policy.FOREIGN,
        signed=known.signed,
        signer=known.signer,
        stat=known.stat,
    )


class SifStores:
    """The images of every configured store, as last read (``refresh``)."""

    def __init__(
        self,
        stores: Iterable[str],
        cache: Path,
        *,
        name_key: NameKey,
        config_of: ConfigOf,
        trust_of: TrustOf,
        policy: str,
    ) -> None:
        self.stores = tuple(os.path.normpath(s) for s in stores)
        self.cache = cache
        self.name_key = name_key
        self.config_of = config_of
        self.trust_of = trust_of
        self.policy = policy
        self._known: dict[str, Known] = {}  # path -> facts
        self._names: dict[str, dict[str, str]] = {}  # store -> {key: path}, last read
        self._images: dict[str, Image] = {}  # id -> image
        self._store_of: dict[str, str] = {}  # id -> store
        self._by_key: dict[str, str] = {}  # name key -> id
        self._errors: dict[str, SycriError] = {}  # name key -> why it cannot be used
        self._read_at = 0.0
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        # Store I/O runs in daemon threads of its own: a hung NFS server blocks those,
        # never the threads the rest of sycri uses, nor its exit. A read or stat whose
        # last try has not come back is not started again, so a hung store holds one
        # thread per store and per file, not one per request.
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._saved: dict[str, Any] = {}  # the cache file's content as last written
        self._load_cache()

    # -- lookups (in memory: no I/O on a store) ----------------------------------------

    def get(self, image_id: str) -> Image | None:
        return self._images.get(image_id)

    def by_key(self, key: str) -> Image | None:
        image_id = self._by_key.get(key)
        return self._images.get(image_id) if image_id else None

    def by_id_prefix(self, hexpart: str) -> list[str]:
        return [i for i in self._images if i.split(":", 1)[-1].startswith(hexpart)]

    def error_for(self, key: str) -> SycriError | None:
        """Why a name some store's index holds, or the id of an image a store held, cannot
        be used now (the store is down, the policy refuses it)."""
        return self._errors.get(key)

    def store_of(self, image_id: str) -> str | None:
        return self._store_of.get(image_id)

    def list(self) -> list[Image]:
        return list(self._images.values())

    # -- reading the stores ------------------------------------------------------------

    def refresh_soon(self) -> None:
        """Read the stores again in the background when the listing is older than
        ``MAX_AGE`` (for ImageStatus and ListImages, which must not wait on a hash)."""
        if not self.stores or time.monotonic() - self._read_at < MAX_AGE:
            return
        if self._background is None or self._background.done():
            self._background = asyncio.create_task(self.refresh(), name="sif-stores refresh")

    async def refresh_for(self, key: str) -> None:
        """Before a pull: read the stores again if ``key`` is (or was) one of their names,
        or the listing is old. A store that hangs then delays only its own names' pulls."""
        if (
            key in self._by_key
            or key in self._errors
            or time.monotonic() - self._read_at >= MAX_AGE
        ):
            await self.refresh()

    async def refresh(self) -> None:
        """Read every store's index, hash new or changed files, apply the policy."""
        if not self.stores:
            return
        async with self._lock:
            listings = await asyncio.gather(*(self._read(s) for s in self.stores))
            images: dict[str, Image] = {}
            store_of: dict[str, str] = {}
            by_key: dict[str, str] = {}
            errors: dict[str, SycriError] = {}
            tags: dict[str, list[str]] = {}
            for listing in listings:
                if listing.down:
                    log.warning("SIF store %s is unavailable: %s", listing.store, listing.down)
                    for key, path in self._names.get(listing.store, {}).items():
                        errors.setdefault(key, self._down(listing.store, key, listing.down))
                        known = self._known.get(path)
                        if known is not None:  # kubelet names it by id in CreateContainer
                            errors.setdefault(
                                known.id, self._down(listing.store, known.id, listing.down)
                            )
                    continue
                self._names[listing.store] = {e.key: e.path for e in listing.entries}
                for entry in listing.entries:
                    if entry.key in by_key or entry.key in errors:
                        continue  # the first store naming it wins
                    try:
                        known = await self._facts(entry.path, entry.stat)
                        sif_policy.enforce(
                            self.policy,
                            sif_policy.Trust(known.signed, known.signer, known.why),
                            f"{entry.key} (SIF {known.id} in store {listing.store})",
                        )
                    except SycriError as exc:
                        log.warning("SIF store %s: %s: %s", listing.store, entry.key, exc.message)
                        errors[entry.key] = exc
                        continue
                    by_key[entry.key] = known.id
                    tags.setdefault(known.id, []).append(entry.key)
                    if known.id not in images:
                        store_of[known.id] = listing.store
                        images[known.id] = make_image(known, entry.path, ())
            for image_id, image in images.items():
                images[image_id] = make_image(
                    self._known[image.sif_path], image.sif_path, tags[image_id]
                )
            self._images, self._store_of, self._by_key, self._errors = (
                images,
                store_of,
                by_key,
                errors,
            )
            self._read_at = time.monotonic()
            wanted = {p for names in self._names.values() for p in names.values()}
            self._known = {p: k for p, k in self._known.items() if p in wanted}
            await asyncio.to_thread(self._save_cache)

    async def check(self, image: Image) -> Image:
        """Before a container runs from (or mounts) a store image: the store answers and the
        file still has the bytes the id names, else a precise error and nothing mounted."""
        store = self._store_of.get(image.id, os.path.dirname(image.sif_path))
        try:
            st = await asyncio.wait_for(
                self._once(image.sif_path, os.stat, image.sif_path), TIMEOUT
            )
        except TimeoutError:
            raise self._down(store, image.id, f"no answer within {TIMEOUT:g}s") from None
        except OSError as exc:
            raise self._down(
                store, image.id, f"{image.sif_path} cannot be read: {exc.strerror}"
            ) from None
        if stat_key(st) == image.stat:
            return image
        known = await self._facts(image.sif_path, stat_key(st))
        if known.id != image.id:
            raise FailedPrecondition(
                f"SIF {image.sif_path} in store {store} changed since it was listed as image "
                f"{image.id} (its content is now {known.id}); pull the image's name again"
            )
        sif_policy.enforce(
            self.policy,
            sif_policy.Trust(known.signed, known.signer, known.why),
            f"{image.user_ref} (SIF {image.id} in store {store})",
        )
        fresh = make_image(known, image.sif_path, image.repo_tags)
        self._images[image.id] = fresh
        return fresh

    def refuse_removal(self, image: Image) -> FailedPrecondition:
        store = self._store_of.get(image.id, "")
        return FailedPrecondition(
            f"image {image.id} is served from the read-only SIF store {store} "
            "(images.sif_stores): it cannot be removed; remove it from the store's "
            f"{INDEX} instead"
        )

    async def _read(self, store: str) -> Listing:
        try:
            listing: Listing = await asyncio.wait_for(
                self._once("index:" + store, read_store, store, self.name_key), TIMEOUT
            )
        except TimeoutError:
            return Listing(store, down=f"no answer within {TIMEOUT:g}s")
        return listing

    def _once(self, what: str, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in a store thread, shared with a call for ``what`` still running."""
        pending = self._pending.get(what)
        if pending is None or pending.done():
            pending = self._pending[what] = _io(fn, *args)
        return asyncio.shield(pending)

    async def _facts(self, path: str, stat: str) -> Known:
        known = self._known.get(path)
        if known is not None and known.stat == stat:
            return known
        try:
            digest, st = await _io(hash_stable, path)
            config = await _io(self.config_of, Path(path))
        except OSError as exc:
            raise Unavailable(f"SIF {path} cannot be read: {exc.strerror}") from None
        trust = await self.trust_of(Path(path))
        known = Known(
            stat=stat_key(st),
            id=digest,
            size=st.st_size,
            config=config.decode(),
            signed=trust.signed,
            signer=trust.signer,
            why=trust.why,
        )
        self._known[path] = known
        log.info("SIF store file %s is image %s", path, digest)
        return known

    @staticmethod
    def _down(store: str, what: str, why: str) -> Unavailable:
        return Unavailable(
            f"image {excerpt(what)} is in SIF store {store} (images.sif_stores), which is "
            f"unavailable: {why}"
        )

    # -- the cache of digests ----------------------------------------------------------

    def _load_cache(self) -> None:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            data: dict[str, Any] = json.loads(self.cache.read_text())
            self._known = {p: Known(**k) for p, k in data["files"].items()}
            self._names = {s: dict(n) for s, n in data["names"].items() if s in self.stores}
            self._saved = data

    def _save_cache(self) -> None:
        """Written when it changed (not at every read of the stores: kubelet polls)."""
        data = {
            "files": {p: asdict(k) for p, k in self._known.items()},
            "names": self._names,
        }
        if data == self._saved:
            return
        try:
            atomic_write_json(self.cache, data, mode=0o600)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.cache, exc)
            return
        self._saved = data


def _io(fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
    """``fn(*args)`` in a daemon thread of its own (see ``SifStores._pending``)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(value: T | None, exc: BaseException | None) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)  # type: ignore[arg-type]

    def work() -> None:
        try:
            value = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, value, None)

    threading.Thread(target=work, name="sif-store", daemon=True).start()
    return fut
