"""The ``sycri`` command line: serve, config show, version, health, proxy, ..."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

import yaml

from sycri import __version__, config


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config file")
    group = parser.add_argument_group("settings (each overrides the file and SYCRI_* variables)")
    for key, typ in config.keys().items():
        kind = (
            "LIST"
            if typ is tuple or getattr(typ, "__origin__", None) is tuple
            else typ.__name__.upper()
        )
        group.add_argument(
            config.flag_name(key),
            dest="set:" + key,
            metavar=kind,
            help=f"{key} (env {config.env_name(key)})",
        )


def load_config(opts: argparse.Namespace) -> config.Config:
    overrides = {k[4:]: v for k, v in vars(opts).items() if k.startswith("set:") and v is not None}
    return config.load(opts.config, overrides=overrides)


def _cmd_serve(opts: argparse.Namespace) -> int:
    from sycri.observability import logs
    from sycri.server import StartupError, serve

    cfg = load_config(opts)
    logs.configure(cfg.log.level, cfg.log.format)
    try:
        return asyncio.run(serve(cfg))
    except StartupError as exc:
        print(f"sycri: {exc}", file=sys.stderr)
        return 1


def _cmd_config_show(opts: argparse.Namespace) -> int:
    cfg = load_config(opts)
    sys.stdout.write(yaml.safe_dump(cfg.as_dict(), sort_keys=False))
    return 0


def _cmd_version(opts: argparse.Namespace) -> int:
    print(f"sycri {__version__} (CRI v1)")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sycri", description="A Kubernetes CRI runtime for SIF images")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the CRI server")
    add_config_flags(serve)
    serve.set_defaults(func=_cmd_serve)
    cfg = sub.add_parser("config", help="configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    show = cfg_sub.add_parser("show", help="print the effective configuration")
    add_config_flags(show)
    show.set_defaults(func=_cmd_config_show)
    ver = sub.add_parser("version", help="print the version")
    ver.set_defaults(func=_cmd_version)
    for register in _extensions():
        register(sub)
    return p


_Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _extensions() -> list[_Register]:
    """Subcommands contributed by the packages (``sif``, ``pull``, ...)."""
    from sycri import health
    from sycri.images import cli as images_cli
    from sycri.proxy import cli as proxy_cli
    from sycri.runtime.oci import cdigen
    from sycri.sif import cli as sif_cli

    return [
        sif_cli.register,
        images_cli.register,
        health.register,
        proxy_cli.register,
        cdigen.register,
    ]


def main(argv: list[str] | None = None) -> int:
    opts = parser().parse_args(argv)
    try:
        func: Callable[[argparse.Namespace], int] = opts.func
        return func(opts)
    except config.ConfigError as exc:
        print(f"sycri: bad configuration: {exc}", file=sys.stderr)
        return 2
