"""Whether a SIF may be stored (``images.sif_policy``) and how it may be mounted
(``images.kernel_mount``), from the signatures over its primary system partition.

Two facts are established about a SIF, both about the partition a container runs from:

- *signed*: a PGP (legacy or metadata) or DSSE signature covers the partition and the
  digests it states match the file. That proves integrity against the signature object,
  not who made it: no key is needed, so anyone can produce one.
- *trusted*: such a signature also verifies with one of the keys in
  ``images.trusted_keyrings`` (gpgv for PGP, ``cryptography`` for DSSE).

The kernel's squashfs driver parses a filesystem image with kernel privileges; a SIF
sycri did not build is handed to it only when it is trusted (``signed``) or the node
says ``all``; otherwise squashfuse parses it in an unprivileged-by-design userspace
process.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass

from sycri.errors import PermissionDenied
from sycri.sif.format import DataType, Descriptor, SifError
from sycri.sif.reader import SifImage, open_sif
from sycri.sif.verify import (
    _CLEARSIGN_BEGIN,
    _MAX_SIGNATURE,
    Keys,
    _check_legacy,
    _check_metadata,
    _covered,
    verify_image,
)

POLICIES = ("accept", "require-signed", "require-trusted")
KERNEL_MOUNT = ("own", "signed", "all")

# Where an image's SIF came from: built by sycri from an OCI image, or a SIF made elsewhere.
OWN = "own"
FOREIGN = "foreign"


@dataclass(frozen=True)
class Trust:
    signed: bool = False
    signer: str = ""  # the trusted key that verified a signature; "" when none did
    why: str = ""  # why it is not signed / not trusted, for error messages


def clearsigned_text(data: bytes) -> bytes | None:
    """The message of an OpenPGP clear-signed document (RFC 4880 7.1), unverified."""
    text = data.lstrip()
    if not text.startswith(_CLEARSIGN_BEGIN):
        return None
    _, sep, rest = text.partition(b"\n\n")
    if not sep:
        _, sep, rest = text.partition(b"\r\n\r\n")
    body, sep, _ = rest.partition(b"-----BEGIN PGP SIGNATURE-----")
    if not sep:
        return None
    lines = body.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [ln[2:] if ln.startswith(b"- ") else ln for ln in lines]
    return b"\n".join(x.rstrip(b"\r") for x in out)


def _integrity(img: SifImage, sig: Descriptor, data: bytes) -> tuple[bool, str]:
    """Do the digests the signature object states match the file? (no key involved)"""
    plain = clearsigned_text(data)
    if plain is not None:
        if plain.startswith(b"SIFHASH:"):
            return _check_legacy(img, sig, plain)
        return _check_metadata(img, sig, plain)
    if data.lstrip().startswith(b"{"):
        try:
            env = json.loads(data)
            payload = base64.b64decode(env["payload"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            return False, "DSSE envelope malformed"
        return _check_metadata(img, sig, payload)
    return False, "signature format not recognized"


async def evaluate(path: str | os.PathLike[str], keys: Keys | None) -> Trust:
    """What the signatures over ``path``'s primary partition establish."""
    try:
        with open_sif(path) as img:
            primary = img.primary_partition().id
            sigs = [s for s in img.find(DataType.SIGNATURE) if primary in _ids(img, s)]
            if not sigs:
                return Trust(why="no signature covers its system partition")
            reasons = []
            signed = False
            for s in sigs:
                if s.size > _MAX_SIGNATURE:
                    reasons.append(f"signature object {s.id} is too large")
                    continue
                ok, msg = _integrity(img, s, img.read_object(s))
                signed = signed or ok
                if not ok:
                    reasons.append(f"signature object {s.id}: {msg}")
            if not signed:
                return Trust(why="; ".join(reasons))
            if keys is None or not (keys.pgp or keys.pem):
                return Trust(signed=True, why="no trusted keys are configured")
            results = await verify_image(img, keys)
    except (OSError, SifError) as exc:
        return Trust(why=f"its signatures cannot be read: {exc}")
    good = [r for r in results if r.ok and primary in r.signed_ids]
    if good:
        return Trust(signed=True, signer=good[0].signer)
    bad = [f"signature object {r.signature_id}: {r.message}" for r in results if not r.ok]
    return Trust(signed=True, why="not signed by a trusted key (" + "; ".join(bad) + ")")


def _ids(img: SifImage, sig: Descriptor) -> tuple[int, ...]:
    return tuple(d.id for d in _covered(img, sig))


def enforce(policy: str, trust: Trust, what: str) -> None:
    """Refuse (PERMISSION_DENIED, as containerd's image verifiers do) what ``policy``
    does not allow; ``what`` names the object (the reference and the SIF's digest)."""
    if policy == "require-signed" and not trust.signed:
        raise PermissionDenied(f"{what}: refused by images.sif_policy=require-signed: {trust.why}")
    if policy == "require-trusted" and not trust.signer:
        raise PermissionDenied(f"{what}: refused by images.sif_policy=require-trusted: {trust.why}")


def kernel_mount_ok(mode: str, origin: str, trusted: bool) -> bool:
    """May the kernel's squashfs driver parse this image's partition?"""
    if mode == "all" or origin == OWN:
        return True
    return mode == "signed" and trusted
