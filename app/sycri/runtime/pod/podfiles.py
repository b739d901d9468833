"""The files every container of a pod shares: resolv.conf, hosts, hostname; /dev/shm size.

Pure renderers and validators; the sandbox manager writes the results.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sycri.errors import InvalidArgument, excerpt

SHM_ANNOTATION = "sycri.io/shm-size"
DEFAULT_SHM_BYTES = 64 * 1024 * 1024
MAX_DNS_ITEMS = 32

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", re.IGNORECASE)
_TOKEN = re.compile(r"^[^\s#;\x00-\x1f]{1,253}$")
_QUANTITY = re.compile(r"^([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}

HOSTS_HEADER = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def check_hostname(name: str) -> str:
    """A hostname the kernel and resolvers accept (RFC 1123 labels, at most 64 bytes)."""
    if not name or len(name) > 64 or not all(_LABEL.match(p) for p in name.split(".")):
        raise InvalidArgument(f"hostname {excerpt(name)} is not a valid RFC 1123 hostname")
    return name


def default_hostname(pod_name: str) -> str:
    """A valid hostname derived from a pod name when the request names none."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", pod_name.lower())[:63].strip("-")
    return cleaned or "pod"


def _tokens(kind: str, values: Sequence[str]) -> list[str]:
    if len(values) > MAX_DNS_ITEMS:
        raise InvalidArgument(f"dns_config: more than {MAX_DNS_ITEMS} {kind}")
    for v in values:
        if not _TOKEN.match(v):
            raise InvalidArgument(f"dns_config: bad {kind[:-1]} {excerpt(v)}")
    return list(values)


def resolv_conf(servers: Sequence[str], searches: Sequence[str], options: Sequence[str]) -> str:
    """resolv.conf text from a CRI DNSConfig."""
    lines = []
    searches = _tokens("searches", searches)
    if searches:
        lines.append("search " + " ".join(searches))
    for server in _tokens("servers", servers):
        lines.append(f"nameserver {server}")
    options = _tokens("options", options)
    if options:
        lines.append("options " + " ".join(options))
    return "".join(line + "\n" for line in lines)


def hosts(hostname: str, ips: Sequence[str]) -> str:
    """/etc/hosts for a pod with its own network: localhost entries and the pod's name."""
    return HOSTS_HEADER + "".join(f"{ip}\t{hostname}\n" for ip in ips)


def parse_quantity(text: str, what: str) -> int:
    """Bytes from a Kubernetes-style quantity (``64Mi``, ``1G``, ``1048576``)."""
    m = _QUANTITY.match(text.strip())
    if not m:
        raise InvalidArgument(f"{what}: {excerpt(text)} is not a size like 64Mi, 1Gi or 1048576")
    return int(m.group(1)) * _UNITS[m.group(2)]


def shm_size(annotations: dict[str, str]) -> int:
    """The pod's /dev/shm size: the ``sycri.io/shm-size`` annotation, else 64 MiB."""
    raw = annotations.get(SHM_ANNOTATION)
    if raw is None:
        return DEFAULT_SHM_BYTES
    size = parse_quantity(raw, f"annotation {SHM_ANNOTATION}")
    if size < 4096:
        raise InvalidArgument(f"annotation {SHM_ANNOTATION}: {size} bytes is below one page")
    return size


_BANDWIDTH = re.compile(r"^([0-9]+)(k|M|G|T|Ki|Mi|Gi|Ti)?$")


def bandwidth(annotations: dict[str, str]) -> dict[str, int]:
    """The CNI ``bandwidth`` capability from kubernetes.io/{ingress,egress}-bandwidth (bits/s)."""
    out: dict[str, int] = {}
    for direction in ("ingress", "egress"):
        raw = annotations.get(f"kubernetes.io/{direction}-bandwidth")
        if raw is None:
            continue
        rate = parse_quantity(raw, f"annotation kubernetes.io/{direction}-bandwidth")
        if rate <= 0:
            raise InvalidArgument(f"annotation kubernetes.io/{direction}-bandwidth must be > 0")
        out[f"{direction}Rate"] = rate
        out[f"{direction}Burst"] = 2**31 - 1  # as kubelet's dockershim and containerd do
    return out
