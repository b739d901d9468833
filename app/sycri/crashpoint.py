"""Test-only crash points: sycri kills itself (SIGKILL) when execution reaches one.

The recovery tests must prove that a ``kill -9`` at any step of an operation leaves
every object whole or gone after the restart. A signal sent from outside lands at a
random place; a named point lands exactly between two steps. The environment variable
``SYCRI_TEST_CRASH_AT`` (read once, at import) names the point; when it is unset (any
real deployment) :func:`reach` is one comparison with ``None``. It is not a setting:
no flag or config field, so nobody turns it on by accident.

Point names are ``<operation>.<step done>``, e.g. ``container.start.conmon``; the
list is :data:`POINTS`, so a test cannot name a point that no code reaches.
"""

from __future__ import annotations

import os
import signal

ENV = "SYCRI_TEST_CRASH_AT"

POINTS = (
    "pull.fetched",  # layers downloaded and unpacked in the temp dir
    "pull.built",  # SIF written in the temp dir
    "pull.renamed",  # SIF renamed into the store, not yet indexed
    "pod.run.saved",  # the "creating" record is on disk, nothing else
    "pod.run.namespaces",  # namespaces pinned
    "pod.run.cgroup",  # the pod's own cgroup dirs recorded, not made yet
    "pod.run.shm",  # /dev/shm tmpfs mounted
    "pod.run.init",  # catatonit started, its pid not yet recorded
    "pod.run.network",  # CNI ADD done, result not yet recorded
    "pod.run.ready",  # the READY record is on disk, the reply not sent
    "container.create.image",  # image squashfs mounted for this container
    "container.create.overlay",  # overlay rootfs mounted, spec written
    "container.start.conmon",  # conmon and runc's container exist, the record says created
    "container.start.runc",  # runc start done, RUNNING not yet recorded
    "container.stop.signal",  # stop signal sent, nothing recorded
    "container.exit.recorded",  # an exit recorded; runc's container and the rootfs still there
    "container.remove.record",  # metadata deleted; runc's container, mounts, bundle still there
    "container.remove.runc",  # runc's container deleted; mounts, cgroup and bundle still there
    "container.remove.trashed",  # the bundle renamed into the trash, not yet deleted
    "pod.stop.containers",  # the pod's containers are stopped, its init and net not
    "pod.stop.network",  # CNI DEL done, NOTREADY not yet recorded
    "pod.remove.containers",  # the pod's containers are removed, the pod not
    "pod.remove.teardown",  # the pod's mounts, namespaces and dirs are gone, record not
)

_AT = os.environ.get(ENV) or None


def reach(point: str) -> None:
    """Die here, as ``kill -9`` would, when the test asked for this point."""
    if _AT is not None and point == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
