"""What the image store's readers see: :class:`Image`, and the immutable index of every
image by id, tag and repo digest, built from the store's rows.

Pure: the store (:mod:`sycri.images.store`) reads the rows in its write transaction and
swaps the index built here in whole, so a lookup never touches SQLite nor takes a lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from sycri.images.manifest import ImageConfig, parse_config

# The columns of an image row, in the order :func:`build_index` reads them.
COLUMNS_READ = "id, sif_path, size, config, user_ref, pinned, local, origin, signed, signer, stat"
Row = tuple[str, str, int, bytes, str, int, int, str, int, str, str]
ParsedConfig = tuple[bytes, dict[str, Any], ImageConfig]  # the bytes, as JSON, as typed


@dataclass(frozen=True)
class Image:
    """One stored image, as the runtime and the CRI see it."""

    id: str  # sha256:<hex> of the OCI image config, or of the SIF for foreign SIFs
    sif_path: str
    size: int
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    config: ImageConfig
    raw_config: dict[str, Any] = field(repr=False, compare=False)
    user_ref: str = ""
    pinned: bool = False
    local: bool = False  # a SIF used in place: never deleted
    origin: str = ""  # "own" (sycri built the SIF) or "foreign"
    signed: bool = False
    signer: str = ""  # a trusted key verified a signature over the system partition
    stat: str = ""  # local SIFs: the file's identity when it was last hashed

    @property
    def hex(self) -> str:
        return self.id.split(":", 1)[-1]


@dataclass(frozen=True)
class Index:
    """What the index held after a commit; replaced whole, never changed."""

    images: Mapping[str, Image]
    tags: Mapping[str, str]  # tag -> image id
    digests: Mapping[str, str]  # repo digest -> image id


EMPTY_INDEX = Index(MappingProxyType({}), MappingProxyType({}), MappingProxyType({}))


def build_index(
    rows: Iterable[Row],
    tag_rows: Iterable[tuple[str, str]],
    digest_rows: Iterable[tuple[str, str]],
    parsed_before: Mapping[str, ParsedConfig],
) -> tuple[Index, dict[str, ParsedConfig]]:
    """The index of ``rows`` (images), ``tag_rows`` and ``digest_rows`` (name, image id;
    in order), and each image's parsed config. A config is parsed once per image: an
    image's config never changes under its id, so ``parsed_before`` is reused."""
    tags: dict[str, list[str]] = {}
    by_tag: dict[str, str] = {}
    for tag, image_id in tag_rows:
        tags.setdefault(image_id, []).append(tag)
        by_tag[tag] = image_id
    digests: dict[str, list[str]] = {}
    by_digest: dict[str, str] = {}
    for digest, image_id in digest_rows:
        digests.setdefault(image_id, []).append(digest)
        by_digest[digest] = image_id
    images: dict[str, Image] = {}
    configs: dict[str, ParsedConfig] = {}
    for row in sorted(rows):
        (
            image_id,
            sif_path,
            size,
            config,
            user_ref,
            pinned,
            local,
            origin,
            signed,
            signer,
            st,
        ) = row
        parsed = parsed_before.get(image_id)
        if parsed is None or parsed[0] != config:
            parsed = (config, *parse_config(config))
        configs[image_id] = parsed
        images[image_id] = Image(
            image_id,
            sif_path,
            size,
            tuple(tags.get(image_id, ())),
            tuple(digests.get(image_id, ())),
            parsed[2],
            parsed[1],
            user_ref,
            bool(pinned),
            bool(local),
            origin,
            bool(signed),
            signer,
            st,
        )
    index = Index(MappingProxyType(images), MappingProxyType(by_tag), MappingProxyType(by_digest))
    return index, configs
