"""What the installer writes on the host to start the proxy: a systemd unit, or a shell
script for hosts without systemd (pure text rendering)."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

UNIT_NAME = "sycri-proxy.service"
CGROUP = "sycri-proxy"  # the non-systemd supervisor's own top-level cgroup
CONFIG_IN_ROOT = "/etc/sycri-proxy/proxy.yaml"  # where the proxy reads it inside its root
SYCRI = "/opt/sycri/bin/sycri"  # the node image's sycri, inside its root


def systemd_unit(rootfs: PurePosixPath, config: PurePosixPath, version: str) -> str:
    """The unit: the node image's own files as the root directory (no Python or
    libraries needed on the host), the host's /run for the three sockets."""
    return f"""\
# Written by the sycri chart's installer (sycri {version}); removed by its uninstaller.
[Unit]
Description=sycri CRI proxy: kubelet's runtime endpoint (sycri handlers to sycri, the rest to the node's runtime)
Documentation=https://github.com/sycri/sycri/blob/main/docs/deploy.md
After=local-fs.target network.target containerd.service crio.service
Before=kubelet.service

[Service]
Type=simple
RootDirectory={rootfs}
MountAPIVFS=yes
BindPaths=/run
BindReadOnlyPaths={config}:{CONFIG_IN_ROOT}
ExecStart={SYCRI} proxy serve --config {CONFIG_IN_ROOT}
Restart=always
RestartSec=1
KillMode=mixed
TimeoutStopSec=15

[Install]
WantedBy=multi-user.target
"""


def start_script(rootfs: PurePosixPath, config: PurePosixPath, pidfile: PurePosixPath) -> str:
    """For hosts without systemd: run from the host's mount namespace (the installer
    enters it with nsenter; the host's init may run it at boot), it leaves the caller's
    cgroup, makes a private mount namespace with the node image's root and the host's
    /run, and starts the supervisor there, detached."""
    q = shlex.quote
    r = q(str(rootfs))
    return f"""\
#!/bin/sh
# Written by the sycri chart's installer; removed by its uninstaller.
set -eu
if [ -s {q(str(pidfile))} ] && kill -0 "$(cat {q(str(pidfile))})" 2>/dev/null; then
    exit 0  # already supervised
fi
cg=/sys/fs/cgroup/{CGROUP}
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p "$cg" && echo $$ > "$cg/cgroup.procs"
else
    for h in /sys/fs/cgroup/*/; do
        [ -L "${{h%/}}" ] && continue
        mkdir -p "${{h}}{CGROUP}" && echo $$ > "${{h}}{CGROUP}/cgroup.procs" || true
    done
fi
setsid unshare --mount --propagation slave sh -c '
    set -e
    mount --rbind /run {r}/run
    mount --rbind /proc {r}/proc
    mount --rbind /sys {r}/sys
    mount --rbind /dev {r}/dev
    mkdir -p {r}/etc/sycri-proxy
    touch {r}{CONFIG_IN_ROOT}
    mount --bind {q(str(config))} {r}{CONFIG_IN_ROOT}
    exec chroot {r} {SYCRI} proxy supervise --config {CONFIG_IN_ROOT} --pidfile {q(str(pidfile))}
' </dev/null >>/var/log/sycri-proxy.log 2>&1 &
"""
