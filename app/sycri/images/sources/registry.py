"""Pulls from an OCI registry (``docker://``, ``oras://``): mirrors first, then the
registry itself; an OCI image is converted to a SIF, a SIF artifact kept as it is.

The id of an OCI image is its config's digest, every layer checked against the config's
diff_ids while it unpacks; the id of a SIF artifact is the SIF's own digest (Singularity
and Apptainer push the same ``{}`` config for every SIF, so a config digest names nothing
there).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from sycri import crashpoint
from sycri.config import Config
from sycri.errors import (
    InvalidArgument,
    NotFound,
    SycriError,
    Unauthenticated,
    Unavailable,
    excerpt,
)
from sycri.images import credentials as creds_mod
from sycri.images import manifest as mf
from sycri.images.convert import build_sif, converting, fetch_and_apply, in_thread
from sycri.images.credentials import Credentials
from sycri.images.intake import Intake
from sycri.images.reference import Reference, digest_key, tag_key
from sycri.images.registries import Endpoint, Registries
from sycri.images.registry import RegistryClient
from sycri.images.store_index import Image
from sycri.images.unpack import Applier, LimitExceeded, Limits
from sycri.observability import metrics, tracing

log = logging.getLogger("sycri.images")


class RegistrySource:
    def __init__(
        self,
        cfg: Config,
        intake: Intake,
        registries: Registries,
        limits: Limits,
        arch: str,
        variant: str,
    ) -> None:
        self.cfg = cfg
        self.intake = intake
        self.registries = registries
        self.limits = limits
        self.arch = arch
        self.variant = variant

    def client(
        self,
        session: aiohttp.ClientSession,
        endpoint: Endpoint,
        credentials: Credentials | None,
        p: metrics.Pull,
    ) -> RegistryClient:
        return RegistryClient(
            session,
            endpoint,
            credentials,
            progress_timeout=self.cfg.images.pull_progress_timeout_seconds,
            on_bytes=p.downloaded,
        )

    async def pull(
        self,
        session: aiohttp.ClientSession,
        ref: Reference,
        text: str,
        auth: Credentials | None,
        p: metrics.Pull,
    ) -> Image:
        """Each endpoint in turn: a mirror that fails (absent, down, refusing) hands over
        to the next; the last one's error is the pull's."""
        errors: list[SycriError] = []
        endpoints = self.registries.endpoints(ref)
        for i, ep in enumerate(endpoints):
            client = self.client(session, ep, self._credentials(ep.host, auth), p)
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

    def _credentials(self, host: str, auth: Credentials | None) -> Credentials | None:
        if auth:
            return auth
        return creds_mod.from_docker_config(self.cfg.images.docker_config, host)

    async def _pull_from(
        self, client: RegistryClient, ref: Reference, text: str, p: metrics.Pull
    ) -> Image:
        top, manifest = await client.image_manifest(
            ref.digest or ref.tag, self.arch, self.variant, text
        )
        tags = [tag_key(ref)] if ref.tag else []
        digests = [digest_key(ref, top.digest)]
        if manifest.config.media_type == mf.SIF_CONFIG:
            return await self.sif_artifact(client, manifest, text, tags, digests, p)
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
        return await self.intake.land(
            manifest.config.digest,
            lambda: self._convert(client, manifest, text, tags, digests, p),
            text,
            tags,
            digests,
        )

    async def sif_artifact(
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
        self.intake.check_sif_size(layer.size, text)

        async def download(path: Path) -> None:
            with tracing.span(
                "layer.fetch", **{"layer.digest": layer.digest, "layer.size": layer.size}
            ):
                await client.blob_to_file(layer, path, what="SIF")

        # blob_to_file refuses bytes with any other digest than the id
        return await self.intake.land(
            layer.digest,
            lambda: self.intake.land_sif(layer.digest, download, text, tags, digests, p),
            text,
            tags,
            digests,
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
        """Fetch the layers, apply them to a tree, squash it into a SIF, commit it."""
        image_id = manifest.config.digest
        keep_layers = self.cfg.images.keep_layers
        store = self.intake.store
        config_bytes = await client.blob_bytes(manifest.config, mf.MAX_CONFIG, "image config")
        raw, config = mf.parse_config(config_bytes)
        if config.os and config.os != "linux":
            raise InvalidArgument(f"{text}: image is for {excerpt(config.os)}, not linux")
        try:
            diff_ids = mf.diff_ids(raw, len(manifest.layers))
        except InvalidArgument as exc:
            raise InvalidArgument(f"{text}: {exc.message}") from None
        work = self.intake.workdir(image_id)
        committed = False
        try:
            applier = Applier(self.limits)
            blobs = await fetch_and_apply(
                client,
                manifest.layers,
                work,
                applier,
                self.cfg.images.max_concurrent_downloads,
                store.blob_dir if keep_layers else None,
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
            image = await self.intake.commit(
                image_id,
                built,
                config_bytes,
                text,
                tags,
                digests,
                [d.digest for d in manifest.layers] if keep_layers else [],
            )
            committed = True
            return image
        except BaseException:
            await in_thread(store.prune_blobs)  # no image was built from them
            raise
        finally:
            if committed:
                self.intake.discard(work)
            else:
                await in_thread(shutil.rmtree, work, True)
