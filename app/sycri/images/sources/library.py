"""Pulls from a Sylabs library (``library://``): a SIF, named by its own digest.

A library that redirects to an OCI registry serves the SIF as an oras artifact
(:meth:`RegistrySource.sif_artifact`); an older one states the SIF's hash and size, and
the download is checked against both.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp

from sycri.config import Config
from sycri.images.credentials import Credentials
from sycri.images.intake import Intake
from sycri.images.library import LibraryClient, redirect_endpoint
from sycri.images.reference import Reference, digest_key, tag_key
from sycri.images.sources.registry import RegistrySource
from sycri.images.store_index import Image
from sycri.observability import metrics


class LibrarySource:
    def __init__(self, cfg: Config, intake: Intake, oras: RegistrySource) -> None:
        self.cfg = cfg
        self.intake = intake
        self.oras = oras

    async def pull(
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
        arch = self.oras.arch
        tags = [tag_key(ref)]
        redirect = await lib.oci_redirect(ref)
        if redirect is not None:
            ep = redirect_endpoint(redirect)
            token_creds = Credentials(registry_token=redirect.token) if redirect.token else None
            client = self.oras.client(session, ep, token_creds, p)
            oref = Reference("oras", ep.host, ep.repository, ref.tag)
            top, manifest = await client.image_manifest(ref.tag, arch, self.oras.variant, text)
            digests = [digest_key(oref, top.digest)]
            return await self.oras.sif_artifact(client, manifest, text, tags, digests, p)
        digest, size = await lib.image_meta(ref, arch)
        if isinstance(size, int):
            self.intake.check_sif_size(size, text)

        async def download(path: Path) -> None:
            await lib.download(ref, arch, path, digest, size, self.cfg.images.max_image_bytes)

        return await self.intake.land(
            digest,
            lambda: self.intake.land_sif(digest, download, text, tags, [], p),
            text,
            tags,
            [],
        )
