"""The image's root filesystem as an in-memory tree, built from the layers' headers.

Layers are applied to this tree, not to a directory on disk: a regular file is a
reference to its bytes in a layer's uncompressed tar stream (layer index, offset, size),
so applying a layer reads its headers and nothing is written. The tree is then written
out as one tar stream (``tarstream``) and squashed. A hardlink is the same
:class:`Inode` object under two names, as it is the same inode on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FILE, SYMLINK, FIFO = "file", "symlink", "fifo"
# The xattr namespaces squashfs can store; tar2sqfs refuses an image with any other.
XATTR_PREFIXES = ("user.", "trusted.", "security.")


@dataclass(slots=True)
class Meta:
    """Owner, mode (permission bits), mtime (seconds) and extended attributes."""

    mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    xattrs: dict[str, bytes] | None = None


@dataclass(slots=True, eq=False)
class Inode:
    """A non-directory. FILE: ``size`` bytes at ``offset`` of layer ``layer``'s
    uncompressed stream, or ``data`` (files sycri adds); SYMLINK: ``target``."""

    kind: str
    meta: Meta
    layer: int = -1
    offset: int = 0
    size: int = 0
    data: bytes | None = None
    target: str = ""


@dataclass(slots=True, eq=False)
class Dir:
    meta: Meta
    children: dict[str, Dir | Inode] = field(default_factory=dict)


Node = Dir | Inode


def implicit_dir() -> Dir:
    """A directory no layer describes (a parent of an entry): root's, 0755, time 0."""
    return Dir(Meta(0o755))


def walk(root: Dir, prefix: str = "") -> list[tuple[str, Node]]:
    """Every node below ``root`` with its path, parents first, names sorted (code point
    order: any fixed order makes the same image give the same stream)."""
    out: list[tuple[str, Node]] = []
    stack: list[tuple[str, Dir]] = [(prefix, root)]
    while stack:
        path, d = stack.pop()
        subdirs = []
        for name in sorted(d.children):
            node = d.children[name]
            p = f"{path}/{name}" if path else name
            out.append((p, node))
            if isinstance(node, Dir):
                subdirs.append((p, node))
        stack.extend(reversed(subdirs))
    return out
