"""The OCI spec is a pure function of the request, the image and host facts."""

from __future__ import annotations

import json

import pytest
from sycri.api import api_pb2
from sycri.errors import InvalidArgument
from sycri.runtime.oci import cdi, hostfacts, ocispec, users
from sycri.runtime.oci.ocispec import DeviceNode, HostFacts, ImageConfig, Sandbox, SpecInput

from tests.support.containers import with_fields

PASSWD = """root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001::/home/bob:/bin/sh
broken line
nobody:x:65534:65534::/nonexistent:/bin/false
"""
GROUP = """root:x:0:
alice:x:1000:
bob:x:1001:
wheel:x:10:alice
video:x:44:alice,bob
staff:x:50:
"""

POD = api_pb2.PodSandboxConfig(
    metadata=api_pb2.PodSandboxMetadata(name="pod", namespace="ns", uid="u1"),
    hostname="podhost",
)
SANDBOX = Sandbox(
    id="p" * 64,
    netns="/run/sycri/ns/net/p",
    ipcns="/run/sycri/ns/ipc/p",
    utsns="/run/sycri/ns/uts/p",
    hosts="/var/lib/sycri/pods/p/hosts",
    resolv="/var/lib/sycri/pods/p/resolv.conf",
    hostname_file="/var/lib/sycri/pods/p/hostname",
    shm="/run/sycri/shm/p",
    hostname="podhost",
)
IMAGE = ImageConfig(
    entrypoint=("/entry",),
    cmd=("default-arg",),
    env=("PATH=/usr/bin:/bin", "A=image", "B=image"),
    working_dir="/srv",
    user="",
)


def config(**kw) -> api_pb2.ContainerConfig:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name="c"), image=api_pb2.ImageSpec(image="img")
    )
    return with_fields(cfg, **kw)


def build(cfg=None, pod=POD, image=IMAGE, host=None, settings=None, **kw) -> dict:
    return build_full(cfg, pod, image, host, settings, **kw).spec


def build_full(cfg=None, pod=POD, image=IMAGE, host=None, settings=None, **kw):
    return ocispec.build(
        SpecInput(
            container_id="c" * 64,
            rootfs="/bundle/rootfs",
            config=cfg or config(),
            sandbox_config=pod,
            sandbox=kw.get("sandbox", SANDBOX),
            image=image,
            passwd=PASSWD,
            group=GROUP,
            host=host or HostFacts(own_oom_score_adj=-100),
            settings=settings or ocispec.Settings(),
        )
    )


# --- process ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ([], [], ["/entry", "default-arg"]),
        (["/bin/cmd"], [], ["/bin/cmd"]),
        (["/bin/cmd"], ["x", "y"], ["/bin/cmd", "x", "y"]),
        ([], ["x"], ["/entry", "x"]),
    ],
)
def test_command_and_args_follow_kubelet(command, args, expected):
    spec = build(config(command=command, args=args))
    assert spec["process"]["args"] == expected


def test_no_command_anywhere_is_invalid():
    with pytest.raises(InvalidArgument, match="no command"):
        build(config(), image=ImageConfig())


def test_env_merges_over_image_in_order():
    envs = [api_pb2.KeyValue(key="B", value=b"req"), api_pb2.KeyValue(key="C", value=b"x=y")]
    env = build(config(envs=envs))["process"]["env"]
    assert env[:3] == ["PATH=/usr/bin:/bin", "A=image", "B=req"]
    assert "C=x=y" in env
    assert "HOSTNAME=podhost" in env


def test_default_path_when_image_has_none():
    env = build(config(command=["/x"]), image=ImageConfig())["process"]["env"]
    assert env[0] == "PATH=" + ocispec.DEFAULT_PATH


def test_bad_env_name_refused():
    with pytest.raises(InvalidArgument, match="envs"):
        build(config(envs=[api_pb2.KeyValue(key="A=B", value=b"1")]))


def test_working_dir_and_tty():
    spec = build(config(tty=True))
    assert spec["process"]["cwd"] == "/srv"
    assert spec["process"]["terminal"] is True
    assert "TERM=xterm" in spec["process"]["env"]
    assert build(config(working_dir="/a/../b"))["process"]["cwd"] == "/b"
    with pytest.raises(InvalidArgument, match="working_dir"):
        build(config(working_dir="rel"))


def test_stop_signal_from_request_then_image():
    assert build_full(config()).stop_signal == 15
    img = ImageConfig(entrypoint=("/x",), stop_signal="SIGQUIT")
    assert build_full(config(), image=img).stop_signal == 3
    assert build_full(config(stop_signal=api_pb2.SIGNAL_SIGINT), image=img).stop_signal == 2
    assert (
        build_full(config(), image=ImageConfig(entrypoint=("/x",), stop_signal="9")).stop_signal
        == 9
    )


def test_image_config_from_oci_document():
    img = ImageConfig.from_oci(
        {"config": {"Entrypoint": ["/a"], "Cmd": None, "Env": ["X=1"], "User": "bob"}}
    )
    assert img.entrypoint == ("/a",) and img.cmd == () and img.user == "bob"


# --- users -----------------------------------------------------------------------------


def sc(**kw) -> api_pb2.LinuxContainerSecurityContext:
    out = api_pb2.LinuxContainerSecurityContext()
    for k, v in kw.items():
        if k in ("run_as_user", "run_as_group"):
            getattr(out, k).value = v
        elif isinstance(v, list):
            getattr(out, k).extend(v)
        else:
            setattr(out, k, v)
    return out


def user_of(cfg, image_user="") -> dict:
    img = ImageConfig(entrypoint=("/x",), user=image_user)
    return build(cfg, image=img)["process"]["user"]


def test_default_user_is_root_with_groups():
    assert user_of(config()) == {"uid": 0, "gid": 0, "additionalGids": []}


@pytest.mark.parametrize(
    ("image_user", "expected"),
    [
        ("alice", (1000, 1000, [10, 44])),
        ("1000", (1000, 1000, [10, 44])),
        ("bob:staff", (1001, 50, [44])),
        ("1001:7", (1001, 7, [44])),
        ("4242", (4242, 0, [])),
        ("4242:4343", (4242, 4343, [])),
    ],
)
def test_image_user_forms(image_user, expected):
    u = user_of(config(), image_user)
    assert (u["uid"], u["gid"], u["additionalGids"]) == expected


def test_run_as_user_and_group_override_image():
    u = user_of(config(sc=sc(run_as_user=1001, run_as_group=60)), "alice")
    assert (u["uid"], u["gid"], u["additionalGids"]) == (1001, 60, [44])


def test_run_as_username():
    u = user_of(config(sc=sc(run_as_username="alice")))
    assert (u["uid"], u["gid"]) == (1000, 1000)
    u = user_of(config(sc=sc(run_as_username="alice", run_as_group=60)))
    assert (u["uid"], u["gid"]) == (1000, 60)


def test_supplemental_groups_merge_and_strict():
    merged = user_of(config(sc=sc(supplemental_groups=[500])), "alice")
    assert merged["additionalGids"] == [10, 44, 500]
    strict = user_of(
        config(sc=sc(supplemental_groups=[500], supplemental_groups_policy=api_pb2.Strict)),
        "alice",
    )
    assert strict["additionalGids"] == [500]


@pytest.mark.parametrize(
    ("kw", "image_user", "match"),
    [
        ({"run_as_username": "mallory"}, "", "run_as_username"),
        ({}, "mallory", "mallory"),
        ({}, "alice:nogroup", "nogroup"),
        ({}, "99999999999", "out of range"),
        ({"run_as_group": 60}, "alice", "run_as_group is set without run_as_user"),
    ],
)
def test_unknown_users_are_invalid(kw, image_user, match):
    with pytest.raises(InvalidArgument, match=match):
        user_of(config(sc=sc(**kw)), image_user)


def test_user_parsing_skips_garbage():
    assert [u.name for u in users.parse_passwd(PASSWD)] == ["root", "alice", "bob", "nobody"]


# --- mounts ----------------------------------------------------------------------------


def host_with(**paths: str) -> HostFacts:
    return HostFacts(paths=dict(paths.items()))


def mount_at(spec: dict, dest: str) -> dict:
    (m,) = [m for m in spec["mounts"] if m["destination"] == dest]
    return m


def test_host_mounts_with_readonly_and_propagation():
    mounts = [
        api_pb2.Mount(container_path="/data", host_path="/srv/data", readonly=True),
        api_pb2.Mount(
            container_path="/data/sub",
            host_path="/srv/sub",
            propagation=api_pb2.PROPAGATION_HOST_TO_CONTAINER,
        ),
        api_pb2.Mount(
            container_path="/shared",
            host_path="/srv/shared",
            propagation=api_pb2.PROPAGATION_BIDIRECTIONAL,
        ),
    ]
    host = HostFacts(paths={"/srv/data": "dir", "/srv/sub": "dir", "/srv/shared": "dir"})
    spec = build(config(mounts=mounts), host=host)
    assert mount_at(spec, "/data")["options"] == ["rbind", "rprivate", "ro"]
    assert mount_at(spec, "/data/sub")["options"] == ["rbind", "rslave", "rw"]
    assert mount_at(spec, "/shared")["options"] == ["rbind", "rshared", "rw"]
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests.index("/data") < dests.index("/data/sub")


def test_pod_files_and_shm_are_mounted():
    spec = build()
    assert mount_at(spec, "/etc/hosts")["source"] == SANDBOX.hosts
    assert mount_at(spec, "/etc/resolv.conf")["source"] == SANDBOX.resolv
    assert mount_at(spec, "/etc/hostname")["source"] == SANDBOX.hostname_file
    assert mount_at(spec, "/dev/shm")["source"] == SANDBOX.shm


def test_request_mount_replaces_default_at_same_path():
    m = api_pb2.Mount(container_path="/etc/hosts", host_path="/k/etc-hosts")
    spec = build(config(mounts=[m]), host=host_with(**{"/k/etc-hosts": "file"}))
    assert mount_at(spec, "/etc/hosts")["source"] == "/k/etc-hosts"


def test_termination_message_path_is_a_file_mount():
    m = api_pb2.Mount(container_path="/dev/termination-log", host_path="/pods/x/term")
    spec = build(config(mounts=[m]), host=host_with(**{"/pods/x/term": "file"}))
    assert mount_at(spec, "/dev/termination-log")["source"] == "/pods/x/term"


@pytest.mark.parametrize(
    ("mount", "match"),
    [
        (api_pb2.Mount(container_path="/d", host_path="rel/path"), "not absolute"),
        (api_pb2.Mount(container_path="/d", host_path="/nope"), "does not exist"),
        (api_pb2.Mount(container_path="d", host_path="/srv"), "container path"),
    ],
)
def test_bad_mounts_refused(mount, match):
    with pytest.raises(InvalidArgument, match=match):
        build(config(mounts=[mount]), host=host_with(**{"/srv": "dir"}))


# --- devices ---------------------------------------------------------------------------

FUSE = DeviceNode("/dev/fuse", "c", 10, 229, 0o666)


def test_host_device_with_permissions():
    dev = api_pb2.Device(container_path="/dev/myfuse", host_path="/dev/fuse", permissions="rw")
    spec = build(config(devices=[dev]), host=HostFacts(devices={"/dev/fuse": FUSE}))
    (node,) = [d for d in spec["linux"]["devices"] if d["path"] == "/dev/myfuse"]
    assert (node["major"], node["minor"], node["type"]) == (10, 229, "c")
    rules = spec["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rw"} in rules


@pytest.mark.parametrize(
    ("dev", "match"),
    [
        (api_pb2.Device(container_path="/dev/x", host_path="/dev/missing"), "not a device"),
        (api_pb2.Device(container_path="/dev/x", host_path="/dev/fuse", permissions="rwx"), "perm"),
    ],
)
def test_bad_devices_refused(dev, match):
    with pytest.raises(InvalidArgument, match=match):
        build(
            config(devices=[dev]), host=HostFacts(devices={"/dev/fuse": FUSE, "/dev/missing": None})
        )


CDI_SPEC = {
    "cdiVersion": "0.6.0",
    "kind": "example.com/gpu",
    "containerEdits": {"env": ["GPU_DRIVER=1"]},
    "devices": [
        {
            "name": "0",
            "containerEdits": {
                "deviceNodes": [{"path": "/dev/gpu0", "type": "c", "major": 195, "minor": 0}],
                "mounts": [{"hostPath": "/usr/lib/gpu", "containerPath": "/usr/lib/gpu"}],
                "env": ["GPU=0"],
            },
        }
    ],
}


def test_cdi_device_by_name():
    spec_obj = cdi.parse("/etc/cdi/gpu.json", json.dumps(CDI_SPEC))
    cfg = config(CDI_devices=[api_pb2.CDIDevice(name="example.com/gpu=0")])
    spec = build(cfg, host=HostFacts(cdi_specs=(spec_obj,)))
    assert "GPU=0" in spec["process"]["env"] and "GPU_DRIVER=1" in spec["process"]["env"]
    assert any(d["path"] == "/dev/gpu0" and d["major"] == 195 for d in spec["linux"]["devices"])
    assert mount_at(spec, "/usr/lib/gpu")["source"] == "/usr/lib/gpu"


def test_cdi_unknown_device_refused():
    spec_obj = cdi.parse("/etc/cdi/gpu.yaml", json.dumps(CDI_SPEC))
    cfg = config(CDI_devices=[api_pb2.CDIDevice(name="example.com/gpu=7")])
    with pytest.raises(InvalidArgument, match="no CDI spec"):
        build(cfg, host=HostFacts(cdi_specs=(spec_obj,)))
    with pytest.raises(InvalidArgument, match="qualified"):
        build(config(CDI_devices=[api_pb2.CDIDevice(name="gpu0")]))


def test_cdi_load_reads_dirs(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(CDI_SPEC))
    (tmp_path / "broken.json").write_text("{nope")
    specs = cdi.load((str(tmp_path),))
    assert [s.kind for s in specs] == ["example.com/gpu"]


# --- security --------------------------------------------------------------------------


def caps(spec: dict) -> list[str]:
    return spec["process"]["capabilities"]["bounding"]


def test_default_capabilities():
    assert set(caps(build())) == set(ocispec.DEFAULT_CAPS)


def test_capabilities_add_drop():
    c = api_pb2.Capability(add_capabilities=["NET_ADMIN"], drop_capabilities=["CAP_CHOWN", "kill"])
    got = set(caps(build(config(sc=api_pb2.LinuxContainerSecurityContext(capabilities=c)))))
    assert got == set(ocispec.DEFAULT_CAPS) - {"CAP_CHOWN", "CAP_KILL"} | {"CAP_NET_ADMIN"}


def test_capabilities_drop_all_keeps_adds_and_add_all():
    c = api_pb2.Capability(add_capabilities=["NET_BIND_SERVICE"], drop_capabilities=["ALL"])
    assert caps(build(config(sc=api_pb2.LinuxContainerSecurityContext(capabilities=c)))) == [
        "CAP_NET_BIND_SERVICE"
    ]
    c = api_pb2.Capability(add_capabilities=["ALL"], drop_capabilities=["SYS_ADMIN"])
    got = caps(build(config(sc=api_pb2.LinuxContainerSecurityContext(capabilities=c))))
    assert "CAP_SYS_ADMIN" not in got and "CAP_SYS_MODULE" in got


def test_unknown_capability_refused():
    c = api_pb2.Capability(add_capabilities=["FLY"])
    with pytest.raises(InvalidArgument, match="FLY"):
        build(config(sc=api_pb2.LinuxContainerSecurityContext(capabilities=c)))


def privileged_pod() -> api_pb2.PodSandboxConfig:
    pod = api_pb2.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.linux.security_context.privileged = True
    return pod


def test_privileged_gets_everything():
    host = HostFacts(all_devices=(FUSE,))
    spec = build(config(sc=sc(privileged=True)), pod=privileged_pod(), host=host)
    assert caps(spec) == list(ocispec.ALL_CAPS)
    assert "maskedPaths" not in spec["linux"] and "seccomp" not in spec["linux"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/fuse" for d in spec["linux"]["devices"])
    assert "rw" in mount_at(spec, "/sys")["options"]


def test_privileged_container_needs_privileged_pod():
    with pytest.raises(InvalidArgument, match="privileged"):
        build(config(sc=sc(privileged=True)))


def test_readonly_rootfs_and_no_new_privs():
    spec = build(config(sc=sc(readonly_rootfs=True, no_new_privs=True)))
    assert spec["root"] == {"path": "/bundle/rootfs", "readonly": True}
    assert spec["process"]["noNewPrivileges"] is True
    assert "ro" in mount_at(spec, "/etc/resolv.conf")["options"]


def test_default_masked_and_readonly_paths():
    spec = build()
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    spec = build(config(sc=sc(masked_paths=["/proc/x"], readonly_paths=["/proc/y"])))
    assert spec["linux"]["maskedPaths"] == ["/proc/x"]
    assert spec["linux"]["readonlyPaths"] == ["/proc/y"]


def seccomp_sc(kind, ref="") -> api_pb2.LinuxContainerSecurityContext:
    out = api_pb2.LinuxContainerSecurityContext()
    out.seccomp.profile_type = kind
    out.seccomp.localhost_ref = ref
    return out


def test_seccomp_runtime_default_is_an_allowlist():
    profile = build(config(sc=seccomp_sc(api_pb2.SecurityProfile.RuntimeDefault)))["linux"][
        "seccomp"
    ]
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    allowed = {
        n for s in profile["syscalls"] if s["action"] == "SCMP_ACT_ALLOW" for n in s["names"]
    }
    assert {"read", "write", "execve"} <= allowed
    assert not {"mount", "kexec_load", "init_module", "reboot"} & allowed


@pytest.mark.parametrize(
    ("machine", "arches"),
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
        ("mystery", []),
    ],
)
def test_seccomp_runtime_default_lists_only_the_nodes_architectures(machine, arches):
    """runc 1.1.5's libseccomp refused the whole profile over SCMP_ARCH_RISCV64."""
    sc_ = seccomp_sc(api_pb2.SecurityProfile.RuntimeDefault)
    profile = build(config(sc=sc_), host=HostFacts(machine=machine))["linux"]["seccomp"]
    assert profile["architectures"] == arches


def test_seccomp_runtime_default_follows_capabilities():
    s = seccomp_sc(api_pb2.SecurityProfile.RuntimeDefault)
    s.capabilities.add_capabilities.append("SYS_ADMIN")
    profile = build(config(sc=s))["linux"]["seccomp"]
    allowed = {
        n for x in profile["syscalls"] if x["action"] == "SCMP_ACT_ALLOW" for n in x["names"]
    }
    assert "mount" in allowed


def test_seccomp_unconfined_and_unset():
    assert (
        "seccomp" not in build(config(sc=seccomp_sc(api_pb2.SecurityProfile.Unconfined)))["linux"]
    )
    assert "seccomp" not in build()["linux"]


def test_seccomp_localhost():
    text = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": []})
    host = HostFacts(seccomp_profiles={"/etc/seccomp/p.json": text})
    cfg = config(sc=seccomp_sc(api_pb2.SecurityProfile.Localhost, "/etc/seccomp/p.json"))
    assert build(cfg, host=host)["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    with pytest.raises(InvalidArgument, match="cannot be read"):
        build(config(sc=seccomp_sc(api_pb2.SecurityProfile.Localhost, "/missing.json")))
    legacy = config(sc=sc(seccomp_profile_path="localhost//etc/seccomp/p.json"))
    assert build(legacy, host=host)["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"


def test_apparmor_only_when_the_kernel_has_it():
    s = api_pb2.LinuxContainerSecurityContext()
    s.apparmor.profile_type = api_pb2.SecurityProfile.Localhost
    s.apparmor.localhost_ref = "my-profile"
    assert "apparmorProfile" not in build(config(sc=s))["process"]
    spec = build(config(sc=s), host=HostFacts(apparmor=True))
    assert spec["process"]["apparmorProfile"] == "my-profile"


def test_namespaced_sysctls():
    pod = api_pb2.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.linux.sysctls["net.ipv4.ip_forward"] = "1"
    pod.linux.sysctls["kernel/shm_rmid_forced"] = "1"
    assert build(pod=pod)["linux"]["sysctl"] == {
        "net.ipv4.ip_forward": "1",
        "kernel.shm_rmid_forced": "1",
    }
    pod.linux.sysctls["vm.swappiness"] = "1"
    with pytest.raises(InvalidArgument, match="swappiness"):
        build(pod=pod)


def test_net_sysctl_refused_with_host_network():
    pod = api_pb2.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.linux.security_context.namespace_options.network = api_pb2.NODE
    pod.linux.sysctls["net.ipv4.ip_forward"] = "1"
    with pytest.raises(InvalidArgument, match="network namespace"):
        build(pod=pod)


# --- namespaces ------------------------------------------------------------------------


def test_joins_pod_namespaces_by_path():
    ns = {n["type"]: n.get("path") for n in build()["linux"]["namespaces"]}
    assert ns == {
        "mount": None,
        "network": SANDBOX.netns,
        "ipc": SANDBOX.ipcns,
        "uts": SANDBOX.utsns,
        "pid": None,
    }


def test_shared_pid_namespace_and_host_network():
    pod = api_pb2.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.linux.security_context.namespace_options.pid = api_pb2.POD
    pod.linux.security_context.namespace_options.network = api_pb2.NODE
    sandbox = Sandbox(id="p", ipcns="/ipc", pidns="/proc/42/ns/pid")
    ns = {n["type"]: n.get("path") for n in build(pod=pod, sandbox=sandbox)["linux"]["namespaces"]}
    assert ns == {"mount": None, "ipc": "/ipc", "pid": "/proc/42/ns/pid"}


# --- resources -------------------------------------------------------------------------


def test_resources_to_cgroups():
    res = api_pb2.LinuxContainerResources(
        cpu_shares=512,
        cpu_quota=50000,
        cpu_period=100000,
        cpuset_cpus="0-1",
        cpuset_mems="0",
        memory_limit_in_bytes=64 << 20,
        memory_swap_limit_in_bytes=128 << 20,
        hugepage_limits=[api_pb2.HugepageLimit(page_size="2MB", limit=4 << 20)],
    )
    r = build(config(res=res))["linux"]["resources"]
    assert r["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    assert r["memory"] == {"limit": 64 << 20, "swap": 128 << 20}
    assert r["hugepageLimits"] == [{"pageSize": "2MB", "limit": 4 << 20}]


KUBELET_HUGEPAGES = [
    api_pb2.HugepageLimit(page_size="2MB", limit=0),
    api_pb2.HugepageLimit(page_size="1GB", limit=0),
]


@pytest.mark.parametrize(
    ("sizes", "applied"),
    [
        (frozenset(), []),  # no hugetlb cgroup (this cgroup v1 host): runc would fail
        (frozenset({"2MB"}), ["2MB"]),  # 1GB pages not supported by the controller
        (frozenset({"2MB", "1GB"}), ["2MB", "1GB"]),
    ],
)
def test_hugepage_limits_only_for_sizes_the_node_can_limit(sizes, applied):
    res = api_pb2.LinuxContainerResources(hugepage_limits=KUBELET_HUGEPAGES)
    r = build(config(res=res), host=HostFacts(hugetlb_sizes=sizes))["linux"]["resources"]
    assert [p["pageSize"] for p in r.get("hugepageLimits", [])] == applied


def test_bad_hugepage_size_is_refused_even_where_unapplied():
    res = api_pb2.LinuxContainerResources(
        hugepage_limits=[api_pb2.HugepageLimit(page_size="2 MB", limit=0)]
    )
    with pytest.raises(InvalidArgument, match="hugepage_limits: bad page size"):
        build(config(res=res), host=HostFacts(hugetlb_sizes=frozenset()))


@pytest.mark.parametrize(
    ("kib", "name"), [(2048, "2MB"), (1048576, "1GB"), (64, "64KB"), (16384, "16MB")]
)
def test_kernel_hugepage_dirs_named_as_kubelet_names_them(kib, name):
    assert hostfacts.page_size_name(kib) == name


V1_MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/cpu rw,relatime shared:10 - cgroup cgroup rw,cpu
"""


def test_hugetlb_controller_detection():
    assert not hostfacts.hugetlb_controller(V1_MOUNTINFO, None)
    with_hugetlb = V1_MOUNTINFO + (
        "32 25 0:28 / /sys/fs/cgroup/hugetlb rw,relatime shared:11 - cgroup cgroup rw,hugetlb\n"
    )
    assert hostfacts.hugetlb_controller(with_hugetlb, None)
    assert hostfacts.hugetlb_controller("", "cpuset cpu io memory hugetlb pids\n")
    assert not hostfacts.hugetlb_controller(with_hugetlb, "cpuset cpu io memory pids\n")


def test_unified_only_on_cgroup_v2():
    res = api_pb2.LinuxContainerResources(unified={"memory.high": "1000000"})
    with pytest.raises(InvalidArgument, match="v2"):
        build(config(res=res))
    r = build(config(res=res), host=HostFacts(cgroup_v2=True))["linux"]["resources"]
    assert r["unified"] == {"memory.high": "1000000"}


def test_oom_score_adj_never_below_our_own():
    low = api_pb2.LinuxContainerResources(oom_score_adj=-999)
    assert build(config(res=low))["process"]["oomScoreAdj"] == -100
    high = api_pb2.LinuxContainerResources(oom_score_adj=500)
    assert build(config(res=high))["process"]["oomScoreAdj"] == 500


def test_cgroup_path_by_driver():
    assert build_full().cgroup_path == "/sycri/sycri-" + "c" * 64
    host = HostFacts(cgroup_driver="systemd")
    sandbox = Sandbox(id="p", cgroup_parent="kubepods-pod1.slice")
    assert (
        build_full(host=host, sandbox=sandbox).cgroup_path
        == "kubepods-pod1.slice:sycri:" + "c" * 64
    )


def test_bad_resources_refused():
    with pytest.raises(InvalidArgument, match="cpuset_cpus"):
        build(config(res=api_pb2.LinuxContainerResources(cpuset_cpus="0;rm")))
    with pytest.raises(InvalidArgument, match="swap"):
        build(
            config(
                res=api_pb2.LinuxContainerResources(
                    memory_limit_in_bytes=100 << 20, memory_swap_limit_in_bytes=50 << 20
                )
            )
        )


# --- ulimits ---------------------------------------------------------------------------


ULIMITS = ocispec.ULIMITS_ANNOTATION
OWN_LIMITS = {
    "memlock": (8 << 20, 8 << 20),
    "nice": (0, 0),
    "rtprio": (0, 0),
    "nofile": (20000, 20000),
}


def _pod_ulimits(value: str) -> api_pb2.PodSandboxConfig:
    pod = api_pb2.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.annotations[ocispec.ULIMITS_ANNOTATION] = value
    return pod


def _rlimits(spec) -> dict[str, tuple[int, int]]:
    return {r["type"]: (r["soft"], r["hard"]) for r in spec["process"]["rlimits"]}


def test_pids_limit_of_the_node_reaches_every_container():
    spec = build(settings=ocispec.Settings(pids_limit=512))
    assert spec["linux"]["resources"]["pids"] == {"limit": 512}
    assert "pids" not in build()["linux"]["resources"]  # 0: none of sycri's


def test_ulimits_default_and_per_pod_lowering():
    pod = _pod_ulimits("memlock=4096, nofile=2048:4096")
    settings = ocispec.Settings(default_ulimits=("nofile=4096:8192", "nproc=100:200"))
    host = HostFacts(own_rlimits=OWN_LIMITS)
    assert _rlimits(build(pod=pod, settings=settings, host=host)) == {
        "RLIMIT_MEMLOCK": (4096, 4096),
        "RLIMIT_NOFILE": (2048, 4096),
        "RLIMIT_NPROC": (100, 200),
    }


@pytest.mark.parametrize(
    "annotation, named",
    [("rtprio=99", "rtprio"), ("nice=40", "nice"), ("memlock=-1", "memlock"),
     ("nofile=100:9000", "nofile"), ("nproc=300", "nproc")],
)  # fmt: skip
def test_pod_cannot_raise_ulimits_above_the_node(annotation, named):
    """A pod author must not get rlimits only the node may grant (runc sets them as root)."""
    settings = ocispec.Settings(default_ulimits=("nofile=4096:8192", "nproc=100:200"))
    host = HostFacts(own_rlimits=OWN_LIMITS)
    with pytest.raises(InvalidArgument, match=f"{ULIMITS}: {named} hard limit"):
        build(pod=_pod_ulimits(annotation), settings=settings, host=host)


def test_max_ulimits_lets_pods_raise_within_the_ceiling():
    settings = ocispec.Settings(max_ulimits=("memlock=unlimited", "nofile=65536"))
    host = HostFacts(own_rlimits=OWN_LIMITS)  # CAP_SYS_RESOURCE held (all caps)
    spec = build(pod=_pod_ulimits("memlock=-1,nofile=1024:65536"), settings=settings, host=host)
    assert _rlimits(spec) == {
        "RLIMIT_MEMLOCK": (2**64 - 1, 2**64 - 1),
        "RLIMIT_NOFILE": (1024, 65536),
    }
    with pytest.raises(InvalidArgument, match="nofile hard limit 65537"):
        build(pod=_pod_ulimits("nofile=65537"), settings=settings, host=host)


def test_without_cap_sys_resource_no_hard_limit_goes_above_sycris_own():
    settings = ocispec.Settings(max_ulimits=("memlock=unlimited",))
    host = HostFacts(own_rlimits=OWN_LIMITS, bounding_caps=hostfacts.bounding_caps(NO_SYS_RESOURCE))
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE"):
        build(pod=_pod_ulimits("memlock=-1"), settings=settings, host=host)
    spec = build(pod=_pod_ulimits("memlock=1024:8388608"), settings=settings, host=host)
    assert _rlimits(spec) == {"RLIMIT_MEMLOCK": (1024, 8 << 20)}


def test_own_rlimits_read_from_proc():
    text = (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max open files            1024                 4096                 files     \n"
        "Max locked memory         8388608              unlimited            bytes     \n"
    )
    assert hostfacts.own_rlimits(text) == {"nofile": (1024, 4096), "memlock": (8 << 20, 2**64 - 1)}


def test_bad_ulimit_refused():
    pod = api_pb2.PodSandboxConfig()
    pod.CopyFrom(POD)
    pod.annotations[ocispec.ULIMITS_ANNOTATION] = "nofile=9:1"
    with pytest.raises(InvalidArgument, match="soft limit"):
        build(pod=pod)
    pod.annotations[ocispec.ULIMITS_ANNOTATION] = "bogus=1"
    with pytest.raises(InvalidArgument, match="NAME=SOFT"):
        build(pod=pod)


def test_spec_is_deterministic_json():
    a = build_full(config(sc=seccomp_sc(api_pb2.SecurityProfile.RuntimeDefault)))
    b = build_full(config(sc=seccomp_sc(api_pb2.SecurityProfile.RuntimeDefault)))
    assert a.json() == b.json()
    assert json.loads(a.json())["ociVersion"] == "1.0.2"


# This machine's real CapBnd: everything but CAP_SYS_RESOURCE (bit 24).
NO_SYS_RESOURCE = "Name:\tsycri\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\n"


def test_bounding_set_read_by_bit_order():
    held = hostfacts.bounding_caps(NO_SYS_RESOURCE)
    assert held == frozenset(ocispec.ALL_CAPS) - {"CAP_SYS_RESOURCE"}
    assert hostfacts.bounding_caps("CapBnd:\t0000000000200001\n") == {"CAP_CHOWN", "CAP_SYS_ADMIN"}


def test_privileged_and_add_all_stay_inside_the_bounding_set():
    """runc fails with 'unable to apply caps' when asked for more than sycri holds."""
    host = HostFacts(bounding_caps=hostfacts.bounding_caps(NO_SYS_RESOURCE))
    spec = build(config(sc=sc(privileged=True)), pod=privileged_pod(), host=host)
    assert "CAP_SYS_RESOURCE" not in caps(spec) and "CAP_SYS_ADMIN" in caps(spec)
    assert len(caps(spec)) == len(ocispec.ALL_CAPS) - 1
    c = api_pb2.Capability(add_capabilities=["ALL"])
    got = caps(build(config(sc=api_pb2.LinuxContainerSecurityContext(capabilities=c)), host=host))
    assert "CAP_SYS_RESOURCE" not in got and "CAP_SYS_ADMIN" in got
    c = api_pb2.Capability(add_capabilities=["SYS_RESOURCE"])
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE is not in the node's bounding"):
        build(config(sc=api_pb2.LinuxContainerSecurityContext(capabilities=c)), host=host)


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        ([], None),
        ([api_pb2.PROPAGATION_PRIVATE], None),
        ([api_pb2.PROPAGATION_HOST_TO_CONTAINER], "rslave"),
        ([api_pb2.PROPAGATION_HOST_TO_CONTAINER, api_pb2.PROPAGATION_BIDIRECTIONAL], "rshared"),
    ],
)
def test_rootfs_propagation_follows_the_volumes(kinds, expected):
    """runc's default rslave root would keep a Bidirectional volume's mounts from the host."""
    cfg = config()
    for i, kind in enumerate(kinds):
        cfg.mounts.add(host_path=f"/h{i}", container_path=f"/c{i}", propagation=kind)
    host = HostFacts(paths={f"/h{i}": "dir" for i in range(len(kinds))})
    spec = build(cfg, host=host)
    assert spec["linux"].get("rootfsPropagation") == expected


MOUNTINFO = """\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 22 0:5 / /tmp/shared rw shared:7 - tmpfs none rw
41 40 0:6 / /tmp/shared/sub rw master:7 - tmpfs none rw
42 22 0:7 / /tmp/with\\040space rw shared:9 - tmpfs none rw
43 40 0:8 / /tmp/shared rw - tmpfs none rw
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/var/lib/x", ("/", "private")),
        ("/tmp/sharedX", ("/", "private")),
        ("/tmp/shared/sub/deeper", ("/tmp/shared/sub", "slave")),
        ("/tmp/with space/v", ("/tmp/with space", "shared")),
        ("/tmp/shared/a", ("/tmp/shared", "private")),  # line 43 is mounted over line 40
    ],
)
def test_propagation_of_the_mount_holding_a_path(path, expected):
    assert hostfacts.propagation_of(path, MOUNTINFO) == expected


@pytest.mark.parametrize(
    ("kind", "on", "match"),
    [
        (api_pb2.PROPAGATION_BIDIRECTIONAL, "slave", "needs a shared mount"),
        (api_pb2.PROPAGATION_BIDIRECTIONAL, "private", "needs a shared mount"),
        (api_pb2.PROPAGATION_HOST_TO_CONTAINER, "private", "shared or slave"),
        (api_pb2.PROPAGATION_HOST_TO_CONTAINER, "slave", None),
        (api_pb2.PROPAGATION_BIDIRECTIONAL, "shared", None),
    ],
)
def test_propagation_needs_a_host_mount_that_propagates(kind, on, match):
    """containerd's rule: otherwise the volume would silently propagate nothing."""
    cfg = config()
    cfg.mounts.add(host_path="/h/v", container_path="/v", propagation=kind)
    host = HostFacts(paths={"/h/v": "dir"}, propagation={"/h/v": ("/h", on)})
    if match is None:
        assert build(cfg, host=host)["linux"]["rootfsPropagation"]
    else:
        with pytest.raises(InvalidArgument, match=match):
            build(cfg, host=host)


# --- resources runc would refuse (issue 17) ---------------------------------------------

NODE = ocispec.CgroupFacts(
    cpus=frozenset({0, 1, 2, 3}), mems=frozenset({0}), controllers=frozenset({"cpu", "memory"})
)


@pytest.mark.parametrize(
    "res, field",
    [(dict(unified={"cgroup.procs": "1"}), "unified"),
     (dict(unified={"cgroup.kill": "1"}), "unified"),
     (dict(unified={"../memory.max": "1"}), "unified"),
     (dict(unified={"io.max": "8:0 rbps=1"}), "unified"),  # no io controller here
     (dict(unified={"memory.high": "1\n2"}), "unified"),
     (dict(cpuset_cpus="2-9"), "cpuset_cpus"),
     (dict(cpuset_cpus="1,,2"), "cpuset_cpus"),
     (dict(cpuset_mems="1"), "cpuset_mems"),
     (dict(cpu_quota=999), "cpu_quota"),
     (dict(cpu_period=999), "cpu_period"),
     (dict(cpu_shares=1), "cpu_shares"),
     (dict(memory_limit_in_bytes=(12 << 20) - 1), "memory_limit_in_bytes")],
)  # fmt: skip
def test_resources_the_kernel_or_runc_refuse_are_named(res, field):
    with pytest.raises(InvalidArgument, match=field):
        ocispec.cgroup_resources(api_pb2.LinuxContainerResources(**res), True, None, NODE)


def test_resources_in_range_pass():
    res = api_pb2.LinuxContainerResources(
        cpu_shares=2, cpu_quota=1000, cpu_period=100000, cpuset_cpus="0-1,3", cpuset_mems="0",
        memory_limit_in_bytes=12 << 20, memory_swap_limit_in_bytes=-1,
        unified={"memory.high": "max", "cpu.weight": "100"},
    )  # fmt: skip
    out = ocispec.cgroup_resources(res, True, None, NODE)
    assert out["cpu"] == {
        "shares": 2,
        "quota": 1000,
        "period": 100000,
        "cpus": "0-1,3",
        "mems": "0",
    }
    assert out["memory"] == {"limit": 12 << 20, "swap": -1}
    assert out["unified"] == {"memory.high": "max", "cpu.weight": "100"}


def test_argv_over_the_kernels_limits_is_refused():
    with pytest.raises(InvalidArgument, match="Argument list too long"):
        build(config(command=["sh"], args=["x" * 200_000]))
    with pytest.raises(InvalidArgument, match="ARG_MAX 4096"):
        build(config(command=["sh"], args=["y" * 1000] * 5), host=HostFacts(arg_max=4096))
