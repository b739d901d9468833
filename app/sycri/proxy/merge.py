"""Merging the two backends' Status answers (pure)."""

from __future__ import annotations

from sycri.api import api_pb2

PREFIX = "Sycri"  # sycri's conditions appear as SycriRuntimeReady, SycriNetworkReady


def status(
    primary: api_pb2.StatusResponse,
    sycri: api_pb2.StatusResponse | None,
    handlers: frozenset[str],
    sycri_error: str = "",
) -> api_pb2.StatusResponse:
    """The node's runtime status as kubelet should see it.

    kubelet's node readiness follows RuntimeReady and NetworkReady: those stay the
    existing runtime's, so a sycri restart never turns a node NotReady (which would
    evict every pod on it). sycri's conditions are added under ``Sycri*`` names, its
    handlers to ``runtime_handlers``, its info under ``sycri.`` keys."""
    out = api_pb2.StatusResponse()
    out.CopyFrom(primary)
    if sycri is None:
        out.status.conditions.add(
            type=PREFIX + "RuntimeReady",
            status=False,
            reason="SycriUnavailable",
            message=sycri_error,
        )
        return out
    for cond in sycri.status.conditions:
        merged = out.status.conditions.add()
        merged.CopyFrom(cond)
        merged.type = PREFIX + cond.type
    known = {h.name for h in out.runtime_handlers}
    for handler in sycri.runtime_handlers:
        if handler.name in handlers and handler.name not in known:
            out.runtime_handlers.add().CopyFrom(handler)
    for key, value in sycri.info.items():
        out.info["sycri." + key] = value
    return out
