"""The ``/.singularity.d`` layout, so Singularity/Apptainer can run the same SIF.

Written from the OCI image config the way Singularity's own OCI conversion does: an
environment script from ``Env``, a ``runscript`` from ``Entrypoint`` and ``Cmd``, and
``labels.json``. The root filesystem came from hostile layers, so nothing here follows a
symlink: an existing non-directory ``/.singularity.d`` is replaced, never written
through. Every file gets the same fixed time, so the SIF stays reproducible.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
from pathlib import Path

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


def _real_dir(path: Path, mode: int, mtime: int) -> None:
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            raise FileNotFoundError
    except FileNotFoundError:
        os.mkdir(path, mode)
        os.chown(path, 0, 0, follow_symlinks=False)
        os.chmod(path, mode)
        os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def _write(path: Path, text: str, mode: int, mtime: int) -> None:
    try:
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, text.encode())
        os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    os.utime(path, ns=(mtime, mtime), follow_symlinks=False)


def add(root: Path, cfg: ImageConfig, mtime_ns: int) -> None:
    """Write the layout into ``root`` (blocking; call from a worker thread)."""
    root = Path(root)
    for name in MOUNT_POINTS:
        p = root / name
        if not os.path.lexists(p):
            _real_dir(p, 0o1777 if name == "tmp" else 0o755, mtime_ns)
    sd = root / ".singularity.d"
    _real_dir(sd, 0o755, mtime_ns)
    for sub in ("env", "actions", "libs"):
        _real_dir(sd / sub, 0o755, mtime_ns)
    _write(sd / "env" / "01-base.sh", "#!/bin/sh\n", 0o755, mtime_ns)
    _write(sd / "env" / "10-docker2singularity.sh", env_script(cfg), 0o755, mtime_ns)
    _write(sd / "env" / "90-environment.sh", "#!/bin/sh\n", 0o755, mtime_ns)
    _write(sd / "runscript", runscript(cfg), 0o755, mtime_ns)
    labels = json.dumps(cfg.labels or {}, sort_keys=True, indent=1) + "\n"
    _write(sd / "labels.json", labels, 0o644, mtime_ns)
    for name, text in ACTIONS.items():
        _write(sd / "actions" / name, text, 0o755, mtime_ns)
    link = root / "singularity"
    if not os.path.lexists(link):
        os.symlink(".singularity.d/runscript", link)
        os.utime(link, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    for p in (sd / "env", sd / "actions", sd / "libs", sd):
        os.utime(p, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
