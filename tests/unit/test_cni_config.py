"""CNI config selection and the documents sycri hands to plugins (pure parts)."""

from __future__ import annotations

import json

import pytest
from sycri.config import CniConfig
from sycri.errors import FailedPrecondition
from sycri.network import cni
from sycri.network.readiness import readiness


def test_first_config_by_lexical_order_among_known_suffixes(tmp_path):
    (tmp_path / "99-last.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "last", "plugins": [{"type": "bridge"}]})
    )
    (tmp_path / "10-first.conf").write_text(
        json.dumps({"cniVersion": "0.4.0", "name": "first", "type": "ptp", "mtu": 1400})
    )
    (tmp_path / "00-notes.txt").write_text("ignored")
    net = cni.load_first(str(tmp_path))
    assert net is not None
    assert (net.name, net.cni_version) == ("first", "0.4.0")
    assert net.plugins == ({"type": "ptp", "mtu": 1400},)  # a .conf is a one-plugin chain


def test_no_config_means_none(tmp_path):
    assert cni.load_first(str(tmp_path)) is None
    assert cni.load_first(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ([], "not a JSON object"),
        ({"name": "x", "plugins": []}, "non-empty"),
        ({"name": "x", "plugins": [{"mtu": 1}]}, "needs a 'type'"),
        ({"plugins": [{"type": "bridge"}]}, "no network 'name'"),
    ],
)
def test_bad_configs_are_named(doc, words):
    with pytest.raises(FailedPrecondition, match=words):
        cni.parse(doc, "/etc/cni/net.d/x.conflist")


def test_plugin_gets_only_the_capabilities_it_declares():
    net = cni.Network("n", "1.0.0", (), "t")
    caps = {"portMappings": [{"hostPort": 80}], "bandwidth": {"ingressRate": 1}}
    portmap = {"type": "portmap", "capabilities": {"portMappings": True}}
    conf = cni.plugin_config(net, portmap, caps, {"ips": []})
    assert conf["runtimeConfig"] == {"portMappings": [{"hostPort": 80}]}
    assert conf["name"] == "n" and conf["cniVersion"] == "1.0.0"
    assert conf["prevResult"] == {"ips": []}
    bridge = cni.plugin_config(net, {"type": "bridge"}, caps, None)
    assert "runtimeConfig" not in bridge and "prevResult" not in bridge


def test_cni_args_carry_kubernetes_identity():
    args = cni.cni_args([("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web")])
    assert args == "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web"


def test_result_ips_for_every_result_version():
    v1 = {"ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/24", "gateway": "10.1.0.1"}]}
    assert cni.result_ips(v1) == ["10.1.0.5", "fd00::5"]  # IPv4 first
    v02 = {"ip4": {"ip": "10.2.0.3/16"}, "ip6": {"ip": "fd01::3/64"}}
    assert cni.result_ips(v02) == ["10.2.0.3", "fd01::3"]
    assert cni.result_ips(None) == []
    assert cni.result_ips({"ips": [{"address": "garbage"}]}) == []


def test_default_network_dual_stack():
    net = cni.default_network(["10.77.0.0/24", "fd00:77::/64"], "br-x", "/var/lib/x")
    bridge = net.plugins[0]
    assert bridge["bridge"] == "br-x" and bridge["ipMasq"] is True
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.77.0.0/24"}], [{"subnet": "fd00:77::/64"}]]
    assert {"dst": "::/0"} in bridge["ipam"]["routes"]
    assert [p["type"] for p in net.plugins] == ["bridge", "portmap"]
    shaped = cni.default_network(["10.77.0.0/24"], "br-x", "/x", bandwidth=True)
    assert shaped.plugins[-1] == {"type": "bandwidth", "capabilities": {"bandwidth": True}}


def test_check_only_from_cni_0_4_0():
    assert not cni.supports_check("0.3.1")
    assert cni.supports_check("0.4.0") and cni.supports_check("1.0.0")


def test_readiness_of_the_builtin_network_names_missing_plugins(tmp_path):
    r = readiness(CniConfig(bin_dirs=(str(tmp_path),), conf_dir=str(tmp_path / "none")))
    assert not r.ready and "bandwidth" in r.message and "bridge" in r.message
