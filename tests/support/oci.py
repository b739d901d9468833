"""Build OCI/Docker images in Python from the host's static busybox, and push them.

Reproducible (fixed times, gzip mtime 0), standard library plus ``zstandard``. Use::

    img = busybox_image(cmd=["sleep", "3600"])
    push(registry, "test/busybox", "latest", img)         # -> manifest digest

``layer([...entries...])`` builds any tar layer (whiteouts, opaque dirs, hostile
entries); ``Image(layers=[...], config=...)`` assembles config and manifest.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import ssl
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

MTIME = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "env", "mkdir", "touch",
           "ps", "kill", "wc", "head", "grep", "hostname", "stat", "test", "printf", "nc")  # fmt: skip
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LAYER_TYPES = {
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", "none"): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "none"): "application/vnd.docker.image.rootfs.diff.tar",
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Entry:
    """One tar entry. ``kind``: file, dir, symlink, hardlink, chr, blk, fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    link: str = ""
    mtime: int = MTIME
    xattrs: dict[str, str] = field(default_factory=dict)


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chr": tarfile.CHRTYPE,
    "blk": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def file(name: str, data: bytes | str, mode: int = 0o644, **kw) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode, **kw)


def directory(name: str, mode: int = 0o755, **kw) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", mode=0o777, link=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", link=target)


def whiteout(path: str) -> Entry:
    head, _, base = path.rstrip("/").rpartition("/")
    return Entry(f"{head}/.wh.{base}" if head else f".wh.{base}")


def opaque(directory_path: str) -> Entry:
    return Entry(directory_path.rstrip("/") + "/.wh..wh..opq")


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _TYPES[e.kind]
            info.mode = e.mode
            info.uid, info.gid = e.uid, e.gid
            info.mtime = e.mtime
            info.linkname = e.link
            if e.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e.xattrs.items()}
            if e.kind in ("chr", "blk"):
                info.devmajor, info.devminor = 1, 3
            if e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


@dataclass
class Layer:
    blob: bytes  # as stored in the registry (compressed)
    diff_id: str  # digest of the uncompressed tar
    media_type: str

    @property
    def digest(self) -> str:
        return sha256(self.blob)


def layer(entries: list[Entry], compression: str = "gzip", flavour: str = "docker") -> Layer:
    raw = tar_bytes(entries)
    if compression == "gzip":
        blob = gzip.compress(raw, compresslevel=6, mtime=0)
    elif compression == "zstd":
        import zstandard

        blob = zstandard.ZstdCompressor(level=3).compress(raw)
    else:
        blob = raw
    return Layer(blob, sha256(raw), LAYER_TYPES[(flavour, compression)])


def busybox_entries() -> list[Entry]:
    data = BUSYBOX.read_bytes()
    out = [directory("bin"), file("bin/busybox", data, 0o755)]
    out += [symlink(f"bin/{a}", "busybox") for a in APPLETS]
    out += [
        directory("etc"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"),
        file("etc/group", "root:x:0:\nnobody:x:65534:\n"),
        directory("root", 0o700),
        directory("tmp", 0o1777),
    ]
    return out


@dataclass
class Image:
    layers: list[Layer]
    entrypoint: list[str] | None = None
    cmd: list[str] | None = field(default_factory=lambda: ["sh"])
    env: list[str] = field(default_factory=lambda: [PATH_ENV])
    user: str = ""
    workdir: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    arch: str = "amd64"
    variant: str = ""
    flavour: str = "docker"  # docker (schema 2) or oci

    def config(self) -> bytes:
        c: dict = {"Env": self.env, "Cmd": self.cmd}
        if self.entrypoint is not None:
            c["Entrypoint"] = self.entrypoint
        for key, value in (
            ("User", self.user),
            ("WorkingDir", self.workdir),
            ("Labels", self.labels),
            ("StopSignal", self.stop_signal),
        ):
            if value:
                c[key] = value
        doc = {
            "architecture": self.arch,
            "os": "linux",
            "created": CREATED,
            "config": c,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
        }
        if self.variant:
            doc["variant"] = self.variant
        return json.dumps(doc, sort_keys=True).encode()

    @property
    def id(self) -> str:
        return sha256(self.config())

    def manifest(self) -> bytes:
        cfg = self.config()
        oci = self.flavour == "oci"
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if oci else DOCKER_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG if oci else DOCKER_CONFIG,
                "digest": sha256(cfg),
                "size": len(cfg),
            },
            "layers": [
                {"mediaType": layer.media_type, "digest": layer.digest, "size": len(layer.blob)}
                for layer in self.layers
            ],
        }
        return json.dumps(doc, sort_keys=True).encode()

    @property
    def media_type(self) -> str:
        return OCI_MANIFEST if self.flavour == "oci" else DOCKER_MANIFEST


def busybox_image(**kw) -> Image:
    return Image(layers=[layer(busybox_entries())], **kw)


# -- pushing -----------------------------------------------------------------------------------


_NO_VERIFY = ssl._create_unverified_context()  # test registries use self-signed certificates


def _request(method: str, url: str, data: bytes | None, headers: dict[str, str]):
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        return urllib.request.urlopen(req, timeout=60, context=_NO_VERIFY)
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{method} {url}: HTTP {exc.code}: {exc.read()[:500]!r}") from None


def push_blob(registry, repo: str, data: bytes, auth: dict[str, str] | None = None) -> str:
    auth = registry.auth_header(repo) if auth is None else auth
    digest = sha256(data)
    base = registry.url
    try:
        head = urllib.request.Request(
            f"{base}/v2/{repo}/blobs/{digest}", method="HEAD", headers=auth
        )
        urllib.request.urlopen(head, timeout=30, context=_NO_VERIFY).close()
        return digest
    except urllib.error.HTTPError:
        pass
    with _request("POST", f"{base}/v2/{repo}/blobs/uploads/", b"", auth) as r:
        location = r.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    url = f"{location}{sep}digest={urllib.parse.quote(digest)}"
    headers = {**auth, "Content-Type": "application/octet-stream"}
    _request("PUT", url, data, headers).close()
    return digest


def push_manifest(registry, repo: str, ref: str, body: bytes, media_type: str, auth=None) -> str:
    auth = registry.auth_header(repo) if auth is None else auth
    headers = {**auth, "Content-Type": media_type}
    _request("PUT", f"{registry.url}/v2/{repo}/manifests/{ref}", body, headers).close()
    return sha256(body)


def push(registry, repo: str, tag: str, image: Image) -> str:
    """Push ``image`` as ``repo:tag``; returns the manifest digest."""
    auth = registry.auth_header(repo)
    for lay in image.layers:
        push_blob(registry, repo, lay.blob, auth)
    push_blob(registry, repo, image.config(), auth)
    return push_manifest(registry, repo, tag, image.manifest(), image.media_type, auth)


def push_index(registry, repo: str, tag: str, images: list[Image], oci: bool = False) -> str:
    """Push every image by digest and an index (manifest list) naming their platforms."""
    auth = registry.auth_header(repo)
    entries = []
    for img in images:
        digest = push(registry, repo, sha256(img.manifest()), img)
        platform = {"architecture": img.arch, "os": "linux"}
        if img.variant:
            platform["variant"] = img.variant
        entries.append(
            {
                "mediaType": img.media_type,
                "digest": digest,
                "size": len(img.manifest()),
                "platform": platform,
            }
        )
    mt = OCI_INDEX if oci else DOCKER_LIST
    body = json.dumps({"schemaVersion": 2, "mediaType": mt, "manifests": entries}).encode()
    return push_manifest(registry, repo, tag, body, mt, auth)


SIF_CONFIG = "application/vnd.sylabs.sif.config.v1+json"
SIF_LAYER = "application/vnd.sylabs.sif.layer.v1.sif"


def push_sif(
    registry, repo: str, tag: str, sif_bytes: bytes, config: bytes | None = None
) -> tuple[str, str]:
    """Push a SIF as an oras artifact; returns (manifest digest, config digest).
    ``config=b"{}"`` is what SingularityCE and Apptainer push for every SIF."""
    auth = registry.auth_header(repo)
    cfg = (
        config
        if config is not None
        else json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    )
    push_blob(registry, repo, cfg, auth)
    push_blob(registry, repo, sif_bytes, auth)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": SIF_CONFIG, "digest": sha256(cfg), "size": len(cfg)},
            "layers": [
                {"mediaType": SIF_LAYER, "digest": sha256(sif_bytes), "size": len(sif_bytes)}
            ],
        }
    ).encode()
    return push_manifest(registry, repo, tag, body, OCI_MANIFEST, auth), sha256(cfg)
