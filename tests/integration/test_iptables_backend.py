"""The node image's entrypoint picks the host's iptables backend with the real
iptables-legacy and iptables-nft, each run in a network namespace of the test's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.server import sycri_env

pytestmark = pytest.mark.root

DETECT = "import sys; from sycri.iptables import main; sys.exit(main(['--detect']))"


def _detect_after(setup: str, env: dict[str, str] | None = None) -> str:
    """The backend chosen in a fresh network namespace after the shell ``setup`` ran."""
    script = f'set -e\n{setup}\nexec "$0" -c "$1"'
    res = subprocess.run(
        ["unshare", "--net", "sh", "-c", script, sys.executable, DETECT],
        capture_output=True,
        text=True,
        timeout=60,
        env=sycri_env(env),
    )
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _rules(tool: str, n: int) -> str:
    return "\n".join(f"{tool} -A INPUT -s 10.9.{i}.0/24 -j ACCEPT" for i in range(n))


def test_no_rules_anywhere_means_nft():
    assert _detect_after("true") == "nft"


def test_the_backend_with_more_rules_wins():
    assert (
        _detect_after(_rules("iptables-legacy", 3) + "\n" + _rules("iptables-nft", 1)) == "legacy"
    )
    assert _detect_after(_rules("iptables-legacy", 1) + "\n" + _rules("iptables-nft", 3)) == "nft"
    assert (
        _detect_after(
            _rules("ip6tables-legacy", 2).replace("10.9.", "fd00:").replace(".0/24", "::/64")
        )
        == "legacy"
    )


def test_kubelets_hint_chain_decides_over_rule_counts():
    setup = _rules("iptables-legacy", 5) + "\niptables-nft -t mangle -N KUBE-IPTABLES-HINT"
    assert _detect_after(setup) == "nft"
    setup = _rules("iptables-nft", 5) + "\niptables-legacy -t mangle -N KUBE-IPTABLES-HINT"
    assert _detect_after(setup) == "legacy"


def test_the_choice_can_be_forced():
    assert (
        _detect_after(_rules("iptables-nft", 3), {"SYCRI_IPTABLES_BACKEND": "legacy"}) == "legacy"
    )
    res = subprocess.run(
        [sys.executable, "-c", DETECT],
        capture_output=True,
        text=True,
        timeout=60,
        env=sycri_env({"SYCRI_IPTABLES_BACKEND": "both"}),
    )
    assert res.returncode == 2 and "legacy, nft or auto" in res.stderr


def test_sycri_node_sets_the_alternatives_and_execs_sycri(tmp_path):
    """The whole entrypoint, on an alternatives database of the test's own."""
    admin, alts = tmp_path / "admin", tmp_path / "alternatives"
    admin.mkdir()
    alts.mkdir()
    for tool in ("iptables", "ip6tables"):
        for prio, mode in ((20, "nft"), (10, "legacy")):
            subprocess.run(
                ["update-alternatives", "--admindir", str(admin), "--altdir", str(alts),
                 "--install", str(tmp_path / tool), tool, f"/usr/sbin/{tool}-{mode}", str(prio)],
                check=True, capture_output=True,
            )  # fmt: skip
    wrapper = tmp_path / "bin"
    wrapper.mkdir()
    ua = wrapper / "update-alternatives"  # this test's database, not the machine's
    ua.write_text(
        f'#!/bin/sh\nexec /usr/bin/update-alternatives --admindir {admin} --altdir {alts} "$@"\n'
    )
    ua.chmod(0o755)
    env = {"PATH": f"{wrapper}:/usr/sbin:/usr/bin:/sbin:/bin"}
    main = "import sys; from sycri.iptables import main; sys.exit(main(['version']))"
    res = subprocess.run(
        ["unshare", "--net", "sh", "-c", f'{_rules("iptables-legacy", 2)}\nexec "$0" -c "$1"',
         sys.executable, main],
        capture_output=True, text=True, timeout=60, env=sycri_env(env),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("sycri ")  # exec'd sycri version
    assert "iptables backend legacy (2 legacy rules, 0 nft rules)" in res.stderr
    for tool in ("iptables", "ip6tables"):
        assert os.readlink(alts / tool) == f"/usr/sbin/{tool}-legacy"
