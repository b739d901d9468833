"""OCI image → SIF: fetch layers in parallel, apply them in order, squash, assemble.

Layer N is applied (in a worker thread) as soon as it and layers before it are on disk,
while later layers still download. Applying reads headers into an in-memory tree
(``unpack``); the squashfs is then made by ``tar2sqfs`` from one tar stream of the
tree, whose files' bytes are copied from the layer blobs (``tarstream``): the image
is never unpacked to disk. The SIF holds the squashfs root filesystem and the
image config, byte for byte as the registry served it, as ``oci-config.json``; its
creation time is the config's ``created`` and its UUID derives from the image id, so the
same image always gives the same file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sycri import command, sif
from sycri.images import fstree, layout, squashfs, tarstream
from sycri.images import manifest as mf
from sycri.images.decompress import COPY_CHUNK
from sycri.images.registry import RegistryClient
from sycri.images.siffile import CONFIG_OBJECT
from sycri.images.unpack import Applier, DiffIdMismatch, LimitExceeded, apply_layer
from sycri.observability import tracing

log = logging.getLogger("sycri.images.convert")

CONVERSION_NOTE = "sycri: while turning the image's layers into a SIF"
T = TypeVar("T")


@contextlib.contextmanager
def converting() -> Iterator[None]:
    """Mark an error raised inside as a conversion failure (the image was fetched but
    could not become a SIF), so the node agent reports it as such."""
    try:
        yield
    except (DiffIdMismatch, LimitExceeded):
        raise  # the image was refused, as a wrong blob digest is: a pull failure
    except Exception as exc:
        if not failed_converting(exc):
            exc.add_note(CONVERSION_NOTE)
        raise


def failed_converting(exc: BaseException) -> bool:
    return CONVERSION_NOTE in getattr(exc, "__notes__", ())


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking work in a thread; a cancelled caller still waits for the thread to end,
    so nothing writes into a directory that the caller is about to remove."""
    fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        await asyncio.wait([fut])
        raise


def created_epoch(created: str) -> int:
    """Seconds since the epoch of an RFC 3339 ``created`` value; 0 when absent or odd."""
    if not created:
        return 0
    try:
        return max(0, int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()))
    except ValueError:
        return 0


async def fetch_and_apply(
    client: RegistryClient,
    layers: tuple[mf.Descriptor, ...],
    work: Path,
    applier: Applier,
    parallel: int,
    cache: Path | None = None,
    on_layer: Callable[[bool], None] | None = None,
    diff_ids: tuple[str, ...] | None = None,
) -> list[tuple[Path, str]]:
    """Download (or take from ``cache``) every layer and apply them in order; with
    ``diff_ids`` (one per layer) each layer's uncompressed digest must match its entry.
    Returns each layer's blob (under ``work``) and compression, for ``build_sif``.

    With a cache directory, a verified blob is also linked as ``cache/<hex>``, and a blob
    already there is not downloaded again. ``on_layer(reused)`` is told of each layer.
    """
    told = on_layer or (lambda reused: None)
    sem = asyncio.Semaphore(parallel)
    n = len(layers)
    for d in layers:
        d.compression  # noqa: B018 - refuse unknown media types before downloading anything
    tasks: dict[str, asyncio.Task[Path]] = {}

    async def fetch(i: int, desc: mf.Descriptor) -> Path:
        hexd = desc.digest.split(":", 1)[1]
        path = work / f"blob-{hexd}"
        if cache is not None:
            # A link of our own: pruning the cache meanwhile cannot take the file away.
            with contextlib.suppress(FileNotFoundError):
                os.link(cache / hexd, path)
                told(True)
                return path
        async with sem:
            with tracing.span(
                "layer.fetch", **{"layer.digest": desc.digest, "layer.size": desc.size}
            ):
                await client.blob_to_file(desc, path, what=f"layer {i + 1}/{n}")
        told(False)
        if cache is not None:
            with contextlib.suppress(FileExistsError):
                os.link(path, cache / hexd)
        return path

    for i, d in enumerate(layers):
        if d.digest not in tasks:
            tasks[d.digest] = asyncio.create_task(fetch(i, d))
    blobs: list[tuple[Path, str]] = []
    try:
        for i, d in enumerate(layers):
            path = await tasks[d.digest]
            blobs.append((path, d.compression))
            with tracing.span("layer.unpack", **{"layer.digest": d.digest}), converting():
                await in_thread(
                    apply_layer,
                    applier,
                    path,
                    d.compression,
                    f"layer {i + 1}/{n} ({d.digest})",
                    diff_ids[i] if diff_ids is not None else None,
                )
    finally:
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return blobs


async def build_sif(
    *,
    image_id: str,
    config_bytes: bytes,
    config: mf.ImageConfig,
    tree: fstree.Dir,
    layers: list[tuple[Path, str]],
    work: Path,
    compression: str,
    arch: str,
) -> Path:
    """Add the Singularity layout to ``tree``, squash it and write ``work/image.sif``."""
    when = created_epoch(config.created)
    layout.add(tree, config, when)
    tree.meta.mtime = when
    squash = work / "rootfs.squashfs"
    with tracing.span("squashfs.build", **{"squashfs.compression": compression}):
        await _squash(tree, layers, squash, compression)
    out = work / "image.sif"
    with tracing.span("sif.write"):
        await in_thread(
            lambda: sif.write_sif(
                out,
                [
                    sif.PartitionObject(str(squash), arch=arch),
                    sif.JsonObject(CONFIG_OBJECT, config_bytes),
                ],
                created=when,
                sif_id=sif.sif_id_for(image_id),
            )
        )
    squash.unlink(missing_ok=True)
    return out


async def _squash(
    tree: fstree.Dir, layers: list[tuple[Path, str]], dest: Path, compression: str
) -> None:
    """Stream the tree's tar (a worker thread) into tar2sqfs through a pipe."""
    r, w = os.pipe()
    run = asyncio.create_task(
        command.run(squashfs.argv(dest, compression), stdin_fd=r, label="tar2sqfs")
    )

    def feed() -> None:
        with open(w, "wb", buffering=COPY_CHUNK) as out:
            tarstream.write(out, tree, layers)

    writer = asyncio.ensure_future(asyncio.to_thread(feed))
    try:
        await asyncio.shield(writer)
    except BrokenPipeError:
        await run  # tar2sqfs died: its error says why
        raise
    except BaseException:
        run.cancel()  # the writer then fails on the closed pipe and ends
        await asyncio.wait([writer])
        await asyncio.gather(run, return_exceptions=True)
        raise
    await run
