"""Local SIF files (a path, or ``file://``): used in place, indexed by their path, never
copied or deleted.

The image id is the file's digest. The file may change under its path, so whenever its
size, mtime or inode differ from when it was hashed, it is hashed again before it runs,
and bytes other than the id names are refused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from sycri.errors import FailedPrecondition, NotFound, excerpt
from sycri.images import siffile
from sycri.images.convert import in_thread
from sycri.images.intake import Intake, config_bytes
from sycri.images.reference import Reference
from sycri.images.store_index import Image
from sycri.sif import policy as sif_policy


class LocalSource:
    def __init__(self, intake: Intake) -> None:
        self.intake = intake

    async def pull(self, ref: Reference, text: str) -> Image:
        store = self.intake.store
        path = Path(ref.path)
        if not path.is_file():
            raise NotFound(f"local SIF {excerpt(ref.path)} does not exist or is not a file")
        config = await in_thread(siffile.config_of, path, self.intake.arch)
        image_id, st = await in_thread(siffile.hash_stable, path)
        existing = store.get(image_id)
        if existing is not None and not existing.local:
            raise FailedPrecondition(
                f"{ref.path} is identical to stored image {image_id}; use that image"
            )
        return await self._index(
            image_id, path, st, config, user_ref=text, what=text, tags=[ref.path]
        )

    async def recheck(self, image: Image) -> Image:
        """The image, after hashing its file again if it changed since it was hashed."""
        path = Path(image.sif_path)
        try:
            st = await in_thread(os.stat, path)
        except OSError as exc:
            raise FailedPrecondition(
                f"local SIF {image.sif_path} of image {image.id} cannot be read: {exc.strerror}"
            ) from None
        if siffile.stat_key(st) == image.stat:
            return image
        digest, st = await in_thread(siffile.hash_stable, path)
        if digest != image.id:
            raise FailedPrecondition(
                f"local SIF {image.sif_path} changed since it was pulled as image {image.id} "
                f"(its content is now {digest}); pull it again"
            )
        return await self._index(
            image.id, path, st, config_bytes(image), user_ref=image.user_ref, what=image.sif_path
        )

    async def _index(
        self,
        image_id: str,
        path: Path,
        st: os.stat_result,
        config: bytes,
        *,
        user_ref: str,
        what: str,
        tags: Sequence[str] = (),
    ) -> Image:
        """Check the SIF's signatures, then index it as just hashed: used in place, foreign
        to sycri's signing policy, with the stat it was hashed at (see :meth:`recheck`)."""
        trust = await self.intake.trust(path, f"{what} (SIF {image_id})")
        return await in_thread(
            lambda: self.intake.store.add(
                image_id,
                str(path),
                st.st_size,
                config,
                tags=tags,
                user_ref=user_ref,
                local=True,
                now=time.time(),
                origin=sif_policy.FOREIGN,
                signed=trust.signed,
                signer=trust.signer,
                stat=siffile.stat_key(st),
            )
        )
