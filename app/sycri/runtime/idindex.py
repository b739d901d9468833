"""64-hex object ids and the unique-prefix lookup crictl users rely on."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable

from sycri.errors import InvalidArgument, NotFound, excerpt

ID_LENGTH = 64
_HEX = re.compile(r"^[0-9a-f]{1,64}$")


def new_id() -> str:
    return secrets.token_hex(ID_LENGTH // 2)


def resolve(prefix: str, ids: Iterable[str], what: str) -> str:
    """The one id starting with ``prefix``; NotFound when none, InvalidArgument when several."""
    if not prefix:
        raise InvalidArgument(f"{what} id is empty")
    if not _HEX.match(prefix):
        raise NotFound(f"{what} {excerpt(prefix)} not found (ids are lower-case hex)")
    if len(prefix) == ID_LENGTH and prefix in ids:  # a whole id (kubelet's): no scan
        return prefix
    matches = [i for i in ids if i.startswith(prefix)]
    if not matches:
        raise NotFound(f"{what} {excerpt(prefix)} not found")
    if len(matches) > 1:
        raise InvalidArgument(
            f"{what} id prefix {excerpt(prefix)} is ambiguous: it matches {len(matches)} {what}s"
        )
    return matches[0]
