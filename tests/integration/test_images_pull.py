"""Pulling real images from a real registry (Debian docker-registry) into SIF files."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import stat
import subprocess
from pathlib import Path

import pytest
from sycri import errors
from sycri.images.credentials import Credentials
from sycri.sif.mount import partition_location

from tests.support import oci
from tests.support.counting_proxy import counting_proxy
from tests.support.images import make_images, mounted, siftool_list

pytestmark = pytest.mark.root


def repo() -> str:
    return "test/" + secrets.token_hex(4)


def pull(images, ref, creds=None):
    return asyncio.run(images.pull(ref, creds))


def test_busybox_pull_gives_a_sif_siftool_accepts_with_the_files_and_config(registry, tmp_path):
    r = repo()
    img = oci.busybox_image(
        entrypoint=["/bin/sh", "-c"],
        cmd=["echo hello"],
        env=[oci.PATH_ENV, "GREETING=hi there"],
        user="65534:65534",
        workdir="/tmp",
        labels={"org.example": "yes"},
        stop_signal="SIGINT",
    )
    digest = oci.push(registry, r, "v1", img)
    images = make_images(tmp_path)
    got = pull(images, f"{registry.host}/{r}:v1")

    assert got.id == img.id
    assert got.repo_tags == (f"{registry.host}/{r}:v1",)
    assert got.repo_digests == (f"{registry.host}/{r}@{digest}",)
    assert got.config.entrypoint == ("/bin/sh", "-c")
    assert got.config.cmd == ("echo hello",)
    assert "GREETING=hi there" in got.config.env
    assert (got.config.user, got.config.working_dir) == ("65534:65534", "/tmp")
    assert got.config.stop_signal == "SIGINT"
    assert got.config.labels == {"org.example": "yes"}
    assert got.size == os.path.getsize(got.sif_path)

    listing = siftool_list(got.sif_path)
    assert "Squashfs/*System/amd64" in listing
    assert "JSON.Generic" in listing
    with mounted(got.sif_path) as root:
        busybox = root / "bin/busybox"
        assert busybox.read_bytes() == oci.BUSYBOX.read_bytes()
        assert stat.S_IMODE(busybox.stat().st_mode) == 0o755
        assert os.readlink(root / "bin/sh") == "busybox"
        assert busybox.stat().st_mtime == oci.MTIME
        sd = root / ".singularity.d"
        assert "exec /bin/sh -c 'echo hello'" in (sd / "runscript").read_text()
        assert "export GREETING='hi there'" in (sd / "env/10-docker2singularity.sh").read_text()
        assert json.loads((sd / "labels.json").read_text()) == {"org.example": "yes"}
        # the runscript really runs with the image's own shell
        out = subprocess.run(
            ["chroot", str(root), "/bin/sh", "/.singularity.d/runscript"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.stdout == "hello\n"
    # what Singularity/Apptainer do where they cannot mount: unsquashfs the partition
    part = partition_location(got.sif_path)
    listed = subprocess.run(
        ["unsquashfs", "-o", str(part.offset), "-l", got.sif_path],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "squashfs-root/bin/busybox" in listed.stdout.splitlines()
    # the SIF holds the image config byte for byte
    from sycri import sif

    with sif.open_sif(got.sif_path) as s:
        (desc,) = s.find(name="oci-config.json")
        assert s.read_object(desc) == img.config()


def test_same_image_gives_a_byte_identical_sif(registry, tmp_path):
    r = repo()
    oci.push(registry, r, "latest", oci.busybox_image(cmd=["true"]))
    a = pull(make_images(tmp_path / "a"), f"{registry.host}/{r}")
    b = pull(make_images(tmp_path / "b"), f"{registry.host}/{r}")
    assert a.sif_path != b.sif_path
    assert Path(a.sif_path).read_bytes() == Path(b.sif_path).read_bytes()


def test_layers_apply_in_order_with_whiteouts_opaque_dirs_owners_and_xattrs(registry, tmp_path):
    base = oci.layer(oci.busybox_entries())
    first = oci.layer(
        [
            oci.directory("data"),
            oci.file("data/keep", "keep"),
            oci.file("data/gone", "gone"),
            oci.directory("data/subdir"),
            oci.file("data/subdir/deep", "deep"),
            oci.directory("opq"),
            oci.file("opq/old", "old"),
            oci.file("owned", "x", mode=0o4750, uid=1234, gid=5678),
            oci.file("attr", "x", xattrs={"user.sycri": "value"}),
            oci.file("replace-me", "a file first"),
        ]
    )
    second = oci.layer(
        [
            oci.whiteout("data/gone"),
            oci.whiteout("data/subdir"),
            oci.opaque("opq"),
            oci.file("opq/new", "new"),
            oci.directory("replace-me"),
            oci.file("replace-me/inside", "now a directory"),
        ],
        compression="zstd",
        flavour="oci",
    )
    third = oci.layer([oci.file("plain", "uncompressed")], compression="none", flavour="oci")
    img = oci.Image(layers=[base, first, second, third], flavour="oci")
    r = repo()
    oci.push(registry, r, "latest", img)
    got = pull(make_images(tmp_path), f"docker://{registry.host}/{r}:latest")
    siftool_list(got.sif_path)
    with mounted(got.sif_path) as root:
        assert sorted(os.listdir(root / "data")) == ["keep"]
        assert sorted(os.listdir(root / "opq")) == ["new"]
        st = (root / "owned").stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4750)
        assert os.getxattr(root / "attr", "user.sycri") == b"value"
        assert (root / "replace-me/inside").read_text() == "now a directory"
        assert (root / "plain").read_text() == "uncompressed"


def test_manifest_list_chooses_linux_amd64(registry, tmp_path):
    amd = oci.Image(layers=[oci.layer([oci.file("arch", "amd64")])], arch="amd64")
    arm = oci.Image(layers=[oci.layer([oci.file("arch", "arm64")])], arch="arm64", variant="v8")
    r = repo()
    index_digest = oci.push_index(registry, r, "multi", [arm, amd])
    got = pull(make_images(tmp_path), f"{registry.host}/{r}:multi")
    assert got.id == amd.id
    assert got.repo_digests == (f"{registry.host}/{r}@{index_digest}",)
    with mounted(got.sif_path) as root:
        assert (root / "arch").read_text() == "amd64"


def test_index_without_this_platform_is_not_found_naming_what_it_has(registry, tmp_path):
    arm = oci.Image(layers=[oci.layer([oci.file("arch", "arm64")])], arch="arm64")
    r = repo()
    oci.push_index(registry, r, "armonly", [arm], oci=True)
    with pytest.raises(errors.NotFound, match="linux/arm64"):
        pull(make_images(tmp_path), f"{registry.host}/{r}:armonly")


@pytest.mark.parametrize(
    "entries, why",
    [
        ([oci.file("../escape", "x")], "climbs out"),
        ([oci.symlink("link", "/tmp"), oci.file("link/pwned", "x")], "goes through the symlink"),
        ([oci.symlink("up", "../../../../etc")], "points outside"),
        ([oci.hardlink("hl", "../../etc/passwd")], "climbs out"),
        ([oci.hardlink("hl", "etc/shadow-missing")], "names no file"),
    ],
)
def test_hostile_layers_are_refused_and_nothing_is_stored(registry, tmp_path, entries, why):
    img = oci.Image(layers=[oci.layer(oci.busybox_entries()), oci.layer(entries)])
    r = repo()
    oci.push(registry, r, "latest", img)
    images = make_images(tmp_path)
    with pytest.raises(errors.InvalidArgument, match=why):
        pull(images, f"{registry.host}/{r}")
    assert images.list() == []
    assert os.listdir(images.store.sif_dir) == []
    assert os.listdir(images.store.tmp_dir) == []
    assert os.listdir(images.store.blob_dir) == []
    assert not Path("/tmp/pwned").exists()


def test_device_nodes_are_skipped_fifos_kept(registry, tmp_path):
    img = oci.Image(
        layers=[
            oci.layer(
                [
                    oci.Entry("dev-null", "chr"),
                    oci.Entry("disk", "blk"),
                    oci.Entry("pipe", "fifo"),
                    oci.file("ok", "ok"),
                ]
            )
        ]
    )
    r = repo()
    oci.push(registry, r, "latest", img)
    got = pull(make_images(tmp_path), f"{registry.host}/{r}")
    with mounted(got.sif_path) as root:
        assert not os.path.lexists(root / "dev-null")
        assert not os.path.lexists(root / "disk")
        assert stat.S_ISFIFO(os.lstat(root / "pipe").st_mode)
        assert (root / "ok").read_text() == "ok"


def test_a_layer_whose_bytes_do_not_match_its_digest_rejects_the_image(registry, tmp_path):
    good = oci.layer([oci.file("payload", "A" * 4096)], compression="none")
    img = oci.Image(layers=[good])
    r = repo()
    oci.push(registry, r, "latest", img)
    blob = registry.blob_file(good.digest)
    data = bytearray(blob.read_bytes())
    data[-5000] ^= 0xFF  # same size, different content
    blob.write_bytes(bytes(data))
    images = make_images(tmp_path)
    try:
        with pytest.raises(errors.InvalidArgument, match=f"expected {good.digest}"):
            pull(images, f"{registry.host}/{r}")
        assert images.list() == []
        assert os.listdir(images.store.sif_dir) == []
    finally:
        data[-5000] ^= 0xFF
        blob.write_bytes(bytes(data))


def test_unknown_tag_and_repository_are_not_found(registry, tmp_path):
    with pytest.raises(errors.NotFound, match="not found"):
        pull(make_images(tmp_path), f"{registry.host}/test/nothing-here:nope")


def test_unreachable_registry_is_unavailable_after_retries(tmp_path):
    from tests.support.registry import free_port

    with pytest.raises(errors.Unavailable, match="4 tries"):
        pull(make_images(tmp_path), f"127.0.0.1:{free_port()}/x/y:z")


def test_concurrent_pulls_share_one_download(registry, tmp_path):
    r = repo()
    img = oci.Image(layers=[oci.layer(oci.busybox_entries()), oci.layer([oci.file("f", "1")])])
    oci.push(registry, r, "a", img)
    oci.push(registry, r, "b", img)
    images = make_images(tmp_path)

    with counting_proxy(registry.url) as proxy:

        async def both():
            return await asyncio.gather(
                images.pull(f"{proxy.host}/{r}:a"),
                images.pull(f"{proxy.host}/{r}:a"),
                images.pull(f"{proxy.host}/{r}:b"),
            )

        a1, a2, b = asyncio.run(both())
        gets = dict(proxy.blob_gets)
    # Every blob (config and each layer) crossed the wire exactly once for three pulls.
    assert len(gets) == len(img.layers) + 1, gets
    assert set(gets.values()) == {1}, gets
    assert a1.id == a2.id == b.id == img.id
    final = images.find(img.id)
    assert final is not None
    assert set(final.repo_tags) == {f"{proxy.host}/{r}:a", f"{proxy.host}/{r}:b"}


def test_second_pull_of_a_stored_image_downloads_no_layer(registry, tmp_path, monkeypatch):
    r = repo()
    oci.push(registry, r, "latest", oci.busybox_image())
    images = make_images(tmp_path)
    first = pull(images, f"{registry.host}/{r}")

    async def refuse(*a, **kw):
        raise AssertionError("layer downloaded again")

    monkeypatch.setattr("sycri.images.registry.RegistryClient.blob_to_file", refuse)
    again = pull(images, f"{registry.host}/{r}")
    assert again.id == first.id


def test_token_auth_registry(token_registry, tmp_path):
    r = repo()
    img = oci.busybox_image(cmd=["token"])
    oci.push(token_registry, r, "latest", img)
    ref = f"{token_registry.host}/{r}"
    images = make_images(tmp_path)
    with pytest.raises(errors.Unauthenticated, match="requires credentials"):
        pull(images, ref)
    with pytest.raises(errors.Unauthenticated, match="refused the credentials"):
        pull(images, ref, Credentials("sycri", "wrong-password"))
    got = pull(images, ref, Credentials(token_registry.username, token_registry.password))
    assert got.id == img.id
    assert any("scope=repository" in q for q in token_registry.token_requests)


def test_basic_auth_registry_with_auth_field_and_docker_config(basic_registry, tmp_path):
    r = repo()
    img = oci.busybox_image(cmd=["basic"])
    oci.push(basic_registry, r, "latest", img)
    ref = f"{basic_registry.host}/{r}"
    with pytest.raises(errors.Unauthenticated, match="refused the credentials"):
        pull(make_images(tmp_path / "bad"), ref, Credentials("sycri", "nope"))
    auth = base64.b64encode(f"{basic_registry.username}:{basic_registry.password}".encode())
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {basic_registry.host: {"auth": auth.decode()}}}))
    got = pull(make_images(tmp_path / "cfg", docker_config=str(config)), ref)
    assert got.id == img.id


def test_registries_conf_mirror_serves_a_prefix(registry, tmp_path):
    r = repo()
    img = oci.busybox_image(cmd=["mirrored"])
    oci.push(registry, r, "latest", img)
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f"""
[[registry]]
prefix = "example.invalid/team"
location = "unreachable.invalid/team"
[[registry.mirror]]
location = "{registry.host}/{r.split("/")[0]}"
insecure = true
"""
    )
    images = make_images(tmp_path, registries_conf=str(conf))
    got = pull(images, f"example.invalid/team/{r.split('/')[1]}:latest")
    assert got.id == img.id
    assert got.repo_tags == (f"example.invalid/team/{r.split('/')[1]}:latest",)


def test_oras_sif_artifact_is_stored_as_is(registry, tmp_path):
    r = repo()
    oci.push(registry, r, "latest", oci.busybox_image(cmd=["from-oras"]))
    source = pull(make_images(tmp_path / "src"), f"{registry.host}/{r}")
    sif_bytes = Path(source.sif_path).read_bytes()
    art = repo()
    _, cfg_digest = oci.push_sif(registry, art, "v1", sif_bytes)
    got = pull(make_images(tmp_path / "dst"), f"oras://{registry.host}/{art}:v1")
    # the id is the SIF's own digest: the config of an oras SIF artifact names nothing
    assert got.id == oci.sha256(sif_bytes) != cfg_digest
    assert Path(got.sif_path).read_bytes() == sif_bytes
    assert got.config.cmd == ("from-oras",)
    assert got.repo_tags == (f"oras://{registry.host}/{art}:v1",)


def test_oras_refuses_a_plain_image(registry, tmp_path):
    r = repo()
    oci.push(registry, r, "latest", oci.busybox_image())
    with pytest.raises(errors.InvalidArgument, match="SIF artifact"):
        pull(make_images(tmp_path), f"oras://{registry.host}/{r}:latest")


def test_local_sif_is_used_in_place_and_never_deleted(registry, tmp_path):
    r = repo()
    oci.push(registry, r, "latest", oci.busybox_image(cmd=["local"]))
    source = pull(make_images(tmp_path / "src"), f"{registry.host}/{r}")
    local = tmp_path / "shared" / "app.sif"
    local.parent.mkdir()
    local.write_bytes(Path(source.sif_path).read_bytes())
    images = make_images(tmp_path / "node")
    got = pull(images, str(local))
    assert got.sif_path == str(local) and got.local
    assert got.config.cmd == ("local",)
    assert got.id == "sha256:" + hashlib.sha256(local.read_bytes()).hexdigest()
    assert images.find(f"file://{local}").id == got.id
    asyncio.run(images.remove(got.id))
    assert local.exists()
    assert images.find(str(local)) is None


def test_remove_shared_tag_only_untags_and_in_use_is_refused(registry, tmp_path):
    r = repo()
    img = oci.busybox_image(cmd=["rm"])
    oci.push(registry, r, "one", img)
    oci.push(registry, r, "two", img)
    images = make_images(tmp_path)
    pull(images, f"{registry.host}/{r}:one")
    got = pull(images, f"{registry.host}/{r}:two")
    assert len(got.repo_tags) == 2
    asyncio.run(images.remove(f"{registry.host}/{r}:one"))
    left = images.find(img.id)
    assert left is not None and left.repo_tags == (f"{registry.host}/{r}:two",)
    assert os.path.exists(left.sif_path)
    images.users.append(lambda image_id: "web-1 (abc123)" if image_id == img.id else None)
    with pytest.raises(errors.FailedPrecondition, match="web-1"):
        asyncio.run(images.remove(f"{registry.host}/{r}:two"))
    images.users.clear()
    asyncio.run(images.remove(left.repo_digests[0]))
    assert images.find(img.id) is None
    assert not os.path.exists(left.sif_path)


def test_remove_by_a_tag_that_occurs_in_the_image_id_only_untags(registry, tmp_path):
    """A tag whose text is a piece of the id ("e0d" in "sha256:e0d...") is still a tag."""
    img = oci.busybox_image(cmd=["substring"])
    short = img.id.removeprefix("sha256:")[:3]  # docker.io/library/<short>:latest
    oci.push(registry, f"library/{short}", "latest", img)
    r = repo()
    oci.push(registry, r, "two", img)
    conf = tmp_path / "registries.conf"
    conf.write_text(
        f"""
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "{registry.host}"
insecure = true
"""
    )
    images = make_images(tmp_path, registries_conf=str(conf))
    pull(images, short)
    got = pull(images, f"{registry.host}/{r}:two")
    assert set(got.repo_tags) == {f"docker.io/library/{short}:latest", f"{registry.host}/{r}:two"}
    asyncio.run(images.remove(short))
    left = images.find(img.id)
    assert left is not None and left.repo_tags == (f"{registry.host}/{r}:two",)
    assert os.path.exists(left.sif_path)


def test_restart_removes_leftovers_of_a_killed_pull(registry, tmp_path):
    images = make_images(tmp_path)
    junk = images.store.tmp_dir / "deadbeef.xyz"
    (junk / "rootfs").mkdir(parents=True)
    (junk / "rootfs" / "file").write_text("half")
    orphan = images.store.sif_dir / ("0" * 64 + ".sif")
    orphan.write_text("half-written sif")
    images.close()
    again = make_images(tmp_path)
    assert not junk.exists() and not orphan.exists()
    assert again.list() == []


def test_hostile_singularity_layout_links_are_replaced_not_followed(registry, tmp_path):
    outside = tmp_path / "host-dir"
    outside.mkdir()
    victim = tmp_path / "host-file"
    victim.write_text("untouched")
    img = oci.Image(
        layers=[
            oci.layer(oci.busybox_entries()),
            oci.layer(
                [oci.symlink(".singularity.d", str(outside)), oci.symlink("proc", str(outside))]
            ),
        ]
    )
    r = repo()
    oci.push(registry, r, "latest", img)
    got = pull(make_images(tmp_path / "a"), f"{registry.host}/{r}")
    assert list(outside.iterdir()) == []
    with mounted(got.sif_path) as root:
        assert (root / ".singularity.d").is_dir() and not (root / ".singularity.d").is_symlink()
        assert (root / ".singularity.d/runscript").is_file()
    img2 = oci.Image(
        layers=[
            oci.layer(oci.busybox_entries()),
            oci.layer(
                [
                    oci.directory(".singularity.d"),
                    oci.symlink(".singularity.d/runscript", str(victim)),
                    oci.symlink(".singularity.d/env", str(outside)),
                ]
            ),
        ]
    )
    oci.push(registry, r, "two", img2)
    got2 = pull(make_images(tmp_path / "b"), f"{registry.host}/{r}:two")
    assert victim.read_text() == "untouched"
    assert list(outside.iterdir()) == []
    with mounted(got2.sif_path) as root:
        assert not (root / ".singularity.d/runscript").is_symlink()
        assert (root / ".singularity.d/env/10-docker2singularity.sh").is_file()


def test_a_pull_killed_with_sigkill_leaves_nothing_visible_and_is_cleaned_at_start(
    registry, tmp_path
):
    import random
    import signal
    import time

    from tests.support.server import sycri_cmd, sycri_env

    rng = random.Random(7)
    big = [oci.file(f"blob{i}", rng.randbytes(8 << 20)) for i in range(8)]
    img = oci.Image(layers=[oci.layer(oci.busybox_entries()), oci.layer(big, compression="none")])
    r = repo()
    oci.push(registry, r, "latest", img)
    root = tmp_path / "root"
    proc = subprocess.Popen(
        sycri_cmd("pull", "--root-dir", str(root), f"{registry.host}/{r}"),
        env=sycri_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    tmp = root / "images" / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(tmp.glob("*/blob-*")):  # a layer is in
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert any(tmp.iterdir()), "the pull finished before it could be killed"
    images = make_images(tmp_path)
    assert images.list() == []
    assert list(images.store.tmp_dir.iterdir()) == []
    assert list(images.store.sif_dir.iterdir()) == []
    got = pull(images, f"{registry.host}/{r}")  # and a new pull works
    assert got.id == img.id


def test_token_auth_with_identity_token_and_registry_token(token_registry, tmp_path):
    r = repo()
    img = oci.busybox_image(cmd=["identity"])
    oci.push(token_registry, r, "latest", img)
    ref = f"{token_registry.host}/{r}"
    got = pull(
        make_images(tmp_path / "a"), ref, Credentials(identity_token=token_registry.refresh_token)
    )
    assert got.id == img.id
    assert any(
        q.startswith("POST ") and "refresh_token" in q for q in token_registry.token_requests
    )
    with pytest.raises(errors.Unauthenticated, match="refused"):
        pull(make_images(tmp_path / "b"), ref, Credentials(identity_token="stale"))
    bearer = token_registry.auth_header(r, "pull")["Authorization"].removeprefix("Bearer ")
    got = pull(make_images(tmp_path / "c"), ref, Credentials(registry_token=bearer))
    assert got.id == img.id


def test_a_layer_present_locally_is_not_downloaded_again_and_goes_with_its_last_image(
    registry, tmp_path, monkeypatch
):
    from sycri.images.registry import RegistryClient

    base = oci.layer(oci.busybox_entries())
    a = oci.Image(layers=[base, oci.layer([oci.file("which", "a")])])
    b = oci.Image(layers=[base, oci.layer([oci.file("which", "b")])])
    r = repo()
    oci.push(registry, r, "a", a)
    oci.push(registry, r, "b", b)
    fetched: list[str] = []
    real = RegistryClient.blob_to_file

    async def recording(self, desc, dest, what, progress=None):
        fetched.append(desc.digest)
        return await real(self, desc, dest, what, progress)

    monkeypatch.setattr(RegistryClient, "blob_to_file", recording)
    images = make_images(tmp_path, keep_layers=True)
    pull(images, f"{registry.host}/{r}:a")
    assert fetched == [base.digest, a.layers[1].digest]
    fetched.clear()
    got_b = pull(images, f"{registry.host}/{r}:b")
    assert fetched == [b.layers[1].digest]
    with mounted(got_b.sif_path) as root:
        assert (root / "which").read_text() == "b"
        assert (root / "bin/busybox").exists()
    blobs = images.store.blob_dir
    asyncio.run(images.remove(a.id))
    assert (blobs / base.digest.split(":")[1]).exists()
    assert not (blobs / a.layers[1].digest.split(":")[1]).exists()
    asyncio.run(images.remove(b.id))
    assert list(blobs.iterdir()) == []


def test_self_signed_tls_registry_marked_insecure(tls_registry, tmp_path):
    r = repo()
    img = oci.busybox_image(cmd=["tls"])
    oci.push(tls_registry, r, "latest", img)
    host = tls_registry.host.replace("127.0.0.1", "localhost")
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nlocation = "{host}"\ninsecure = true\n')
    got = pull(make_images(tmp_path, registries_conf=str(conf)), f"{host}/{r}")
    assert got.id == img.id


def test_untrusted_tls_certificate_is_a_clear_error(tls_registry, tmp_path, monkeypatch):
    import re

    # loopback registries count as insecure (as with docker); take that away for this test
    monkeypatch.setattr("sycri.images.registry.LOOPBACK", re.compile("^$"))
    with pytest.raises(errors.Unavailable, match=r"TLS certificate .* is not trusted"):
        pull(make_images(tmp_path), f"{tls_registry.host}/test/any:latest")
