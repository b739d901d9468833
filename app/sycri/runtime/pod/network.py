"""A pod's CNI attachment: which network, ADD, DEL, CHECK, and the pod CIDR kubelet sets.

The conflist used for ADD is saved in the pod's metadata, so DEL (at stop, at removal,
after a restart) goes through the same plugins even if the conf dir changed since.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
from pathlib import Path
from typing import Any

from sycri import crashpoint
from sycri.config import Config
from sycri.errors import FailedPrecondition, InvalidArgument, excerpt
from sycri.fsutil import atomic_write
from sycri.network import cni
from sycri.runtime import linux
from sycri.runtime.pod import netcheck, podfiles
from sycri.runtime.pod.plan import Plan, port_mappings
from sycri.runtime.pod.sandbox import Sandbox


class PodNetwork:
    """The CNI side of the pods of this node."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.ipam_dir = str(Path(config.root_dir) / "cni" / "ipam")
        self.cidr_file = Path(config.root_dir) / "cni" / "pod-cidr"
        self.cni = cni.Runner(tuple(config.cni.bin_dirs))

    # ----- which network ------------------------------------------------------

    def pod_subnets(self) -> list[str]:
        try:
            text = self.cidr_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        return [s for s in text.split(",") if s] or [self.config.cni.default_subnet]

    def set_pod_cidr(self, cidr: str) -> None:
        """UpdateRuntimeConfig: the built-in network's subnets for pods created from now on."""
        parts = [p.strip() for p in cidr.split(",") if p.strip()]
        if not parts:
            return
        nets = []
        for p in parts:
            try:
                nets.append(ipaddress.ip_network(p, strict=False))
            except ValueError:
                raise InvalidArgument(f"pod CIDR {excerpt(p)} is not a network") from None
            if nets[-1].num_addresses < 4:
                raise InvalidArgument(f"pod CIDR {p} is too small for pods")
        atomic_write(self.cidr_file, ",".join(str(n) for n in nets).encode())

    def network(self, bandwidth: bool = False) -> cni.Network:
        """The lexically first config in the conf dir, else the built-in network."""
        found = cni.load_first(self.config.cni.conf_dir)
        if found is not None:
            return found
        return cni.default_network(
            self.pod_subnets(), self.config.cni.default_bridge, self.ipam_dir, bandwidth=bandwidth
        )

    # ----- attach, detach, check ----------------------------------------------

    @staticmethod
    def attachment(sb: Sandbox, ifname: str, caps: dict[str, Any] | None = None) -> cni.Attachment:
        return cni.Attachment(
            container_id=sb.id,
            netns=sb.netns_path or "",
            ifname=ifname,
            args=(
                ("K8S_POD_NAMESPACE", sb.namespace),
                ("K8S_POD_NAME", sb.name),
                ("K8S_POD_INFRA_CONTAINER_ID", sb.id),
                ("K8S_POD_UID", sb.uid),
            ),
            capabilities=caps or {},
        )

    async def up(self, sb: Sandbox, plan: Plan) -> None:
        """ADD lo and eth0; the result and IPs go to the pod's status (saved by the caller)."""
        assert sb.network is not None
        net = cni.parse(sb.network, f"sandbox {sb.id[:12]}")
        caps: dict[str, Any] = {}
        if plan.ports:
            caps["portMappings"] = plan.ports
        if plan.bandwidth:
            caps["bandwidth"] = plan.bandwidth
        if plan.builtin:
            _enable_forwarding(net)
        await self.cni.add(cni.LOOPBACK, self.attachment(sb, "lo"))
        result = await self.cni.add(net, self.attachment(sb, "eth0", caps))
        crashpoint.reach("pod.run.network")
        sb.status.cni_result = result
        sb.status.ips = cni.result_ips(result)

    async def down(self, sb: Sandbox) -> None:
        """DEL the pod's attachment if one is owed; raises the plugin's error. On success
        the status says no DEL is owed (saved by the caller)."""
        if sb.status.network_up and sb.network is not None:
            net = cni.parse(sb.network, f"sandbox {sb.id[:12]}")
            att = self.attachment(sb, "eth0", caps_of(sb))
            if att.netns and not await asyncio.to_thread(linux.is_mountpoint, att.netns):
                # The namespace is gone (its pin was undone): the CNI spec's DEL then
                # gets no CNI_NETNS and still releases the address; the bridge
                # plugin's NAT rules need the namespace, so they go here.
                await self.cni.delete(net, dataclasses.replace(att, netns=""), sb.cni_result)
                await cni.drop_masquerade(net, sb.id)
            else:
                await self.cni.delete(net, att, sb.cni_result)
        sb.status.network_up = False
        sb.status.ips = []

    async def check(self, sb: Sandbox) -> str:
        """CNI CHECK of a pod's attachment: "ok", "not attached", or the plugin's error."""
        if not netcheck.attached(sb) or sb.network is None or sb.cni_result is None:
            return netcheck.NOT_ATTACHED
        net = cni.parse(sb.network, f"sandbox {sb.id[:12]}")
        try:
            await self.cni.check(net, self.attachment(sb, "eth0", caps_of(sb)), sb.cni_result)
        except cni.CniError as exc:
            return exc.message
        return "ok"


def caps_of(sb: Sandbox) -> dict[str, Any]:
    """The capabilities the pod's ADD had, for DEL and CHECK (from its recorded config)."""
    cfg = sb.config
    caps: dict[str, Any] = {}
    with contextlib.suppress(InvalidArgument):
        ports = port_mappings(cfg)
        if ports:
            caps["portMappings"] = ports
        bw = podfiles.bandwidth(dict(cfg.annotations))
        if bw:
            caps["bandwidth"] = bw
    return caps


def _enable_forwarding(net: cni.Network) -> None:
    """The built-in bridge routes pod traffic through the host: turn IP forwarding on."""
    keys = ["/proc/sys/net/ipv4/ip_forward"]
    for p in net.plugins:
        for r in (p.get("ipam") or {}).get("ranges") or []:
            if r and ":" in str(r[0].get("subnet", "")):
                keys.append("/proc/sys/net/ipv6/conf/all/forwarding")
    for k in keys:
        try:
            if Path(k).read_text().strip() != "1":
                Path(k).write_text("1")
        except OSError as exc:
            raise FailedPrecondition(f"cannot enable IP forwarding ({k}): {exc.strerror}") from None
