"""Verifying SIF signatures: legacy PGP clear-signed, PGP (digest metadata) and DSSE."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class SignatureResult:
    """The outcome of checking one signature object."""

    signature_id: int  # object id of the signature
    kind: str  # "legacy-pgp", "pgp" or "dsse"
    signed_ids: tuple[int, ...]  # objects the signature covers
    ok: bool
    signer: str  # key fingerprint / key id that verified it, "" when none did
    message: str  # why it failed, or what it verified


def verify(
    path: str | os.PathLike[str], keys: Iterable[str | os.PathLike[str] | bytes] = ()
) -> list[SignatureResult]:
    """Check every signature in ``path`` against ``keys`` (PGP armored/binary public
    keys, or PEM public keys for DSSE). An empty list means the file has no signatures."""
    raise NotImplementedError
