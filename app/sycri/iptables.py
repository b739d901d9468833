"""The node image's iptables backend: the one the host uses, chosen at start.

The image's iptables must write to the same backend (legacy or nf_tables) as kubelet,
kube-proxy and the CNI plugins on the host, or their rules and the portmap rules sycri's
CNI adds end up in two tables the kernel both applies. As kube-proxy's iptables-wrapper
does: kubelet's hint chain decides when present, else the backend with more rules, and
nft when neither has any. ``sycri-node`` is the image's entrypoint: it sets the Debian
alternatives accordingly and then execs ``sycri`` in its place (one process).
"""

from __future__ import annotations

import os
import subprocess
import sys

BACKENDS = ("legacy", "nft")
HINT_CHAINS = ("KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")  # kubelet's, per backend
ENV = "SYCRI_IPTABLES_BACKEND"  # legacy, nft, or auto (the default)


def rule_count(save_output: str) -> int:
    return sum(1 for line in save_output.splitlines() if line.startswith("-"))


def has_hint(save_output: str) -> bool:
    return any(
        line.startswith(tuple(":" + c + " " for c in HINT_CHAINS))
        for line in save_output.splitlines()
    )


def choose(legacy: str, nft: str) -> str:
    """The backend, from both backends' ``*-save`` output."""
    if has_hint(nft):
        return "nft"
    if has_hint(legacy):
        return "legacy"
    return "legacy" if rule_count(legacy) > rule_count(nft) else "nft"


def save(mode: str) -> str:
    """What both the IPv4 and IPv6 tools of ``mode`` dump ("" for a missing backend)."""
    out = []
    for tool in (f"iptables-{mode}-save", f"ip6tables-{mode}-save"):
        try:
            res = subprocess.run([tool], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            continue
        out.append(res.stdout)
    return "".join(out)


def detect() -> tuple[str, str]:
    """(backend, why)."""
    forced = os.environ.get(ENV, "auto")
    if forced in BACKENDS:
        return forced, f"{ENV}={forced}"
    legacy, nft = save("legacy"), save("nft")
    mode = choose(legacy, nft)
    why = (
        f"hint chain in {mode}"
        if has_hint(nft) or has_hint(legacy)
        else f"{rule_count(legacy)} legacy rules, {rule_count(nft)} nft rules"
    )
    return mode, why


def apply(mode: str) -> None:
    for tool in ("iptables", "ip6tables"):
        subprocess.run(
            ["update-alternatives", "--set", tool, f"/usr/sbin/{tool}-{mode}"],
            check=True,
            capture_output=True,
            timeout=30,
        )


def main(argv: list[str] | None = None) -> int:
    """``sycri-node [--detect | SYCRI-ARGS...]``: print the backend, or set it and exec sycri."""
    args = sys.argv[1:] if argv is None else argv
    if os.environ.get(ENV, "auto") not in (*BACKENDS, "auto"):
        print(f"sycri-node: {ENV} must be legacy, nft or auto", file=sys.stderr)
        return 2
    mode, why = detect()
    if args[:1] == ["--detect"]:
        print(mode)
        return 0
    apply(mode)
    print(f"sycri-node: iptables backend {mode} ({why})", file=sys.stderr, flush=True)
    beside = os.path.join(os.path.dirname(sys.executable), "sycri")  # the same venv's
    os.execvp(beside if os.access(beside, os.X_OK) else "sycri", ["sycri", *args])
    return 127  # not reached
