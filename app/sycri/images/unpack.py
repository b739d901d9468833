"""Apply image layers (tar, hostile input) to a root filesystem directory.

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
a million-entry layer fails early in bounded memory.

Runs blocking I/O: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import hmac
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from sycri.errors import InvalidArgument, ResourceExhausted, excerpt

if TYPE_CHECKING:
    from sycri.config import ImageConfig

log = logging.getLogger("sycri.images.unpack")

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
COPY_CHUNK = 1 << 20
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


@dataclass
class Stats:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    devices_skipped: int = 0
    whiteouts: int = 0


@contextlib.contextmanager
def open_layer(path: Path, compression: str) -> Iterator[BinaryIO]:
    """The layer's tar stream, decompressed on the fly (gzip, zstd or none)."""
    with open(path, "rb") as raw:
        if compression == "gzip":
            yield gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[misc]
        elif compression == "zstd":
            import zstandard

            with zstandard.ZstdDecompressor().stream_reader(raw, read_size=COPY_CHUNK) as r:
                yield r
        else:
            yield raw


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
    """Applies layers one after another to ``root`` (an empty or earlier-built directory)."""

    def __init__(self, root: Path, limits: Limits | None = None) -> None:
        self.root = Path(root)
        self.dir_times: dict[str, tuple[int, int]] = {}
        self.stats = Stats()
        self.limits = limits or Limits()
        self.total_bytes = 0  # uncompressed layer bytes read so far, over all layers

    # -- path handling ----------------------------------------------------------------------

    def _parent(self, parts: list[str], name: str, what: str, create: bool) -> Path | None:
        """The real directory holding ``parts[-1]``; never through a symlink."""
        cur = self.root
        for depth, comp in enumerate(parts[:-1]):
            cur = cur / comp
            try:
                st = os.lstat(cur)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(cur, 0o755)
                self.dir_times.setdefault("/".join(parts[: depth + 1]), (0, 0))
                continue
            if stat.S_ISLNK(st.st_mode):
                raise HostileLayer(
                    f"{what}: entry {excerpt(name)} goes through the symlink "
                    f"{excerpt('/'.join(parts[: depth + 1]))}"
                )
            if not stat.S_ISDIR(st.st_mode):
                raise HostileLayer(f"{what}: entry {excerpt(name)} goes through a non-directory")
        return cur

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    # -- one layer ----------------------------------------------------------------------------

    def apply(self, stream: BinaryIO, what: str, diff_id: str | None = None) -> None:
        """Apply one layer's (already decompressed) tar stream; with ``diff_id``, refuse
        the layer unless its uncompressed bytes have that digest."""
        created: set[str] = set()
        metered = _Metered(stream, self, what)
        try:
            # stream mode only reads; typeshed asks every mode for a seekable, writable file
            with tarfile.open(  # type: ignore[call-overload]
                fileobj=metered, mode="r|", errorlevel=1, tarinfo=_HeaderBound
            ) as tar:
                # tar.next(), not iteration, and members cleared: TarFile would otherwise
                # keep every member of the stream in memory.
                while (member := tar.next()) is not None:
                    tar.members.clear()
                    self._entry(tar, member, what, created)
            metered.drain()
        except HostileLayer as exc:
            if not exc.message.startswith(what):
                raise HostileLayer(f"{what}: {exc.message}") from None
            raise
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
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

    def _entry(
        self, tar: tarfile.TarFile, m: tarfile.TarInfo, what: str, created: set[str]
    ) -> None:
        self.stats.entries += 1
        if self.stats.entries > self.limits.max_image_entries:
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
                self._meta(self.root, m, is_dir=True, key="")
            return
        base = parts[-1]
        rel = "/".join(parts)
        if base == OPAQUE:
            parent = self._parent(parts, m.name, what, create=True)
            assert parent is not None
            prefix = "/".join(parts[:-1])
            for child in os.listdir(parent):
                key = f"{prefix}/{child}" if prefix else child
                if key not in created:
                    self._remove(parent / child)
            self.stats.whiteouts += 1
            return
        if base.startswith(WHITEOUT):
            victim = base[len(WHITEOUT) :]
            if victim in ("", ".", ".."):
                raise HostileLayer(f"{what}: bad whiteout {excerpt(m.name)}")
            parent = self._parent(parts, m.name, what, create=False)
            if parent is not None:
                self._remove(parent / victim)
            self.stats.whiteouts += 1
            return
        parent = self._parent(parts, m.name, what, create=True)
        assert parent is not None
        for i in range(1, len(parts) + 1):
            created.add("/".join(parts[:i]))
        path = parent / base
        if m.ischr() or m.isblk():
            self.stats.devices_skipped += 1
            log.debug("%s: skipping device node %s", what, rel)
            return
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (m.isdir() and stat.S_ISDIR(existing.st_mode)):
            self._remove(path)
        if m.isdir():
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                os.mkdir(path, 0o700)
            self._meta(path, m, is_dir=True, key=rel)
        elif m.isreg():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                src = tar.extractfile(m)
                assert src is not None
                while chunk := src.read(COPY_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            self.stats.files += 1
            self.stats.bytes += m.size
            self._meta(path, m)
        elif m.issym():
            if not symlink_target_ok(parts, m.linkname):
                raise HostileLayer(
                    f"{what}: symlink {excerpt(rel)} -> {excerpt(m.linkname)} "
                    "points outside the root filesystem"
                )
            os.symlink(m.linkname, path)
            self._meta(path, m, link=True)
        elif m.islnk():
            tparts = split_name(m.linkname, what)
            if not tparts:
                raise HostileLayer(f"{what}: hardlink {excerpt(rel)} has an empty target")
            tparent = self._parent(tparts, m.linkname, what, create=False)
            target = tparent / tparts[-1] if tparent is not None else None
            try:
                tst = os.lstat(target) if target is not None else None
            except FileNotFoundError:
                tst = None
            if tst is None or stat.S_ISDIR(tst.st_mode):
                raise HostileLayer(
                    f"{what}: hardlink {excerpt(rel)} -> {excerpt(m.linkname)} names no file "
                    "inside the root filesystem"
                )
            assert target is not None  # tst came from it
            os.link(target, path, follow_symlinks=False)
        elif m.isfifo():
            os.mkfifo(path, 0o600)
            self._meta(path, m)
        else:
            log.debug("%s: skipping entry %s of tar type %r", what, rel, m.type)

    def _meta(
        self,
        path: Path,
        m: tarfile.TarInfo,
        is_dir: bool = False,
        link: bool = False,
        key: str | None = None,
    ) -> None:
        with contextlib.suppress(OSError):
            os.lchown(path, m.uid, m.gid)
        if not link:
            os.chmod(path, m.mode & 0o7777)
        for k, v in m.pax_headers.items():
            if k.startswith("SCHILY.xattr."):
                name = k[len("SCHILY.xattr.") :]
                try:
                    os.setxattr(
                        path, name, v.encode("utf-8", "surrogateescape"), follow_symlinks=False
                    )
                except OSError as exc:
                    log.debug("xattr %s on %s not kept: %s", name, path, exc)
        mtime = int(m.mtime * 1_000_000_000) if m.mtime else 0
        if is_dir:
            self.dir_times[key or ""] = (mtime, mtime)
        else:
            os.utime(path, ns=(mtime, mtime), follow_symlinks=False)

    def finish(self) -> None:
        """Set directory times last (creating entries inside a directory changes them)."""
        for rel in sorted(self.dir_times, key=lambda r: -r.count("/") - (1 if r else 0)):
            path = self.root / rel if rel else self.root
            with contextlib.suppress(FileNotFoundError):
                if os.path.isdir(path) and not os.path.islink(path):
                    os.utime(path, ns=self.dir_times[rel], follow_symlinks=False)


def apply_layer(
    applier: Applier, path: Path, compression: str, what: str, diff_id: str | None = None
) -> None:
    with open_layer(path, compression) as stream:
        applier.apply(stream, what, diff_id)
