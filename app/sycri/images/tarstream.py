"""Write an applied image tree (:mod:`fstree`) as one tar stream, for ``tar2sqfs``.

The stream holds each surviving path once: directories first (parents before
children), then every regular file's bytes, copied from the layers in the order they
lie there (each layer is decompressed once more, in order, and nothing of it is parsed
again), then symlinks, fifos, the files sycri adds, and second names of hardlinked
inodes. Headers are written here from the tree, never copied from a layer, so
``tar2sqfs`` reads exactly what the checks of :mod:`unpack` passed. The same image
gives the same stream: names sorted, data in layer order, no time of ours.

Runs blocking I/O: call it from a worker thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from sycri.images import fstree
from sycri.images.decompress import COPY_CHUNK, open_layer

BLOCK = 512
_MAX_OCTAL = {8: 0o7777777, 12: 0o77777777777}
_DIR, _REG, _SYM, _LNK, _FIFO = b"5", b"0", b"2", b"1", b"6"
_TIME_MAX = (1 << 32) - 1  # squashfs keeps 32-bit seconds


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: str, value: bytes) -> bytes:
    body = b" " + key.encode() + b"=" + value + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n += 1
    return str(n).encode() + body


def header(
    name: str,
    kind: bytes,
    meta: fstree.Meta,
    size: int = 0,
    linkname: str = "",
) -> bytes:
    """The header block(s) of one entry: ustar, with a pax header before it for long
    names, large numbers and xattrs."""
    bname = name.encode("utf-8", "surrogateescape")
    blink = linkname.encode("utf-8", "surrogateescape")
    mtime = min(max(meta.mtime, 0), _TIME_MAX)
    pax: list[bytes] = []
    if len(bname) > 100:
        pax.append(_pax_record("path", bname))
        bname = bname[:100]
    if len(blink) > 100:
        pax.append(_pax_record("linkpath", blink))
        blink = blink[:100]
    uid, gid = meta.uid, meta.gid
    if not 0 <= uid <= _MAX_OCTAL[8]:
        pax.append(_pax_record("uid", str(max(uid, 0)).encode()))
        uid = 0
    if not 0 <= gid <= _MAX_OCTAL[8]:
        pax.append(_pax_record("gid", str(max(gid, 0)).encode()))
        gid = 0
    if size > _MAX_OCTAL[12]:
        pax.append(_pax_record("size", str(size).encode()))
    if meta.xattrs:
        for key in sorted(meta.xattrs):
            pax.append(_pax_record("SCHILY.xattr." + key, meta.xattrs[key]))
    block = _ustar(
        bname, meta.mode, uid, gid, size if size <= _MAX_OCTAL[12] else 0, mtime, kind, blink
    )
    if not pax:
        return block
    data = b"".join(pax)
    ext = _ustar(b"././@PaxHeader", 0o644, 0, 0, len(data), mtime, b"x", b"")
    return ext + data + _pad(len(data)) + block


def _ustar(
    name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes, link: bytes
) -> bytes:
    h = bytearray(BLOCK)
    h[0 : len(name)] = name
    h[100:108] = _octal(mode & 0o7777, 8)
    h[108:116] = _octal(uid, 8)
    h[116:124] = _octal(gid, 8)
    h[124:136] = _octal(size, 12)
    h[136:148] = _octal(mtime, 12)
    h[148:156] = b" " * 8
    h[156:157] = kind
    h[157 : 157 + len(link)] = link
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _pad(n: int) -> bytes:
    return bytes(-n % BLOCK)


def write(out: BinaryIO, root: fstree.Dir, layers: Sequence[tuple[Path, str]]) -> None:
    """Write ``root`` as a tar stream to ``out``; ``layers[i]`` is layer i's blob and
    its compression, where the bytes of its files are read from."""
    nodes = fstree.walk(root)
    out.write(header("./", _DIR, root.meta))
    first_name: dict[int, str] = {}  # id(inode) -> the name its bytes go under
    by_layer: dict[int, list[tuple[int, str, fstree.Inode]]] = {}
    rest: list[tuple[str, fstree.Inode]] = []
    for path, node in nodes:
        if isinstance(node, fstree.Dir):
            out.write(header(path, _DIR, node.meta))
            continue
        key = id(node)
        if key in first_name:
            rest.append((path, node))  # a second name: a hardlink, after its first
            continue
        first_name[key] = path
        if node.kind == fstree.FILE and node.data is None:
            by_layer.setdefault(node.layer, []).append((node.offset, path, node))
        else:
            rest.append((path, node))
    for index in sorted(by_layer):
        blob, compression = layers[index]
        files = sorted(by_layer[index], key=lambda f: f[0])
        with open_layer(blob, compression) as stream:
            _copy_files(stream, out, files)
    for path, node in rest:
        first = first_name[id(node)]
        if first != path:
            out.write(header(path, _LNK, node.meta, linkname=first))
        elif node.kind == fstree.FILE:
            data = node.data or b""
            out.write(header(path, _REG, node.meta, len(data)))
            out.write(data + _pad(len(data)))
        elif node.kind == fstree.SYMLINK:
            link_meta = dataclasses.replace(node.meta, mode=0o777)  # as lstat shows a link
            out.write(header(path, _SYM, link_meta, linkname=node.target))
        else:
            out.write(header(path, _FIFO, node.meta))
    out.write(bytes(2 * BLOCK))


def _copy_files(
    stream: BinaryIO, out: BinaryIO, files: list[tuple[int, str, fstree.Inode]]
) -> None:
    """Copy each file's bytes from the layer stream, skipping what lies between."""
    pos = 0
    for offset, path, node in files:
        _skip(stream, offset - pos)
        out.write(header(path, _REG, node.meta, node.size))
        left = node.size
        while left:
            chunk = stream.read(min(left, COPY_CHUNK))
            if not chunk:
                raise OSError(f"layer {node.layer} ended inside {path}")
            out.write(chunk)
            left -= len(chunk)
        out.write(_pad(node.size))
        pos = offset + node.size


def _skip(stream: BinaryIO, n: int) -> None:
    while n > 0:
        chunk = stream.read(min(n, COPY_CHUNK))
        if not chunk:
            raise OSError("layer ended early")
        n -= len(chunk)
