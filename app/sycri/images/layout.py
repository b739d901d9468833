"""The ``/.singularity.d`` layout, so Singularity/Apptainer can run the same SIF.

Written from the OCI image config the way Singularity's own OCI conversion does: an
environment script from ``Env``, a ``runscript`` from ``Entrypoint`` and ``Cmd``, and
``labels.json``. It is added to the image's tree (:mod:`fstree`) as a last layer would
be: the tree came from hostile layers, so nothing here follows a symlink, and an
existing non-directory ``/.singularity.d`` is replaced, never written through. Every
file gets the same fixed time, so the SIF stays reproducible.
"""

from __future__ import annotations

import json
import re
import shlex

from sycri.images import fstree
from sycri.images.manifest import ImageConfig

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MOUNT_POINTS = ("proc", "sys", "dev", "tmp", "etc")


def env_script(cfg: ImageConfig) -> str:
    lines = ["#!/bin/sh", "# Environment of the OCI image config (Env).", ""]
    for item in cfg.env:
        name, sep, value = item.partition("=")
        if sep and _ENV_NAME.match(name):
            lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def runscript(cfg: ImageConfig) -> str:
    """Arguments replace Cmd and follow Entrypoint, as with ``docker run IMAGE ARGS``."""
    ep = " ".join(shlex.quote(a) for a in cfg.entrypoint)
    cmd = " ".join(shlex.quote(a) for a in cfg.cmd)
    if not ep and not cmd:
        body = 'if [ $# -gt 0 ]; then exec "$@"; fi\nexec /bin/sh\n'
    elif not ep:
        body = f'if [ $# -gt 0 ]; then exec "$@"; fi\nexec {cmd}\n'
    else:
        body = f'if [ $# -gt 0 ]; then exec {ep} "$@"; fi\nexec {ep} {cmd}\n'
    return "#!/bin/sh\n# From the OCI image config (Entrypoint and Cmd).\n" + body


ACTIONS = {
    "exec": '#!/bin/sh\nfor s in /.singularity.d/env/*.sh; do [ -f "$s" ] && . "$s"; done\nexec "$@"\n',
    "run": '#!/bin/sh\nfor s in /.singularity.d/env/*.sh; do [ -f "$s" ] && . "$s"; done\n'
    'exec /.singularity.d/runscript "$@"\n',
    "shell": '#!/bin/sh\nfor s in /.singularity.d/env/*.sh; do [ -f "$s" ] && . "$s"; done\n'
    'exec /bin/sh "$@"\n',
}


def _real_dir(parent: fstree.Dir, name: str, mode: int, mtime: int) -> fstree.Dir:
    """``parent/name`` as a directory: one already there is kept, anything else replaced."""
    node = parent.children.get(name)
    if isinstance(node, fstree.Dir):
        return node
    d = parent.children[name] = fstree.Dir(fstree.Meta(mode, 0, 0, mtime))
    return d


def _write(parent: fstree.Dir, name: str, text: str, mode: int, mtime: int) -> None:
    """``parent/name`` as a new file owned by root, replacing whatever was there."""
    parent.children[name] = fstree.Inode(
        fstree.FILE, fstree.Meta(mode, 0, 0, mtime), data=text.encode()
    )


def add(root: fstree.Dir, cfg: ImageConfig, mtime: int) -> None:
    """Add the layout to the image's tree (``mtime`` in seconds)."""
    for name in MOUNT_POINTS:
        if name not in root.children:
            _real_dir(root, name, 0o1777 if name == "tmp" else 0o755, mtime)
    sd = _real_dir(root, ".singularity.d", 0o755, mtime)
    env, actions, libs = (_real_dir(sd, sub, 0o755, mtime) for sub in ("env", "actions", "libs"))
    _write(env, "01-base.sh", "#!/bin/sh\n", 0o755, mtime)
    _write(env, "10-docker2singularity.sh", env_script(cfg), 0o755, mtime)
    _write(env, "90-environment.sh", "#!/bin/sh\n", 0o755, mtime)
    _write(sd, "runscript", runscript(cfg), 0o755, mtime)
    labels = json.dumps(cfg.labels or {}, sort_keys=True, indent=1) + "\n"
    _write(sd, "labels.json", labels, 0o644, mtime)
    for name, text in ACTIONS.items():
        _write(actions, name, text, 0o755, mtime)
    if "singularity" not in root.children:
        root.children["singularity"] = fstree.Inode(
            fstree.SYMLINK, fstree.Meta(0o777, 0, 0, mtime), target=".singularity.d/runscript"
        )
    for d in (env, actions, libs, sd):
        d.meta.mtime = mtime
