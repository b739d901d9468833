"""The proxy's own settings: where it listens, the two backends, sycri's handlers.

Kept apart from sycri's config: the proxy runs on the host from its own small file
(written by the installer) and must start without sycri's ConfigMap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sycri.config import ConfigError

DEFAULT_LISTEN = "unix:///run/sycri-proxy/cri.sock"
DEFAULT_RUNTIME = "unix:///run/containerd/containerd.sock"
DEFAULT_SYCRI = "unix:///run/sycri/sycri.sock"
_HANDLER = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class ProxySettings:
    listen: str = DEFAULT_LISTEN
    runtime_endpoint: str = DEFAULT_RUNTIME  # the node's existing runtime
    sycri_endpoint: str = DEFAULT_SYCRI
    sycri_handlers: tuple[str, ...] = ("runc",)  # RuntimeClass handlers that go to sycri
    log_level: str = "info"

    @property
    def listen_path(self) -> Path:
        return Path(self.listen.removeprefix("unix://"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "listen": self.listen,
            "runtime_endpoint": self.runtime_endpoint,
            "sycri_endpoint": self.sycri_endpoint,
            "sycri_handlers": list(self.sycri_handlers),
            "log_level": self.log_level,
        }


def _endpoint(key: str, value: object) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"unix:///\S+", value):
        raise ConfigError(f"{key}: {value!r} is not unix:///absolute/path")
    return value


def parse(data: dict[str, Any]) -> ProxySettings:
    """Validated settings from plain data; unknown keys and bad values are refused."""
    known = set(ProxySettings().as_dict())
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown proxy settings: {', '.join(sorted(unknown))}")
    base = ProxySettings()
    handlers = data.get("sycri_handlers", list(base.sycri_handlers))
    if not isinstance(handlers, list | tuple) or not handlers:
        raise ConfigError("sycri_handlers: a non-empty list of RuntimeClass handler names")
    for h in handlers:
        # "" is the handler of every pod without a RuntimeClass, sycri's own pod among
        # them: routing it to sycri would bring back the bootstrap loop.
        if not isinstance(h, str) or not _HANDLER.match(h):
            raise ConfigError(f"sycri_handlers: {h!r} is not a RuntimeClass handler name")
    listen = _endpoint("listen", data.get("listen", base.listen))
    runtime = _endpoint("runtime_endpoint", data.get("runtime_endpoint", base.runtime_endpoint))
    sycri = _endpoint("sycri_endpoint", data.get("sycri_endpoint", base.sycri_endpoint))
    if len({listen, runtime, sycri}) != 3:
        raise ConfigError("listen, runtime_endpoint and sycri_endpoint must all differ")
    level = data.get("log_level", base.log_level)
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log_level: {level!r} is not debug, info, warning or error")
    return ProxySettings(listen, runtime, sycri, tuple(handlers), level)


def load(path: str | None, overrides: dict[str, Any] | None = None) -> ProxySettings:
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: not a mapping")
        data.update(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return parse(data)
