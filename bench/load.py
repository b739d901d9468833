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
import sys
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "app"), str(ROOT)]  # run as a script from anywhere

from sycri.api import api_pb2  # noqa: E402

from tests.support import oci  # noqa: E402
from tests.support import registry as registry_support  # noqa: E402
from tests.support.load import EventCounter, leftovers, run_round  # noqa: E402
from tests.support.node import served  # noqa: E402
from tests.support.pods import pod_config  # noqa: E402


def main(pods: int, rounds: int, workers: int) -> None:
    base = Path("/tmp") / f"synlb-{secrets.token_hex(4)}"
    cg_root = f"sycri-loadb-{secrets.token_hex(4)}"
    with ExitStack() as cleanup:
        reg = registry_support.start(base / "registry")
        cleanup.callback(shutil.rmtree, base, ignore_errors=True)
        cleanup.callback(reg.stop)
        node = served(base / "sycri", cgroup_root=cg_root, forgiving=True)
        server, net = cleanup.enter_context(node)
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
        # The image's idle mount (images.mount_idle_seconds) goes with the image.
        server.images().RemoveImage(
            api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image))
        )
        after = leftovers(server, net, cg_root)
        print(f"after:  {after}")
        print("leftovers: none" if after == before else "LEFTOVERS DIFFER")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=32)
    a = ap.parse_args()
    main(a.pods, a.rounds, a.workers)
