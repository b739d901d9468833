"""Image trust against a real registry: ids bind content, layers are checked against the
config's diff_ids, unpacking is bounded, SIF signature policy, local SIFs re-verified."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import secrets
import shutil
import tarfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sycri import errors
from sycri.api import api_pb2

from tests.support import oci, workload
from tests.support.images import dsse_sign, make_images, mounted
from tests.support.pods import pod_config
from tests.support.sif import IMAGES, KEYS, pgp_public_key

pytestmark = pytest.mark.root
MB = 1 << 20


def repo() -> str:
    return "trust/" + secrets.token_hex(4)


def pull(images, ref):
    return asyncio.run(images.pull(ref))


def which_image(which: str) -> oci.Image:
    """busybox plus /etc/which naming the image; its command prints that file."""
    return oci.Image(
        layers=[oci.layer(oci.busybox_entries()), oci.layer([oci.file("etc/which", which)])],
        entrypoint=["/bin/sh", "-c"],
        cmd=["cat /etc/which"],
    )


def store_leftovers(images_root: Path) -> list[str]:
    """Files under the image store other than its index."""
    return sorted(
        str(p.relative_to(images_root))
        for p in images_root.rglob("*")
        if p.is_file() and not p.name.startswith("index.db")
    )


@pytest.fixture(scope="module")
def sifs(registry, tmp_path_factory) -> dict[str, bytes]:
    """SIFs built by sycri (as Singularity would have built them elsewhere), each with its
    own /etc/which; "signed" carries a DSSE signature by ``signing_key``."""
    out = {}
    base = tmp_path_factory.mktemp("sifs")
    for which in ("first", "second", "signed"):
        r = repo()
        oci.push(registry, r, "v1", which_image(which))
        images = make_images(base / which)
        out[which] = Path(pull(images, f"{registry.host}/{r}:v1").sif_path).read_bytes()
        images.close()
    return out


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory):
    key = ed25519.Ed25519PrivateKey.generate()
    pem = tmp_path_factory.mktemp("keys") / "trusted.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pem


@pytest.fixture(scope="module")
def signed_sif(sifs, signing_key, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("signed") / "signed.sif"
    path.write_bytes(sifs["signed"])
    dsse_sign(path, signing_key[0])
    return path.read_bytes()


# -- identity -------------------------------------------------------------------------------


def test_two_sifs_pushed_with_the_same_empty_config_are_two_images(registry, tmp_path, sifs):
    a, b = sifs["first"], sifs["second"]
    ra, rb = repo(), repo()
    _, cfg_a = oci.push_sif(registry, ra, "v1", a, config=b"{}")
    _, cfg_b = oci.push_sif(registry, rb, "v1", b, config=b"{}")
    assert cfg_a == cfg_b  # what Singularity and Apptainer push for every SIF
    images = make_images(tmp_path)

    async def both():
        return await asyncio.gather(
            images.pull(f"oras://{registry.host}/{ra}:v1"),
            images.pull(f"oras://{registry.host}/{rb}:v1"),
        )

    got_a, got_b = asyncio.run(both())
    assert (got_a.id, got_b.id) == (oci.sha256(a), oci.sha256(b))
    assert Path(got_a.sif_path).read_bytes() == a
    assert Path(got_b.sif_path).read_bytes() == b
    assert sorted(i.id for i in images.list()) == sorted((got_a.id, got_b.id))
    with mounted(got_b.sif_path) as root:
        assert (root / "etc/which").read_text() == "second"
    # pulled again, each name stays on its own image
    assert pull(images, f"oras://{registry.host}/{ra}:v1").id == got_a.id
    assert images.find(f"oras://{registry.host}/{rb}:v1").id == got_b.id


def test_a_manifest_reusing_a_genuine_config_with_other_layers_is_refused(registry, tmp_path):
    genuine = which_image("genuine")
    gr = repo()
    oci.push(registry, gr, "v1", genuine)
    evil_layer = oci.layer([oci.file("etc/which", "evil")])
    evil = oci.Image(layers=[genuine.layers[0], evil_layer], entrypoint=["/bin/sh", "-c"])
    er = repo()
    for lay in evil.layers:
        oci.push_blob(registry, er, lay.blob)
    oci.push_blob(registry, er, genuine.config())
    manifest = genuine.manifest().replace(
        genuine.layers[1].digest.encode(), evil_layer.digest.encode()
    )
    manifest = manifest.replace(
        f'"size": {len(genuine.layers[1].blob)}'.encode(),
        f'"size": {len(evil_layer.blob)}'.encode(),
    )
    oci.push_manifest(registry, er, "v1", manifest, genuine.media_type)

    images = make_images(tmp_path / "node")
    with pytest.raises(errors.InvalidArgument) as err:
        pull(images, f"{registry.host}/{er}:v1")
    msg = err.value.message
    assert "layer 2/2" in msg and evil_layer.digest in msg and "diff_ids" in msg
    assert images.list() == []
    assert store_leftovers(tmp_path / "node/root/images") == []

    got = pull(images, f"{registry.host}/{gr}:v1")
    assert got.id == genuine.id
    assert got.repo_tags == (f"{registry.host}/{gr}:v1",)
    clean = pull(make_images(tmp_path / "clean"), f"{registry.host}/{gr}:v1")
    assert Path(got.sif_path).read_bytes() == Path(clean.sif_path).read_bytes()
    with mounted(got.sif_path) as root:
        assert (root / "etc/which").read_text() == "genuine"


def test_a_config_whose_diff_ids_do_not_count_the_layers_is_refused(registry, tmp_path):
    img = which_image("x")
    r = repo()
    short = oci.Image(layers=img.layers[:1], entrypoint=["/bin/sh", "-c"])
    for lay in img.layers:
        oci.push_blob(registry, r, lay.blob)
    oci.push_blob(registry, r, short.config())
    body = img.manifest().replace(oci.sha256(img.config()).encode(), short.id.encode())
    body = body.replace(
        f'"size": {len(img.config())}'.encode(), f'"size": {len(short.config())}'.encode()
    )
    oci.push_manifest(registry, r, "v1", body, img.media_type)
    with pytest.raises(errors.InvalidArgument, match=r"1 rootfs\.diff_ids for a manifest of 2"):
        pull(make_images(tmp_path), f"{registry.host}/{r}:v1")


# -- bounded unpack ------------------------------------------------------------------------------


def gzip_bomb(size: int) -> oci.Layer:
    """A gzipped tar holding one file of ``size`` zero bytes (about 1000:1)."""
    info = tarfile.TarInfo("bomb")
    info.size = size
    header = info.tobuf(tarfile.GNU_FORMAT)
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    h = hashlib.sha256(header)
    parts = [gz.compress(header)]
    zero = bytes(MB)
    for _ in range(size // MB):
        parts.append(gz.compress(zero))
        h.update(zero)
    end = bytes(1024)
    parts += [gz.compress(end), gz.flush()]
    h.update(end)
    return oci.Layer(b"".join(parts), "sha256:" + h.hexdigest(), oci.LAYER_TYPES["docker", "gzip"])


def many_entries(n: int) -> oci.Layer:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for i in range(n):
            tar.addfile(tarfile.TarInfo(f"d{i // 1000}/f{i}"))
    raw = buf.getvalue()
    return oci.Layer(
        gzip.compress(raw, 1, mtime=0), oci.sha256(raw), oci.LAYER_TYPES["docker", "gzip"]
    )


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


LIMITED = [
    "--images-max-image-bytes", str(256 * MB),
    "--images-max-image-entries", "10000",
]  # fmt: skip


@pytest.mark.parametrize(
    "kind, limit",
    [("gzip-bomb", "images.max_image_bytes"), ("200000-entries", "images.max_image_entries")],
)
def test_past_a_limit_the_pull_is_resource_exhausted_in_bounded_memory(
    registry, kind, limit, capsys
):
    layer = gzip_bomb(2048 * MB) if kind == "gzip-bomb" else many_entries(200_000)
    img = oci.Image(layers=[oci.layer(oci.busybox_entries()), layer])
    with workload.node(flags=LIMITED) as n:
        ref = n.push(registry, img)
        pid = n.server.proc.pid
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak RSS
        before = rss_kib(pid, "VmRSS")
        with pytest.raises(grpc.RpcError) as err:
            n.pull(ref)
        peak = rss_kib(pid, "VmHWM")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert limit in err.value.details() and "layer 2/2" in err.value.details()
        with capsys.disabled():
            print(f"\n{kind}: sycri RSS {before / 1024:.1f} MiB before, peak "
                  f"{peak / 1024:.1f} MiB during the pull (+{(peak - before) / 1024:.1f} MiB)")  # fmt: skip
        assert peak - before < 100 * 1024
        assert store_leftovers(n.server.base / "root/images") == []
        assert n.server.images().ListImages(api_pb2.ListImagesRequest()).images == []
        # and the node still serves
        ok = n.push(registry, which_image("after"))
        assert n.pull(ok)


def test_more_layers_than_allowed_is_refused_before_any_download(registry, tmp_path):
    img = oci.Image(layers=[oci.layer([oci.file(f"f{i}", str(i))]) for i in range(4)])
    r = repo()
    oci.push(registry, r, "v1", img)
    with pytest.raises(errors.ResourceExhausted, match=r"4 layers.*images\.max_layers \(3\)"):
        pull(make_images(tmp_path, max_layers=3), f"{registry.host}/{r}:v1")


def test_a_sif_artifact_larger_than_allowed_is_refused_before_download(registry, tmp_path, sifs):
    r = repo()
    oci.push_sif(registry, r, "v1", sifs["first"], config=b"{}")
    images = make_images(tmp_path, max_image_bytes=len(sifs["first"]) - 1)
    with pytest.raises(errors.ResourceExhausted, match=r"images\.max_image_bytes"):
        pull(images, f"oras://{registry.host}/{r}:v1")
    assert store_leftovers(tmp_path / "root/images") == []


# -- SIF policy ------------------------------------------------------------------------------


SIGNED = sorted(IMAGES.glob("*-signed-*.sif"))


@pytest.fixture(scope="module")
def pgp_key(tmp_path_factory) -> Path:
    return pgp_public_key(tmp_path_factory.mktemp("pgp") / "public.asc")


def local_copy(src: Path | bytes, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(src, bytes):
        dest.write_bytes(src)
    else:
        shutil.copyfile(src, dest)
    return dest


def test_require_signed_refuses_unsigned_sifs_local_and_oras(registry, tmp_path, sifs):
    images = make_images(tmp_path / "node", sif_policy="require-signed")
    local = local_copy(sifs["first"], tmp_path / "files/unsigned.sif")
    with pytest.raises(errors.PermissionDenied) as err:
        pull(images, str(local))
    assert str(local) in err.value.message and oci.sha256(sifs["first"]) in err.value.message
    assert "require-signed" in err.value.message and "no signature" in err.value.message
    r = repo()
    oci.push_sif(registry, r, "v1", sifs["second"], config=b"{}")
    with pytest.raises(errors.PermissionDenied, match="require-signed"):
        pull(images, f"oras://{registry.host}/{r}:v1")
    assert images.list() == []
    assert store_leftovers(tmp_path / "node/root/images") == []


@pytest.mark.parametrize("golden", SIGNED, ids=lambda p: p.name)
def test_golden_signed_sifs_are_accepted_under_require_signed_and_require_trusted(
    tmp_path, golden, pgp_key
):
    local = local_copy(golden, tmp_path / "files" / golden.name)
    got = pull(make_images(tmp_path / "signed", sif_policy="require-signed"), str(local))
    assert got.signed and not got.signer
    keys = (str(pgp_key), str(KEYS / "ed25519-public.pem"), str(KEYS / "rsa-public.pem"))
    images = make_images(tmp_path / "trusted", sif_policy="require-trusted", trusted_keyrings=keys)
    got = pull(images, str(local))
    assert got.id == "sha256:" + hashlib.sha256(local.read_bytes()).hexdigest()
    assert got.signer


def test_a_golden_sif_pulled_over_oras_under_require_trusted(registry, tmp_path, pgp_key):
    data = (IMAGES / "one-group-signed-pgp.sif").read_bytes()
    r = repo()
    oci.push_sif(registry, r, "v1", data, config=b"{}")
    images = make_images(tmp_path, sif_policy="require-trusted", trusted_keyrings=(str(pgp_key),))
    got = pull(images, f"oras://{registry.host}/{r}:v1")
    assert got.id == oci.sha256(data)
    assert got.signer == "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84"


@pytest.mark.parametrize(
    "golden, key",
    [("one-group-signed-pgp.sif", "ed25519-public.pem"), ("one-group-signed-dsse.sif", "pgp")],
)
def test_a_sif_signed_by_a_key_outside_the_keyrings_is_refused(tmp_path, golden, key, pgp_key):
    keyring = str(pgp_key) if key == "pgp" else str(KEYS / key)
    images = make_images(tmp_path, sif_policy="require-trusted", trusted_keyrings=(keyring,))
    local = local_copy(IMAGES / golden, tmp_path / "files" / golden)
    with pytest.raises(errors.PermissionDenied) as err:
        pull(images, str(local))
    assert (
        "require-trusted" in err.value.message
        and "not signed by a trusted key" in err.value.message
    )
    assert str(local) in err.value.message
    assert images.list() == []


def test_a_signed_sif_with_a_changed_partition_is_not_signed(tmp_path):
    data = bytearray((IMAGES / "one-group-signed-dsse.sif").read_bytes())
    data[36864 + 100] ^= 0xFF  # inside the squashfs system partition (object 2)
    local = local_copy(bytes(data), tmp_path / "files/tampered.sif")
    images = make_images(tmp_path / "node", sif_policy="require-signed")
    with pytest.raises(errors.PermissionDenied, match=r"object 2.*data integrity compromised"):
        pull(images, str(local))


# -- local SIFs ----------------------------------------------------------------------------------


def test_a_local_sif_is_hashed_again_when_it_changes(tmp_path, sifs):
    local = local_copy(sifs["first"], tmp_path / "files/app.sif")
    images = make_images(tmp_path / "node")
    got = pull(images, str(local))
    assert asyncio.run(images.resolve(got.id)).id == got.id
    os.utime(local, ns=(1, 1))  # same bytes, new mtime: hashed again and still this image
    again = asyncio.run(images.resolve(got.id))
    assert again.id == got.id and again.stat != got.stat
    # ...indexed again under the same name and path it was pulled with.
    assert (again.repo_tags, again.user_ref, again.sif_path) == (
        got.repo_tags,
        got.user_ref,
        got.sif_path,
    )
    tmp = local.with_suffix(".new")
    tmp.write_bytes(sifs["second"])
    os.replace(tmp, local)  # other bytes under the same name
    with pytest.raises(errors.FailedPrecondition) as err:
        asyncio.run(images.resolve(got.id))
    assert "changed since it was pulled" in err.value.message
    assert oci.sha256(sifs["second"]) in err.value.message


# -- mounts ------------------------------------------------------------------------------------


def mount_types(under: Path) -> dict[str, str]:
    """Mount point name -> file system type, for mounts below ``under`` (mountinfo)."""
    out = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            target = left.split()[4]
            if target.startswith(str(under) + "/"):
                out[Path(target).name] = right.split()[0]
    return out


def container_output(n, pod: str, name: str) -> str:
    path = n.server.base / "pods" / pod / name / "0.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return "".join(line.split(" ", 3)[3] for line in lines if line.count(" ") >= 3)


@pytest.mark.parametrize("mode", ["own", "signed", "all"])
def test_each_image_runs_its_own_content_mounted_as_kernel_mount_says(
    registry, sifs, signed_sif, signing_key, mode
):
    refs = {}
    for which, data in (
        ("first", sifs["first"]),
        ("second", sifs["second"]),
        ("signed", signed_sif),
    ):
        r = repo()
        oci.push_sif(registry, r, "v1", data, config=b"{}")
        refs[which] = f"oras://{registry.host}/{r}:v1"
    flags = ["--images-kernel-mount", mode, "--images-trusted-keyrings", str(signing_key[1])]
    with workload.node(flags=flags) as n:
        with ThreadPoolExecutor(2) as pool:  # both {}-config SIFs at once
            ids = list(pool.map(n.pull, [refs["first"], refs["second"]]))
        assert ids == [oci.sha256(sifs["first"]), oci.sha256(sifs["second"])]
        ids.append(n.pull(refs["signed"]))
        own = n.push(registry, which_image("own"))
        ids.append(n.pull(own))
        pod = n.run_pod("trust")
        names = ["first", "second", "signed", "own"]
        for name, image_id in zip(names, ids, strict=True):
            n.run(pod, name, image_id, "cat /etc/which; echo; sleep 300")
        deadline = time.monotonic() + 60
        while any(container_output(n, "trust", name) != name for name in names):
            assert time.monotonic() < deadline, {x: container_output(n, "trust", x) for x in names}
            time.sleep(0.1)
        types = mount_types(n.server.base)
        kernel = {
            "own": {"own"},
            "signed": {"own", "signed"},
            "all": {"own", "signed", "first", "second"},
        }[mode]
        want = {
            image_id.split(":")[1]: "squashfs" if name in kernel else "fuse.squashfuse"
            for name, image_id in zip(names, ids, strict=True)
        }
        assert {k: types.get(k) for k in want} == want


def test_a_user_namespace_pod_cannot_run_a_squashfuse_image_and_is_told_why(registry, sifs):
    """squashfuse mounts cannot be idmapped: the container is refused with the way out."""
    r = repo()
    oci.push_sif(registry, r, "v1", sifs["first"], config=b"{}")
    with workload.node() as n:
        image_id = n.pull(f"oras://{registry.host}/{r}:v1")
        cfg = pod_config("uns")
        cfg.log_directory = str(n.server.base / "pods" / "uns")
        opts = cfg.linux.security_context.namespace_options.userns_options
        opts.mode = api_pb2.POD
        opts.uids.add(container_id=0, host_id=65536 * 77, length=65536)
        opts.gids.add(container_id=0, host_id=65536 * 77, length=65536)
        pod = n.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=cfg)).pod_sandbox_id
        with pytest.raises(grpc.RpcError) as err:
            n.create((pod, cfg), "c", image_id, "true")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "squashfuse" in err.value.details()
        assert "images.kernel_mount" in err.value.details()


def test_the_policy_holds_for_an_image_already_stored(registry, tmp_path, sifs):
    r = repo()
    oci.push_sif(registry, r, "v1", sifs["first"], config=b"{}")
    ref = f"oras://{registry.host}/{r}:v1"
    first = make_images(tmp_path)
    assert pull(first, ref).id == oci.sha256(sifs["first"])
    first.close()
    strict = make_images(tmp_path, sif_policy="require-signed")
    with pytest.raises(errors.PermissionDenied, match="require-signed"):
        pull(strict, ref)
