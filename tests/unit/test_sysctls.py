"""Which sysctls a pod may set (pure)."""

from __future__ import annotations

import pytest
from sycri.errors import InvalidArgument
from sycri.runtime.pod import sysctls


def test_namespaced_sysctls_are_planned_per_namespace():
    plan = sysctls.plan(
        {"net.ipv4.tcp_syncookies": "1", "kernel.shm_rmid_forced": "1", "fs.mqueue.msg_max": "9"},
        host_net=False,
        host_ipc=False,
    )
    assert {(s.key, s.namespace) for s in plan} == {
        ("net.ipv4.tcp_syncookies", "net"),
        ("kernel.shm_rmid_forced", "ipc"),
        ("fs.mqueue.msg_max", "ipc"),
    }


def test_slash_form_is_the_same_sysctl():
    (s,) = sysctls.plan({"net/ipv4/ip_local_port_range": "1024 65000"}, False, False)
    assert s.key == "net.ipv4.ip_local_port_range"
    assert s.proc_path == "/proc/sys/net/ipv4/ip_local_port_range"


@pytest.mark.parametrize(
    ("key", "host_net", "host_ipc", "words"),
    [
        ("kernel.pid_max", False, False, "not namespaced"),
        ("vm.overcommit_memory", False, False, "not namespaced"),
        ("net.ipv4.ip_forward", True, False, "host net"),
        ("kernel.msgmax", False, True, "host ipc"),
        ("net.ipv4/../../kernel/x", False, False, "not a sysctl name"),
        ("", False, False, "not a sysctl name"),
    ],
)
def test_unsafe_sysctls_are_refused(key, host_net, host_ipc, words):
    with pytest.raises(InvalidArgument, match=words):
        sysctls.plan({key: "1"}, host_net, host_ipc)


def test_values_cannot_smuggle_lines():
    with pytest.raises(InvalidArgument, match="bad value"):
        sysctls.plan({"net.ipv4.tcp_syncookies": "1\n0"}, False, False)
