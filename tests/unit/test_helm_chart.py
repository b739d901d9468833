"""The Helm chart, rendered and linted by the real Helm engine, checked as a cluster would.

Every rendered object is validated against the Kubernetes OpenAPI schemas of the oldest
Kubernetes the chart supports and the newest one known; the settings a node runtime
cannot work without are asserted one by one.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import PurePosixPath
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from sycri import config
from sycri.proxy import settings as proxy_settings

from tests.support.chart import (
    CHART,
    NAMESPACE,
    VARIANTS,
    hook,
    kinds,
    notes,
    objects,
    one,
    render,
)

KUBE_VERSIONS = ("1.26.0", "1.37.0")  # Chart.yaml kubeVersion floor, newest schemas
CONFIG_PATH = "/etc/sycri/config.yaml"
HOST_ROOT = "/host"  # values.yaml hostRoot


def _values(name: str) -> dict[str, Any]:
    return copy.deepcopy(VARIANTS[name])


def _merged(name: str) -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(_values(name))


def _container(objs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(objs, "DaemonSet")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["sycri"]
    return pod["containers"][0]


def _mounts(objs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """mountPath -> (volumeMount, volume)."""
    pod = one(objs, "DaemonSet")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in _container(objs)["volumeMounts"]}


def _config_data(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The ConfigMap's config.yaml as data."""
    return yaml.safe_load(one(objs, "ConfigMap")["data"]["config.yaml"])


def _sycri_config(objs: list[dict[str, Any]], tmp_path) -> config.Config:
    """The ConfigMap's config.yaml, loaded by sycri's own loader (unknown keys fail)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(_config_data(objs)))
    return config.load(str(path), env={})


variants = pytest.mark.parametrize("variant", sorted(VARIANTS))


@variants
def test_helm_lint_is_clean(variant):
    report = helm.lint(CHART, _values(variant), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@variants
@pytest.mark.parametrize("kube", KUBE_VERSIONS)
def test_every_object_matches_the_kubernetes_openapi_schema(variant, kube):
    objs = objects(_values(variant))
    assert {"DaemonSet", "ConfigMap"} <= kinds(objs)
    for obj in objs:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked in test_service_monitor
        kubernetes_validate.validate(obj, kube, strict=True)
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding", "RuntimeClass"):
            assert obj["metadata"]["namespace"] == NAMESPACE


def test_the_schema_validator_is_not_vacuous():
    ds = one(objects(), "DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBE_VERSIONS[0], strict=True)
    ds = one(objects(), "DaemonSet")
    ds["spec"]["template"]["spec"]["hostPIDs"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBE_VERSIONS[0], strict=True)


@variants
def test_daemonset_runs_privileged_in_the_hosts_namespaces(variant):
    objs = objects(_values(variant))
    values = _merged(variant)
    ds = one(objs, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "Default"  # the node's resolver, not cluster DNS
    assert pod["priorityClassName"] == "system-node-critical"
    sc = _container(objs)["securityContext"]
    assert sc["privileged"] is True and sc["runAsUser"] == 0
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": values["updateStrategy"]["maxUnavailable"]},
    }
    # kubelet must wait for sycri's own drain before it kills it.
    assert pod["terminationGracePeriodSeconds"] > values["config"]["shutdownGraceSeconds"]
    assert pod.get("nodeSelector", {}) == values["nodeSelector"]
    assert pod.get("affinity", {}) == values["affinity"]
    assert pod.get("tolerations", []) == values["tolerations"]
    assert _container(objs).get("resources", {}) == values["resources"]


@variants
def test_host_paths_are_mounted_at_the_same_paths(variant, tmp_path):
    objs = objects(_values(variant))
    values = _merged(variant)
    cfg = _sycri_config(objs, tmp_path)
    mounts = _mounts(objs)
    host = {
        path: (m, v["hostPath"])
        for path, (m, v) in mounts.items()
        # config and credentials are not host paths; the host's / is at hostRoot
        if "hostPath" in v and path != values["hostRoot"]
    }
    # Paths kubelet and runc see must be the same inside and outside the container.
    for path, (_, hp) in host.items():
        assert hp["path"] == path
    needed = {
        cfg.run_dir,
        cfg.root_dir,
        cfg.pod_log_dir,
        values["paths"]["kubeletDir"],
        cfg.cni.bin_dirs[0],
        cfg.cni.conf_dir,
        "/sys/fs/cgroup",
        "/dev",
        "/run/xtables.lock",
        "/lib/modules",
    }
    assert needed <= set(host)
    # The socket's directory is reachable from the host: its own mount or the run dir's.
    sock_dir = str(PurePosixPath(cfg.socket).parent)
    assert any(sock_dir == p or sock_dir.startswith(p + "/") for p in host)
    # Mounts sycri makes (pinned namespaces, image rootfs) must propagate to the host.
    for path in (cfg.run_dir, cfg.root_dir):
        assert host[path][0]["mountPropagation"] == "Bidirectional"
    assert host["/lib/modules"][0]["readOnly"] is True
    assert host["/run/xtables.lock"][1]["type"] == "FileOrCreate"
    assert host[cfg.cni.bin_dirs[0]][0]["readOnly"] is True
    assert host["/dev"][0]["mountPropagation"] == "HostToContainer"
    # Volumes kubelet mounts after sycri started must still be visible to it.
    assert host[values["paths"]["kubeletDir"]][0]["mountPropagation"] == "HostToContainer"
    # Nothing else gets Bidirectional: it leaks mounts into the host.
    bidirectional = {
        p for p, (m, _) in host.items() if m.get("mountPropagation") == "Bidirectional"
    }
    assert bidirectional == {cfg.run_dir, cfg.root_dir}


def test_a_socket_outside_the_run_dir_gets_its_own_mount():
    default = _mounts(objects())
    assert "/run/sycri" in default and len([p for p in default if p.startswith("/run/sycri")]) == 1
    custom = _mounts(objects(_values("custom-paths")))
    _, volume = custom["/var/run/sycri-cri"]
    assert volume["hostPath"] == {"path": "/var/run/sycri-cri", "type": "DirectoryOrCreate"}
    assert "/run/sycri-x" in custom and "/data/sycri" in custom


def test_systemd_cgroup_driver_mounts_systemd_and_dbus():
    assert {"/run/systemd", "/run/dbus"} <= set(_mounts(objects()))
    assert not {"/run/systemd", "/run/dbus"} & set(_mounts(objects(_values("custom-paths"))))


@variants
def test_config_map_is_a_config_sycri_accepts(variant, tmp_path):
    objs = objects(_values(variant))
    values = _merged(variant)
    cfg = _sycri_config(objs, tmp_path)
    paths = values["paths"]
    assert (cfg.socket, cfg.run_dir, cfg.root_dir, cfg.pod_log_dir) == (
        paths["socket"],
        paths["runDir"],
        paths["rootDir"],
        paths["podLogDir"],
    )
    assert cfg.cni.bin_dirs == (paths["cniBinDir"], *values["config"]["cni"]["extraBinDirs"])
    assert cfg.cni.conf_dir == paths["cniConfDir"]
    assert cfg.cgroup_driver == values["config"]["cgroupDriver"]
    assert set(cfg.runtimes) == set(values["config"]["runtimes"])
    assert cfg.images.squashfs_compression == values["config"]["images"]["squashfsCompression"]
    assert cfg.log.level == values["config"]["log"]["level"]
    if values["metrics"]["enabled"]:
        assert cfg.metrics_address == f"0.0.0.0:{values['metrics']['port']}"
    else:
        assert cfg.metrics_address == ""
    # The registries file sycri is told about is the one the ConfigMap mounts there.
    mount, volume = _mounts(objs)["/etc/sycri"]
    assert volume["configMap"]["name"] == one(objs, "ConfigMap")["metadata"]["name"]
    assert mount["readOnly"] is True
    assert cfg.images.registries_conf == "/etc/sycri/registries.conf"
    assert "registries.conf" in one(objs, "ConfigMap")["data"]


def test_config_map_keys_are_config_py_keys():
    data = _config_data(objects(_values("custom-paths")))
    flat = set()
    for key, value in data.items():
        if isinstance(value, dict) and key != "runtimes":
            flat |= {f"{key}.{sub}" for sub in value}
        elif key != "runtimes":
            flat.add(key)
    assert flat <= set(config.keys())
    assert data["runtimes"]["runc-debug"] == {"binary": "/usr/sbin/runc", "root": "/run/runc-debug"}


def test_schema_choices_match_sycri_config():
    with helm.Chart.load(CHART) as chart:
        props = chart.schema["properties"]["config"]["properties"]
    assert (
        tuple(props["images"]["properties"]["squashfsCompression"]["enum"])
        == (config._CHOICES["images.squashfs_compression"])
    )
    assert tuple(props["log"]["properties"]["level"]["enum"]) == config._CHOICES["log.level"]
    assert tuple(props["log"]["properties"]["format"]["enum"]) == config._CHOICES["log.format"]
    assert set(props["cgroupDriver"]["enum"]) < set(config._CHOICES["cgroup_driver"])


def test_registries_conf_carries_mirrors(tmp_path):
    objs = objects(_values("mirrors"))
    conf = tomllib.loads(one(objs, "ConfigMap")["data"]["registries.conf"])
    assert conf["unqualified-search-registries"] == ["docker.io", "quay.io"]
    by_prefix = {r["prefix"]: r for r in conf["registry"]}
    hub = by_prefix["docker.io"]
    assert hub["location"] == "registry-1.docker.io"
    assert hub["mirror"] == [
        {"location": "mirror.internal:5000", "insecure": True},
        {"location": "mirror2.internal", "insecure": False},
    ]
    assert by_prefix["registry.internal:5000"]["insecure"] is True
    assert by_prefix["registry.internal:5000"]["location"] == "registry.internal:5000"
    assert by_prefix["evil.example.com"]["blocked"] is True
    # Registry credentials come from the Secret, mounted where the config says.
    cfg = _sycri_config(objs, tmp_path)
    mount, volume = _mounts(objs)["/etc/sycri-auth"]
    assert mount["readOnly"] is True
    assert volume["secret"]["secretName"] == "sycri-pull-credentials"
    assert volume["secret"]["items"] == [{"key": ".dockerconfigjson", "path": "config.json"}]
    assert cfg.images.docker_config == "/etc/sycri-auth/config.json"


def test_default_registries_conf_is_valid_toml():
    conf = tomllib.loads(one(objects(), "ConfigMap")["data"]["registries.conf"])
    assert conf == {"unqualified-search-registries": ["docker.io"]}


@variants
def test_probes_ask_sycri_over_its_socket(variant):
    objs = objects(_values(variant))
    c = _container(objs)
    assert c["args"] == ["--config", CONFIG_PATH]
    live = c["livenessProbe"]["exec"]["command"]
    ready = c["readinessProbe"]["exec"]["command"]
    start = c["startupProbe"]["exec"]["command"]
    assert live == ["sycri", "health", "--live", "--config", CONFIG_PATH]
    assert start == live
    assert ready == ["sycri", "health", "--config", CONFIG_PATH]
    # Probes must be able to wait out a slow Status; exec probes default to 1 s.
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["timeoutSeconds"] >= 5


@variants
def test_rbac_is_least_privilege(variant):
    objs = objects(_values(variant))
    values = _merged(variant)
    if not values["nodeAgent"]["enabled"]:
        assert not {"ClusterRole", "ClusterRoleBinding", "Role"} & kinds(objs)
        pod = one(objs, "DaemonSet")["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        return
    role = one(objs, "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == {
        ("", "nodes", "get"),
        ("", "nodes", "patch"),
        ("", "events", "create"),
        ("", "events", "patch"),
    }
    assert all("resourceNames" not in r and "nonResourceURLs" not in r for r in role["rules"])
    binding = one(objs, "ClusterRoleBinding")
    sa = one(objs, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    pod = one(objs, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    env = {e["name"]: e for e in _container(objs)["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


@variants
def test_metrics_service_scrapes_the_port_sycri_listens_on(variant, tmp_path):
    objs = objects(_values(variant))
    values = _merged(variant)
    if not values["metrics"]["enabled"]:
        assert "Service" not in kinds(objs) and "ports" not in _container(objs)
        return
    port = values["metrics"]["port"]
    cfg = _sycri_config(objs, tmp_path)
    assert cfg.metrics_address.rsplit(":", 1)[1] == str(port)
    svc = one(objs, "Service")
    ann = svc["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true"
    assert ann["prometheus.io/port"] == str(port)
    assert ann["prometheus.io/path"] == "/metrics"
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [
        {"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert _container(objs)["ports"] == [
        {"name": "metrics", "containerPort": port, "protocol": "TCP"}
    ]
    pod_labels = one(objs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


def test_service_monitor():
    objs = objects(_values("observability"))
    sm = one(objs, "ServiceMonitor")
    svc = one(objs, "Service")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint["port"] == svc["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert "ServiceMonitor" not in kinds(objects())


def test_otel_environment():
    env = {e["name"]: e.get("value") for e in _container(objects(_values("observability")))["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    assert env["OTEL_SERVICE_NAME"] == "sycri"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == (
        "k8s.node.name=$(NODE_NAME),deployment.environment=prod"
    )
    names = [e["name"] for e in _container(objects(_values("observability")))["env"]]
    assert names.index("NODE_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")  # $(…) order
    default = {e["name"]: e.get("value") for e in _container(objects())["env"]}
    assert default["OTEL_TRACES_EXPORTER"] == "none"
    assert not any(k.startswith("OTEL_EXPORTER") for k in default)


def test_runtime_class():
    objs = objects(_values("runtimeclass"))
    rc = one(objs, "RuntimeClass")
    assert rc["handler"] == "runc"
    assert rc["scheduling"]["nodeSelector"] == {"sycri.io/runtime": "sycri"}
    assert rc["overhead"] == {"podFixed": {"cpu": "50m", "memory": "32Mi"}}
    assert "RuntimeClass" not in kinds(objects())


def test_image_reference():
    with helm.Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
    assert _container(objects())["image"] == f"sycri/sycri:{app_version}"
    assert _container(objects(_values("custom-paths")))["image"] == (
        "registry.internal/sycri@sha256:" + "ab" * 32
    )


def test_changed_config_rolls_the_daemonset_and_same_config_does_not():
    def checksum(values):
        ds = one(objects(values), "DaemonSet")
        return ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"log": {"level": "debug"}}})


def test_notes_tell_the_kubelet_setting():
    text = notes()  # kubelet talks to the proxy, never to sycri directly
    assert "containerRuntimeEndpoint: unix:///run/sycri-proxy/cri.sock" in text
    assert "--container-runtime-endpoint=unix:///run/sycri-proxy/cri.sock" in text
    assert "unix:///run/sycri/sycri.sock" not in text
    assert "cgroupDriver: systemd" in text
    assert "move the pods of sycri's handlers\n(runc)" in text
    direct = notes({**_values("custom-paths"), "proxy": {"enabled": False}})
    assert "--container-runtime-endpoint=unix:///var/run/sycri-cri/cri.sock" in direct


@variants
def test_cdi_spec_dirs_are_the_hosts_read_only_and_sycris_setting(variant, tmp_path):
    """The NVIDIA device plugin (or an admin) writes CDI specs on the host; sycri must read
    the same folders, see files written after it started, and never write there."""
    objs = objects(_values(variant))
    dirs = _merged(variant)["cdi"]["specDirs"]
    assert dirs == ["/etc/cdi", "/var/run/cdi"]
    assert _sycri_config(objs, tmp_path).cdi_spec_dirs == tuple(dirs)
    mounts = _mounts(objs)
    for d in dirs:
        mount, volume = mounts[d]
        assert volume["hostPath"] == {"path": d, "type": "DirectoryOrCreate"}
        assert mount["readOnly"] is True and mount["mountPropagation"] == "HostToContainer"


def test_without_cdi_spec_dirs_there_is_no_mount_and_no_device(tmp_path):
    objs = objects({"cdi": {"specDirs": []}})
    assert _sycri_config(objs, tmp_path).cdi_spec_dirs == ()
    assert not [p for p in _mounts(objs) if "cdi" in p]
    assert "DEVICE_LIST_STRATEGY" not in notes({"cdi": {"specDirs": []}})


def test_notes_tell_how_to_run_the_device_plugin_in_cdi_mode():
    text = notes()
    assert "DEVICE_LIST_STRATEGY=cdi-annotations (or cdi-cri)" in text
    assert "/etc/cdi, /var/run/cdi" in text
    assert "sycri cdi generate -o /var/run/cdi/nvidia.yaml" in text


BAD_VALUES = {
    "latest tag": {"image": {"tag": "latest"}},
    "short digest": {"image": {"digest": "sha256:abc"}},
    "unknown top-level key": {"replicas": 3},
    "relative socket": {"paths": {"socket": "sycri.sock"}},
    "socket is a directory": {"paths": {"socket": "/run/sycri/"}},
    "relative root dir": {"paths": {"rootDir": "var/lib/sycri"}},
    "unknown cgroup driver": {"config": {"cgroupDriver": "cgroupv3"}},
    "auto cgroup driver (no systemctl in the image)": {"config": {"cgroupDriver": "auto"}},
    "unknown compressor": {"config": {"images": {"squashfsCompression": "brotli"}}},
    "zero downloads": {"config": {"images": {"maxConcurrentDownloads": 0}}},
    "negative grace": {"config": {"shutdownGraceSeconds": -1}},
    "no runtimes": {"config": {"runtimes": {"runc": None}}},
    "runtime without binary": {"config": {"runtimes": {"kata": {"root": "/run/kata"}}}},
    "bad handler name": {"config": {"runtimes": {"run c": {"binary": "runc"}}}},
    "streaming address not host:port": {"config": {"streaming": {"address": "localhost"}}},
    "metrics port out of range": {"metrics": {"port": 70000}},
    "metrics port as text": {"metrics": {"port": "9810"}},
    "maxUnavailable zero": {"updateStrategy": {"maxUnavailable": 0}},
    "otel endpoint without scheme": {"otel": {"endpoint": "collector:4317"}},
    "otel unknown protocol": {"otel": {"protocol": "udp"}},
    "mirror without location": {
        "registries": {"entries": [{"prefix": "docker.io", "mirrors": [{}]}]}
    },
    "registry without prefix": {"registries": {"entries": [{"location": "x"}]}},
    "pull policy typo": {"image": {"pullPolicy": "Sometimes"}},
    "log level typo": {"config": {"log": {"level": "verbose"}}},
    "bad probe": {"livenessProbe": {"periodSeconds": 0}},
    "relative host root": {"hostRoot": "host"},
    "host root is the root": {"hostRoot": "/"},
    "proxy runtime endpoint without unix://": {"proxy": {"runtimeEndpoint": "/run/x.sock"}},
    "proxy socket relative": {"proxy": {"socket": "cri.sock"}},
    "proxy handler name with a space": {"proxy": {"handlers": ["ru nc"]}},
    "proxy log level typo": {"proxy": {"logLevel": "loud"}},
    "proxy unknown key": {"proxy": {"port": 1}},
    "relative CDI spec dir": {"cdi": {"specDirs": ["etc/cdi"]}},
    "CDI spec dirs as text": {"cdi": {"specDirs": "/etc/cdi"}},
    "CDI spec dir twice": {"cdi": {"specDirs": ["/etc/cdi", "/etc/cdi"]}},
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_values_schema_rejects_wrong_values(case):
    values = BAD_VALUES[case]
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    with pytest.raises(helm.HelmError):  # install-time rendering refuses them too
        render(values)
    report = helm.lint(CHART, values, strict=True)
    assert report["errors"], f"helm lint accepted {case}"


@variants
def test_values_schema_accepts_the_variants(variant):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(_values(variant))


TEMPLATE_ERRORS = {
    "grace shorter than sycri's drain": (
        {"terminationGracePeriodSeconds": 5, "config": {"shutdownGraceSeconds": 10}},
        "terminationGracePeriodSeconds must be longer",
    ),
    "default runtime not configured": (
        {"config": {"defaultRuntime": "crun"}},
        'config.defaultRuntime "crun" is not a key of config.runtimes',
    ),
    "proxy handler sycri does not have": (
        {"proxy": {"handlers": ["kata"]}},
        'proxy.handlers: "kata" is not a key of config.runtimes',
    ),
    "proxy on sycri's own socket": (
        {"proxy": {"socket": "/run/sycri/sycri.sock"}},
        "proxy.socket must differ from paths.socket",
    ),
    "proxy on the existing runtime's socket": (
        {"proxy": {"socket": "/run/containerd/containerd.sock"}},
        "proxy.socket must not be the existing runtime's socket",
    ),
    "runtime class the proxy would not route to sycri": (
        {
            "config": {"runtimes": {"runc": {"binary": "runc"}, "crun": {"binary": "crun"}}},
            "proxy": {"handlers": ["crun"]},
            "runtimeClass": {"create": True, "handler": "runc"},
        },
        'runtimeClass.handler "runc" is not in proxy.handlers',
    ),
    "runtime class for an unknown handler": (
        {"runtimeClass": {"create": True, "handler": "kata"}},
        'runtimeClass.handler "kata" is not a key of config.runtimes',
    ),
}


@pytest.mark.parametrize("case", sorted(TEMPLATE_ERRORS))
def test_impossible_combinations_fail_with_a_clear_message(case):
    values, message = TEMPLATE_ERRORS[case]
    with pytest.raises(helm.HelmError) as err:
        render(values)
    assert message in str(err.value)


# --- the CRI proxy, its installer and the host root (issue 14) --------------------------


def _pod(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objs, "DaemonSet")["spec"]["template"]["spec"]


@variants
def test_the_sycri_pod_never_runs_on_sycri(variant):
    """No RuntimeClass: kubelet asks the node's existing runtime to run sycri's pod
    (handler ""), which the proxy never routes to sycri."""
    objs = objects(_values(variant))
    for ds in [o for o in objs if o["kind"] == "DaemonSet"]:
        assert "runtimeClassName" not in ds["spec"]["template"]["spec"]
    handlers = yaml.safe_load(one(objs, "ConfigMap")["data"]["proxy.yaml"])["sycri_handlers"]
    assert "" not in handlers


def test_the_daemonset_rolls_one_node_at_a_time():
    ds = one(objects(), "DaemonSet")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 1},
    }


@variants
def test_the_hosts_root_is_mounted_and_is_sycris_host_root(variant, tmp_path):
    objs = objects(_values(variant))
    mount, volume = _mounts(objs)[HOST_ROOT]
    assert volume["hostPath"] == {"path": "/", "type": "Directory"}
    assert mount["mountPropagation"] == "HostToContainer"  # the host's later mounts too
    assert not mount.get("readOnly")  # writable hostPath volumes are bound from here
    assert _sycri_config(objs, tmp_path).host_root == HOST_ROOT


@variants
def test_the_installer_puts_the_proxy_on_the_host(variant, tmp_path):
    objs = objects(_values(variant))
    values = _merged(variant)
    pod = _pod(objs)
    [init] = pod["initContainers"]
    assert init["image"] == _container(objs)["image"]  # the same version's files
    assert init["securityContext"]["privileged"] is True
    with helm.Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
    version = values["image"]["tag"] or app_version
    if values["image"]["digest"]:
        version = f"{app_version}-{values['image']['digest'][7:19]}"
    assert init["command"] == [
        "sycri", "proxy", "install",
        "--config", "/etc/sycri/proxy.yaml",
        "--host-root", HOST_ROOT,
        "--version", version,
    ]  # fmt: skip
    mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    assert mounts[HOST_ROOT]["name"] == "host-root"
    assert mounts["/etc/sycri"]["readOnly"] is True
    assert pod["hostPID"] is True  # hosts without systemd: nsenter --target 1
    # the proxy's settings, read by the proxy's own parser (unknown keys fail)
    data = yaml.safe_load(one(objs, "ConfigMap")["data"]["proxy.yaml"])
    proxy = proxy_settings.parse(data)
    cfg = _sycri_config(objs, tmp_path)
    assert proxy.sycri_endpoint == f"unix://{cfg.socket}"
    assert proxy.listen == f"unix://{values['proxy']['socket']}"
    assert proxy.runtime_endpoint == values["proxy"]["runtimeEndpoint"]
    assert set(proxy.sycri_handlers) == set(values["proxy"]["handlers"] or cfg.runtimes)


def test_uninstall_hook_removes_the_proxy_from_every_node():
    objs = objects()
    ds = hook(objs, "DaemonSet", "pre-delete")
    pod = ds["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert init["command"] == [
        "sycri", "proxy", "uninstall",
        "--listen", "unix:///run/sycri-proxy/cri.sock",
        "--host-root", HOST_ROOT,
    ]  # fmt: skip
    volumes = {v["name"]: v for v in pod["volumes"]}
    [mount] = init["volumeMounts"]
    assert mount["mountPath"] == HOST_ROOT
    assert volumes[mount["name"]]["hostPath"]["path"] == "/"
    main = one(objs, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == main["nodeSelector"]
    assert pod["tolerations"] == main["tolerations"]
    # selectors of the two DaemonSets must not claim each other's pods
    sel = ds["spec"]["selector"]["matchLabels"]
    main_labels = one(objs, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert not sel.items() <= main_labels.items()


def test_without_the_proxy_nothing_is_installed_on_the_host():
    objs = objects({"proxy": {"enabled": False}})
    assert "initContainers" not in _pod(objs)
    assert "proxy.yaml" not in one(objs, "ConfigMap")["data"]
    assert not [
        o for o in objs if o["kind"] == "DaemonSet" and "-uninstall" in o["metadata"]["name"]
    ]
    assert "--container-runtime-endpoint=unix:///run/sycri/sycri.sock" in notes(
        {"proxy": {"enabled": False}}
    )
