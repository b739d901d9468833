"""A busybox image as a real squashfs, and minimal pods, for driving containers without
the images and pods components: the same ``ImageLookup`` / ``SandboxLookup`` shapes."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf.message import Message
from sycri.api import api_pb2
from sycri.errors import NotFound
from sycri.runtime.container import rootfs
from sycri.runtime.container.containers import Containers, ImageInfo, Paths, SandboxInfo
from sycri.runtime.container.runc import Runc
from sycri.runtime.oci import ocispec

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
"""
GROUP = """root:x:0:
daemon:x:1:
alice:x:1000:
bob:x:1001:
wheel:x:10:alice
video:x:44:alice,bob
"""


def busybox_rootfs(root: Path) -> Path:
    """A minimal root filesystem: static busybox with its applets, /etc/passwd, /etc/group."""
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "home/alice", "root", "data"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        link = root / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    (root / "data/hello.txt").write_text("hello from the image\n")
    os.chmod(root / "tmp", 0o1777)
    return root


def squashfs_image(
    work: Path, prefix: bytes = b"", change: Callable[[Path], None] | None = None
) -> Path:
    """The rootfs as squashfs, optionally behind ``prefix`` bytes (like a SIF partition);
    ``change`` edits the tree first."""
    tree = busybox_rootfs(work / "tree")
    if change is not None:
        change(tree)
    sq = work / "rootfs.squashfs"
    subprocess.run(
        ["mksquashfs", str(tree), str(sq), "-noappend", "-quiet", "-comp", "lz4", "-all-root"],
        check=True,
        capture_output=True,
    )
    if not prefix:
        return sq
    out = work / "image.sif"
    with open(out, "wb") as f:
        f.write(prefix)
        f.write(sq.read_bytes())
    return out


@dataclass
class StaticImages:
    """ImageLookup over images registered by name."""

    images: dict[str, ImageInfo] = field(default_factory=dict)

    def add(self, name: str, path: Path, offset: int, config: dict) -> ImageInfo:
        image_id = secrets.token_hex(32)
        size = path.stat().st_size - offset
        info = ImageInfo(
            id=image_id,
            ref=f"{name}@sha256:{image_id}",
            source=rootfs.ImageSource(image_id, str(path), offset, size),
            oci_config=config,
        )
        self.images[name] = info
        self.images[image_id] = info
        return info

    async def image_info(self, image: str) -> ImageInfo:
        try:
            return self.images[image]
        except KeyError:
            raise NotFound(f"image {image!r} not found") from None


@dataclass
class Pods:
    """SandboxLookup over pods that have no pinned namespaces (runc makes new ones)."""

    log_root: Path
    pods: dict[str, SandboxInfo] = field(default_factory=dict)

    def add(self, name: str, **linux: object) -> SandboxInfo:
        pod_id = secrets.token_hex(32)
        logs = self.log_root / pod_id
        logs.mkdir(parents=True)
        cfg = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=name, uid=pod_id[:8], namespace="default"),
            hostname=name,
            log_directory=str(logs),
        )
        info = SandboxInfo(
            id=pod_id,
            config=cfg,
            namespaces=ocispec.Sandbox(id=pod_id, hostname=name),
            log_directory=str(logs),
        )
        self.pods[pod_id] = info
        return info

    def sandbox_info(self, pod_id: str) -> SandboxInfo:
        try:
            return self.pods[pod_id]
        except KeyError:
            raise NotFound(f"pod {pod_id!r} not found") from None


IMAGE_CONFIG = {
    "config": {
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo default"],
        "Env": ["PATH=/bin", "IMAGE_VAR=from-image"],
        "WorkingDir": "/data",
    }
}


def containers(
    base: Path, images: StaticImages, pods: Pods, image_mount_idle: float = 0.0
) -> Containers:
    """Containers under ``base``; image mounts go with their last user unless
    ``image_mount_idle`` (``images.mount_idle_seconds``) says otherwise."""
    run = base / "run"
    runtime_root = run / "runc"
    runtime_root.mkdir(parents=True, exist_ok=True)
    return Containers(
        Paths(
            containers=base / "containers",
            image_mounts=run / "images",
            exits=run / "exits",
            sockets=run / "s",
        ),
        {"runc": Runc("runc", str(runtime_root))},
        "runc",
        pods,
        images,
        settings=ocispec.Settings(
            default_ulimits=("nofile=4096:8192",),
            default_cgroup_parent="/sycri-test-" + secrets.token_hex(4),
        ),
        image_mount_idle=image_mount_idle,
    )


def with_fields(cfg: api_pb2.ContainerConfig, **kw) -> api_pb2.ContainerConfig:
    """``cfg`` with fields set from keywords: ``sc`` is the Linux security context, ``res``
    the Linux resources, a list extends a repeated field, anything else is set."""
    for k, v in kw.items():
        if k == "sc":
            cfg.linux.security_context.CopyFrom(v)
        elif k == "res":
            cfg.linux.resources.CopyFrom(v)
        elif isinstance(v, list):
            getattr(cfg, k).extend(v)
        elif isinstance(v, Message):
            getattr(cfg, k).CopyFrom(v)
        else:
            setattr(cfg, k, v)
    return cfg


def dump(obj: object) -> str:
    return json.dumps(obj, indent=1, default=str)
