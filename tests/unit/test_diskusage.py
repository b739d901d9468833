"""Writable-layer usage: allocated blocks and inodes, like du, without following links."""

from __future__ import annotations

import os

from sycri.runtime.stats.diskusage import dir_usage, mountpoint_of


def test_counts_blocks_and_inodes(tmp_path):
    top = tmp_path / "upper"
    (top / "etc" / "deep").mkdir(parents=True)
    (top / "etc" / "deep" / "data").write_bytes(os.urandom(1 << 20))
    (top / "small").write_bytes(b"x")
    empty = dir_usage(str(tmp_path / "nothing-here"))
    assert (empty.bytes, empty.inodes) == (0, 0)
    u = dir_usage(str(top))
    assert u.inodes == 5  # upper, etc, deep, data, small
    assert u.bytes >= (1 << 20) + 1
    assert (
        u.bytes
        == sum(
            os.lstat(os.path.join(d, n)).st_blocks * 512
            for d, dirs, files in os.walk(top)
            for n in dirs + files
        )
        + os.lstat(top).st_blocks * 512
    )


def test_sparse_file_counts_what_it_takes(tmp_path):
    (tmp_path / "sparse").touch()
    os.truncate(tmp_path / "sparse", 1 << 30)
    assert dir_usage(str(tmp_path)).bytes < 1 << 20


def test_hard_links_count_once_and_symlinks_are_not_followed(tmp_path):
    top = tmp_path / "upper"
    top.mkdir()
    (top / "a").write_bytes(os.urandom(256 << 10))
    os.link(top / "a", top / "b")
    big = tmp_path / "outside"
    big.write_bytes(os.urandom(1 << 20))
    (top / "link").symlink_to(big)
    u = dir_usage(str(top))
    assert u.inodes == 3  # upper, a (= b), link
    assert (256 << 10) <= u.bytes < (512 << 10)


def test_mountpoint(tmp_path):
    mp = mountpoint_of(str(tmp_path / "missing" / "dir"))
    assert os.path.ismount(mp) and str(tmp_path).startswith(mp)
