"""``sycri cdi generate``: a CDI spec for the node's NVIDIA GPUs, made from the driver's
own files, for nodes without NVIDIA's toolkit (``nvidia-ctk cdi generate``).

The spec has the toolkit's shape: kind ``nvidia.com/gpu``, one device per GPU by index
(PCI bus order, as ``nvidia-smi`` numbers them) and by UUID, and ``all``; common edits
with the control device nodes, the driver's libraries (with their soname links, so no
ldconfig hook is needed for ``libcuda.so.1`` to be found), its programs (``nvidia-smi``, every copy
found: a wrapper script and the binary it runs, and the binary's own loader folder when
it is not the system's),
its GSP firmware, the persistenced socket, and ``NVIDIA_VISIBLE_DEVICES=void``. Where
``nvidia-cdi-hook`` is installed, a createContainer hook refreshes the container's
ldcache for the library folders, as the toolkit's does.

``discover`` reads the host (the edge); ``spec`` is pure.
"""

from __future__ import annotations

import argparse
import os
import re
import stat
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sycri.fsutil import names_in

KIND = "nvidia.com/gpu"
CDI_VERSION = "0.5.0"
LIB_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
)
BIN_DIRS = ("/usr/bin", "/usr/local/nvidia/bin", "/usr/sbin")
FIRMWARE_DIRS = (
    "/lib/firmware/nvidia",
    "/usr/lib/firmware/nvidia",
    "/usr/local/nvidia/firmware/nvidia",
)
PROGRAMS = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
SOCKETS = ("/run/nvidia-persistenced/socket", "/run/nvidia-fabricmanager/socket")
HOOK = "nvidia-cdi-hook"
_SYSTEM_LIB_DIRS = (
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
)
MOUNT_OPTIONS = ["ro", "nosuid", "nodev", "bind"]
_VERSION = re.compile(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)")
_LIB = r"lib(?:cuda|cudadebugger|nvcuvid|nvoptix|nvidia-[A-Za-z0-9_\-]+)\.so"


class NoDriver(Exception):
    """No NVIDIA kernel driver or user-space libraries were found."""


@dataclass(frozen=True)
class Gpu:
    minor: int  # /dev/nvidia<minor>
    uuid: str  # GPU-...; empty when the driver does not say
    bus: str  # PCI bus location: the index order


@dataclass(frozen=True)
class Library:
    path: str  # the versioned file (libcuda.so.580.95.05)
    links: tuple[str, ...] = ()  # names of links to it in the same folder (libcuda.so.1)


@dataclass(frozen=True)
class Driver:
    version: str
    gpus: tuple[Gpu, ...]
    control_nodes: tuple[str, ...]  # /dev paths
    libraries: tuple[Library, ...]
    programs: tuple[str, ...] = ()  # every copy found: a wrapper script and its binary
    loader_dirs: tuple[str, ...] = ()  # a program's own ELF loader's folder (not /lib*)
    firmware: tuple[str, ...] = ()
    sockets: tuple[str, ...] = ()
    hook: str = ""  # nvidia-cdi-hook's path; empty: none installed
    dev: str = "/dev"  # where the GPU nodes /dev/nvidia<minor> are


def _mount(host: str, container: str, *more: str) -> dict[str, Any]:
    return {"hostPath": host, "containerPath": container, "options": [*MOUNT_OPTIONS, *more]}


def spec(driver: Driver, container_lib_dir: str = "") -> dict[str, Any]:
    """The CDI spec document; libraries go to ``container_lib_dir`` when given, else to
    the paths they have on the host (the toolkit's choice)."""
    mounts: list[dict[str, Any]] = []
    lib_dirs: list[str] = []
    for lib in driver.libraries:
        host_dir = os.path.dirname(lib.path)
        where = container_lib_dir or host_dir
        if where not in lib_dirs:
            lib_dirs.append(where)
        mounts.append(_mount(lib.path, os.path.join(where, os.path.basename(lib.path))))
        # A link mounted as a file: the bind follows it to the library itself.
        mounts.extend(_mount(os.path.join(host_dir, n), os.path.join(where, n)) for n in lib.links)
    mounts.extend(_mount(p, p) for p in (*driver.programs, *driver.loader_dirs, *driver.firmware))
    mounts.extend(_mount(p, p, "noexec") for p in driver.sockets)
    common: dict[str, Any] = {
        "env": ["NVIDIA_VISIBLE_DEVICES=void"],
        "deviceNodes": [{"path": p} for p in driver.control_nodes],
        "mounts": mounts,
    }
    if driver.hook:
        common["hooks"] = [
            {
                "hookName": "createContainer",
                "path": driver.hook,
                "args": [HOOK, "update-ldcache", *(a for d in lib_dirs for a in ("--folder", d))],
            }
        ]
    gpus = sorted(driver.gpus, key=lambda g: g.bus)
    devices: list[dict[str, Any]] = []
    for index, gpu in enumerate(gpus):
        for name in (str(index), gpu.uuid):  # fresh dicts: YAML without anchors
            if name:
                node = {"path": f"{driver.dev}/nvidia{gpu.minor}"}
                devices.append({"name": name, "containerEdits": {"deviceNodes": [node]}})
    devices.append(
        {
            "name": "all",
            "containerEdits": {
                "deviceNodes": [{"path": f"{driver.dev}/nvidia{g.minor}"} for g in gpus]
            },
        }
    )
    return {"cdiVersion": CDI_VERSION, "kind": KIND, "devices": devices, "containerEdits": common}


# --- discovery (the edge) --------------------------------------------------------------


def _fields(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _gpus(proc: Path) -> list[Gpu]:
    gpus = []
    try:
        entries = sorted((proc / "gpus").iterdir())
    except OSError:
        return []
    for entry in entries:
        try:
            info = _fields((entry / "information").read_text())
            minor = int(info["Device Minor"])
        except (OSError, KeyError, ValueError):
            continue
        uuid = info.get("GPU UUID", "")
        gpus.append(Gpu(minor, uuid if uuid.startswith(("GPU-", "MIG-")) else "", entry.name))
    return gpus


def _is_char(path: str) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _libraries(version: str, dirs: Iterable[str]) -> list[Library]:
    pattern = re.compile(rf"^{_LIB}\.{re.escape(version)}$")
    seen: set[str] = set()
    out = []
    for d in dirs:
        names = names_in(d)
        for name in names:
            path = os.path.join(d, name)
            if not pattern.match(name) or os.path.islink(path) or not os.path.isfile(path):
                continue
            real = os.path.realpath(path)
            if real in seen:  # /usr/lib64 -> /usr/lib and the like
                continue
            seen.add(real)
            links = tuple(
                n
                for n in names
                if n != name
                and n.startswith(name.split(".so", 1)[0] + ".so")
                and os.path.islink(os.path.join(d, n))
                and os.path.realpath(os.path.join(d, n)) == real
            )
            out.append(Library(path, links))
    return out


def elf_interpreter(path: str) -> str:
    """A 64-bit little-endian ELF program's PT_INTERP (its loader); "" for anything else.
    Some driver packagings (Nix, for one) ship programs whose loader is the driver's own
    glibc: the container needs that folder too, or the program is "not found"."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return ""
            phoff = int.from_bytes(head[0x20:0x28], "little")
            size = int.from_bytes(head[0x36:0x38], "little")
            count = int.from_bytes(head[0x38:0x3A], "little")
            for i in range(min(count, 64)):
                f.seek(phoff + i * size)
                ph = f.read(56)
                if len(ph) == 56 and int.from_bytes(ph[0:4], "little") == 3:  # PT_INTERP
                    f.seek(int.from_bytes(ph[8:16], "little"))
                    raw = f.read(min(int.from_bytes(ph[32:40], "little"), 4096))
                    return raw.split(b"\0", 1)[0].decode(errors="replace")
    except OSError:
        return ""
    return ""


def _version(proc: Path, lib_dirs: Iterable[str]) -> str:
    try:
        found = _VERSION.search((proc / "version").read_text())
    except OSError:
        found = None
    if found:
        return found.group(1)
    for d in lib_dirs:  # no kernel module visible (a chroot): the library says
        for name in names_in(d):
            m = re.match(r"^libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$", name)
            if m:
                return m.group(1)
    return ""


def discover(
    proc: str = "/proc/driver/nvidia",
    dev: str = "/dev",
    lib_dirs: Sequence[str] = LIB_DIRS,
    bin_dirs: Sequence[str] = BIN_DIRS,
    firmware_dirs: Sequence[str] = FIRMWARE_DIRS,
    sockets: Sequence[str] = SOCKETS,
) -> Driver:
    """The driver as installed on this host; NoDriver says what is missing."""
    proc_dir = Path(proc)
    version = _version(proc_dir, lib_dirs)
    if not version:
        raise NoDriver(f"no NVIDIA driver: neither {proc}/version nor a libcuda.so.<version>")
    gpus = [g for g in _gpus(proc_dir) if _is_char(f"{dev}/nvidia{g.minor}")]
    if not gpus:  # no /proc view: every /dev/nvidiaN node
        gpus = [
            Gpu(int(n[6:]), "", n)
            for n in names_in(dev)
            if re.fullmatch(r"nvidia\d+", n) and _is_char(f"{dev}/{n}")
        ]
    if not gpus:
        raise NoDriver(f"driver {version} found, but no GPU device node /dev/nvidia<N>")
    libraries = _libraries(version, lib_dirs)
    if not any(os.path.basename(lib.path).startswith("libcuda.so") for lib in libraries):
        raise NoDriver(f"driver {version}: no libcuda.so.{version} in {', '.join(lib_dirs)}")
    programs: dict[str, str] = {}  # real path -> path found
    loaders: list[str] = []
    hook = ""
    for d in bin_dirs:
        for name in (*PROGRAMS, HOOK):
            path = os.path.join(d, name)
            if not (os.access(path, os.X_OK) and os.path.isfile(path)):
                continue
            if name == HOOK:
                hook = hook or path
                continue
            programs.setdefault(os.path.realpath(path), path)
            where = os.path.dirname(elf_interpreter(path))
            if where and where not in _SYSTEM_LIB_DIRS and where not in loaders:
                loaders.append(where)
    firmware = sorted(
        str(p) for d in firmware_dirs for p in Path(d, version).glob("*.bin") if p.is_file()
    )
    return Driver(
        version=version,
        gpus=tuple(gpus),
        control_nodes=tuple(f"{dev}/{n}" for n in CONTROL_NODES if _is_char(f"{dev}/{n}")),
        libraries=tuple(libraries),
        programs=tuple(programs.values()),
        loader_dirs=tuple(d for d in loaders if os.path.isdir(d)),
        firmware=tuple(firmware),
        sockets=tuple(s for s in sockets if os.path.exists(s)),
        hook=hook,
        dev=dev,
    )


# --- command line ----------------------------------------------------------------------


def _cmd_generate(opts: argparse.Namespace) -> int:
    try:
        driver = discover(
            proc=opts.proc_dir,
            dev=opts.dev_dir,
            lib_dirs=opts.lib_dir or LIB_DIRS,
            bin_dirs=opts.bin_dir or BIN_DIRS,
            firmware_dirs=opts.firmware_dir or FIRMWARE_DIRS,
        )
    except NoDriver as exc:
        print(f"sycri cdi generate: {exc}", file=sys.stderr)
        return 1
    text = yaml.safe_dump(spec(driver, opts.container_lib_dir), sort_keys=False)
    if opts.output == "-":
        sys.stdout.write(text)
        return 0
    tmp = f"{opts.output}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, opts.output)  # the loader never sees half a spec
    print(
        f"{opts.output}: {len(driver.gpus)} GPU(s), driver {driver.version}, "
        f"{len(driver.libraries)} libraries",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cdi = sub.add_parser("cdi", help="Container Device Interface specs")
    cdi_sub = cdi.add_subparsers(dest="cdi_command", required=True)
    gen = cdi_sub.add_parser(
        "generate", help="write a CDI spec (nvidia.com/gpu) for this node's NVIDIA GPUs"
    )
    gen.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    gen.add_argument(
        "--container-lib-dir",
        default="",
        help="mount the driver libraries here in containers (default: their host paths)",
    )
    gen.add_argument("--lib-dir", action="append", help="a folder to look for driver libraries")
    gen.add_argument("--bin-dir", action="append", help="a folder to look for nvidia-smi etc.")
    gen.add_argument("--firmware-dir", action="append", help="a folder of <version>/*.bin")
    gen.add_argument("--proc-dir", default="/proc/driver/nvidia", help=argparse.SUPPRESS)
    gen.add_argument("--dev-dir", default="/dev", help=argparse.SUPPRESS)
    gen.set_defaults(func=_cmd_generate)
