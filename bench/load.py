"""200 pods with one container each, created and removed concurrently, several rounds.

Starts docker-registry and sycri (runc, conmon, CNI bridge), then runs R rounds of P
pods through the socket with W client threads. Prints each round's create and remove
time, any failed calls by status code, container events seen, and the leftover counts
(mounts, netns files, veths, iptables rules, cgroups, pod dirs, conmons, run-dir files)
before and after.

    .venv/bin/python bench/load.py [--pods 200] [--rounds 3] [--workers 32]
"""

from __future__ import annotations

import argparse
import secrets
import shutil
from pathlib import Path

from sycri.api import api_pb2

from tests.support import oci
from tests.support import registry as registry_support
from tests.support.load import EventCounter, leftovers, run_round
from tests.support.pods import PodNet, pod_config, unmount_all
from tests.support.server import SycriServer


def main(pods: int, rounds: int, workers: int) -> None:
    base = Path("/tmp") / f"synlb-{secrets.token_hex(4)}"
    cg_root = f"sycri-loadb-{secrets.token_hex(4)}"
    net = PodNet.new()
    reg = registry_support.start(base / "registry")
    server = SycriServer(base / "sycri", flags=net.flags())
    try:
        server.start()
        rt = server.runtime()
        oci.push(reg, "bench/bb", "v1", oci.busybox_image(entrypoint=["/bin/sh", "-c"]))
        image = f"{reg.host}/bench/bb:v1"
        server.images().PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)))
        rt.RunPodSandbox(
            api_pb2.RunPodSandboxRequest(config=pod_config("warm", cgroup_parent=f"/{cg_root}/w"))
        )
        before = leftovers(server, net, cg_root)
        print(f"before: {before}")
        events = EventCounter(server).start()
        made: list[str] = []
        for r in range(rounds):
            res, cids = run_round(server, image, pods, workers, cg_root, f"r{r}")
            made += cids
            print(
                f"round {r}: {pods} pods+containers created in {res.seconds_create:.1f} s "
                f"({pods / res.seconds_create:.1f}/s), removed in {res.seconds_remove:.1f} s; "
                f"failures: {res.failures or 'none'}"
            )
        events.stop()
        full = sum(1 for c in made if len(events.seen.get(c, [])) == 4)
        print(f"containers with all 4 events (created/started/stopped/deleted): {full}/{len(made)}")
        after = leftovers(server, net, cg_root)
        print(f"after:  {after}")
        print("leftovers: none" if after == before else "LEFTOVERS DIFFER")
    finally:
        try:
            rt = server.runtime()
            for pod in rt.ListPodSandbox(api_pb2.ListPodSandboxRequest()).items:
                rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod.id))
                rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
        except Exception as exc:
            print(f"cleanup: {exc}")
        server.stop()
        reg.stop()
        unmount_all(base)
        net.cleanup()
        shutil.rmtree(base, ignore_errors=True)
        for top in Path("/sys/fs/cgroup").iterdir():
            d = top / cg_root
            if d.is_dir():
                for sub in sorted(d.rglob("*"), key=lambda p: len(str(p)), reverse=True):
                    if sub.is_dir():
                        sub.rmdir()
                d.rmdir()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=32)
    a = ap.parse_args()
    main(a.pods, a.rounds, a.workers)
