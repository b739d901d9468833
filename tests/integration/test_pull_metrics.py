"""Pull metrics by source for the transports the e2e tests do not drive: library:// (the
legacy routes of a local server speaking the library API) and local SIF files."""

from __future__ import annotations

import asyncio

import pytest
from sycri.observability.metrics import REGISTRY

from tests.integration.test_images_library import _pull_library, library_app, sif_bytes  # noqa: F401
from tests.support.images import make_images

pytestmark = pytest.mark.root


def val(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_library_and_local_pulls_are_counted_by_source(tmp_path, sif_bytes):  # noqa: F811
    ok = val("sycri_image_pulls_total", source="library", result="success")
    failed = val("sycri_image_pulls_total", source="library", result="failure")
    received = val("sycri_image_downloaded_bytes_total", source="library")
    _images, image = _pull_library(
        tmp_path / "a", library_app(sif_bytes), "library://alice/tools/busybox:1.0"
    )
    assert val("sycri_image_pulls_total", source="library", result="success") == ok + 1
    assert val("sycri_image_downloaded_bytes_total", source="library") == received + len(sif_bytes)
    with pytest.raises(Exception, match="not found"):
        _pull_library(tmp_path / "b", library_app(sif_bytes), "library://alice/tools/nope:1.0")
    assert val("sycri_image_pulls_total", source="library", result="failure") == failed + 1

    local = val("sycri_image_pulls_total", source="local", result="success")
    local_bytes = val("sycri_image_downloaded_bytes_total", source="local")
    other = make_images(tmp_path / "c")
    asyncio.run(other.pull(image.sif_path))
    assert val("sycri_image_pulls_total", source="local", result="success") == local + 1
    assert val("sycri_image_downloaded_bytes_total", source="local") == local_bytes  # read in place
