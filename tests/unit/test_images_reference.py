"""Image references, registries.conf matching, manifests and credentials: pure code."""

from __future__ import annotations

import base64
import json

import pytest
from sycri.errors import FailedPrecondition, InvalidArgument, NotFound
from sycri.images import manifest as mf
from sycri.images import reference, registries
from sycri.images.credentials import from_docker_config
from sycri.images.unpack import HostileLayer, split_name, symlink_target_ok


@pytest.mark.parametrize(
    "text, expected",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("user/app", "docker.io/user/app:latest"),
        ("docker://alpine", "docker.io/library/alpine:latest"),
        ("index.docker.io/library/redis:7", "docker.io/library/redis:7"),
        ("localhost:5000/a/b:c", "localhost:5000/a/b:c"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000/x:latest"),
        ("quay.io/org/img@sha256:" + "a" * 64, "quay.io/org/img@sha256:" + "a" * 64),
        ("oras://ghcr.io/org/app.sif:v1", "oras://ghcr.io/org/app.sif:v1"),
        ("library://alpine", "library://library/default/alpine:latest"),
        ("library://sylabs/examples/lolcow:1.0", "library://sylabs/examples/lolcow:1.0"),
        ("cloud.sylabs.io/sylabs/examples/lolcow", "library://sylabs/examples/lolcow:latest"),
        ("/images/app.sif", "/images/app.sif"),
        ("file:///images/../images/app.sif", "/images/app.sif"),
    ],
)
def test_references_normalise(text, expected):
    assert str(reference.parse(text)) == expected


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty"),
        ("Busybox", "uppercase"),
        ("busybox:bad tag", "whitespace"),
        ("busybox@sha256:abc", "digest"),
        ("ftp://host/x", "unknown transport"),
        ("busybox:" + "x" * 200, "tag"),
        ("/etc/passwd", ".sif file"),
        ("file://relative.sif", "absolute path"),
        ("a//b", "component"),
    ],
)
def test_bad_references_say_why(text, why):
    with pytest.raises(InvalidArgument, match=why):
        reference.parse(text)


def test_image_ids():
    assert reference.is_image_id("sha256:" + "0" * 64)
    assert reference.is_image_id("f" * 64)
    assert not reference.is_image_id("busybox")


CONF = """
unqualified-search-registries = ["docker.io"]
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5000"
insecure = true
[[registry.mirror]]
location = "second.local"

[[registry]]
prefix = "example.com/team"
location = "internal.example:5000/mirror/team"
insecure = true

[[registry]]
location = "blocked.example"
blocked = true

[[registry]]
prefix = "*.wild.example"
insecure = true
"""


def test_registries_conf_mirrors_prefixes_blocked_and_wildcards():
    regs = registries.parse(CONF)
    eps = regs.endpoints(reference.parse("busybox"))
    assert [(e.host, e.repository, e.insecure, e.mirror) for e in eps] == [
        ("mirror.local:5000", "library/busybox", True, True),
        ("second.local", "library/busybox", False, True),
        ("docker.io", "library/busybox", False, False),
    ]
    assert eps[-1].api_host == "registry-1.docker.io"
    (ep,) = regs.endpoints(reference.parse("example.com/team/app:1"))
    assert (ep.host, ep.repository, ep.insecure) == (
        "internal.example:5000",
        "mirror/team/app",
        True,
    )
    (ep,) = regs.endpoints(reference.parse("example.com/teamster/app"))
    assert (ep.host, ep.insecure) == ("example.com", False)  # prefix matches whole components
    with pytest.raises(FailedPrecondition, match="blocked"):
        regs.endpoints(reference.parse("blocked.example/x"))
    (ep,) = regs.endpoints(reference.parse("a.wild.example/x"))
    assert (ep.host, ep.insecure) == ("a.wild.example", True)


def test_registries_conf_errors_name_the_file():
    with pytest.raises(registries.RegistriesConfError, match=r"my\.conf"):
        registries.parse("[[registry]\n", "my.conf")
    with pytest.raises(registries.RegistriesConfError, match="neither prefix nor location"):
        registries.parse("[[registry]]\ninsecure = true\n")


def _desc(arch, variant="", os_="linux"):
    p = {"architecture": arch, "os": os_}
    if variant:
        p["variant"] = variant
    return {
        "mediaType": mf.OCI_MANIFEST,
        "digest": "sha256:" + arch[0] * 64,
        "size": 1,
        "platform": p,
    }


def test_platform_choice_prefers_the_exact_variant():
    entries = mf.parse_index(
        json.dumps(
            {"manifests": [_desc("arm", "v6"), _desc("arm", "v7"), _desc("amd64", os_="windows")]}
        ).encode()
    )
    assert mf.choose_platform(entries, "arm", "v7").platform["variant"] == "v7"
    with pytest.raises(NotFound, match=r"linux/amd64.*has: linux/arm/v6"):
        mf.choose_platform(entries, "amd64", "")


def test_manifests_refuse_schema1_and_bad_descriptors():
    with pytest.raises(InvalidArgument, match="schema 1"):
        mf.kind(b'{"schemaVersion": 1}', "")
    bad = {"config": {"digest": "md5:x", "size": 1}, "layers": []}
    with pytest.raises(InvalidArgument, match="digest"):
        mf.parse_manifest(json.dumps(bad).encode(), mf.OCI_MANIFEST)
    layer = mf.Descriptor("application/x-foo", "sha256:" + "0" * 64, 1)
    with pytest.raises(InvalidArgument, match="unsupported media type"):
        layer.compression  # noqa: B018


def test_docker_config_credentials(tmp_path):
    auth = base64.b64encode(b"me:secret").decode()
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": auth},
                    "reg.example:5000": {"identitytoken": "refresh"},
                }
            }
        )
    )
    hub = from_docker_config(str(path), "docker.io")
    assert (hub.username, hub.password) == ("me", "secret")
    assert from_docker_config(str(path), "reg.example:5000").identity_token == "refresh"
    assert from_docker_config(str(path), "other.example") is None
    assert "secret" not in repr(hub)


def test_layer_names_and_symlink_targets():
    assert split_name("./a/b/", "l") == ["a", "b"]
    assert split_name("/abs/x", "l") == ["abs", "x"]
    with pytest.raises(HostileLayer, match="climbs out"):
        split_name("a/../../x", "l")
    assert symlink_target_ok(["usr", "bin", "sh"], "../../bin/busybox")
    assert not symlink_target_ok(["usr", "bin", "sh"], "../../../bin/busybox")
    assert symlink_target_ok(["x"], "/anything")
