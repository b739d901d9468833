"""Shared helpers for the SIF tests: the reference files, keys, and small squashfs images."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

TESTDATA = Path(os.environ.get("SYCRI_SIF_TESTDATA", "/work/shared/sif-testdata"))
IMAGES = TESTDATA / "images"
KEYS = TESTDATA / "keys"
# Fingerprint of keys/private.asc, the PGP key the reference files were signed with.
PGP_FINGERPRINT = "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84"


def reference_images() -> list[Path]:
    images = sorted(IMAGES.glob("*.sif"))
    assert images, f"no reference SIF files under {IMAGES}"
    return images


def pgp_public_key(dest: Path) -> Path:
    """Export the public half of keys/private.asc with gpg (gpgv only takes public keys)."""
    with tempfile.TemporaryDirectory(prefix="sycri-gpg-") as home:
        env = {**os.environ, "GNUPGHOME": home}
        subprocess.run(
            ["gpg", "--batch", "--quiet", "--import", str(KEYS / "private.asc")],
            env=env,
            check=True,
            capture_output=True,
        )
        out = subprocess.run(
            ["gpg", "--batch", "--armor", "--export", PGP_FINGERPRINT],
            env=env,
            check=True,
            capture_output=True,
        ).stdout
    assert out.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    dest.write_bytes(out)
    return dest


def make_squashfs(src: Path, dest: Path) -> Path:
    """A reproducible squashfs of ``src`` (fixed times, root owner)."""
    subprocess.run(
        [
            "mksquashfs",
            str(src),
            str(dest),
            "-noappend",
            "-quiet",
            "-no-progress",
            "-all-root",
            "-mkfs-time",
            "0",
            "-all-time",
            "0",
            "-comp",
            "gzip",
        ],
        check=True,
        capture_output=True,
    )
    return dest


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root
