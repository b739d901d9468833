"""A GPU pod through sycri, end to end, on a machine with an NVIDIA driver.

``sycri cdi generate`` writes the node's CDI spec; sycri starts (cgroupfs, kernel squashfs
mounts, the spec directory); a host-network pod from a local SIF (busybox, glibc and
``cudacheck``) runs three containers the way kubelet asks for them: ``nvidia.com/gpu=all``
in the CRI ``CDI_devices`` field, ``nvidia.com/gpu=0`` in the device plugin's
``cdi.k8s.io/*`` annotation, and one with no GPU. Each prints ``nvidia-smi`` and runs
``cudacheck`` (a PTX vector add through libcuda, checked on the CPU). The OCI spec sycri
gave runc, the CDI spec, the hook's input and sycri's log are written to ``--out``.

Without a GPU (any CI machine) a stand-in spec of the same kind maps /dev/full, so every
step up to the GPU runs and the GPU steps fail saying why. Exit 0 only when every
container behaved as it should: the GPU ones computed the right answer, the other saw no
GPU. Run as root from the repository root: ``python3 bench/gpu/gpu_pod.py --sif IMG``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from sycri.api import api_pb2, api_pb2_grpc

LOG: list[str] = []


def say(*parts: object) -> None:
    line = " ".join(str(p) for p in parts)
    LOG.append(line)
    print(line, flush=True)


def sh(cmd: str) -> str:
    res = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
    return (res.stdout + res.stderr).rstrip()


def host_facts() -> None:
    say("== host")
    for cmd in (
        "uname -r",
        "cat /proc/driver/nvidia/version 2>&1 | head -1",
        "ls -la /dev/nvidia* 2>&1",
        "grep -E 'overlay|squashfs|fuse|cgroup2' /proc/filesystems | tr -s '\\t\\n' '  '",
        "ls /usr/local/nvidia /usr/local/nvidia/* 2>&1 | head -40",
        "nvidia-smi -L 2>&1 || /usr/local/nvidia/bin/nvidia-smi -L 2>&1",
        "head -c 600 /usr/bin/nvidia-smi | grep -a -v '^#' | head -12",
        "for p in criu runc conmon squashfuse nvidia-ctk nvidia-cdi-hook; do "
        "command -v $p || echo $p: none; done",
    ):
        say(f"$ {cmd}\n{sh(cmd)}")


STAND_IN = {
    "cdiVersion": "0.5.0",
    "kind": "nvidia.com/gpu",
    "containerEdits": {"env": ["NVIDIA_VISIBLE_DEVICES=void"]},
    "devices": [
        {
            "name": n,
            "containerEdits": {"deviceNodes": [{"path": "/dev/nvidia0", "hostPath": "/dev/full"}]},
        }
        for n in ("0", "all")
    ],
}


def uvm_nodes() -> None:
    """Node preparation, as ``nvidia-ctk system create-device-nodes`` does: the UVM nodes
    CUDA needs exist only once something made them; a spec written without them gives
    containers no CUDA."""
    if Path("/dev/nvidia-uvm").exists() or not Path("/dev/nvidia0").exists():
        return
    subprocess.run("nvidia-modprobe -u -c=0", shell=True, capture_output=True, check=False)
    if Path("/dev/nvidia-uvm").exists():
        return
    for line in Path("/proc/devices").read_text().splitlines():
        num, _, name = line.strip().partition(" ")
        if name == "nvidia-uvm":
            os.mknod("/dev/nvidia-uvm", 0o20666, os.makedev(int(num), 0))
            os.mknod("/dev/nvidia-uvm-tools", 0o20666, os.makedev(int(num), 1))
            os.chmod("/dev/nvidia-uvm", 0o666)
            os.chmod("/dev/nvidia-uvm-tools", 0o666)
    say("made /dev/nvidia-uvm:", Path("/dev/nvidia-uvm").exists())


def generate(python: list[str], target: Path, *more: str) -> bool:
    gen = [*python, "-m", "sycri", "cdi", "generate", "-o", str(target), *more]
    res = subprocess.run(gen, capture_output=True, text=True, timeout=60)
    say(f"$ sycri cdi generate {' '.join(more)} -> exit {res.returncode}: {res.stderr.strip()}")
    return res.returncode == 0


def write_spec(cdi_dir: Path, out: Path, python: list[str], lib_dir: str) -> bool:
    """The node's spec from ``sycri cdi generate``; True when a GPU was found."""
    cdi_dir.mkdir(parents=True, exist_ok=True)
    target = cdi_dir / "nvidia.yaml"
    uvm_nodes()
    where = ["--container-lib-dir", lib_dir] if lib_dir else []
    gpu = generate(python, target, *where)
    if not gpu and Path("/dev/nvidia0").exists():  # a driver layout the defaults miss
        libs = sh("find /usr /opt /lib /lib64 -name 'libcuda.so.*' 2>/dev/null")
        smi = sh("find /usr /opt -name nvidia-smi -type f 2>/dev/null")
        more = [
            a for p in sorted({os.path.dirname(x) for x in libs.split()}) for a in ("--lib-dir", p)
        ]
        more += [
            a for p in sorted({os.path.dirname(x) for x in smi.split()}) for a in ("--bin-dir", p)
        ]
        gpu = generate(python, target, *where, *more)
    doc = yaml.safe_load(target.read_text()) if gpu else json.loads(json.dumps(STAND_IN))
    # What an admin might add: a createContainer hook, here one that records its input.
    doc["containerEdits"].setdefault("hooks", []).append(
        {
            "hookName": "createContainer",
            "path": "/bin/sh",
            "args": ["sh", "-c", f"cat >> {out}/hook-state.json; echo >> {out}/hook-state.json"],
        }
    )
    target.write_text(yaml.safe_dump(doc, sort_keys=False))
    shutil.copy(target, out / "cdi-spec.yaml")
    return gpu


def start_sycri(
    base: Path, cdi_dir: Path, bin_dir: str, python: list[str]
) -> subprocess.Popen[bytes]:
    (base / "cni").mkdir(parents=True, exist_ok=True)
    conf = base / "config.yaml"
    runc = shutil.which("runc", path=bin_dir) or "runc"
    conmon = shutil.which("conmon", path=bin_dir) or "conmon"
    conf.write_text(yaml.safe_dump({"runtimes": {"runc": {"binary": runc}}, "conmon": conmon}))
    argv = [*python, "-m", "sycri", "serve", "--config", str(conf),
            "--socket", str(base / "s.sock"), "--root-dir", str(base / "root"),
            "--run-dir", str(base / "run"), "--pod-log-dir", str(base / "pods"),
            "--cni-conf-dir", str(base / "cni"), "--cni-bin-dirs", str(base / "cni"),
            "--metrics-address", "", "--log-level", "debug", "--cgroup-driver", "cgroupfs",
            "--images-kernel-mount", "all", "--images-registries-conf", "/dev/null",
            "--cdi-spec-dirs", str(cdi_dir)]  # fmt: skip
    log = open(base / "sycri.log", "ab")  # noqa: SIM115 - the child's
    proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
    log.close()
    channel = grpc.insecure_channel(f"unix://{base / 's.sock'}")
    rt = api_pb2_grpc.RuntimeServiceStub(channel)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"sycri exited {proc.returncode}")
        try:
            say("sycri", rt.Version(api_pb2.VersionRequest(), timeout=2).runtime_version)
            return proc
        except grpc.RpcError:
            time.sleep(0.1)
    raise SystemExit("sycri did not start")


def pod_config(base: Path) -> api_pb2.PodSandboxConfig:
    cfg = api_pb2.PodSandboxConfig(
        metadata=api_pb2.PodSandboxMetadata(name="gpu", namespace="default", uid="gpu-pod-1"),
        log_directory=str(base / "pods" / "gpu"),
    )
    ns = cfg.linux.security_context.namespace_options
    ns.network = api_pb2.NODE  # no CNI needed
    ns.pid = api_pb2.CONTAINER
    return cfg


SCRIPT = (
    "export PATH=$PATH:/usr/local/nvidia/bin; echo '== nvidia-smi'; nvidia-smi; "
    "echo '== nvidia-smi -L'; nvidia-smi -L; echo '== devices'; ls /dev | grep nvidia; "
    "echo '== env'; env | grep NVIDIA; echo '== cudacheck'; cudacheck {n}; "
    "echo cudacheck exit $?"
)


def run_container(
    rt: Any, pod: str, pod_cfg: api_pb2.PodSandboxConfig, image: str, name: str, **ask: Any
) -> tuple[str, int, list[str], str]:
    cfg = api_pb2.ContainerConfig(
        metadata=api_pb2.ContainerMetadata(name=name),
        image=api_pb2.ImageSpec(image=image),
        command=["/bin/sh", "-c", SCRIPT.format(n=ask.pop("n", ""))],
        log_path=f"{name}.log",
    )
    cfg.CDI_devices.extend(ask.get("cdi", []))
    cfg.annotations.update(ask.get("annotations", {}))
    req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod, config=cfg, sandbox_config=pod_cfg)
    cid = rt.CreateContainer(req).container_id
    found = glob.glob(f"{os.path.dirname(pod_cfg.log_directory)}/../**/{cid}/**/config.json",
                      recursive=True)  # fmt: skip
    spec = Path(found[0]).read_text() if found else ""
    rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid))
    for _ in range(1200):
        st = rt.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=cid)).status
        if st.state == api_pb2.CONTAINER_EXITED:
            break
        time.sleep(0.1)
    lines = [
        line.split(" ", 3)[3] if line.count(" ") >= 3 else line
        for line in Path(st.log_path).read_text(errors="replace").splitlines()
    ]
    say(f"== container {name} ({cid[:12]}) exit {st.exit_code}")
    for line in lines:
        say("  | " + line)
    return cid, st.exit_code, lines, spec


def section(lines: list[str], start: str, end: str) -> list[str]:
    """The output lines between two markers (stderr lines interleave: drop them)."""
    inside = lines[lines.index(start) + 1 : lines.index(end)]
    return [line for line in inside if not line.startswith("/bin/sh:")]


def spec_excerpt(spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "linux.devices": [d for d in spec["linux"]["devices"] if "nvidia" in d["path"]],
        "linux.resources.devices": [
            r
            for r in spec["linux"]["resources"]["devices"]
            if r.get("major") not in (None, 1, 5, 136)
        ],
        "mounts": [
            m
            for m in spec["mounts"]
            if "nvidia" in m["source"]
            or "nvidia" in m["destination"]
            or "libcuda" in m["destination"]
        ],
        "hooks": spec.get("hooks", {}),
        "process.env": [e for e in spec["process"]["env"] if e.startswith("NVIDIA")],
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sif", required=True, help="the image (busybox + glibc + cudacheck)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", default="/tmp/sg")
    ap.add_argument("--bin-dir", default="", help="runc and conmon (wrappers) to use")
    ap.add_argument("--n", default="", help="floats in cudacheck's vector add")
    ap.add_argument(
        "--container-lib-dir",
        default="",
        help="where containers get the driver libraries (default: their host paths)",
    )
    opts = ap.parse_args()
    out, base = Path(opts.out).resolve(), Path(opts.base)
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    python = [sys.executable]
    host_facts()
    gpu = write_spec(base / "cdi", out, python, opts.container_lib_dir)
    say("GPU found:", gpu)
    proc = start_sycri(base, base / "cdi", opts.bin_dir, python)
    ok = False
    summary: dict[str, Any] = {"gpu": gpu}
    try:
        channel = grpc.insecure_channel(f"unix://{base / 's.sock'}")
        rt = api_pb2_grpc.RuntimeServiceStub(channel)
        img = api_pb2_grpc.ImageServiceStub(channel)
        sif = str(Path(opts.sif).resolve())
        image = img.PullImage(
            api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=sif))
        ).image_ref
        say("image", image)
        pod_cfg = pod_config(base)
        pod = rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=pod_cfg)).pod_sandbox_id
        t0 = time.monotonic()
        by_field = run_container(rt, pod, pod_cfg, sif, "gpu-all",
                                 cdi=[api_pb2.CDIDevice(name="nvidia.com/gpu=all")], n=opts.n)  # fmt: skip
        summary["gpu_all_seconds"] = round(time.monotonic() - t0, 2)
        by_note = run_container(rt, pod, pod_cfg, sif, "gpu-0-annotation",
                                annotations={"cdi.k8s.io/nvidia-device-plugin_gpu0": "nvidia.com/gpu=0"},
                                n="1048576")  # fmt: skip
        none = run_container(rt, pod, pod_cfg, sif, "no-gpu", n="1024")
        if by_field[3]:
            spec = json.loads(by_field[3])
            (out / "oci-spec.json").write_text(json.dumps(spec, indent=1))
            say("== OCI spec excerpt (gpu-all)")
            for key, value in spec_excerpt(spec).items():
                say(f"{key}:")
                for item in value if isinstance(value, list) else [value]:
                    say("  " + json.dumps(item))

        def passed(lines: list[str]) -> bool:
            return any(line.startswith("cudacheck: PASS") for line in lines)

        summary.update(
            {
                "gpu_all_pass": passed(by_field[2]),
                "gpu_0_annotation_pass": passed(by_note[2]),
                "no_gpu_sees_none": not section(none[2], "== devices", "== env")
                and "cudacheck exit 2" in none[2],
                "hook_ran": (out / "hook-state.json").exists(),
            }
        )
        ok = all(
            summary[k]
            for k in ("gpu_all_pass", "gpu_0_annotation_pass", "no_gpu_sees_none", "hook_ran")
        )
        rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod))
        rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod))
        img.RemoveImage(api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log = (base / "sycri.log").read_bytes()
        (out / "sycri.log").write_bytes(log[-4_000_000:])
        summary["ok"] = ok
        say("== summary", json.dumps(summary))
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        (out / "run.log").write_text("\n".join(LOG) + "\n")
        # sycri makes its run dir a shared mount of its own; everything else is its job
        points = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()]
        mine = [p for p in points if p == str(base) or p.startswith(f"{base}/")]
        for point in sorted(mine, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False)
        say("mounts left under base after sycri stopped:", mine)
        shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
