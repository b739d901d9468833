"""registries.conf: the node's /etc/containers files by default, an explicit file wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from sycri.config import Config, ImageConfig
from sycri.errors import FailedPrecondition
from sycri.images import registries
from sycri.images.reference import parse


def _system(tmp_path: Path) -> tuple[Path, Path]:
    conf = tmp_path / "registries.conf"
    conf.write_text(
        'unqualified-search-registries = ["docker.io"]\n'
        '[[registry]]\nprefix = "example.com"\nlocation = "example.com"\n'
        '[[registry.mirror]]\nlocation = "mirror-a.local"\n'
        '[[registry]]\nlocation = "blocked.example"\nblocked = true\n'
    )
    dropins = tmp_path / "registries.conf.d"
    dropins.mkdir()
    (dropins / "10-mirror.conf").write_text(
        '[[registry]]\nprefix = "example.com"\nlocation = "example.com"\n'
        '[[registry.mirror]]\nlocation = "mirror-b.local"\n'
    )
    (dropins / "shortnames.conf").write_text('[aliases]\n"busybox" = "docker.io/library/busybox"\n')
    (dropins / "ignored.txt").write_text("not toml [[[")
    return conf, dropins


def test_without_a_setting_the_node_files_are_read_and_drop_ins_win(tmp_path):
    conf, dropins = _system(tmp_path)
    regs = registries.load("", conf, dropins)
    eps = regs.endpoints(parse("example.com/team/app:1"))
    assert [(e.host, e.mirror) for e in eps] == [("mirror-b.local", True), ("example.com", False)]
    with pytest.raises(FailedPrecondition, match="blocked"):
        regs.endpoints(parse("blocked.example/x:1"))
    assert regs.unqualified_search == ("docker.io",)


def test_absent_node_files_mean_no_configuration(tmp_path):
    regs = registries.load("", tmp_path / "none.conf", tmp_path / "none.d")
    assert regs.entries == ()


def test_an_explicit_file_wins_over_the_node_files(tmp_path):
    conf, dropins = _system(tmp_path)
    mine = tmp_path / "mine.conf"
    mine.write_text('[[registry]]\nlocation = "other.example"\ninsecure = true\n')
    regs = registries.load(str(mine), conf, dropins)
    assert [e.prefix for e in regs.entries] == ["other.example"]
    assert registries.load("/dev/null", conf, dropins).entries == ()


def test_the_default_setting_is_empty_meaning_the_node_files():
    assert ImageConfig().registries_conf == ""
    assert Config().images.registries_conf == ""
    assert Path("/etc/containers/registries.conf") == registries.SYSTEM_CONF
