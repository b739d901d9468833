"""The command looked up in an image as runc will, before CreateContainer answers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sycri.runtime.container import executable


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    for d in ("bin", "usr/bin", "data", "etc"):
        (root / d).mkdir(parents=True)
    (root / "bin/busybox").write_bytes(b"\x7fELF")
    os.chmod(root / "bin/busybox", 0o755)
    (root / "bin/sh").symlink_to("busybox")
    (root / "usr/bin/env").symlink_to("/bin/busybox")  # absolute: inside the image
    (root / "usr/bin/escape").symlink_to("../../../../../bin/busybox")  # .. stops at /
    (root / "data/notes.txt").write_text("hi")
    (root / "loop").symlink_to("loop")
    (root / "sbin").symlink_to("/usr/bin")
    return root


def spec(args: list[str], env=("PATH=/usr/bin:/bin",), cwd="/", mounts=()) -> dict:
    return {
        "process": {"args": args, "env": list(env), "cwd": cwd},
        "mounts": [{"destination": m} for m in mounts],
    }


@pytest.mark.parametrize(
    "args",
    [["/bin/sh", "-c", "true"], ["sh"], ["env"], ["/usr/bin/escape"], ["/sbin/env"], ["busybox"]],
)
def test_commands_the_image_has_are_fine(image: Path, args):
    assert executable.problem(str(image), spec(args)) is None


def test_relative_to_the_working_directory(image: Path):
    assert executable.problem(str(image), spec(["./busybox"], cwd="/bin")) is None
    assert executable.problem(str(image), spec(["./busybox"], cwd="/data")) == "not found"


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["/no/such"], "not found"),
        (["/data/notes.txt"], "not executable"),
        (["/data"], "not executable"),
        (["/data/notes.txt/x"], "not found"),
        (["no-such-tool"], "not found in PATH /usr/bin:/bin"),
    ],
)
def test_what_runc_would_refuse_is_named(image: Path, args, why):
    assert executable.problem(str(image), spec(args)) == why


def test_the_last_path_in_the_environment_counts(image: Path):
    env = ("PATH=/bin", "PATH=/data")
    assert executable.problem(str(image), spec(["busybox"], env=env)) == "not found in PATH /data"


def test_only_runc_can_tell_through_a_mount_a_loop_or_a_relative_path(image: Path):
    # A volume (or /dev, /proc) may hold the command: not the image's to say.
    assert executable.problem(str(image), spec(["/opt/tool/run"], mounts=["/opt/tool"])) is None
    assert (
        executable.problem(str(image), spec(["tool"], env=["PATH=/opt/tool"], mounts=["/opt/tool"]))
        is None
    )
    # A mount reached through a symlink of the image: /sbin is /usr/bin there.
    assert executable.problem(str(image), spec(["/usr/bin/x"], mounts=["/sbin/x"])) is None
    assert executable.problem(str(image), spec(["/loop/x"])) is None
    assert executable.problem(str(image), spec(["tool"], env=["PATH=bin"])) is None
    assert executable.problem(str(image), spec(["tool"], env=[])) is None
