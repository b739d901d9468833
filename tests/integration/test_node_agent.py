"""The node agent against a local HTTPS Kubernetes API (tests/support/kubeapi.py).

The agent uses the official ``kubernetes`` client with in-cluster credentials (a token
file, a CA file, KUBERNETES_SERVICE_HOST/PORT), exactly as in a pod.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sycri import __version__
from sycri.config import Config, RuntimeHandler
from sycri.k8s import agent as agent_mod
from sycri.k8s.agent import REASON_CONVERT, REASON_PULL, NodeAgent

from tests.support.chart import objects, one
from tests.support.kubeapi import MERGE_PATCH, KubeAPI
from tests.support.server import sycri_env

NODE = "worker-7"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[KubeAPI]:
    server = KubeAPI(tmp_path / "kubeapi").start()
    server.add_node(NODE, {"kubernetes.io/hostname": NODE, "team": "hpc"})
    server.add_node("other-node")
    try:
        yield server
    finally:
        if server.gate is not None:
            server.gate.set()
        server.stop()


def _agent(api: KubeAPI, cfg: Config | None = None, **kw) -> NodeAgent:
    agent = NodeAgent.from_environment(
        cfg or Config(),
        environ=api.environ(NODE),
        token_path=str(api.token_path),
        ca_path=str(api.ca_path),
        **kw,
    )
    assert agent.enabled
    return agent


@pytest.fixture
def running(api: KubeAPI) -> Iterator[NodeAgent]:
    agent = _agent(api)
    agent.start()
    try:
        assert agent.wait_registered(15)
        yield agent
    finally:
        agent.close()


def test_labels_and_annotates_its_own_node(api: KubeAPI):
    cfg = Config(
        runtimes={"runc": RuntimeHandler(), "runc-debug": RuntimeHandler(binary="/usr/sbin/runc")}
    )
    agent = _agent(api, cfg)
    agent.start()
    try:
        assert agent.wait_registered(15)
    finally:
        agent.close()
    meta = api.nodes[NODE]["metadata"]
    assert meta["labels"] == {
        "kubernetes.io/hostname": NODE,
        "team": "hpc",  # labels sycri does not own are kept
        "sycri.io/runtime": "sycri",
        "sycri.io/version": __version__.replace("+", "_"),
        "sycri.io/sif": "true",
        "handler.sycri.io/runc": "true",
        "handler.sycri.io/runc-debug": "true",
    }
    ann = meta["annotations"]
    assert ann["sycri.io/version"] == __version__
    assert ann["sycri.io/runtime-handlers"] == "runc,runc-debug"
    assert ann["sycri.io/default-runtime-handler"] == "runc"
    assert ann["sycri.io/image-format"] == "sif"
    assert ann["sycri.io/cri-socket"] == "unix:///run/sycri/sycri.sock"
    assert "sycri.io/runtime" not in api.nodes["other-node"]["metadata"]["labels"]
    calls = [(r.method, r.path) for r in api.requests]
    assert calls == [("GET", f"/api/v1/nodes/{NODE}"), ("PATCH", f"/api/v1/nodes/{NODE}")]
    patch = api.requests[1]
    assert patch.headers["content-type"] == MERGE_PATCH
    assert patch.headers["authorization"].lower() == f"bearer {api.token}"


def test_handler_labels_of_removed_handlers_are_dropped(api: KubeAPI):
    api.nodes[NODE]["metadata"]["labels"]["handler.sycri.io/kata"] = "true"
    agent = _agent(api)
    agent.start()
    try:
        assert agent.wait_registered(15)
    finally:
        agent.close()
    labels = api.nodes[NODE]["metadata"]["labels"]
    assert "handler.sycri.io/kata" not in labels
    assert labels["handler.sycri.io/runc"] == "true"


def test_failed_pull_posts_a_warning_event_on_the_pod(api: KubeAPI, running: NodeAgent):
    running.pull_failed("team-a", "trainer-0", "uid-1234", "docker.io/org/model:1.2", "manifest unknown")  # fmt: skip
    assert api.wait_for(lambda s: len(s.events) == 1)
    [((ns, name), event)] = api.events.items()
    assert ns == "team-a" and name.startswith("trainer-0.")
    assert event["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "namespace": "team-a",
        "name": "trainer-0",
        "uid": "uid-1234",
    }
    assert event["type"] == "Warning"
    assert event["reason"] == REASON_PULL
    assert "docker.io/org/model:1.2" in event["message"]
    assert "manifest unknown" in event["message"]
    assert event["source"] == {"component": "sycri", "host": NODE}
    assert event["count"] == 1


def test_repeated_failures_count_up_one_event(api: KubeAPI, running: NodeAgent):
    for _ in range(3):
        running.pull_failed("team-a", "p", "uid-1", "busybox:1", "connection refused")
    assert api.wait_for(lambda s: any(e.get("count") == 3 for e in s.events.values()))
    assert len(api.events) == 1
    patches = [r for r in api.requests if r.method == "PATCH" and "/events/" in r.path]
    assert [p.body["count"] for p in patches] == [2, 3]
    assert all(p.headers["content-type"] == MERGE_PATCH for p in patches)
    # A different pod or a different failure is a separate event.
    running.conversion_failed("team-a", "p", "uid-1", "busybox:1", "mksquashfs exited 1")
    running.pull_failed("team-b", "q", "uid-2", "busybox:1", "connection refused")
    assert api.wait_for(lambda s: len(s.events) == 3)
    reasons = sorted(e["reason"] for e in api.events.values())
    assert reasons == sorted([REASON_PULL, REASON_PULL, REASON_CONVERT])


def test_an_expired_event_is_posted_again(api: KubeAPI, running: NodeAgent):
    running.pull_failed("ns", "p", "u", "img", "boom")
    assert api.wait_for(lambda s: len(s.events) == 1)
    api.events.clear()  # the API server dropped it (events expire after an hour)
    running.pull_failed("ns", "p", "u", "img", "boom")
    assert api.wait_for(lambda s: len(s.events) == 1)
    assert next(iter(api.events.values()))["count"] == 1


def test_long_messages_are_clipped(api: KubeAPI, running: NodeAgent):
    running.pull_failed("ns", "p", "u", "img", "x" * 10_000)
    assert api.wait_for(lambda s: len(s.events) == 1)
    assert len(next(iter(api.events.values()))["message"]) <= agent_mod.MESSAGE_LIMIT


def test_reports_never_wait_for_the_api_server(api: KubeAPI, caplog):
    limit = 16
    agent = _agent(api, queue_limit=limit)
    api.gate = threading.Event()  # every request hangs until the gate opens
    agent.start()
    try:
        for i in range(limit + 50):
            agent.pull_failed("ns", f"pod-{i}", "u", "img", "boom")
        # All calls returned while the API server had answered nothing at all.
        assert api.events == {} and not agent.wait_registered(0)
        assert "dropped" in caplog.text
        api.gate.set()
        assert agent.wait_registered(15)
        # What fitted in the queue is delivered once the API server answers again.
        assert api.wait_for(lambda s: len(s.events) >= limit - 1, timeout=30)
    finally:
        api.gate.set()
        agent.close()


def test_registration_retries_after_api_errors(api: KubeAPI, caplog):
    api.fail_next = 3
    agent = _agent(api, retry_delay=0.05)
    agent.start()
    try:
        assert agent.wait_registered(15)
    finally:
        agent.close()
    assert api.nodes[NODE]["metadata"]["labels"]["sycri.io/runtime"] == "sycri"
    assert caplog.text.count("cannot label Node") == 3


def test_an_unknown_node_is_logged_not_raised(api: KubeAPI, caplog):
    agent = NodeAgent.from_environment(
        Config(),
        environ=api.environ("no-such-node"),
        token_path=str(api.token_path),
        ca_path=str(api.ca_path),
        retry_delay=0.05,
    )
    agent.start()
    try:
        assert api.wait_for(lambda s: len(s.requests) >= 2)
        assert not agent.wait_registered(0.2)
        agent.pull_failed("ns", "p", "u", "img", "boom")  # events still flow
        assert api.wait_for(lambda s: len(s.events) == 1)
    finally:
        agent.close()
    assert "HTTP 404" in caplog.text


def test_a_wrong_token_is_logged_not_raised(api: KubeAPI, caplog):
    api.token = "another-token"
    agent = _agent(api, retry_delay=0.05)
    agent.start()
    try:
        agent.pull_failed("ns", "p", "u", "img", "boom")
        assert api.wait_for(lambda s: len(s.requests) >= 3)
    finally:
        agent.close()
    assert api.events == {}
    assert "HTTP 401" in caplog.text


@pytest.mark.parametrize(
    "environ, message",
    [
        ({}, "not running in a Kubernetes pod"),
        (
            {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "1"},
            "no in-cluster Kubernetes credentials",
        ),
    ],
)
def test_without_credentials_it_does_nothing_and_says_so_once(environ, message, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sycri.k8s")
    agent = NodeAgent.from_environment(
        Config(),
        environ={**environ, "NODE_NAME": NODE},
        token_path=str(tmp_path / "missing-token"),
        ca_path=str(tmp_path / "missing-ca"),
    )
    assert not agent.enabled
    agent.start()
    for _ in range(5):
        agent.pull_failed("ns", "p", "u", "img", "boom")
        agent.conversion_failed("ns", "p", "u", "img", "boom")
    agent.close()
    assert [r.getMessage() for r in caplog.records if message in r.getMessage()] != []
    assert len(caplog.records) == 1
    assert not any(t.name == "sycri-node-agent" for t in threading.enumerate())


def test_without_node_name_it_does_nothing(api: KubeAPI, caplog):
    caplog.set_level(logging.INFO, logger="sycri.k8s")
    environ = api.environ(NODE)
    del environ["NODE_NAME"]
    agent = NodeAgent.from_environment(
        Config(), environ=environ, token_path=str(api.token_path), ca_path=str(api.ca_path)
    )
    assert not agent.enabled
    assert "NODE_NAME is not set" in caplog.text
    agent.start()
    agent.pull_failed("ns", "p", "u", "img", "boom")
    agent.close()
    assert api.requests == []


def test_the_charts_cluster_role_grants_exactly_what_the_agent_uses(
    api: KubeAPI, running: NodeAgent
):
    running.pull_failed("ns", "p", "u", "img", "boom")
    running.pull_failed("ns", "p", "u", "img", "boom")
    assert api.wait_for(lambda s: any(e.get("count") == 2 for e in s.events.values()))
    verbs = {"GET": "get", "PATCH": "patch", "POST": "create"}
    used = set()
    for r in api.requests:
        parts = r.path.strip("/").split("/")  # api v1 [namespaces NS] RESOURCE [NAME]
        resource = parts[4] if parts[2] == "namespaces" else parts[2]
        used.add(("", resource, verbs[r.method]))
    role = one(objects(), "ClusterRole")
    granted = {
        (g, res, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for res in rule["resources"]
        for v in rule["verbs"]
    }
    assert used == granted


def test_sycri_serve_labels_its_node_and_stops_cleanly(api: KubeAPI, tmp_path: Path):
    """The whole server, started the way the DaemonSet starts it, with in-cluster env."""
    base = tmp_path / "node"
    script = (
        "import sys; import sycri.k8s.agent as a; a.TOKEN_PATH, a.CA_PATH = sys.argv[1:3]; "
        "from sycri.cli import main; sys.exit(main(sys.argv[3:]))"
    )
    argv = [
        sys.executable, "-c", script, str(api.token_path), str(api.ca_path),
        "serve",
        "--socket", str(base / "sycri.sock"),
        "--root-dir", str(base / "root"),
        "--run-dir", str(base / "run"),
        "--pod-log-dir", str(base / "pods"),
        "--cni-conf-dir", str(base / "cni-net.d"),  # never the host's
        "--metrics-address", "",
    ]  # fmt: skip
    log_path = tmp_path / "sycri.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=sycri_env(api.environ(NODE)))
    try:
        labelled = api.wait_for(
            lambda s: "sycri.io/runtime" in s.nodes[NODE]["metadata"].get("labels", {}),
            timeout=30,
        )
        assert labelled, log_path.read_text()
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert f"labelled Node {NODE}" in log_path.read_text()


def test_event_names_stay_valid_for_the_longest_pod_names(api: KubeAPI, running: NodeAgent):
    long_name = "a" * 240 + ".b-c"
    running.pull_failed("ns", long_name, "u", "img", "boom")
    assert api.wait_for(lambda s: len(s.events) == 1)
    [(_, name)] = api.events.keys()
    assert len(name) <= 253 and name.startswith("a" * 200) and ".sycri-" in name
    assert next(iter(api.events.values()))["involvedObject"]["name"] == long_name


def test_without_the_kubernetes_client_the_agent_is_off_and_says_why():
    """kubernetes is the optional extra sycri[node-agent]: a node image built without it
    serves CRI with the agent off, and the log says how to get it."""
    code = (
        "import sys, logging\n"
        "sys.modules['kubernetes'] = None  # as if not installed: its import fails\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from sycri.config import Config\n"
        "from sycri.k8s.agent import NodeAgent\n"
        "agent = NodeAgent.from_environment(Config(), environ={\n"
        "    'KUBERNETES_SERVICE_HOST': '10.0.0.1', 'KUBERNETES_SERVICE_PORT': '443',\n"
        "    'NODE_NAME': 'n1'})\n"
        "print('enabled', agent.enabled)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=sycri_env()
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "enabled False"
    assert "sycri[node-agent]" in res.stderr
