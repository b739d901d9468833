"""The index of one shared SIF store, ``sycri-index.yaml``: which file each name means.

::

    images:
      registry.example.org/hpc/gromacs:2024.1: gromacs-2024.1.sif

Parsing is pure (:func:`parse_index`); :func:`read_store` reads the file and stats the
files it names (blocking: on a hung file system it hangs, so the caller runs it in a
thread it can abandon). A name that is no image reference, or a path that leaves the
store, makes the whole index unusable or the entry ignored.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from sycri.errors import InvalidArgument, SycriError, excerpt
from sycri.images.siffile import stat_key

log = logging.getLogger("sycri.images.sif_stores")

INDEX = "sycri-index.yaml"
MAX_INDEX = 1 << 20  # bytes of one index file

NameKey = Callable[[str], str]  # image name -> the key tags are stored under


@dataclass(frozen=True)
class Entry:
    """One line of a store's index, as read: the name's key and the file it names."""

    key: str
    path: str
    stat: str


@dataclass(frozen=True)
class Listing:
    """A store as last read: its entries, or why it could not be read."""

    store: str
    entries: tuple[Entry, ...] = ()
    down: str = ""  # why the store cannot be used now; "" when it answered


def parse_index(data: bytes, store: str, name_key: NameKey) -> dict[str, str]:
    """``{name key: file name}`` of an index; InvalidArgument names what is wrong. An entry
    naming a path outside the store is refused with the rest of the index."""
    try:
        doc = yaml.safe_load(data.decode())
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidArgument(f"{store}/{INDEX} is not YAML: {excerpt(str(exc))}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, dict):
        raise InvalidArgument(f"{store}/{INDEX}: expected a mapping 'images: {{name: file}}'")
    out: dict[str, str] = {}
    for name, file in images.items():
        if not isinstance(name, str) or not isinstance(file, str) or not file:
            raise InvalidArgument(f"{store}/{INDEX}: entry {excerpt(name)} is not 'name: file'")
        if file.startswith("/") or ".." in file.split("/") or "\x00" in file:
            raise InvalidArgument(
                f"{store}/{INDEX}: {excerpt(file)} of {excerpt(name)} is not a path inside "
                "the store"
            )
        out[name_key(name)] = file
    return out


def read_store(store: str, name_key: NameKey) -> Listing:
    """Blocking: the index and each named file's stat. A store that cannot be read is
    ``down``; an entry whose file cannot be read is left out (and logged)."""
    index = Path(store) / INDEX
    try:
        with open(index, "rb") as f:
            data = f.read(MAX_INDEX + 1)
    except FileNotFoundError:
        why = "it does not exist" if not os.path.isdir(store) else f"it has no {INDEX}"
        return Listing(store, down=f"{why} (is the file system mounted?)")
    except OSError as exc:
        return Listing(store, down=f"{index} cannot be read: {exc.strerror}")
    if len(data) > MAX_INDEX:
        return Listing(store, down=f"{index} is larger than {MAX_INDEX} bytes")
    try:
        names = parse_index(data, store, name_key)
    except SycriError as exc:
        return Listing(store, down=exc.message)
    root = os.path.realpath(store)
    entries = []
    for key, file in names.items():
        path = os.path.realpath(os.path.join(root, file))
        if not path.startswith(root + "/"):
            log.warning("%s/%s: %s leaves the store; ignored", store, INDEX, file)
            continue
        try:
            st = os.stat(path)
        except OSError as exc:
            log.warning("%s/%s: %s of %s cannot be read: %s", store, INDEX, file, key, exc)
            continue
        entries.append(Entry(key, path, stat_key(st)))
    return Listing(store, tuple(entries))
