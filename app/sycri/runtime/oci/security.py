"""Seccomp and AppArmor profiles, masked and read-only paths."""

from __future__ import annotations

import json
from typing import Any

from sycri.api import api_pb2
from sycri.errors import InvalidArgument, excerpt
from sycri.runtime.oci import seccomp
from sycri.runtime.oci.inputs import HostFacts, Settings

DEFAULT_MASKED = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)  # fmt: skip
DEFAULT_READONLY = (
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)  # fmt: skip


def _profile_of(profile: api_pb2.SecurityProfile | None, legacy: str) -> tuple[str, str]:
    """(kind, localhost ref) from the typed field, else the deprecated string form."""
    if profile is not None:
        kind = api_pb2.SecurityProfile.ProfileType.Name(profile.profile_type)
        return kind, profile.localhost_ref
    if legacy in ("runtime/default", "docker/default"):
        return "RuntimeDefault", ""
    if legacy.startswith("localhost/"):
        return "Localhost", legacy.removeprefix("localhost/")
    return "Unconfined", ""


def seccomp_profile(
    sc: api_pb2.LinuxContainerSecurityContext,
    host: HostFacts,
    caps: list[str],
    privileged: bool,
) -> dict[str, Any] | None:
    """RuntimeDefault: the built-in profile; Localhost: that file; unset/Unconfined: none."""
    kind, ref = _profile_of(sc.seccomp if sc.HasField("seccomp") else None, sc.seccomp_profile_path)
    if privileged or kind == "Unconfined":
        return None
    if kind == "RuntimeDefault":
        return seccomp.default_profile(caps, host.machine)
    if not ref.startswith("/"):
        raise InvalidArgument(f"seccomp: localhost profile {excerpt(ref)} is not an absolute path")
    text = host.seccomp_profiles.get(ref)
    if text is None:
        raise InvalidArgument(f"seccomp: localhost profile {excerpt(ref)} cannot be read")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"seccomp: profile {excerpt(ref)} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "defaultAction" not in doc:
        raise InvalidArgument(f"seccomp: profile {excerpt(ref)} has no defaultAction")
    return doc


def apparmor(
    sc: api_pb2.LinuxContainerSecurityContext, host: HostFacts, settings: Settings, privileged: bool
) -> str:
    if not host.apparmor or privileged:
        return ""
    kind, ref = _profile_of(sc.apparmor if sc.HasField("apparmor") else None, sc.apparmor_profile)
    if kind == "Localhost":
        if not ref:
            raise InvalidArgument("apparmor: Localhost profile without a name")
        return ref
    if kind == "RuntimeDefault":
        return settings.apparmor_default_profile
    return ""
