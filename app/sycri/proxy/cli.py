"""``sycri proxy``: serve, supervise, install, uninstall, show-unit."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from sycri import __version__
from sycri.config import ConfigError
from sycri.errors import SycriError
from sycri.proxy import install, settings, unit


def _settings_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="the proxy's YAML settings file")
    p.add_argument("--listen", help=f"socket kubelet uses (default {settings.DEFAULT_LISTEN})")
    p.add_argument("--runtime-endpoint", help="the node's existing runtime (containerd, CRI-O)")
    p.add_argument("--sycri-endpoint", help="sycri's socket")
    p.add_argument(
        "--sycri-handler",
        action="append",
        dest="sycri_handlers",
        metavar="NAME",
        help="a RuntimeClass handler whose pods sycri runs (repeat for more)",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def _load(opts: argparse.Namespace) -> settings.ProxySettings:
    return settings.load(
        opts.config,
        {
            "listen": opts.listen,
            "runtime_endpoint": opts.runtime_endpoint,
            "sycri_endpoint": opts.sycri_endpoint,
            "sycri_handlers": opts.sycri_handlers,
            "log_level": opts.log_level,
        },
    )


def _flags(opts: argparse.Namespace) -> list[str]:
    """The settings flags given, to pass on to ``proxy serve``."""
    out = ["--config", opts.config] if opts.config else []
    for name in ("listen", "runtime_endpoint", "sycri_endpoint", "log_level"):
        value = getattr(opts, name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), value]
    for h in opts.sycri_handlers or ():
        out += ["--sycri-handler", h]
    return out


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


def _serve(opts: argparse.Namespace) -> int:
    from sycri.proxy.server import serve

    cfg = _load(opts)
    _logging(cfg.log_level)
    return asyncio.run(serve(cfg))


def _supervise(opts: argparse.Namespace) -> int:
    from sycri.proxy.supervisor import Supervisor, join_cgroup, serve_command

    cfg = _load(opts)  # refuse a bad file here, not in a restart loop
    _logging(cfg.log_level)
    if opts.cgroup:
        join_cgroup(opts.cgroup)
    pidfile = Path(opts.pidfile) if opts.pidfile else None
    return Supervisor(serve_command(_flags(opts)), pidfile).run()


def _install(opts: argparse.Namespace) -> int:
    cfg = _load(opts)
    _logging(cfg.log_level)
    host = install.Host(Path(opts.host_root))
    ran = install.install(host, opts.version or __version__, cfg, Path(opts.image_root))
    for cmd in ran:
        print(f"ran: {cmd}")
    print(f"sycri proxy {opts.version or __version__} installed under {host.opt}")
    return 0


def _uninstall(opts: argparse.Namespace) -> int:
    cfg = _load(opts)
    _logging(cfg.log_level)
    host = install.Host(Path(opts.host_root))
    for cmd in install.uninstall(host, cfg.listen, force=opts.force):
        print(f"ran: {cmd}")
    print(f"sycri proxy removed from {host.opt}")
    return 0


def _show_unit(opts: argparse.Namespace) -> int:
    version = opts.version or __version__
    rootfs = install.OPT / version / "rootfs"
    sys.stdout.write(unit.systemd_unit(rootfs, install.OPT / "proxy.yaml", version))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    proxy = sub.add_parser("proxy", help="the CRI front endpoint kubelet talks to")
    psub = proxy.add_subparsers(dest="proxy_command", required=True)
    serve = psub.add_parser("serve", help="serve CRI, routing to sycri or the node's runtime")
    _settings_flags(serve)
    serve.set_defaults(func=_guard(_serve))
    sup = psub.add_parser("supervise", help="run 'proxy serve' and restart it when it exits")
    _settings_flags(sup)
    sup.add_argument("--pidfile", help="where the supervisor records its pid")
    sup.add_argument("--cgroup", help="top-level cgroup to move into first")
    sup.set_defaults(func=_guard(_supervise))
    inst = psub.add_parser("install", help="put the proxy on the host and start it")
    _settings_flags(inst)
    inst.add_argument("--host-root", required=True, help="where the host's / is mounted")
    inst.add_argument("--image-root", default="/", help="the node image's root (default /)")
    inst.add_argument("--version", help=f"version directory name (default {__version__})")
    inst.set_defaults(func=_guard(_install))
    rm = psub.add_parser("uninstall", help="stop the proxy and remove it from the host")
    _settings_flags(rm)
    rm.add_argument("--host-root", required=True, help="where the host's / is mounted")
    rm.add_argument("--force", action="store_true", help="even while kubelet still uses it")
    rm.set_defaults(func=_guard(_uninstall))
    show = psub.add_parser("unit", help="print the systemd unit install writes")
    show.add_argument("--version", help=f"version (default {__version__})")
    show.set_defaults(func=_show_unit)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(opts: argparse.Namespace) -> int:
        try:
            return fn(opts)
        except ConfigError:
            raise
        except SycriError as exc:
            print(f"sycri proxy: {exc.message}", file=sys.stderr)
            return 1

    return run
