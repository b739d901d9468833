"""fsutil.names_in: the listing of an optional directory (CDI specs, driver libraries, CNI configs)."""

from sycri.fsutil import names_in


def test_names_are_sorted(tmp_path):
    for name in ("b.json", "a.yaml", "10-net.conflist", "2-net.conf"):
        (tmp_path / name).write_text("")
    (tmp_path / "sub").mkdir()
    assert names_in(tmp_path) == ["10-net.conflist", "2-net.conf", "a.yaml", "b.json", "sub"]


def test_a_directory_that_cannot_be_listed_has_no_names(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    assert names_in(tmp_path / "missing") == []
    assert names_in(str(tmp_path / "file")) == []
