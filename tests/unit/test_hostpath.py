"""Volume host paths resolved under host_root: symlinks stay inside it, misses are named."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from sycri.api import api_pb2
from sycri.errors import InvalidArgument
from sycri.runtime.container import hostpath


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A fake host root: /root/.bashrc, /etc/ssl/certs, and symlinks that try to leave."""
    root = tmp_path / "host"
    (root / "root").mkdir(parents=True)
    (root / "root/.bashrc").write_text("the host's bashrc\n")
    (root / "etc/ssl/certs").mkdir(parents=True)
    (root / "etc/ssl/certs/ca.pem").write_text("host ca\n")
    (root / "data").mkdir()
    (root / "data/etc-link").symlink_to("/etc")  # absolute: the host's /etc
    (root / "data/up").symlink_to("../../../../../../..")  # climbs past the root
    (root / "data/loop").symlink_to("loop")
    (root / "data/file").write_text("x")
    return root


RESOLVERS = [hostpath.resolve, hostpath._resolve_walk]


@pytest.mark.parametrize("resolve", RESOLVERS, ids=["kernel", "walk"])
def test_paths_resolve_inside_the_host_root(host: Path, resolve):
    root = str(host.resolve())
    assert resolve(root, "/root") == f"{root}/root"
    assert resolve(root, "/data/etc-link/ssl/certs") == f"{root}/etc/ssl/certs"
    assert resolve(root, "/data/up/etc") == f"{root}/etc"
    assert resolve(root, "/../../root/.bashrc") == f"{root}/root/.bashrc"
    assert resolve(root, "/") == root


@pytest.mark.parametrize("resolve", RESOLVERS, ids=["kernel", "walk"])
def test_unresolvable_paths_raise(host: Path, resolve):
    root = str(host.resolve())
    for path, code in (
        ("/nope", errno.ENOENT),
        ("/data/etc-link/nope", errno.ENOENT),
        ("/data/loop", errno.ELOOP),
        ("/data/file/below", errno.ENOTDIR),
    ):
        with pytest.raises(OSError) as err:
            resolve(root, path)
        assert err.value.errno == code, path


def _cfg(*paths: str) -> api_pb2.ContainerConfig:
    cfg = api_pb2.ContainerConfig()
    for i, p in enumerate(paths):
        cfg.mounts.add(container_path=f"/m{i}", host_path=p)
    return cfg


def test_mounts_are_rewritten_except_under_sycris_own_dirs(host: Path, tmp_path: Path):
    own = tmp_path / "run"
    own.mkdir()
    cfg = _cfg("/root", "/data/etc-link", f"{own}/pod/hosts")
    out = hostpath.resolve_mounts(cfg, str(host), [str(own)])
    root = str(host.resolve())
    assert [m.host_path for m in out.mounts] == [f"{root}/root", f"{root}/etc", f"{own}/pod/hosts"]
    assert cfg.mounts[0].host_path == "/root"  # the request is not changed


def test_a_missing_volume_is_refused_naming_it(host: Path):
    with pytest.raises(InvalidArgument, match=r"host path '/srv/gone' for '/m1' does not exist"):
        hostpath.resolve_mounts(_cfg("/root", "/srv/gone"), str(host), [])
    with pytest.raises(InvalidArgument, match=r"'/data/loop' for '/m0' cannot be used"):
        hostpath.resolve_mounts(_cfg("/data/loop"), str(host), [])
