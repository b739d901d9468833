"""resolv.conf, hosts, hostnames, /dev/shm size and bandwidth annotations (pure)."""

from __future__ import annotations

import pytest
from sycri.errors import InvalidArgument
from sycri.runtime.pod import podfiles


def test_resolv_conf_from_dns_config():
    text = podfiles.resolv_conf(["1.1.1.1", "fd00::53"], ["a.svc", "svc"], ["ndots:5"])
    assert text == "search a.svc svc\nnameserver 1.1.1.1\nnameserver fd00::53\noptions ndots:5\n"
    assert podfiles.resolv_conf([], [], []) == ""


@pytest.mark.parametrize("bad", ["1.1.1.1\nnameserver 6.6.6.6", "a b", "", "x;y"])
def test_resolv_conf_refuses_injection(bad):
    with pytest.raises(InvalidArgument, match="dns_config"):
        podfiles.resolv_conf([bad], [], [])


def test_hosts_lists_the_pod():
    text = podfiles.hosts("web-0", ["10.1.0.5", "fd00::5"])
    assert text.startswith("127.0.0.1\tlocalhost\n")
    assert text.endswith("10.1.0.5\tweb-0\nfd00::5\tweb-0\n")


@pytest.mark.parametrize("name", ["web-0", "a.b.c", "x" * 63])
def test_good_hostnames(name):
    assert podfiles.check_hostname(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a_b", "x" * 65, "a..b", "bad/name", "a\nb"])
def test_bad_hostnames(name):
    with pytest.raises(InvalidArgument, match="hostname"):
        podfiles.check_hostname(name)


def test_shm_size_annotation():
    assert podfiles.shm_size({}) == 64 * 2**20
    assert podfiles.shm_size({"sycri.io/shm-size": "2Gi"}) == 2 * 2**30
    assert podfiles.shm_size({"sycri.io/shm-size": "1G"}) == 10**9
    assert podfiles.shm_size({"sycri.io/shm-size": "1048576"}) == 2**20
    with pytest.raises(InvalidArgument, match=r"sycri\.io/shm-size"):
        podfiles.shm_size({"sycri.io/shm-size": "lots"})
    with pytest.raises(InvalidArgument, match="below one page"):
        podfiles.shm_size({"sycri.io/shm-size": "1"})


def test_bandwidth_annotations_become_the_cni_capability():
    bw = podfiles.bandwidth(
        {"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "1Mi"}
    )
    assert bw["ingressRate"] == 10**7 and bw["egressRate"] == 2**20
    assert bw["ingressBurst"] > 0 and bw["egressBurst"] > 0
    assert podfiles.bandwidth({}) == {}


def test_default_hostname_from_any_pod_name():
    assert podfiles.default_hostname("My_Pod.v2") == "my-pod-v2"
    assert podfiles.default_hostname("___") == "pod"
    assert len(podfiles.default_hostname("a" * 200)) == 63
