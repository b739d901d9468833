"""The image store: one SIF per image under ``<root>/images/sif``, indexed in SQLite (WAL).

Reads never touch SQLite: they answer from an immutable in-memory index that a write
replaces, whole, after its transaction commits (built by :mod:`store_index`, pure).
Writes (worker threads) take one lock and commit with ``synchronous=FULL``; a lookup on
the event loop never waits for them.

An image is named by its id: for an OCI image the digest of its config (whose diff_ids
every layer was checked against), for a SIF made elsewhere (oras, library, local) the
digest of the SIF file itself. The index holds repo
tags, repo digests, size, the reference the user asked for and the pinned flag. Every
change is one transaction; a SIF file is renamed into place before its row is committed,
so a crash leaves at worst an unindexed file, which :meth:`Store.recover` removes at the
next start together with the temporary directory of unfinished pulls. Images that are
local SIF files are indexed with their own path and never deleted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from sycri.images.manifest import parse_config
from sycri.images.siffile import config_digest, file_digest
from sycri.images.store_index import (
    COLUMNS_READ,
    EMPTY_INDEX,
    Image,
    Index,
    ParsedConfig,
    build_index,
)
from sycri.observability.metrics import StoreStats
from sycri.sif.format import SifError

log = logging.getLogger("sycri.images.store")

__all__ = ["SCHEMA", "Image", "Store", "usage"]  # Image: where callers have found it

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id TEXT PRIMARY KEY,
    sif_path TEXT NOT NULL,
    size INTEGER NOT NULL,
    config BLOB NOT NULL,
    user_ref TEXT NOT NULL DEFAULT '',
    pinned INTEGER NOT NULL DEFAULT 0,
    local INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS digests (
    digest TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS tags_by_image ON tags(image_id);
CREATE INDEX IF NOT EXISTS digests_by_image ON digests(image_id);
CREATE TABLE IF NOT EXISTS layers (
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    digest TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
);
CREATE INDEX IF NOT EXISTS layers_by_digest ON layers(digest);
"""
# Columns added after the first release: (name, declaration). Added when missing.
COLUMNS = (
    ("origin", "TEXT NOT NULL DEFAULT ''"),  # own (built by sycri) or foreign; '' = unknown
    ("signed", "INTEGER NOT NULL DEFAULT 0"),  # a signature covers the system partition
    ("signer", "TEXT NOT NULL DEFAULT ''"),  # the trusted key that verified it
    ("stat", "TEXT NOT NULL DEFAULT ''"),  # local SIF: dev:ino:size:mtime_ns when hashed
)


class Store:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.sif_dir = self.root / "sif"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir = self.root / "blobs"
        for d in (self.root, self.sif_dir, self.tmp_dir, self.blob_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o711)
        self._lock = threading.Lock()  # writers only; readers take self._index
        self._index = EMPTY_INDEX
        self._configs: dict[str, ParsedConfig] = {}
        self._db = sqlite3.connect(
            self.root / "index.db", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(images)")}
        for name, decl in COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE images ADD COLUMN {name} {decl}")
        self._stats = self._count()
        self._index = self._load()

    def stats(self) -> StoreStats:
        """Images and bytes (SIFs and cached blobs) as of the last change; no I/O, any thread."""
        return self._stats

    def _count(self) -> StoreStats:
        n, sif_bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN local=0 THEN size END), 0) FROM images"
        ).fetchone()
        blobs = 0
        with contextlib.suppress(OSError), os.scandir(self.blob_dir) as it:
            for e in it:
                with contextlib.suppress(OSError):
                    blobs += e.stat(follow_symlinks=False).st_size
        return StoreStats(images=n, bytes=sif_bytes + blobs)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; once it commits, readers see the new index."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._stats = self._count()
            self._index = self._load()

    def _load(self) -> Index:
        """The whole index from the database (the writer's lock held)."""
        db = self._db
        index, self._configs = build_index(
            db.execute(f"SELECT {COLUMNS_READ} FROM images").fetchall(),
            db.execute("SELECT tag, image_id FROM tags ORDER BY tag").fetchall(),
            db.execute("SELECT digest, image_id FROM digests ORDER BY digest").fetchall(),
            self._configs,
        )
        return index

    def sif_path_for(self, image_id: str) -> Path:
        return self.sif_dir / (image_id.split(":", 1)[-1] + ".sif")

    # -- start-up -------------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Remove what unfinished pulls left behind; returns the paths removed."""
        removed = []
        for entry in self.tmp_dir.iterdir():
            removed.append(str(entry))
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        with self._lock:
            known = {r[0] for r in self._db.execute("SELECT sif_path FROM images WHERE local=0")}
        for f in self.sif_dir.iterdir():
            if str(f) not in known:
                removed.append(str(f))
                f.unlink(missing_ok=True)
        with self._tx() as db:
            for image_id, path in db.execute(
                "SELECT id, sif_path FROM images WHERE local=0"
            ).fetchall():
                if not os.path.exists(path):
                    log.warning(
                        "image %s lost its SIF %s; dropping it from the index", image_id, path
                    )
                    db.execute("DELETE FROM images WHERE id=?", (image_id,))
        self._migrate_identities()
        removed += self.prune_blobs()
        if removed:
            log.info("removed %d leftovers of unfinished pulls", len(removed))
        return removed

    def _migrate_identities(self) -> None:
        """Rows indexed before images carried their origin: a SIF whose ``oci-config.json``
        has the id's digest was built by sycri; any other non-local SIF was indexed under
        the digest of a config it does not own (oras pushes ``{}`` for every SIF) and is
        re-keyed to its own digest. Local SIFs are hashed again at their next use."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, sif_path, local FROM images WHERE origin=''"
            ).fetchall()
        for image_id, path, local in rows:
            if local:
                with self._tx() as db:
                    db.execute(
                        "UPDATE images SET origin='foreign', stat='' WHERE id=?", (image_id,)
                    )
                continue
            try:
                own = config_digest(path) == image_id
                new_id = image_id if own else file_digest(path)
            except (OSError, SifError) as exc:
                log.warning("image %s: cannot read its SIF %s: %s", image_id, path, exc)
                continue
            if own:
                with self._tx() as db:
                    db.execute("UPDATE images SET origin='own' WHERE id=?", (image_id,))
                continue
            log.warning("image %s is a foreign SIF; its id is now %s", image_id, new_id)
            self._rekey(image_id, new_id, path)

    def _rekey(self, old: str, new: str, path: str) -> None:
        final = self.sif_path_for(new)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM images WHERE id=?", (new,)).fetchone() is None:
                db.execute(
                    "INSERT INTO images (id, sif_path, size, config, user_ref, pinned, local,"
                    " added_at, origin) SELECT ?, ?, size, config, user_ref, pinned, local,"
                    " added_at, 'foreign' FROM images WHERE id=?",
                    (new, str(final), old),
                )
                os.link(path, final)
            for table in ("tags", "digests"):
                db.execute(f"UPDATE OR REPLACE {table} SET image_id=? WHERE image_id=?", (new, old))
            db.execute("DELETE FROM images WHERE id=?", (old,))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def prune_blobs(self) -> list[str]:
        """Delete cached layer blobs that no stored image was built from."""
        with self._lock:
            used = {
                r[0].split(":", 1)[-1]
                for r in self._db.execute("SELECT DISTINCT digest FROM layers")
            }
        removed = []
        for f in self.blob_dir.iterdir():
            if f.name not in used:
                removed.append(str(f))
                f.unlink(missing_ok=True)
        with self._lock:
            self._stats = self._count()
        return removed

    # -- reads: from memory, never SQLite, never a lock -----------------------------------

    def get(self, image_id: str) -> Image | None:
        return self._index.images.get(image_id)

    def by_tag(self, tag: str) -> Image | None:
        index = self._index
        image_id = index.tags.get(tag)
        return index.images.get(image_id) if image_id is not None else None

    def by_digest(self, digest: str) -> Image | None:
        index = self._index
        image_id = index.digests.get(digest)
        return index.images.get(image_id) if image_id is not None else None

    def by_id_prefix(self, prefix: str) -> list[str]:
        """Ids starting ``sha256:<prefix>``, in order."""
        want = "sha256:" + prefix
        return [i for i in self._index.images if i.startswith(want)]

    def list(self) -> list[Image]:
        """Every image, ordered by id."""
        return list(self._index.images.values())

    # -- writes ----------------------------------------------------------------------------

    def add(
        self,
        image_id: str,
        sif_path: str,
        size: int,
        config: bytes,
        *,
        tags: Sequence[str] = (),
        digests: Sequence[str] = (),
        user_ref: str = "",
        pinned: bool = False,
        local: bool = False,
        layers: Sequence[str] = (),
        now: float = 0.0,
        origin: str = "",
        signed: bool = False,
        signer: str = "",
        stat: str = "",
    ) -> Image:
        """Index an image (or add tags/digests to a known one); a tag moves to this image.
        The trust fields are set when the image is first indexed (and for a local SIF,
        whenever it is hashed again)."""
        parse_config(config)
        with self._tx() as db:
            db.execute(
                "INSERT INTO images (id, sif_path, size, config, user_ref, pinned, local, added_at,"
                " origin, signed, signer, stat)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
                " user_ref=excluded.user_ref, pinned=max(pinned, excluded.pinned),"
                " stat=CASE WHEN excluded.local THEN excluded.stat ELSE stat END,"
                " signed=CASE WHEN excluded.local THEN excluded.signed ELSE signed END,"
                " signer=CASE WHEN excluded.local THEN excluded.signer ELSE signer END",
                (
                    image_id,
                    sif_path,
                    size,
                    config,
                    user_ref,
                    int(pinned),
                    int(local),
                    now,
                    origin,
                    int(signed),
                    signer,
                    stat,
                ),
            )
            for t in tags:
                db.execute(
                    "INSERT INTO tags (tag, image_id) VALUES (?,?) "
                    "ON CONFLICT(tag) DO UPDATE SET image_id=excluded.image_id",
                    (t, image_id),
                )
            for d in layers:
                db.execute(
                    "INSERT OR IGNORE INTO layers (image_id, digest) VALUES (?,?)", (image_id, d)
                )
            for d in digests:
                db.execute(
                    "INSERT INTO digests (digest, image_id) VALUES (?,?) "
                    "ON CONFLICT(digest) DO UPDATE SET image_id=excluded.image_id",
                    (d, image_id),
                )
        image = self.get(image_id)
        assert image is not None
        return image

    def untag(self, tag: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM tags WHERE tag=?", (tag,))

    def remove(self, image_id: str) -> Image | None:
        """Drop an image from the index, then delete its SIF unless it is a local file."""
        image = self.get(image_id)
        if image is None:
            return None
        with self._tx() as db:
            db.execute("DELETE FROM images WHERE id=?", (image_id,))
        if not image.local:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(image.sif_path)
        self.prune_blobs()
        return image


def usage(path: Path) -> tuple[int, int]:
    """(bytes, inodes) used under ``path``, counting hard-linked files once."""
    seen: set[tuple[int, int]] = set()
    total = inodes = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            inodes += 1
            total += st.st_blocks * 512
    return total, inodes
