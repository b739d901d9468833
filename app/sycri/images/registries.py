"""``containers-registries.conf`` (v2): mirrors, insecure registries, prefix rewrites.

The semantics are those CRI-O and Podman users know: the ``[[registry]]`` entry with the
longest matching ``prefix`` (default: its ``location``) applies; its mirrors are tried in
order, then its location; ``insecure`` allows plain HTTP and unverified TLS; ``blocked``
refuses pulls; ``mirror-by-digest-only`` keeps mirrors for digest pulls. Pure parsing
and matching; reading the files is the one side effect, in :func:`load`.

Without ``images.registries_conf`` the node's own files are read, as CRI-O and Podman
do: ``/etc/containers/registries.conf`` and then ``registries.conf.d/*.conf`` in name
order, a later ``[[registry]]`` with the same prefix replacing an earlier one.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from sycri.errors import FailedPrecondition
from sycri.images.reference import DOCKER_HUB, Reference


class RegistriesConfError(ValueError):
    """The file cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Endpoint:
    """One place to try: API host and the repository path there."""

    host: str
    repository: str
    insecure: bool = False
    mirror: bool = False

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.host == DOCKER_HUB else self.host


@dataclass(frozen=True)
class Mirror:
    location: str
    insecure: bool = False


@dataclass(frozen=True)
class RegistryEntry:
    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()


@dataclass(frozen=True)
class Registries:
    entries: tuple[RegistryEntry, ...] = ()
    unqualified_search: tuple[str, ...] = field(default=())

    def match(self, name: str) -> tuple[RegistryEntry, str] | None:
        """The entry whose prefix matches ``name`` (registry/repository) best, with that prefix."""
        best: tuple[int, RegistryEntry, str] | None = None
        for e in self.entries:
            matched = _prefix_match(e.prefix, name)
            if matched is not None and (best is None or len(matched) > best[0]):
                best = (len(matched), e, matched)
        return (best[1], best[2]) if best else None

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where to pull ``ref`` from, in order: mirrors, then the registry itself."""
        found = self.match(ref.name)
        if found is None:
            return [Endpoint(ref.registry, ref.repository)]
        entry, matched = found
        if entry.blocked:
            raise FailedPrecondition(
                f"registry {ref.registry} is blocked by registries.conf (prefix {entry.prefix!r})"
            )
        suffix = ref.name[len(matched) :]
        out = []
        if not entry.mirror_by_digest_only or ref.digest:
            for m in entry.mirrors:
                out.append(_endpoint(m.location + suffix, m.insecure, mirror=True))
        location = entry.location or ref.registry
        if entry.prefix.startswith("*.") and not entry.location:
            out.append(Endpoint(ref.registry, ref.repository, entry.insecure))
        else:
            out.append(_endpoint(location + suffix, entry.insecure, mirror=False))
        return out


def _endpoint(name: str, insecure: bool, mirror: bool) -> Endpoint:
    host, _, repo = name.partition("/")
    return Endpoint(host, repo, insecure, mirror)


def _prefix_match(prefix: str, name: str) -> str | None:
    """The part of ``name`` the prefix matched, or None; boundaries are ``/`` or the end."""
    if prefix.startswith("*."):
        host = name.split("/", 1)[0]
        return host if host.endswith(prefix[1:]) else None
    if name == prefix or name.startswith(prefix + "/"):
        return prefix
    return None


def parse(text: str, source: str = "registries.conf") -> Registries:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistriesConfError(f"{source}: not valid TOML: {exc}") from None
    entries = []
    for i, raw in enumerate(data.get("registry", []) or []):
        if not isinstance(raw, dict):
            raise RegistriesConfError(f"{source}: registry #{i + 1} is not a table")
        location = str(raw.get("location", "")).rstrip("/")
        prefix = str(raw.get("prefix", "") or location).rstrip("/")
        if not prefix:
            raise RegistriesConfError(
                f"{source}: registry #{i + 1} has neither prefix nor location"
            )
        if not location and not prefix.startswith("*."):
            location = prefix
        mirrors = []
        for m in raw.get("mirror", []) or []:
            if not isinstance(m, dict) or not m.get("location"):
                raise RegistriesConfError(f"{source}: registry {prefix!r}: mirror without location")
            mirrors.append(Mirror(str(m["location"]).rstrip("/"), bool(m.get("insecure", False))))
        entries.append(
            RegistryEntry(
                prefix=prefix,
                location=location,
                insecure=bool(raw.get("insecure", False)),
                blocked=bool(raw.get("blocked", False)),
                mirror_by_digest_only=bool(raw.get("mirror-by-digest-only", False)),
                mirrors=tuple(mirrors),
            )
        )
    search = data.get("unqualified-search-registries", []) or []
    return Registries(tuple(entries), tuple(str(s) for s in search))


SYSTEM_CONF = Path("/etc/containers/registries.conf")
SYSTEM_DROPINS = Path("/etc/containers/registries.conf.d")


def merge(parts: list[Registries]) -> Registries:
    """Later parts win: an entry replaces one with the same prefix, a non-empty
    unqualified-search list replaces the earlier one."""
    entries: dict[str, RegistryEntry] = {}
    search: tuple[str, ...] = ()
    for part in parts:
        for e in part.entries:
            entries.pop(e.prefix, None)
            entries[e.prefix] = e
        search = part.unqualified_search or search
    return Registries(tuple(entries.values()), search)


def _read(path: Path) -> Registries:
    try:
        text = path.read_text()
    except OSError as exc:
        raise RegistriesConfError(f"cannot read {path}: {exc.strerror}") from None
    return parse(text, str(path))


def load(path: str, system: Path = SYSTEM_CONF, dropins: Path = SYSTEM_DROPINS) -> Registries:
    """The file at ``path``; an empty path means the node's files, those present."""
    if path:
        return _read(Path(path))
    parts = [_read(system)] if system.is_file() else []
    if dropins.is_dir():
        parts += [_read(f) for f in sorted(dropins.glob("*.conf")) if f.is_file()]
    return merge(parts)
