"""The container's process: argv, environment, working directory, user, stop signal."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.oci import users
from sycri.runtime.oci.inputs import ImageConfig, Sandbox

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SIGNALS = {
    "SIGHUP": 1, "SIGINT": 2, "SIGQUIT": 3, "SIGILL": 4, "SIGTRAP": 5, "SIGABRT": 6,
    "SIGBUS": 7, "SIGFPE": 8, "SIGKILL": 9, "SIGUSR1": 10, "SIGSEGV": 11, "SIGUSR2": 12,
    "SIGPIPE": 13, "SIGALRM": 14, "SIGTERM": 15, "SIGSTKFLT": 16, "SIGCHLD": 17,
    "SIGCONT": 18, "SIGSTOP": 19, "SIGTSTP": 20, "SIGTTIN": 21, "SIGTTOU": 22, "SIGURG": 23,
    "SIGXCPU": 24, "SIGXFSZ": 25, "SIGVTALRM": 26, "SIGPROF": 27, "SIGWINCH": 28,
    "SIGIO": 29, "SIGPWR": 30, "SIGSYS": 31,
}  # fmt: skip


def process_args(cfg: api_pb2.ContainerConfig, image: ImageConfig) -> list[str]:
    """kubelet's rule: command replaces ENTRYPOINT (and drops CMD), args replace CMD."""
    if cfg.command:
        argv = list(cfg.command) + list(cfg.args)
    elif cfg.args:
        argv = list(image.entrypoint) + list(cfg.args)
    else:
        argv = list(image.entrypoint) + list(image.cmd)
    if not argv or not argv[0]:
        raise InvalidArgument("command: no command given and the image has no ENTRYPOINT or CMD")
    return argv


def environment(
    cfg: api_pb2.ContainerConfig, image: ImageConfig, sandbox: Sandbox, extra: Sequence[str] = ()
) -> list[str]:
    """The image's env, overridden key by key by CDI edits and then the request's envs."""
    env: dict[str, str] = {}
    for item in image.env:
        key, _, value = item.partition("=")
        if key:
            env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    if sandbox.hostname:
        env.setdefault("HOSTNAME", sandbox.hostname)
    if cfg.tty:
        env.setdefault("TERM", "xterm")
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    for kv in cfg.envs:
        value = kv.value.decode(errors="replace") if isinstance(kv.value, bytes) else kv.value
        if not kv.key or "=" in kv.key or "\x00" in kv.key or "\x00" in value:
            raise InvalidArgument(f"envs: bad variable name {excerpt(kv.key)}")
        env[kv.key] = value
    return [f"{k}={v}" for k, v in env.items()]


def working_dir(cfg: api_pb2.ContainerConfig, image: ImageConfig) -> str:
    wd = cfg.working_dir or image.working_dir or "/"
    if not wd.startswith("/") or "\x00" in wd:
        raise InvalidArgument(f"working_dir: {excerpt(wd)} is not an absolute path")
    return posixpath.normpath(wd)


def stop_signal(cfg: api_pb2.ContainerConfig, image: ImageConfig) -> int:
    """The request's stop_signal, else the image's StopSignal, else SIGTERM."""
    if cfg.stop_signal:
        name = api_pb2.Signal.Name(cfg.stop_signal).removeprefix("SIGNAL_")
        return SIGNALS.get(name, 15)
    raw = image.stop_signal.strip().upper()
    if not raw:
        return 15
    if raw.isdigit() and 0 < int(raw) < 65:
        return int(raw)
    name = raw if raw.startswith("SIG") else "SIG" + raw
    return SIGNALS.get(name, 15)


def user_request(sc: api_pb2.LinuxContainerSecurityContext) -> users.UserRequest:
    return users.UserRequest(
        run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
        run_as_username=sc.run_as_username,
        run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
        supplemental_groups=tuple(sc.supplemental_groups),
        strict=sc.supplemental_groups_policy == api_pb2.Strict,
    )
