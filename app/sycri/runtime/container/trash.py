"""Removed containers' directories, deleted after RemoveContainer has replied.

Deleting a bundle (records, spec, the overlay's upper and work dirs: a tree of files,
as large as what the container wrote) was most of RemoveContainer's own time. As
containerd's overlay snapshotter leaves a removed snapshot's directories to a later
cleanup, RemoveContainer unmounts the container's root filesystem (at once, before it
replies), then renames the bundle in here with one ``rename(2)``: nothing is left under
the container's id, and one worker thread deletes the entries one at a time, never on
the event loop. A rename that fails (another filesystem, anything) deletes in place.

A crash leaves either the bundle (the removal is finished or redone) or an entry here;
start-up empties the trash before sycri serves. A clean shutdown does not wait for it.
Entries still take their space until they are deleted: the filesystem's own usage
(statfs, which kubelet reads for the node) counts them, as it counts containerd's
snapshots not yet collected.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sycri.errors import SycriError

log = logging.getLogger("sycri.containers")

SETTLE = 0.1  # seconds the worker lets pass before it deletes what a removal put here


class Trash:
    """``<root>/trash``: entries ``<container id>-<random>``, each a former bundle.

    ``delete`` removes one directory tree (blocking) and never deletes through a mount
    (:func:`sycri.runtime.container.rootfs.remove_bundle`)."""

    def __init__(self, base: Path, delete: Callable[[Path], None], settle: float = SETTLE) -> None:
        self.base = base
        self._delete = delete
        self.settle = settle
        self._entries: queue.SimpleQueue[Path] = queue.SimpleQueue()  # for the worker
        self._worker: threading.Thread | None = None
        self._starting = threading.Lock()
        self._warned = False

    def discard(self, path: Path) -> None:
        """Blocking: take ``path`` away from its name now (renamed in here, deleted by
        the worker after the caller has replied), or delete it here when it cannot be
        renamed. Its mounts must be gone already: a rename takes them along."""
        moved = self._move(path)
        if moved is None:
            self._delete(path)
            return
        self._entries.put(moved)
        if self._worker is None:
            with self._starting:
                if self._worker is None:
                    self._worker = threading.Thread(
                        target=self._work, name="sycri-trash", daemon=True
                    )
                    self._worker.start()

    def _move(self, path: Path) -> Path | None:
        """``path`` renamed to a name of its own in the trash; None when that failed."""
        target = self.base / f"{path.name}-{secrets.token_hex(4)}"
        try:
            os.makedirs(self.base, mode=0o700, exist_ok=True)
            os.rename(path, target)
        except FileNotFoundError:
            return None  # nothing there (a removal done again): the delete is a no-op
        except OSError as exc:
            # EXDEV: the trash is on another filesystem than the bundles.
            level = logging.DEBUG if self._warned else logging.WARNING
            self._warned = True
            log.log(level, "cannot move %s to %s (%s): deleting it in place", path, target, exc)
            return None
        return target

    def _work(self) -> None:
        """The one worker: deletes entries one at a time, in the order they came, and
        waits for the next (a daemon thread: a shutdown does not wait for it). It waits
        ``settle`` seconds after an idle spell, so the removal's reply goes out first:
        a deletion is Python between system calls, and its thread would contend for
        the interpreter lock with the event loop sending that reply."""
        while True:
            entry = self._entries.get()
            time.sleep(self.settle)
            while True:
                self._delete_one(entry)
                try:
                    entry = self._entries.get_nowait()
                except queue.Empty:
                    break

    def _delete_one(self, entry: Path) -> None:
        try:
            if entry.is_dir() and not entry.is_symlink():
                self._delete(entry)
            else:  # not a bundle: only a person could have put it here
                entry.unlink(missing_ok=True)
        except SycriError as exc:  # left for the next start
            log.error("cannot delete %s from the trash: %s", entry, exc.message)
        except Exception:  # the worker must go on with the next entry
            log.exception("cannot delete %s from the trash", entry)

    def empty(self) -> int:
        """Blocking (start-up, before serving): delete every entry a crash left; how
        many there were."""
        try:
            entries = list(self.base.iterdir())
        except FileNotFoundError:
            return 0
        for entry in entries:
            log.info("deleting %s, left in the trash by the last run", entry.name)
            self._delete_one(entry)
        return len(entries)
