"""sycri's one typed configuration: defaults < YAML file < SYCRI_* environment < flags.

Every key is a field of a frozen dataclass below. A key ``section.name`` is set in the
YAML file as ``section: {name: ...}``, by the environment variable
``SYCRI_SECTION_NAME`` and by the flag ``--section-name`` (top-level keys drop the
section). Loading validates everything before sycri creates anything, so a bad value
is one clear message and exit status 2, never a half-started node.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ENV_PREFIX = "SYCRI_"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key and the problem."""


@dataclass(frozen=True)
class RuntimeHandler:
    """An OCI runtime selectable by a RuntimeClass handler name."""

    binary: str = "runc"
    root: str = ""  # runc --root; empty means <run_dir>/runtime/<handler name>


@dataclass(frozen=True)
class StreamingConfig:
    address: str = "127.0.0.1:0"  # port 0: a free port chosen at start
    token_ttl_seconds: float = 60.0
    idle_timeout_seconds: float = 14400.0
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class CniConfig:
    bin_dirs: tuple[str, ...] = ("/opt/cni/bin", "/usr/lib/cni")
    conf_dir: str = "/etc/cni/net.d"
    # The built-in network used when conf_dir holds no configuration.
    default_subnet: str = "10.88.0.0/16"
    default_bridge: str = "sycri0"


@dataclass(frozen=True)
class ImageConfig:
    registries_conf: str = ""  # containers-registries.conf v2 file; empty: none
    docker_config: str = ""  # docker config.json with credentials; empty: none
    squashfs_compression: str = "zstd"
    pull_progress_timeout_seconds: float = 300.0
    max_concurrent_downloads: int = 3
    # Keep verified layer blobs so images sharing a layer do not download it again;
    # a blob goes when the last image built from it is removed.
    keep_layers: bool = False
    library_url: str = "https://library.sylabs.io"  # Sylabs library API for library://
    # Bounds on what one image may unpack (hostile registries): past one the pull fails
    # with RESOURCE_EXHAUSTED. Generous enough for a 20 GB HPC image.
    max_image_bytes: int = 64 << 30  # uncompressed layer bytes, or a SIF's size
    max_image_entries: int = 5_000_000  # tar entries over all layers
    max_layers: int = 256
    max_file_bytes: int = 32 << 30  # one regular file
    # Which SIFs the kernel's squashfs driver may parse: own (built by sycri), signed (also
    # SIFs signed by a trusted key), all. The others are mounted with squashfuse.
    kernel_mount: str = "signed"
    # accept, require-signed (a valid PGP or DSSE signature over the system partition) or
    # require-trusted (signed by a key in trusted_keyrings).
    sif_policy: str = "accept"
    trusted_keyrings: tuple[str, ...] = ()  # PGP public keys (armored/binary) or PEM keys
    # Read-only directories of SIF files shared by many nodes (NFS, Lustre, CephFS), each
    # with a sycri-index.yaml naming its images: served in place, never pulled or removed.
    sif_stores: tuple[str, ...] = ()
    # How long an image's mount stays once its last container is removed, so the next
    # container of the image need not mount it again; 0: unmounted with its last user.
    mount_idle_seconds: float = 300.0


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "plain"


@dataclass(frozen=True)
class Config:
    socket: str = "/run/sycri/sycri.sock"
    root_dir: str = "/var/lib/sycri"
    run_dir: str = "/run/sycri"
    pod_log_dir: str = "/var/log/pods"
    cgroup_driver: str = "auto"  # auto, cgroupfs or systemd
    default_runtime: str = "runc"
    runtimes: dict[str, RuntimeHandler] = field(default_factory=lambda: {"runc": RuntimeHandler()})
    conmon: str = "conmon"
    # conmon's cgroup: "pod" (a leaf beside the container, as CRI-O), a cgroupfs path or
    # a systemd slice; never sycri's own, which a container engine kills on a restart.
    conmon_cgroup: str = "pod"
    # Where the host's root is seen (the node image mounts it at /host): volume host
    # paths are resolved under it.
    host_root: str = "/"
    # conmon's per-container log size limit in bytes (kubelet rotates logs itself); -1: none
    container_log_max_bytes: int = -1
    # Every container's pids.max (CRI has no field for it; CRI-O's pids_limit); 0: none
    # of sycri's, the pod's limit (kubelet's podPidsLimit) still applies.
    pids_limit: int = 0
    # Default ulimits for every container ("nofile=1048576:1048576"); pods may override
    # them with the sycri.io/ulimits annotation, within max_ulimits.
    default_ulimits: tuple[str, ...] = ()
    # How far the annotation may raise a hard rlimit above the node's value
    # ("memlock=unlimited" for RDMA nodes); empty: a pod can only lower them.
    max_ulimits: tuple[str, ...] = ()
    apparmor_default_profile: str = ""  # a loaded profile for RuntimeDefault; "": none
    # CDI spec directories, later ones winning for the same device (the CDI default).
    cdi_spec_dirs: tuple[str, ...] = ("/etc/cdi", "/var/run/cdi")
    metrics_address: str = "127.0.0.1:9810"  # empty: no metrics endpoint
    shutdown_grace_seconds: float = 10.0
    event_buffer: int = 1000  # container events held per GetContainerEvents client
    stats_disk_max_age_seconds: float = 2.0  # how stale a writable-layer walk may be
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    cni: CniConfig = field(default_factory=CniConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def runtime_root(self, handler: str) -> Path:
        configured = self.runtimes[handler].root
        return Path(configured) if configured else Path(self.run_dir) / "runtime" / handler

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``sycri config show`` (tuples become lists)."""
        plain: dict[str, Any] = _plain(dataclasses.asdict(self))
        return plain


_SECTIONS = {"streaming", "cni", "images", "log"}
_CHOICES = {
    "cgroup_driver": ("auto", "cgroupfs", "systemd"),
    "log.level": ("debug", "info", "warning", "error"),
    "log.format": ("plain", "json"),
    "images.squashfs_compression": ("gzip", "lz4", "lzo", "xz", "zstd", "lzma"),
    "images.kernel_mount": ("own", "signed", "all"),
    "images.sif_policy": ("accept", "require-signed", "require-trusted"),
}
_ABSOLUTE = {"socket", "root_dir", "run_dir", "pod_log_dir", "cni.conf_dir", "host_root"}
_POSITIVE = {
    "shutdown_grace_seconds",
    "event_buffer",
    "streaming.token_ttl_seconds",
    "streaming.idle_timeout_seconds",
    "images.pull_progress_timeout_seconds",
    "images.max_concurrent_downloads",
    "images.max_image_bytes",
    "images.max_image_entries",
    "images.max_layers",
    "images.max_file_bytes",
}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def keys() -> dict[str, type]:
    """Every scalar key as ``section.name`` (or ``name``) with its type; runtimes excluded."""
    out: dict[str, type] = {}
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if f.name in _SECTIONS:
            sub = hints[f.name]
            for sf in dataclasses.fields(sub):
                out[f"{f.name}.{sf.name}"] = typing.get_type_hints(sub)[sf.name]
        elif f.name != "runtimes":
            out[f.name] = hints[f.name]
    return out


def flag_name(key: str) -> str:
    return "--" + key.replace(".", "-").replace("_", "-")


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _coerce(key: str, typ: type, raw: Any, *, from_text: bool) -> Any:
    """Convert a raw value to the key's type; text (env, flags) is parsed leniently."""
    origin = typing.get_origin(typ)
    if origin is tuple:
        if from_text and isinstance(raw, str):
            raw = [p for p in raw.split(",") if p]
        if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
            raise ConfigError(f"{key}: expected a list of strings, got {raw!r}")
        return tuple(raw)
    if typ is bool:
        if (
            from_text
            and isinstance(raw, str)
            and raw.lower() in ("1", "true", "yes", "0", "false", "no")
        ):
            return raw.lower() in ("1", "true", "yes")
        if not isinstance(raw, bool):
            raise ConfigError(f"{key}: expected true or false, got {raw!r}")
        return raw
    if typ in (int, float):
        if from_text and isinstance(raw, str):
            try:
                raw = typ(raw)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {raw!r}") from None
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{key}: expected a number, got {raw!r}")
        if typ is int and isinstance(raw, float) and not raw.is_integer():
            raise ConfigError(f"{key}: expected a whole number, got {raw!r}")
        return typ(raw)
    if not isinstance(raw, str):
        raise ConfigError(f"{key}: expected a string, got {raw!r}")
    return raw


def _flatten_file(data: Any, source: str) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys")
    known = keys()
    flat: dict[str, Any] = {}
    for name, value in data.items():
        if name == "runtimes":
            flat["runtimes"] = value
        elif name in _SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {name}: expected a mapping")
            for sub, subval in value.items():
                key = f"{name}.{sub}"
                if key not in known:
                    raise ConfigError(f"{source}: unknown key {key!r}")
                flat[key] = subval
        elif name in known:
            flat[name] = value
        else:
            raise ConfigError(f"{source}: unknown key {name!r}")
    return flat


def _runtimes(raw: Any) -> dict[str, RuntimeHandler]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("runtimes: expected a non-empty mapping of handler name to settings")
    out = {}
    for name, spec in raw.items():
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"runtimes: bad handler name {name!r}")
        spec = spec or {}
        if not isinstance(spec, dict):
            raise ConfigError(f"runtimes.{name}: expected a mapping")
        unknown = set(spec) - {"binary", "root"}
        if unknown:
            raise ConfigError(f"runtimes.{name}: unknown key {sorted(unknown)[0]!r}")
        for k, v in spec.items():
            if not isinstance(v, str):
                raise ConfigError(f"runtimes.{name}.{k}: expected a string, got {v!r}")
        out[name] = RuntimeHandler(**spec)
    return out


def _check_address(key: str, value: str) -> None:
    if not value and key == "metrics_address":
        return
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ConfigError(f"{key}: {host!r} is not an IP address") from None


def validate(cfg: Config) -> Config:
    """Reject impossible values; returns ``cfg`` unchanged when it is usable."""
    values = {k: _get(cfg, k) for k in keys()}
    for key, choices in _CHOICES.items():
        if values[key] not in choices:
            raise ConfigError(f"{key}: {values[key]!r} is not one of {', '.join(choices)}")
    for key in _ABSOLUTE:
        if not os.path.isabs(values[key]):
            raise ConfigError(f"{key}: must be an absolute path, got {values[key]!r}")
    for key in ("cni.bin_dirs", "images.trusted_keyrings", "images.sif_stores"):
        for p in values[key]:
            if not os.path.isabs(p):
                raise ConfigError(f"{key}: must hold absolute paths, got {p!r}")
    for key in _POSITIVE:
        if values[key] <= 0:
            raise ConfigError(f"{key}: must be greater than zero, got {values[key]!r}")
    _check_address("metrics_address", cfg.metrics_address)
    _check_address("streaming.address", cfg.streaming.address)
    if bool(cfg.streaming.tls_cert) != bool(cfg.streaming.tls_key):
        raise ConfigError("streaming.tls_cert and streaming.tls_key must be set together")
    try:
        net = ipaddress.ip_network(cfg.cni.default_subnet)
    except ValueError:
        raise ConfigError(
            f"cni.default_subnet: not a network: {cfg.cni.default_subnet!r}"
        ) from None
    if cfg.images.sif_policy == "require-trusted" and not cfg.images.trusted_keyrings:
        raise ConfigError("images.sif_policy: require-trusted needs images.trusted_keyrings")
    for keyring in cfg.images.trusted_keyrings:
        if not os.path.isfile(keyring):
            raise ConfigError(f"images.trusted_keyrings: {keyring!r} is not a readable file")
    if cfg.images.trusted_keyrings:
        from sycri.sif.format import SifError
        from sycri.sif.verify import load_keys

        try:
            load_keys(cfg.images.trusted_keyrings)
        except SifError as exc:
            raise ConfigError(f"images.trusted_keyrings: {exc}") from None
    if net.num_addresses < 4:
        raise ConfigError(f"cni.default_subnet: {net} is too small for pods")
    if cfg.pids_limit < 0:
        raise ConfigError(f"pids_limit: {cfg.pids_limit} is negative (0: no limit)")
    if cfg.images.mount_idle_seconds < 0:
        raise ConfigError(
            f"images.mount_idle_seconds: {cfg.images.mount_idle_seconds} is negative "
            "(0: unmount with the last container)"
        )
    if cfg.default_runtime not in cfg.runtimes:
        raise ConfigError(
            f"default_runtime: {cfg.default_runtime!r} is not among runtimes "
            f"({', '.join(sorted(cfg.runtimes))})"
        )
    for name, handler in cfg.runtimes.items():
        if handler.root and not os.path.isabs(handler.root):
            raise ConfigError(f"runtimes.{name}.root: must be an absolute path")
    from sycri.errors import InvalidArgument
    from sycri.runtime.cgroups.conmon_cgroup import check_setting
    from sycri.runtime.oci.rlimits import rlimits

    problem = check_setting(cfg.conmon_cgroup)
    if problem:
        raise ConfigError(f"conmon_cgroup: {problem}")
    if cfg.cgroup_driver == "systemd" and cfg.conmon_cgroup.startswith("/"):
        raise ConfigError(
            f"conmon_cgroup: {cfg.conmon_cgroup!r} is a path; the systemd driver needs 'pod' "
            "or a slice name such as system.slice"
        )

    try:
        rlimits(cfg.default_ulimits, {}, cfg.max_ulimits)
    except InvalidArgument as exc:
        raise ConfigError(exc.message) from None
    return cfg


def _get(cfg: Config, key: str) -> Any:
    section, _, name = key.rpartition(".")
    return getattr(getattr(cfg, section), name) if section else getattr(cfg, name)


def build(flat: dict[str, Any]) -> Config:
    """A Config from ``section.name`` keys over the defaults."""
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    for key, value in flat.items():
        section, _, name = key.rpartition(".")
        if section:
            sections[section][name] = value
        else:
            top[key] = value
    defaults = Config()
    for s, vals in sections.items():
        if vals:
            top[s] = dataclasses.replace(getattr(defaults, s), **vals)
    return dataclasses.replace(defaults, **top)


def load(
    path: str | None = None,
    env: typing.Mapping[str, str] | None = None,
    overrides: dict[str, str] | None = None,
) -> Config:
    """Merge defaults, the YAML file, ``SYCRI_*`` variables and flag overrides, then validate."""
    env = os.environ if env is None else env
    known = keys()
    flat: dict[str, Any] = {}
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        for key, raw in _flatten_file(data, path).items():
            flat[key] = (
                _runtimes(raw)
                if key == "runtimes"
                else _coerce(key, known[key], raw, from_text=False)
            )
    valid_env = {env_name(k): k for k in known}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in _IGNORED_ENV:
            continue
        if name not in valid_env:
            raise ConfigError(f"unknown environment variable {name}")
        key = valid_env[name]
        flat[key] = _coerce(key, known[key], raw, from_text=True)
    for key, raw in (overrides or {}).items():
        if key not in known:
            raise ConfigError(f"unknown key {key!r}")
        flat[key] = _coerce(key, known[key], raw, from_text=True)
    try:
        cfg = build(flat)
    except TypeError as exc:  # pragma: no cover - keys are checked above
        raise ConfigError(str(exc)) from None
    return validate(cfg)


# Variables with the prefix that are not configuration keys.
# SYCRI_TEST_*: sycri.crashpoint and sycri.blocking (tests), not settings
_IGNORED_ENV = {
    "SYCRI_CONFIG",
    "SYCRI_TEST_CRASH_AT",
    "SYCRI_TEST_LOOP_CHECK",
    "SYCRI_TEST_SLOW_CALLBACKS",
}


def detect_cgroup_driver(cfg: Config) -> str:
    """The cgroup driver in use: the configured one, else systemd when it runs as init."""
    if cfg.cgroup_driver != "auto":
        return cfg.cgroup_driver
    if os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        return "systemd"
    return "cgroupfs"
