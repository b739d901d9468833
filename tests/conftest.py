"""Fixtures shared by every suite.

Tests marked ``root`` need root and the system binaries; they are never skipped, so a
machine without them fails loudly instead of passing quietly.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.registry import (  # noqa: F401
    basic_registry,
    registry,
    tls_registry,
    token_registry,
)
from tests.support.server import SycriServer


@pytest.fixture
def sycri(tmp_path: Path) -> Iterator[SycriServer]:
    """A running sycri on a temporary socket, stopped after the test."""
    server = SycriServer(tmp_path / "sycri").start()
    try:
        yield server
    finally:
        server.stop()
