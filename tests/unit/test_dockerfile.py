"""The node image's Dockerfile, checked with hadolint-style rules (no Docker engine here).

Rule names in the docstrings are hadolint's where one exists. Package names are looked
up in the Debian archive index this machine has (apt-cache), so a misspelt package
fails here rather than in someone's image build.
"""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from tests.support.chart import ROOT, objects
from tests.support.dockerfile import Dockerfile, apt_installs, parse

DOCKERFILE = ROOT / "Dockerfile"

RUNTIME_PACKAGES = {
    "python3",
    "runc",
    "conmon",
    "catatonit",
    "squashfs-tools",
    "squashfs-tools-ng",  # tar2sqfs: pulled images become squashfs from their layer streams
    "squashfuse",
    "containernetworking-plugins",
    "iptables",
    "systemd",  # systemd-run: conmon's scope with the systemd cgroup driver (the chart's default)
}
BUILD_TOOLS = {
    "build-essential",
    "gcc",
    "g++",
    "make",
    "cmake",
    "python3-dev",
    "python3-pip",
    "python3-venv",
    "git",
    "curl",
    "wget",
    "golang",
    "golang-go",
}


@pytest.fixture(scope="module")
def df() -> Dockerfile:
    return parse(DOCKERFILE)


def _runs(df: Dockerfile):
    return [(stage, ins) for stage in df.stages for ins in stage.all("RUN")]


def test_multi_stage_build_copies_only_the_build_result(df):
    assert len(df.stages) >= 2
    build, final = df.stage("build"), df.final
    assert final.name != "build"
    copies = final.all("COPY")
    assert copies, "the final stage must copy the build result"
    assert all(c.args.startswith("--from=build ") for c in copies)
    assert any("/opt/sycri" in c.args for c in copies)
    assert not build.all("ENTRYPOINT")


def test_base_images_are_pinned_never_latest(df):
    """DL3006 (tag the image), DL3007 (no latest); plus: a dated tag or a digest."""
    for stage in df.stages:
        image = stage.image
        assert image, f"stage {stage.name}: FROM resolves to nothing"
        name, _, digest = image.partition("@")
        repo, _, tag = name.rpartition(":") if ":" in name.split("/")[-1] else (name, "", "")
        assert tag or digest, f"{image}: untagged"
        assert tag != "latest" and "latest" not in image
        assert re.search(r"-\d{8}", tag) or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), (
            f"{image}: pin a dated tag or a digest"
        )
        assert repo.endswith("debian") and tag.endswith("-slim"), f"{image}: not Debian slim"
    # Both stages use the same base: the venv built in one runs on the other's python3.
    assert len({s.image for s in df.stages}) == 1


def test_apt_installs_are_non_interactive_minimal_and_clean(df):
    """DL3008-ish, DL3009 (delete the apt lists), DL3005 (no upgrade), DL3027 (apt-get)."""
    for stage, run in _runs(df):
        text = run.args
        assert not re.search(r"\bapt\s", text), f"line {run.line}: use apt-get, not apt"
        assert not re.search(r"apt-get\s+(dist-)?upgrade", text), f"line {run.line}: upgrade"
        installs = apt_installs(run)
        for words in installs:
            assert "-y" in words or "--yes" in words, f"line {run.line}: apt-get install -y"
            assert "--no-install-recommends" in words, f"line {run.line}: no recommends"
        if "apt-get update" in text:
            assert installs, f"line {run.line}: apt-get update alone (DL3009)"
            assert "rm -rf /var/lib/apt/lists/*" in text, f"line {run.line}: apt lists left"
        if installs:
            assert "apt-get update" in text, f"line {run.line}: install without update"
            before = stage.instructions[: stage.instructions.index(run)]
            assert any(
                i.keyword in ("ARG", "ENV") and "DEBIAN_FRONTEND=noninteractive" in i.args
                for i in before
            ), f"stage {stage.name}: DEBIAN_FRONTEND=noninteractive before apt-get"


def test_debian_frontend_does_not_leak_into_the_image(df):
    for stage in df.stages:
        for env in stage.all("ENV"):
            assert "DEBIAN_FRONTEND" not in env.args  # ARG: build time only


def test_final_stage_has_the_runtime_tools_and_no_build_tools(df):
    installed = set()
    for run in df.final.all("RUN"):
        for words in apt_installs(run):
            installed |= {w for w in words if not w.startswith("-")}
    assert installed >= RUNTIME_PACKAGES
    assert not installed & BUILD_TOOLS
    for run in df.final.all("RUN"):
        assert not re.search(r"\bpip3?\b", run.args), f"line {run.line}: pip in the final stage"
    # The build stage removes pip from the venv it hands over.
    assert any("pip uninstall -y pip" in r.args for r in df.stage("build").all("RUN"))


def test_every_package_exists_in_debian():
    df = parse(DOCKERFILE)
    packages = sorted(
        {
            w
            for _, run in _runs(df)
            for words in apt_installs(run)
            for w in words
            if not w.startswith("-")
        }
    )
    result = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *packages],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    found = set(re.findall(r"^Package: (\S+)$", result.stdout, re.M))
    assert found == set(packages)


def test_pipes_run_with_pipefail(df):
    """DL4006: a RUN with a pipe needs a SHELL with -o pipefail."""
    for stage, run in _runs(df):
        if re.search(r"[^|]\|[^|]", run.args):
            shells = [i for i in stage.instructions[: stage.instructions.index(run)] if i.keyword == "SHELL"]  # fmt: skip
            assert shells and "pipefail" in shells[-1].args, f"line {run.line}"


def test_no_add_and_absolute_workdirs(df):
    """DL3020 (COPY, not ADD), DL3000 (absolute WORKDIR)."""
    assert not [i for i in df.instructions if i.keyword == "ADD"]
    for i in df.instructions:
        if i.keyword == "WORKDIR":
            assert i.args.startswith("/")


def test_one_process_in_exec_form_with_the_charts_config(df):
    """DL3025 (JSON form); one ENTRYPOINT; no shell or supervisor in front of sycri:
    sycri-node sets the iptables backend and execs sycri (tests/integration/
    test_iptables_backend.py), and it is the wheel's console script."""
    final = df.final
    [entrypoint] = final.all("ENTRYPOINT")
    [cmd] = final.all("CMD")
    assert entrypoint.exec_form() == ["sycri-node", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sycri-node"] == "sycri.iptables:main"
    assert cmd.exec_form() == ["--config", "/etc/sycri/config.yaml"]
    joined = " ".join(entrypoint.exec_form() + cmd.exec_form())
    assert not re.search(r"\b(sh|bash|supervisord|s6|tini|dumb-init)\b|&", joined)
    # The chart starts the image with the same arguments and mounts the config there.
    container = next(o for o in objects() if o["kind"] == "DaemonSet")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert container["args"] == cmd.exec_form()
    assert "command" not in container  # the ENTRYPOINT stays


def test_healthcheck_asks_sycri_over_its_socket(df):
    [hc] = df.final.all("HEALTHCHECK")
    form = hc.exec_form()
    assert form is not None and form[:2] == ["sycri", "health"]
    assert "--config" in form and form[form.index("--config") + 1] == "/etc/sycri/config.yaml"
    assert re.search(r"--timeout=\d+s", hc.args) and re.search(r"--interval=\d+s", hc.args)


def test_user_is_declared(df):
    users = df.final.all("USER")
    assert users, "declare USER explicitly"
    assert users[-1].args == "root"  # sycri needs it: namespaces, mounts, cgroups, runc


def test_dockerignore_lets_in_what_the_build_copies(df):
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for copy in df.stage("build").all("COPY"):
        sources = copy.args.split()[:-1]
        for src in sources:
            assert src.rstrip("/") in allowed, f"{src} is excluded by .dockerignore"
            assert (ROOT / src).exists()


def test_the_kubernetes_client_is_an_extra_the_image_installs_by_default(df):
    """126 MB of the image: only the node agent needs it (SYCRI_EXTRAS= leaves it out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("kubernetes")]
    assert [d for d in project["optional-dependencies"]["node-agent"]] == ["kubernetes>=30,<40"]
    args = {
        a.args.split("=", 1)[0]: a.args.split("=", 1)[1]
        for a in df.stage("build").all("ARG")
        if "=" in a.args
    }
    assert args["SYCRI_EXTRAS"] == "node-agent"
    assert any("${SYCRI_EXTRAS:+[${SYCRI_EXTRAS}]}" in r.args for r in df.stage("build").all("RUN"))


def test_the_healthcheck_format_caveat_is_documented():
    """OCI image configs have no HEALTHCHECK: buildah/podman drop it unless --format docker."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert "--format docker" in text
    assert "--format docker" in DOCKERFILE.read_text()
