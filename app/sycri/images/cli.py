"""``sycri pull REF``: pull an image into the store on this node, as PullImage would."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys

from sycri.errors import SycriError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sycri.cli import add_config_flags

    p = sub.add_parser("pull", help="pull an image (docker://, oras://, library://, .sif)")
    p.add_argument("reference", help="image reference, e.g. busybox or oras://host/repo:tag")
    p.add_argument("--creds", metavar="USER[:PASSWORD]", help="registry credentials")
    p.add_argument("--registry-token", metavar="TOKEN", help="bearer token for the registry")
    p.add_argument("--json", action="store_true", help="print the image as JSON")
    add_config_flags(p)
    p.set_defaults(func=_cmd_pull)


def _cmd_pull(opts: argparse.Namespace) -> int:
    from sycri.cli import load_config
    from sycri.images.credentials import Credentials
    from sycri.images.service import Image, Images

    cfg = load_config(opts)
    creds = None
    if opts.creds:
        user, sep, password = opts.creds.partition(":")
        creds = Credentials(user, password if sep else getpass.getpass("password: "))
    if opts.registry_token:
        creds = Credentials(registry_token=opts.registry_token)

    async def go() -> Image:
        images = Images(cfg)
        try:
            return await images.pull(opts.reference, creds)
        finally:
            images.close()

    try:
        image = asyncio.run(go())
    except SycriError as exc:
        print(f"sycri pull: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    if opts.json:
        print(
            json.dumps(
                {
                    "id": image.id,
                    "sif": image.sif_path,
                    "size": image.size,
                    "repoTags": list(image.repo_tags),
                    "repoDigests": list(image.repo_digests),
                },
                indent=1,
            )
        )
    else:
        print(f"{image.id} {image.sif_path} ({image.size} bytes)")
    return 0
