"""CNI networks: which one applies, and running its plugins per the CNI spec.

A network is a plugin chain (``.conflist``; a single-plugin ``.conf`` becomes a
one-element chain). ADD runs the chain in order, each plugin getting the previous
result as ``prevResult``; DEL runs it in reverse with the ADD result; CHECK runs it
in order with the ADD result. Each plugin receives its config on stdin with the
network's ``name`` and ``cniVersion``, plus ``runtimeConfig`` holding only the
capabilities it declares (``portMappings``, ``bandwidth``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sycri import command
from sycri.errors import FailedPrecondition, Internal
from sycri.network.readiness import config_files, find_plugin
from sycri.observability import metrics, tracing

log = logging.getLogger("sycri.cni")

LOOPBACK_NAME = "cni-loopback"
DEFAULT_NAME = "sycri-default"
PLUGIN_TIMEOUT = 120.0


class CniError(Internal):
    """A CNI plugin failed; the message names the network, plugin, command and error."""


@dataclass(frozen=True)
class Network:
    """One network config: its name, version and plugin chain, and where it came from."""

    name: str
    cni_version: str
    plugins: tuple[dict[str, Any], ...]
    source: str

    def document(self) -> dict[str, Any]:
        """The conflist form, as stored next to an ADD result so DEL can use it later."""
        return {"cniVersion": self.cni_version, "name": self.name, "plugins": list(self.plugins)}


@dataclass(frozen=True)
class Attachment:
    """What is attached: a container's netns as one interface, with its CNI_ARGS."""

    container_id: str
    netns: str
    ifname: str = "eth0"
    args: tuple[tuple[str, str], ...] = ()
    capabilities: Mapping[str, Any] = field(default_factory=dict)


def parse(doc: Any, source: str) -> Network:
    """A Network from a ``.conf`` or ``.conflist`` document; bad shape is FailedPrecondition."""
    if not isinstance(doc, dict):
        raise FailedPrecondition(f"CNI config {source} is not a JSON object")
    if "plugins" in doc:
        plugins = doc["plugins"]
        if not isinstance(plugins, list) or not plugins:
            raise FailedPrecondition(f"CNI config {source}: 'plugins' must be a non-empty list")
    else:
        plugins = [{k: v for k, v in doc.items() if k not in ("name", "cniVersion")}]
    for p in plugins:
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"]:
            raise FailedPrecondition(f"CNI config {source}: every plugin needs a 'type'")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise FailedPrecondition(f"CNI config {source} has no network 'name'")
    version = doc.get("cniVersion", "0.2.0")
    if not isinstance(version, str):
        raise FailedPrecondition(f"CNI config {source}: 'cniVersion' must be a string")
    return Network(name, version, tuple(plugins), source)


def load_first(conf_dir: str) -> Network | None:
    """The lexically first config in ``conf_dir`` (as kubelet and containerd pick it)."""
    files = config_files(conf_dir)
    if not files:
        return None
    first = files[0]
    try:
        doc = json.loads(first.read_text())
    except (OSError, ValueError) as exc:
        raise FailedPrecondition(f"cannot load CNI config {first}: {exc}") from None
    return parse(doc, str(first))


def default_network(
    subnets: Sequence[str], bridge: str, ipam_dir: str, *, bandwidth: bool = False
) -> Network:
    """sycri's built-in network: a bridge with host-local IPAM, masquerade and hostPorts.

    The bandwidth plugin joins the chain only for pods that ask for shaping: it costs a
    process per ADD/DEL, and Debian's build panics on CHECK when it has no limits to check.
    """
    nets = [ipaddress.ip_network(s, strict=False) for s in subnets]
    routes = [{"dst": "0.0.0.0/0" if n.version == 4 else "::/0"} for n in nets]
    plugins: tuple[dict[str, Any], ...] = (
        {
            "type": "bridge",
            "bridge": bridge,
            "isGateway": True,
            "ipMasq": True,
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": str(n)}] for n in nets],
                "routes": routes,
                "dataDir": ipam_dir,
            },
        },
        {"type": "portmap", "capabilities": {"portMappings": True}},
    )
    if bandwidth:
        plugins = (*plugins, {"type": "bandwidth", "capabilities": {"bandwidth": True}})
    return Network(DEFAULT_NAME, "1.0.0", plugins, "built-in")


LOOPBACK = Network(LOOPBACK_NAME, "1.0.0", ({"type": "loopback"},), "built-in")


def cni_args(pairs: Sequence[tuple[str, str]]) -> str:
    """``CNI_ARGS``: ``IgnoreUnknown=1;K=V;...`` (values were validated to hold no ``;``/``=``)."""
    return ";".join(["IgnoreUnknown=1", *(f"{k}={v}" for k, v in pairs)])


def plugin_config(
    net: Network, plugin: Mapping[str, Any], caps: Mapping[str, Any], prev: Any | None
) -> dict[str, Any]:
    """The stdin document for one plugin of a chain."""
    conf = dict(plugin)
    conf["name"] = net.name
    conf["cniVersion"] = net.cni_version
    declared = plugin.get("capabilities") or {}
    runtime = {k: v for k, v in caps.items() if isinstance(declared, dict) and declared.get(k)}
    if runtime:
        conf["runtimeConfig"] = {**(plugin.get("runtimeConfig") or {}), **runtime}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def result_ips(result: Mapping[str, Any] | None) -> list[str]:
    """Pod IPs (IPv4 first) from a result of any CNI version, without prefix lengths."""
    if not result:
        return []
    found: list[str] = []
    for entry in result.get("ips") or []:
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            found.append(entry["address"])
    for key in ("ip4", "ip6"):  # CNI 0.2.0
        entry = result.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("ip"), str):
            found.append(entry["ip"])
    ips = []
    for text in found:
        try:
            ips.append(ipaddress.ip_interface(text).ip)
        except ValueError:
            continue
    ips.sort(key=lambda a: a.version)
    return [str(a) for a in ips]


def supports_check(version: str) -> bool:
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        return False
    return parts >= (0, 4, 0)


@dataclass
class Runner:
    """Runs plugin chains found in ``bin_dirs``."""

    bin_dirs: tuple[str, ...]
    timeout: float = PLUGIN_TIMEOUT

    async def add(self, net: Network, att: Attachment) -> dict[str, Any]:
        prev: Any = None
        with _observed("ADD", net):
            for plugin in net.plugins:
                prev = await self._invoke("ADD", net, plugin, att, prev)
        return prev or {}

    async def check(self, net: Network, att: Attachment, result: Mapping[str, Any]) -> None:
        if not supports_check(net.cni_version):
            return
        with _observed("CHECK", net):
            for plugin in net.plugins:
                await self._invoke("CHECK", net, plugin, att, result)

    async def delete(self, net: Network, att: Attachment, result: Mapping[str, Any] | None) -> None:
        with _observed("DEL", net):
            for plugin in reversed(net.plugins):
                await self._invoke("DEL", net, plugin, att, result or None)

    async def _invoke(
        self, verb: str, net: Network, plugin: Mapping[str, Any], att: Attachment, prev: Any
    ) -> Any:
        kind = str(plugin["type"])
        binary = find_plugin(self.bin_dirs, kind)
        if binary is None:
            raise CniError(
                f"CNI network {net.name!r}: plugin {kind!r} not found in {', '.join(self.bin_dirs)}"
            )
        env = {
            "CNI_COMMAND": verb,
            "CNI_CONTAINERID": att.container_id,
            "CNI_NETNS": att.netns,
            "CNI_IFNAME": att.ifname,
            "CNI_ARGS": cni_args(att.args),
            "CNI_PATH": ":".join(self.bin_dirs),
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        }
        stdin = json.dumps(plugin_config(net, plugin, att.capabilities, prev)).encode()
        res = await command.run(
            [str(binary)],
            input=stdin,
            env=env,
            timeout=self.timeout,
            check=False,
            label=kind,
        )
        if res.returncode != 0:
            raise CniError(f"CNI network {net.name!r} plugin {kind!r} {verb}: {_error_text(res)}")
        if verb != "ADD":
            return prev
        try:
            return json.loads(res.stdout) if res.stdout.strip() else prev
        except ValueError:
            raise CniError(
                f"CNI network {net.name!r} plugin {kind!r} ADD printed a result that is not JSON"
            ) from None


@contextlib.contextmanager
def _observed(operation: str, net: Network) -> Iterator[None]:
    """One CNI operation over the whole chain: counted, timed, and a span ``cni.add``..."""
    with (
        metrics.cni_operation(operation),
        tracing.span(f"cni.{operation.lower()}", **{"cni.network": net.name}),
    ):
        yield


def _error_text(res: command.Result) -> str:
    try:
        doc = json.loads(res.stdout)
        if isinstance(doc, dict) and "msg" in doc:
            detail = f" ({doc['details']})" if doc.get("details") else ""
            return f"error {doc.get('code')}: {doc['msg']}{detail}"
    except ValueError:
        pass
    text = (res.stderr or res.stdout).decode(errors="replace").strip()
    return f"exit {res.returncode}: {text[-1000:]}"


async def drop_masquerade(net: Network, container_id: str) -> int:
    """Remove the bridge plugin's NAT rules for ``container_id``; how many went.

    The bridge plugin finds a pod's masquerade rules from the addresses on its
    interface, so a DEL without the pod's network namespace (it was lost: the pin
    unmounted, the run dir wiped) releases the address but leaves the rules. They are
    named by the comment ``name: "<net>" id: "<container id>"``, which no one else's
    rules carry.
    """
    if not any(p.get("type") == "bridge" and p.get("ipMasq") for p in net.plugins):
        return 0
    mark = f'id: "{container_id}"'
    removed = 0
    for tool in ("iptables", "ip6tables"):
        listing = await command.run(
            [tool, "-w", "-t", "nat", "-S", "POSTROUTING"], check=False, label=tool
        )
        if not listing.ok:
            continue
        for line in listing.stdout.decode(errors="replace").splitlines():
            if container_id not in line or not line.startswith("-A POSTROUTING "):
                continue
            args = shlex.split(line)
            if "--comment" not in args or mark not in args[args.index("--comment") + 1]:
                continue
            chain = args[args.index("-j") + 1] if "-j" in args else ""
            await command.run([tool, "-w", "-t", "nat", "-D", *args[1:]], check=False, label=tool)
            if chain.startswith("CNI-"):
                await command.run([tool, "-w", "-t", "nat", "-F", chain], check=False, label=tool)
                await command.run([tool, "-w", "-t", "nat", "-X", chain], check=False, label=tool)
            removed += 1
    return removed
