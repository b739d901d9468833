"""Fixtures shared by every suite.

Tests marked ``root`` need root and the system binaries; they are never skipped, so a
machine without them fails loudly instead of passing quietly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import loopcheck
from tests.support.registry import (  # noqa: F401
    basic_registry,
    registry,
    tls_registry,
    token_registry,
)
from tests.support.server import SycriServer


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.stash[_PASSED] = report.passed
    return report


_PASSED = pytest.StashKey[bool]()


@pytest.fixture(autouse=True)
def no_blocking_calls_on_the_loop(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that passed fails when a sycri it started made a blocking call on its event
    loop (sycri.blocking; tests/support/loopcheck.py says what is still tolerated)."""
    SycriServer.started.clear()
    yield
    servers, SycriServer.started[:] = list(SycriServer.started), []
    if request.node.stash.get(_PASSED, False):
        loopcheck.fail_on([c for s in servers for c in s.blocking_calls()])


@pytest.fixture
def sycri(tmp_path: Path) -> Iterator[SycriServer]:
    """A running sycri on a temporary socket, stopped after the test."""
    server = SycriServer(tmp_path / "sycri").start()
    try:
        yield server
    finally:
        server.stop()
