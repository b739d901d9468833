"""Apply image layers (tar, hostile input) to the image's root filesystem tree.

Layers are applied in order with the OCI whiteout rules: ``.wh.NAME`` deletes NAME from
the layers below, ``.wh..wh..opq`` empties its directory of what lower layers put there.
Owners, modes, times and extended attributes are kept. An entry is refused, and with it
the whole image, when its name climbs out of the root (``..``), when it would be
written through a symlink or non-directory (that is how a layer reaches host files), when a
symlink's relative target climbs above the root, or when a hardlink names a target that
is outside the root or missing. Device nodes are skipped: a container gets its devices
from the runtime, never from an image.

Every layer's uncompressed stream is hashed as it is read and must equal the image
config's ``rootfs.diff_ids`` entry for it, and :class:`Limits` bound what an image may
unpack (bytes, entries, a single file, header sizes) while it streams, so a gzip bomb or
a million-entry layer fails early in bounded memory. Decompressing is
:mod:`sycri.images.decompress`'s.

The tree is held in memory (:mod:`sycri.images.fstree`): a regular file is where its
bytes lie in the layer, so applying a layer reads headers only, and the squashfs is
later made from one tar stream of what survived (:mod:`sycri.images.tarstream`).

Runs blocking I/O: call it from a worker thread.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import hmac
import logging
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn, cast

from sycri.errors import InvalidArgument, ResourceExhausted, excerpt
from sycri.images import fstree
from sycri.images.decompress import COPY_CHUNK, ISAL_ERROR, open_layer

if TYPE_CHECKING:
    from sycri.config import ImageConfig

log = logging.getLogger("sycri.images.unpack")

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MAX_HEADER = 1 << 20  # a pax or GNU long-name header; tarfile reads it into memory
_BIG_HEADERS = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class HostileLayer(InvalidArgument):
    """A layer entry that would write outside the root filesystem or break its rules."""


class CorruptLayer(InvalidArgument):
    """A layer that is not the compressed tar its media type says."""


class DiffIdMismatch(InvalidArgument):
    """A layer whose uncompressed content is not what the image config says."""


class LimitExceeded(ResourceExhausted):
    """An image that unpacks to more than the configured limits allow."""


@dataclass(frozen=True)
class Limits:
    """What one image may unpack; each field is named after its ``images.*`` key."""

    max_image_bytes: int = 64 << 30
    max_image_entries: int = 5_000_000
    max_file_bytes: int = 32 << 30

    @classmethod
    def of(cls, images_cfg: ImageConfig) -> Limits:
        return cls(
            images_cfg.max_image_bytes, images_cfg.max_image_entries, images_cfg.max_file_bytes
        )


_LOW = bytes(range(128))


def _chksums(buf: bytes) -> tuple[int, int]:
    """tarfile's header checksums (unsigned, signed) without two 504-int tuples: its own
    ``calc_chksums`` was 13 % of reading a layer of 100,000 small files."""
    head, tail = buf[:148], buf[156:512]
    unsigned = 256 + sum(head) + sum(tail)
    high = len(head.translate(None, _LOW)) + len(tail.translate(None, _LOW))
    return unsigned, unsigned - 256 * high


tarfile.calc_chksums = _chksums  # type: ignore[attr-defined]  # same results, faster


class _HeaderBound(tarfile.TarInfo):
    """Refuses long-name and pax headers larger than MAX_HEADER before tarfile reads them."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _BIG_HEADERS and self.size > MAX_HEADER:
            raise HostileLayer(f"an extended header of {self.size} bytes (more than {MAX_HEADER})")
        # tarfile's private hook, which typeshed leaves out
        member: tarfile.TarInfo = super()._proc_member(tarfile_)  # type: ignore[misc]
        return member

    # Sparse maps are read into memory without bound (and version 1.0 from the entry's
    # data): refused, as few images hold sparse files.
    def _refuse_sparse(self, *args: object, **kwargs: object) -> NoReturn:
        raise HostileLayer(f"entry {excerpt(self.name)} is a sparse file (not supported)")

    _proc_sparse = _proc_gnusparse_00 = _proc_gnusparse_01 = _proc_gnusparse_10 = _refuse_sparse


class _Metered:
    """The decompressed layer stream, hashed and counted against the byte limit as read."""

    def __init__(self, stream: BinaryIO, applier: Applier, what: str) -> None:
        self.stream = stream
        self.applier = applier
        self.what = what
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n if n is not None and n >= 0 else COPY_CHUNK)
        if data:
            self.hash.update(data)
            a = self.applier
            a.total_bytes += len(data)
            if a.total_bytes > a.limits.max_image_bytes:
                raise LimitExceeded(
                    f"{self.what}: the image unpacks to more than images.max_image_bytes "
                    f"({a.limits.max_image_bytes} bytes)"
                )
        return data

    def drain(self) -> None:
        """Read what tarfile left after the end-of-archive blocks (it counts in the digest)."""
        while self.read(COPY_CHUNK):
            pass


def split_name(name: str, what: str) -> list[str]:
    """The path components of a tar name, relative to the root; refuses ``..`` and NULs."""
    if "\x00" in name:
        raise HostileLayer(f"{what}: entry name {excerpt(name)} contains a NUL byte")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HostileLayer(f"{what}: entry {excerpt(name)} climbs out of the root filesystem")
    return parts


def symlink_target_ok(parts: list[str], target: str) -> bool:
    """A relative target must stay within the root when resolved from the link's directory."""
    if target.startswith("/"):
        return True  # resolved inside the container's root at run time
    depth = len(parts) - 1
    for comp in target.split("/"):
        if comp == "..":
            depth -= 1
            if depth < 0:
                return False
        elif comp not in ("", "."):
            depth += 1
    return True


class Applier:
    """Applies layers one after another to an in-memory tree (:mod:`fstree`), with the
    rules and checks a directory on disk would need; nothing is written."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.root = fstree.Dir(fstree.Meta(0o755))
        self.limits = limits or Limits()
        self.entries = 0  # entries read so far, over all layers (images.max_image_entries)
        self.total_bytes = 0  # uncompressed layer bytes read so far, over all layers
        self.layers = 0  # layers applied; a file's ``layer`` is its index among them

    # -- path handling ----------------------------------------------------------------------

    def _parent(self, parts: list[str], name: str, what: str, create: bool) -> fstree.Dir | None:
        """The directory holding ``parts[-1]``; never through a symlink."""
        cur = self.root
        for depth, comp in enumerate(parts[:-1]):
            node = cur.children.get(comp)
            if node is None:
                if not create:
                    return None
                node = cur.children[comp] = fstree.implicit_dir()
            elif not isinstance(node, fstree.Dir):
                if node.kind == fstree.SYMLINK:
                    raise HostileLayer(
                        f"{what}: entry {excerpt(name)} goes through the symlink "
                        f"{excerpt('/'.join(parts[: depth + 1]))}"
                    )
                raise HostileLayer(f"{what}: entry {excerpt(name)} goes through a non-directory")
            cur = node
        return cur

    # -- one layer ----------------------------------------------------------------------------

    def apply(self, stream: BinaryIO, what: str, diff_id: str | None = None) -> None:
        """Apply one layer's (already decompressed) tar stream; with ``diff_id``, refuse
        the layer unless its uncompressed bytes have that digest."""
        created: set[str] = set()
        layer = self.layers
        self.layers += 1
        metered = _Metered(stream, self, what)
        try:
            with tarfile.open(
                fileobj=cast(BinaryIO, metered), mode="r|", errorlevel=1, tarinfo=_HeaderBound
            ) as tar:
                # tar.next(), not iteration, and members cleared: TarFile would otherwise
                # keep every member of the stream in memory. A file's data is skipped
                # (read, hashed and counted) by the next tar.next().
                while (member := tar.next()) is not None:
                    tar.members.clear()  # type: ignore[attr-defined]
                    self._entry(member, what, created, layer)
            metered.drain()
        except HostileLayer as exc:
            if not exc.message.startswith(what):
                raise HostileLayer(f"{what}: {exc.message}") from None
            raise
        except (tarfile.TarError, EOFError, zlib.error, ISAL_ERROR, gzip.BadGzipFile) as exc:
            raise CorruptLayer(f"{what}: not a valid tar stream: {exc}") from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise
            if type(exc).__module__ == "zstd" or "zstd" in type(exc).__name__.lower():
                raise CorruptLayer(f"{what}: not valid zstd data: {exc}") from None
            raise
        except Exception as exc:
            if type(exc).__name__ == "ZstdError":
                raise CorruptLayer(f"{what}: not valid zstd data: {exc}") from None
            raise
        if diff_id is not None:
            got = "sha256:" + metered.hash.hexdigest()
            if not hmac.compare_digest(got, diff_id):
                raise DiffIdMismatch(
                    f"{what}: uncompressed content has digest {got}, but the image config's "
                    f"rootfs.diff_ids says {excerpt(diff_id, 80)}"
                )

    def _entry(self, m: tarfile.TarInfo, what: str, created: set[str], layer: int) -> None:
        self.entries += 1
        if self.entries > self.limits.max_image_entries:
            raise LimitExceeded(
                f"{what}: the image has more than images.max_image_entries "
                f"({self.limits.max_image_entries}) entries"
            )
        if m.isreg() and m.size > self.limits.max_file_bytes:
            raise LimitExceeded(
                f"{what}: file {excerpt(m.name)} is {m.size} bytes, more than "
                f"images.max_file_bytes ({self.limits.max_file_bytes})"
            )
        parts = split_name(m.name, what)
        if not parts:  # the root itself
            if m.isdir():
                self.root.meta = _meta(m, self.root.meta)
            return
        base = parts[-1]
        if base == OPAQUE:
            parent = self._parent(parts, m.name, what, create=True)
            assert parent is not None
            prefix = "/".join(parts[:-1])
            for child in list(parent.children):
                key = f"{prefix}/{child}" if prefix else child
                if key not in created:
                    del parent.children[child]
            return
        if base.startswith(WHITEOUT):
            victim = base[len(WHITEOUT) :]
            if victim in ("", ".", ".."):
                raise HostileLayer(f"{what}: bad whiteout {excerpt(m.name)}")
            parent = self._parent(parts, m.name, what, create=False)
            if parent is not None:
                parent.children.pop(victim, None)
            return
        parent = self._parent(parts, m.name, what, create=True)
        assert parent is not None
        for i in range(1, len(parts) + 1):
            created.add("/".join(parts[:i]))
        if m.ischr() or m.isblk():
            log.debug("%s: skipping device node %s", what, "/".join(parts))
            return
        existing = parent.children.get(base)
        if m.isdir():
            if isinstance(existing, fstree.Dir):
                existing.meta = _meta(m, existing.meta)
            else:
                parent.children[base] = fstree.Dir(_meta(m))
        elif m.isreg():
            parent.children[base] = fstree.Inode(
                fstree.FILE, _meta(m), layer, m.offset_data, m.size
            )
        elif m.issym():
            if not symlink_target_ok(parts, m.linkname):
                raise HostileLayer(
                    f"{what}: symlink {excerpt('/'.join(parts))} -> {excerpt(m.linkname)} "
                    "points outside the root filesystem"
                )
            meta = _meta(m)
            if meta.xattrs:  # Linux keeps no user.* xattrs on a symlink
                meta.xattrs = {k: v for k, v in meta.xattrs.items() if not k.startswith("user.")}
            parent.children[base] = fstree.Inode(fstree.SYMLINK, meta, target=m.linkname)
        elif m.islnk():
            tparts = split_name(m.linkname, what)
            if not tparts:
                raise HostileLayer(
                    f"{what}: hardlink {excerpt('/'.join(parts))} has an empty target"
                )
            tparent = self._parent(tparts, m.linkname, what, create=False)
            target = tparent.children.get(tparts[-1]) if tparent is not None else None
            if not isinstance(target, fstree.Inode):
                raise HostileLayer(
                    f"{what}: hardlink {excerpt('/'.join(parts))} -> {excerpt(m.linkname)} "
                    "names no file inside the root filesystem"
                )
            parent.children[base] = target  # the same inode under a second name
        elif m.isfifo():
            parent.children[base] = fstree.Inode(fstree.FIFO, _meta(m))
        else:
            parent.children.pop(base, None)
            log.debug("%s: skipping entry %s of tar type %r", what, "/".join(parts), m.type)


def _meta(m: tarfile.TarInfo, before: fstree.Meta | None = None) -> fstree.Meta:
    """An entry's owner, mode, time and xattrs; a directory described again keeps the
    xattrs it had (setting xattrs on an existing directory adds to them)."""
    xattrs = dict(before.xattrs) if before is not None and before.xattrs else None
    for k, v in m.pax_headers.items():
        if k.startswith("SCHILY.xattr."):
            name = k[len("SCHILY.xattr.") :]
            if name.startswith(fstree.XATTR_PREFIXES):
                if xattrs is None:
                    xattrs = {}
                xattrs[name] = v.encode("utf-8", "surrogateescape")
            else:
                log.debug("xattr %s of %s not kept (squashfs cannot store it)", name, m.name)
    mtime = int(m.mtime) if m.mtime else 0
    return fstree.Meta(m.mode & 0o7777, m.uid, m.gid, mtime, xattrs)


def apply_layer(
    applier: Applier, path: Path, compression: str, what: str, diff_id: str | None = None
) -> None:
    with open_layer(path, compression) as stream:
        applier.apply(stream, what, diff_id)
