"""``sycri sif`` output helpers (the siftool comparison is in tests/integration)."""

from __future__ import annotations

import pytest
from sycri.cli import main
from sycri.sif.cli import go_time, readable_size

from tests.support.sif import IMAGES


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (28080, "27 KiB"),
        (1536, "2 KiB"),
        (1 << 30, "1 GiB"),
        (5 * (1 << 40) + 1, "5 TiB"),
    ],
)
def test_readable_size(size: int, text: str) -> None:
    assert readable_size(size) == text


def test_go_time() -> None:
    assert go_time(-62135596800) is None
    assert go_time(1593475316) == "2020-06-30 00:01:56 +0000 UTC"


def test_list_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sif", "list", str(IMAGES / "two-groups.sif")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("ID   |GROUP   |LINK    |SIF POSITION")
    assert lines[-1].split() == ["3", "|2", "|NONE", "|40960-303104", "|FS", "(Ext3/System/amd64)"]


def test_bad_file_is_a_clear_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.sif"
    bad.write_bytes(b"nope")
    assert main(["sif", "header", str(bad)]) == 2
    assert "truncated" in capsys.readouterr().err


def test_verify_unsigned(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sif", "verify", str(IMAGES / "one-group.sif")]) == 1
    assert "no signatures" in capsys.readouterr().out
