"""``sycri cdi generate`` on a driver laid out as NVIDIA's installer lays it out (a fake
tree: versioned libraries with soname links, /proc/driver/nvidia, real character device
nodes): the spec it writes loads through sycri's own CDI loader and gives containers the
GPU nodes, libraries under their sonames, nvidia-smi and firmware."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from sycri.api import api_pb2
from sycri.cli import main
from sycri.runtime.oci import cdi, cdigen
from sycri.runtime.oci.ocispec import DeviceNode, HostFacts

from tests.unit.test_ocispec import build, config, mount_at

VERSION = "580.95.05"
UUIDS = {"0000:1b:00.0": "GPU-bbbbbbbb-0000-0000-0000-000000000001",
         "0000:05:00.0": "GPU-aaaaaaaa-0000-0000-0000-000000000000"}  # fmt: skip


def info(uuid: str, minor: int) -> str:
    return (
        "Model: \t\t NVIDIA H200\nIRQ:   \t\t 42\n"
        f"GPU UUID: \t {uuid}\nBus Type: \t PCIe\nDevice Minor: \t {minor}\nGPU Excluded:\t No\n"
    )


@pytest.fixture
def driver(tmp_path: Path) -> dict[str, str]:
    proc, dev, lib, bin_, fw = (tmp_path / n for n in ("proc", "dev", "lib", "bin", "fw"))
    for d in (proc, dev, lib, bin_, fw / VERSION):
        d.mkdir(parents=True)
    (proc / "version").write_text(
        f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {VERSION}  Release Build\n"
        "GCC version:  gcc version 12.2.0\n"
    )
    # minors deliberately in the other order than the PCI bus: index follows the bus
    for minor, (bus, uuid) in enumerate(UUIDS.items()):
        (proc / "gpus" / bus).mkdir(parents=True)
        (proc / "gpus" / bus / "information").write_text(info(uuid, minor))
    for name, minor in (("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255), ("nvidia-uvm", 0)):
        os.mknod(
            dev / name, stat.S_IFCHR | 0o666, os.makedev(195 if "uvm" not in name else 509, minor)
        )
    for base in ("libcuda.so", "libnvidia-ml.so", "libnvidia-ptxjitcompiler.so"):
        (lib / f"{base}.{VERSION}").write_bytes(b"\x7fELF")
        (lib / f"{base}.1").symlink_to(f"{base}.{VERSION}")
    (lib / "libcuda.so").symlink_to("libcuda.so.1")
    (lib / "libEGL.so.1.1.0").write_bytes(b"\x7fELF")  # not a driver library
    (lib / "libnvidia-ml.so.470.1").write_bytes(b"\x7fELF")  # another version's
    smi = bin_ / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    (fw / VERSION / "gsp_ga10x.bin").write_bytes(b"fw")
    return {"proc": str(proc), "dev": str(dev), "lib": str(lib), "bin": str(bin_), "fw": str(fw)}


def discover(d: dict[str, str]) -> cdigen.Driver:
    return cdigen.discover(
        proc=d["proc"], dev=d["dev"], lib_dirs=[d["lib"]], bin_dirs=[d["bin"]],
        firmware_dirs=[d["fw"]], sockets=[],
    )  # fmt: skip


def loaded(doc: dict) -> cdi.Spec:
    return cdi.parse("/var/run/cdi/nvidia.yaml", yaml.safe_dump(doc))


def test_generated_spec_gives_containers_the_gpu(driver):
    found = discover(driver)
    assert found.version == VERSION and not found.hook
    spec_obj = loaded(cdigen.spec(found, "/usr/lib/x86_64-linux-gnu"))
    assert sorted(spec_obj.devices) == sorted(["0", "1", "all", *UUIDS.values()])
    dev = driver["dev"]
    nodes = {f"{dev}/nvidia0": DeviceNode(f"{dev}/nvidia0", "c", 195, 0),
             f"{dev}/nvidia1": DeviceNode(f"{dev}/nvidia1", "c", 195, 1),
             f"{dev}/nvidiactl": DeviceNode(f"{dev}/nvidiactl", "c", 195, 255),
             f"{dev}/nvidia-uvm": DeviceNode(f"{dev}/nvidia-uvm", "c", 509, 0)}  # fmt: skip

    def oci(name: str) -> dict:
        cfg = config(CDI_devices=[api_pb2.CDIDevice(name=f"nvidia.com/gpu={name}")])
        return build(cfg, host=HostFacts(cdi_specs=(spec_obj,), devices=nodes))

    # index 0 is the lower PCI bus (0000:05:00.0), which has minor 1
    first = {d["path"] for d in oci("0")["linux"]["devices"]}
    assert f"{dev}/nvidia1" in first and f"{dev}/nvidia0" not in first
    assert {d["path"] for d in oci(UUIDS["0000:1b:00.0"])["linux"]["devices"]} >= {f"{dev}/nvidia0"}
    spec = oci("all")
    assert {d["path"] for d in spec["linux"]["devices"]} == set(nodes)
    lib = "/usr/lib/x86_64-linux-gnu"
    assert mount_at(spec, f"{lib}/libcuda.so.1")["source"] == f"{driver['lib']}/libcuda.so.1"
    assert mount_at(spec, f"{lib}/libcuda.so.{VERSION}")["options"] == [
        "ro",
        "nosuid",
        "nodev",
        "bind",
    ]
    assert mount_at(spec, f"{lib}/libnvidia-ptxjitcompiler.so.1")
    assert mount_at(spec, f"{driver['bin']}/nvidia-smi")
    assert mount_at(spec, f"{driver['fw']}/{VERSION}/gsp_ga10x.bin")
    sources = {m["source"] for m in spec["mounts"]}
    assert not any("libEGL" in s or "470" in s for s in sources)
    assert "NVIDIA_VISIBLE_DEVICES=void" in spec["process"]["env"]
    assert "hooks" not in spec


def test_with_nvidia_cdi_hook_the_ldcache_is_refreshed(driver):
    hook = Path(driver["bin"], "nvidia-cdi-hook")
    hook.write_text("#!/bin/sh\n")
    hook.chmod(0o755)
    doc = cdigen.spec(discover(driver))
    (entry,) = loaded(doc).edits["hooks"]
    assert entry == {
        "hookName": "createContainer",
        "path": str(hook),
        "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", driver["lib"]],
    }


def test_no_driver_or_no_gpu_is_said(driver, tmp_path):
    with pytest.raises(cdigen.NoDriver, match="no NVIDIA driver"):
        cdigen.discover(proc=str(tmp_path / "none"), lib_dirs=[str(tmp_path / "none")])
    os.unlink(Path(driver["dev"], "nvidia0"))
    os.unlink(Path(driver["dev"], "nvidia1"))
    with pytest.raises(cdigen.NoDriver, match="no GPU device node"):
        discover(driver)


def test_cli_writes_a_spec_the_loader_reads(driver, tmp_path, capsys):
    out = tmp_path / "cdi" / "nvidia.yaml"
    out.parent.mkdir()
    args = ["--proc-dir", driver["proc"], "--dev-dir", driver["dev"], "--lib-dir", driver["lib"],
            "--bin-dir", driver["bin"], "--firmware-dir", driver["fw"]]  # fmt: skip
    assert main(["cdi", "generate", "-o", str(out), *args]) == 0
    assert "2 GPU(s), driver 580.95.05, 3 libraries" in capsys.readouterr().err
    assert "&id" not in out.read_text()  # plain YAML, no anchors
    (spec_obj,) = cdi.load((str(out.parent),))
    assert spec_obj.kind == "nvidia.com/gpu" and "all" in spec_obj.devices
    assert os.listdir(out.parent) == ["nvidia.yaml"]

    empty = tmp_path / "empty"
    empty.mkdir()
    bad = ["--proc-dir", str(empty), "--lib-dir", str(empty)]
    assert main(["cdi", "generate", "-o", str(empty / "x.yaml"), *bad]) == 1
    assert "no NVIDIA driver" in capsys.readouterr().err
    assert os.listdir(empty) == []


def fake_elf(path: Path, interp: str) -> None:
    """A 64-bit little-endian ELF header and one PT_INTERP program header naming ``interp``."""
    raw = interp.encode() + b"\0"
    head = bytearray(64)
    head[:6] = b"\x7fELF\x02\x01"
    head[0x20:0x28] = (64).to_bytes(8, "little")  # e_phoff
    head[0x36:0x38] = (56).to_bytes(2, "little")  # e_phentsize
    head[0x38:0x3A] = (1).to_bytes(2, "little")  # e_phnum
    ph = bytearray(56)
    ph[0:4] = (3).to_bytes(4, "little")  # PT_INTERP
    ph[8:16] = (120).to_bytes(8, "little")  # p_offset
    ph[32:40] = len(raw).to_bytes(8, "little")  # p_filesz
    path.write_bytes(bytes(head + ph) + raw)
    path.chmod(0o755)


def test_a_wrapper_and_the_binary_with_its_own_loader_all_reach_the_container(driver, tmp_path):
    """As on a Nix-packaged driver: /usr/bin/nvidia-smi is a script that execs the real
    binary, whose ELF loader is the driver's own glibc."""
    real_bin, glibc = tmp_path / "nvbin", tmp_path / "nvglibc"
    real_bin.mkdir()
    glibc.mkdir()
    (glibc / "ld-linux-x86-64.so.2").write_bytes(b"\x7fELF")
    fake_elf(real_bin / "nvidia-smi", str(glibc / "ld-linux-x86-64.so.2"))
    Path(driver["bin"], "nvidia-smi").write_text(f'#!/bin/sh\nexec {real_bin}/nvidia-smi "$@"\n')
    assert cdigen.elf_interpreter(str(real_bin / "nvidia-smi")) == f"{glibc}/ld-linux-x86-64.so.2"
    found = cdigen.discover(
        proc=driver["proc"], dev=driver["dev"], lib_dirs=[driver["lib"]],
        bin_dirs=[driver["bin"], str(real_bin)], firmware_dirs=[], sockets=[],
    )  # fmt: skip
    assert found.programs == (f"{driver['bin']}/nvidia-smi", f"{real_bin}/nvidia-smi")
    assert found.loader_dirs == (str(glibc),)
    targets = {m["containerPath"] for m in loaded(cdigen.spec(found)).edits["mounts"]}
    assert {f"{driver['bin']}/nvidia-smi", f"{real_bin}/nvidia-smi", str(glibc)} <= targets
