"""cgroup v2 + systemd, live: the checks of ``guest_checks.py`` run in a VM guest
(Debian, systemd as init, pure cgroup v2; ``vm.py``) booted once for this module.

Each guest check is a test here, failing with the guest's message. A machine that
cannot boot the guest (no QEMU, no mirror for the image build) fails every test with
the reason: it is never a skip.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET

import pytest

from tests.vm import vm

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(3000)]


def guest_checks() -> list[str]:
    """The test functions of guest_checks.py (read, not imported: it runs in the guest)."""
    tree = ast.parse((vm.HERE / "guest_checks.py").read_text())
    return [
        n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
    ]


@pytest.fixture(scope="module")
def guest(tmp_path_factory) -> dict:
    """Boot the guest once; its junit results by test function."""
    img = vm.image()
    run = vm.boot(img, tmp_path_factory.mktemp("vm"))
    built = f"built in {img.built_s:.0f} s" if img.built_s else "cached"
    print(
        f"vm: image {built}, boot {run.boot_s:.0f} s, whole run {run.total_s:.0f} s, "
        f"{run.attempts} boot(s)"
    )
    junit = run.results / "junit.xml"
    log = run.results / "guest.log"
    if not junit.exists():
        text = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise vm.VMUnavailable(
            f"the guest wrote no results (rc {run.rc}); guest log:\n{text}\n"
            f"console:\n{run.console[-4000:]}"
        )
    cases: dict[str, list[tuple[str, str | None]]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        bad = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        msg = None
        if bad is not None:
            msg = f"{bad.tag}: {bad.get('message', '')}\n{(bad.text or '')[-3000:]}"
        cases.setdefault(name.split("[", 1)[0], []).append((name, msg))
    return cases


@pytest.mark.parametrize("check", guest_checks())
def test_in_cgroup_v2_guest(guest, check):
    runs = guest.get(check)
    assert runs, f"the guest did not run {check}"
    failed = [f"{name}: {msg}" for name, msg in runs if msg is not None]
    assert not failed, "\n\n".join(failed)
