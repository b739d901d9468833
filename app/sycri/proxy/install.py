"""Putting the proxy on the host and taking it off again (the installer's init container
runs this with the host's root mounted at ``host_root``).

Host layout, all under /opt/sycri (nothing else of sycri's is written on the host
except the unit or the start script's pidfile and log):

    /opt/sycri/<version>/rootfs   the node image's own files, the proxy's root directory
    /opt/sycri/current            symlink to the version the proxy runs
    /opt/sycri/proxy.yaml         the proxy's settings
    /opt/sycri/sycri-proxy.sh     (hosts without systemd) the start script
    /etc/local.d/sycri-proxy.start  (OpenRC hosts) runs it at boot
    /etc/systemd/system/sycri-proxy.service   (systemd hosts) the unit
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

from sycri.errors import FailedPrecondition, InvalidArgument
from sycri.proxy import supervisor, unit
from sycri.proxy.settings import ProxySettings

log = logging.getLogger("sycri.proxy.install")

OPT = PurePosixPath("/opt/sycri")
UNIT_PATH = PurePosixPath("/etc/systemd/system") / unit.UNIT_NAME
PIDFILE = PurePosixPath("/run/sycri-proxy/supervisor.pid")
LOCAL_D = PurePosixPath("/etc/local.d/sycri-proxy.start")  # OpenRC hosts: start at boot
# What of the node image the proxy's root needs (Debian's merged /usr: bin, lib, sbin
# are symlinks into it); the virtual file systems are mounted over empty directories.
IMAGE_PARTS = ("usr", "etc", "opt/sycri", "bin", "sbin", "lib", "lib64", "var/lib/dpkg")
# Not needed to run the proxy: docs, translations, the CNI plugins (about 100 MB).
LEFT_OUT = ("usr/share/doc", "usr/share/man", "usr/share/locale", "usr/lib/cni")
EMPTY_DIRS = ("proc", "sys", "dev", "run", "tmp", "var/tmp", "etc/sycri-proxy")
_VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}$")


@dataclass(frozen=True)
class Host:
    """Host paths as this process sees them: ``root`` is where the host's / is mounted."""

    root: Path

    def path(self, p: PurePosixPath | str) -> Path:
        return self.root / str(p).lstrip("/")

    @property
    def opt(self) -> Path:
        return self.path(OPT)

    def has_systemd(self) -> bool:
        """systemd's own test (sd_booted): /run/systemd/system exists."""
        return self.path("/run/systemd/system").is_dir()


def _copy_image(image_root: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for part in IMAGE_PARTS:
        src = image_root / part
        if not (src.exists() or src.is_symlink()):
            continue
        target = tmp / part
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", str(src), str(target)], check=True)
    for d in LEFT_OUT:
        shutil.rmtree(tmp / d, ignore_errors=True)
    for d in EMPTY_DIRS:
        (tmp / d).mkdir(parents=True, exist_ok=True)
    tmp.rename(dest)  # a version dir is complete or absent


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` unless it is there already; True when the file changed."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.rename(path)
    return True


def _switch(link: Path, target: str) -> bool:
    if link.is_symlink() and os.readlink(link) == target:
        return False
    tmp = link.with_name(link.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    tmp.rename(link)
    return True


def _prune(opt: Path, keep: list[str]) -> None:
    for d in opt.iterdir():
        if d.is_dir() and not d.is_symlink() and d.name not in keep and _VERSION.match(d.name):
            shutil.rmtree(d)


def host_command(host: Host, *argv: str) -> list[str]:
    """``argv`` run in the host's mount namespace (the host's binaries, its systemctl)."""
    if host.root == Path("/"):
        return list(argv)
    return ["chroot", str(host.root), *argv]


def install(
    host: Host,
    version: str,
    settings: ProxySettings,
    image_root: Path = Path("/"),
    start: bool = True,
) -> list[str]:
    """Install (or upgrade to) ``version`` and (re)start the proxy; idempotent, so the
    init container may run it on every pod start. Returns the host commands it ran."""
    if not _VERSION.match(version):
        raise InvalidArgument(f"version {version!r} is not a plain version name")
    opt = host.opt
    opt.mkdir(parents=True, exist_ok=True)
    vdir = opt / version
    if not (vdir / "rootfs").is_dir():
        vdir.mkdir(exist_ok=True)
        _copy_image(image_root, vdir / "rootfs")
    rootfs = OPT / version / "rootfs"
    config = OPT / "proxy.yaml"
    changed = _atomic_write(host.path(config), yaml.safe_dump(settings.as_dict(), sort_keys=False))
    previous = os.readlink(opt / "current") if (opt / "current").is_symlink() else None
    changed |= _switch(opt / "current", version)
    ran: list[str] = []
    if host.has_systemd():
        changed |= _atomic_write(host.path(UNIT_PATH), unit.systemd_unit(rootfs, config, version))
        cmds = [["systemctl", "daemon-reload"], ["systemctl", "enable", unit.UNIT_NAME]]
        # restart only on a change: the proxy's restart is kubelet's only outage
        cmds.append(["systemctl", "restart" if changed else "start", unit.UNIT_NAME])
    else:
        script = OPT / "sycri-proxy.sh"
        _atomic_write(host.path(script), unit.start_script(rootfs, config, PIDFILE), 0o755)
        if host.path(LOCAL_D.parent).is_dir():
            # OpenRC's local service runs /etc/local.d/*.start at boot
            _atomic_write(host.path(LOCAL_D), f"#!/bin/sh\nexec /bin/sh {script}\n", 0o755)
        cmds = [["nsenter", "--target", "1", "--mount", "--", "/bin/sh", str(script)]]
        pid = supervisor.running(host.path(PIDFILE))
        if changed and pid is not None:
            # the running supervisor chroots into the old version: stop it, start anew
            cmds.insert(0, ["kill", "-TERM", str(pid)])
    if start:
        for cmd in cmds:
            full = cmd if cmd[0] in ("nsenter", "kill") else host_command(host, *cmd)
            subprocess.run(full, check=True, timeout=120)
            ran.append(" ".join(full))
    # the current version and the one before: a rollback needs no copy
    keep = [version] + ([previous] if previous and previous != version else [])
    _prune(opt, keep)
    return ran


def kubelet_uses(host: Host, listen: str) -> str:
    """Where the host's kubelet is still configured with the proxy's socket ("" when
    nowhere): its command line and the files kubeadm and distributions keep it in."""
    sock = listen.removeprefix("unix://")
    proc = host.path("/proc")
    for d in proc.iterdir() if proc.is_dir() else ():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (d / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"kubelet") and sock.encode() in b" ".join(argv):
                return f"the running kubelet (pid {d.name})"
    for f in (
        "/var/lib/kubelet/config.yaml",
        "/var/lib/kubelet/kubeadm-flags.env",
        "/etc/default/kubelet",
        "/etc/sysconfig/kubelet",
    ):
        with contextlib.suppress(OSError):
            if sock in host.path(f).read_text():
                return f
    return ""


def uninstall(host: Host, listen: str, start: bool = True, force: bool = False) -> list[str]:
    """Stop the proxy and remove everything install wrote. Refused while kubelet is
    still pointed at the proxy: kubelet would be left without a runtime."""
    user = kubelet_uses(host, listen)
    if user and not force:
        raise FailedPrecondition(
            f"kubelet still uses the proxy's socket {listen} ({user}): point kubelet back "
            "at the node's runtime first (docs/deploy.md, Uninstalling)"
        )
    ran: list[str] = []
    unit_file = host.path(UNIT_PATH)
    if unit_file.exists() and start:
        for cmd in (["systemctl", "disable", "--now", unit.UNIT_NAME],):
            full = host_command(host, *cmd)
            subprocess.run(full, check=False, timeout=120)
            ran.append(" ".join(full))
    pid = supervisor.running(host.path(PIDFILE))
    if pid is not None and start:
        os.kill(pid, 15)
        ran.append(f"kill -TERM {pid}")
    with contextlib.suppress(FileNotFoundError):
        unit_file.unlink()
    with contextlib.suppress(FileNotFoundError):
        host.path(LOCAL_D).unlink()
    if start and host.has_systemd() and ran:
        subprocess.run(host_command(host, "systemctl", "daemon-reload"), check=False)
    shutil.rmtree(host.opt, ignore_errors=True)
    with contextlib.suppress(FileNotFoundError):
        host.path("/var/log/sycri-proxy.log").unlink()
    shutil.rmtree(host.path(PIDFILE.parent), ignore_errors=True)
    return ran
