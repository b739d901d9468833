"""Where a pulled image lands, whatever its source: the steps every pull shares.

A source (``sources/``) finds out which image a name means and how to get its bytes;
the intake then does the rest, once for all of them:

- an image already stored is tagged again (after the SIF policy, which may be newer
  than the image) instead of fetched;
- one conversion or download per image id at a time, shared by pulls of different
  names, each adding its own tags and digests;
- a work dir under the store's ``tmp`` (what a crash leaves there goes at the next
  start), a SIF renamed into place before its row is committed;
- a SIF sycri did not build is checked (its config, its signatures) before it is kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from sycri import crashpoint
from sycri.config import Config
from sycri.images import siffile
from sycri.images.convert import in_thread
from sycri.images.store import Store
from sycri.images.store_index import Image
from sycri.images.unpack import LimitExceeded
from sycri.observability import metrics
from sycri.sif import policy as sif_policy
from sycri.sif.verify import Keys

Download = Callable[[Path], Awaitable[None]]  # fetch a SIF's bytes into this path


def config_bytes(image: Image) -> bytes:
    """A stored image's config, as the store indexes it."""
    return json.dumps(image.raw_config, sort_keys=True).encode()


class Intake:
    def __init__(self, cfg: Config, store: Store, keys: Keys | None, arch: str) -> None:
        self.cfg = cfg
        self.store = store
        self.keys = keys
        self.arch = arch
        self._converting: dict[str, asyncio.Future[Image]] = {}
        self._cleanups: set[asyncio.Task[None]] = set()

    async def land(
        self,
        image_id: str,
        make: Callable[[], Awaitable[Image]],
        text: str,
        tags: Sequence[str],
        digests: Sequence[str],
    ) -> Image:
        """The image ``image_id``: tagged again when stored, else made by ``make`` (once,
        however many pulls want it meanwhile)."""
        existing = self.store.get(image_id)
        if existing is not None:
            self.enforce_stored(existing, text)
            return await self.tag(existing, text, tags, digests)
        task = self._converting.get(image_id)
        if task is None:
            task = asyncio.ensure_future(make())
            self._converting[image_id] = task
            task.add_done_callback(lambda _t: self._converting.pop(image_id, None))
            return await asyncio.shield(task)
        image = await asyncio.shield(task)
        return await self.tag(image, text, tags, digests)

    async def tag(
        self, image: Image, text: str, tags: Sequence[str], digests: Sequence[str]
    ) -> Image:
        return await in_thread(
            lambda: self.store.add(
                image.id,
                image.sif_path,
                image.size,
                config_bytes(image),
                tags=tags,
                digests=digests,
                user_ref=text,
                now=time.time(),
            )
        )

    async def land_sif(
        self,
        image_id: str,
        download: Download,
        text: str,
        tags: Sequence[str],
        digests: Sequence[str],
        p: metrics.Pull,
    ) -> Image:
        """A SIF made elsewhere, whose digest is ``image_id``: downloaded into a work dir
        (``download`` refuses other bytes), checked, trusted or refused, committed."""
        work = self.workdir(image_id)
        try:
            path = work / "image.sif"
            await download(path)
            p.layer(reused=False)
            config = await in_thread(siffile.config_of, path, self.arch)
            trust = await self.trust(path, f"{text} (SIF {image_id})")
            return await self.commit(image_id, path, config, text, tags, digests, trust=trust)
        finally:
            await in_thread(shutil.rmtree, work, True)

    def check_sif_size(self, size: int, text: str) -> None:
        if size > self.cfg.images.max_image_bytes:
            raise LimitExceeded(
                f"{text}: the SIF is {size} bytes, more than images.max_image_bytes "
                f"({self.cfg.images.max_image_bytes})"
            )

    def enforce_stored(self, image: Image, text: str) -> None:
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

    async def trust(self, path: Path, what: str) -> sif_policy.Trust:
        trust = await sif_policy.evaluate(path, self.keys)
        sif_policy.enforce(self.cfg.images.sif_policy, trust, what)
        return trust

    def workdir(self, image_id: str) -> Path:
        return Path(
            tempfile.mkdtemp(prefix=image_id.split(":")[-1][:16] + ".", dir=self.store.tmp_dir)
        )

    async def commit(
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
        """Rename ``built`` into the store, then index it: a crash between the two leaves
        an unindexed file, which ``Store.recover`` removes."""
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

    def discard(self, work: Path) -> None:
        """Delete a converted image's work dir after the reply: the image is committed,
        and deleting a work dir (once the unpacked tree) need not hold the reply. What a
        deletion cut short (a restart) goes at the next start (``Store.recover``)."""
        task = asyncio.create_task(in_thread(shutil.rmtree, work, True), name=f"rm {work}")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)
