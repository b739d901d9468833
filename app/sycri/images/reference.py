"""Image references: what a user or kubelet names, parsed into one typed value.

Grammar follows the distribution reference format that docker, CRI-O and containerd
share (``[domain/]path[:tag][@digest]``) plus the transports Singularity users know:
``docker://`` (the default), ``oras://``, ``library://``, and local SIF files (a path
ending in ``.sif`` or a ``file://`` URL). Pure: no I/O.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from dataclasses import dataclass

from sycri.errors import InvalidArgument, SycriError, excerpt

DOCKER_HUB = "docker.io"
LIBRARY_HOST = "cloud.sylabs.io"
MAX_LENGTH = 4096

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$"
)
_LIB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference.

    ``transport`` is ``docker``, ``oras``, ``library`` or ``file``. For ``file`` only
    ``path`` is set. For ``library`` the repository is ``entity/collection/container``.
    """

    transport: str
    registry: str = ""
    repository: str = ""
    tag: str = ""
    digest: str = ""
    path: str = ""

    @property
    def name(self) -> str:
        """``registry/repository``: the repo part of repo tags and repo digests."""
        return f"{self.registry}/{self.repository}" if self.registry else self.repository

    def __str__(self) -> str:
        if self.transport == "file":
            return self.path
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text if self.transport == "docker" else f"{self.transport}://{text}"


def is_digest(value: str) -> bool:
    return bool(_DIGEST.match(value))


def is_image_id(value: str) -> bool:
    """``sha256:<64 hex>`` or a bare 64-hex id."""
    return bool(_SHA256.match(value)) or bool(re.fullmatch(r"[a-f0-9]{64}", value))


def node_arch() -> tuple[str, str]:
    """(GOARCH, variant) of this node, as image indexes name platforms."""
    machine = platform.machine().lower()
    return {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
    }.get(machine, (machine, ""))


def _bad(text: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"image reference {excerpt(text)} is not valid: {why}")


def parse(text: str) -> Reference:
    """Parse ``text``; raise InvalidArgument saying why when it is not a reference."""
    if not text or not text.strip():
        raise InvalidArgument("image reference is empty")
    if len(text) > MAX_LENGTH:
        raise _bad(text, f"longer than {MAX_LENGTH} characters")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise _bad(text, "contains whitespace or control characters")
    scheme, sep, rest = text.partition("://")
    if not sep:
        if text.endswith(".sif") and ("/" in text or text.startswith(".")):
            return _file(text, text)
        if text.startswith("/"):
            raise _bad(text, "a local image must be a .sif file")
        first = text.split("/", 1)[0]
        if first == LIBRARY_HOST:
            return _library(text, text.split("/", 1)[1] if "/" in text else "")
        return _docker(text, text, "docker")
    scheme = scheme.lower()
    if scheme == "docker":
        return _docker(text, rest.lstrip("/") if rest.startswith("//") else rest, "docker")
    if scheme == "oras":
        return _docker(text, rest, "oras")
    if scheme == "library":
        return _library(text, rest)
    if scheme == "file":
        return _file(text, rest)
    raise _bad(text, f"unknown transport {scheme!r} (docker, oras, library or file)")


def _file(text: str, path: str) -> Reference:
    if not path.startswith("/"):
        raise _bad(text, "a local SIF file must be named by an absolute path")
    if "\x00" in path:
        raise _bad(text, "contains a NUL byte")
    return Reference(transport="file", path=os.path.normpath(path))


def _split_digest_tag(text: str, rest: str) -> tuple[str, str, str]:
    name, _, digest = rest.partition("@")
    if digest and not _DIGEST.match(digest):
        raise _bad(text, f"digest {excerpt(digest)} is not algorithm:hex")
    if digest.startswith("sha256:") and not _SHA256.match(digest):
        raise _bad(text, "a sha256 digest has 64 lowercase hex characters")
    tag = ""
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.match(tag):
            raise _bad(text, f"tag {excerpt(tag)} is not valid")
    return name, tag, digest


def _docker(text: str, rest: str, transport: str) -> Reference:
    name, tag, digest = _split_digest_tag(text, rest)
    if not name:
        raise _bad(text, "no repository name")
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost" or first[0] == "["):
        registry, path = first, parts[1:]
        if not _DOMAIN.match(registry):
            raise _bad(text, f"registry {excerpt(registry)} is not a host name")
    else:
        registry, path = DOCKER_HUB, parts
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and len(path) == 1:
        path = ["library", *path]
    for comp in path:
        if not _COMPONENT.match(comp):
            why = "uppercase letters" if comp.lower() != comp else "characters"
            raise _bad(text, f"repository component {excerpt(comp)} has invalid {why}")
    repository = "/".join(path)
    if len(registry) + 1 + len(repository) > 255:
        raise _bad(text, "repository name longer than 255 characters")
    if not tag and not digest:
        tag = "latest"
    return Reference(transport, registry, repository, tag, digest)


def _library(text: str, rest: str) -> Reference:
    """``[host/][entity/[collection/]]container[:tag]``; entity ``library``, collection ``default``."""
    name, tag, digest = _split_digest_tag(text, rest.lstrip("/"))
    if digest:
        raise _bad(text, "library references take a tag (or sha256.<hash> tag), not @digest")
    parts = name.split("/")
    host = ""
    if len(parts) == 4 or (len(parts) > 1 and ("." in parts[0] or ":" in parts[0])):
        host, parts = parts[0], parts[1:]
    if not parts or len(parts) > 3 or not all(_LIB_NAME.match(p) for p in parts):
        raise _bad(text, "expected library://[entity/[collection/]]container[:tag]")
    if len(parts) == 1:
        parts = ["library", "default", *parts]
    elif len(parts) == 2:
        parts = [parts[0], "default", parts[1]]
    return Reference("library", host, "/".join(parts), tag or "latest", "")


def tag_key(ref: Reference) -> str:
    """How the store keys a reference's tag: ``registry/repo:tag`` (with the transport
    unless docker); a local SIF by its path."""
    if ref.transport == "file":
        return ref.path
    key = f"{ref.name}:{ref.tag}"
    return key if ref.transport == "docker" else f"{ref.transport}://{key}"


def digest_key(ref: Reference, digest: str) -> str:
    """How the store keys a repo digest: ``registry/repo@digest`` (transport as for tags)."""
    key = f"{ref.name}@{digest}"
    return key if ref.transport == "docker" else f"{ref.transport}://{key}"


def store_key(text: str) -> str:
    """How the SIF stores know ``text``: an image id, or a name's tag key (the text
    itself when it is neither)."""
    text = text.strip()
    if is_image_id(text):
        return text if text.startswith("sha256:") else "sha256:" + text
    try:
        return tag_key(parse(text))
    except SycriError:
        return text


_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Lookup:
    """What a name given to ImageStatus, ListImages, RemoveImage or CreateContainer is
    looked up by, in this order: a full image id (only that); ids starting with
    ``prefix``; then the repo digest key, else the tag key (``shared``: the SIF stores'
    names come before pulled tags, except for a local SIF file)."""

    image_id: str = ""
    prefix: str = ""
    digest: str = ""
    tag: str = ""
    shared: bool = True


@functools.lru_cache(maxsize=1024)
def lookup(text: str) -> Lookup:
    """How ``text`` is looked up; InvalidArgument when it names nothing it could be.

    Pure, so kept per text (kubelet and critest ask for the same few names on every
    call; an error is not kept): a lookup parses a name once, not per call. The bound
    caps what names from pod specs can hold (at most 1024 of ``MAX_LENGTH``)."""
    text = text.strip()
    if not text:
        raise InvalidArgument("image name is empty")
    if is_image_id(text):
        return Lookup(image_id=text if text.startswith("sha256:") else "sha256:" + text)
    hexpart = text.removeprefix("sha256:")
    prefix = hexpart if 6 <= len(hexpart) < 64 and _HEX.issuperset(hexpart) else ""
    ref = parse(text)
    if ref.digest:
        return Lookup(prefix=prefix, digest=digest_key(ref, ref.digest))
    return Lookup(prefix=prefix, tag=tag_key(ref), shared=ref.transport != "file")
