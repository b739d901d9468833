"""What the node agent writes on its Node: valid label values, stale handlers removed."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from sycri.config import Config, RuntimeHandler
from sycri.k8s import node_info

# Kubernetes' label value rule (apimachinery validation.IsValidLabelValue).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@given(st.text(max_size=200))
def test_label_value_is_always_a_valid_label_value(text):
    value = node_info.label_value(text)
    assert len(value) <= 63 and LABEL_VALUE.match(value)


def test_label_value_keeps_plain_versions_and_cleans_local_ones():
    assert node_info.label_value("0.1.0") == "0.1.0"
    assert node_info.label_value("0.0.0+unknown") == "0.0.0_unknown"
    assert node_info.label_value("-v1-") == "v1"


def test_labels_name_every_handler():
    cfg = Config(runtimes={"runc": RuntimeHandler(), "kata_fc": RuntimeHandler(binary="kata")})
    labels = node_info.labels(cfg, "1.2.3")
    assert labels["sycri.io/runtime"] == "sycri"
    assert labels["sycri.io/version"] == "1.2.3"
    assert labels["handler.sycri.io/runc"] == labels["handler.sycri.io/kata_fc"] == "true"


def test_patch_removes_only_sycris_stale_handler_labels():
    current = {"handler.sycri.io/old": "true", "team": "hpc", "handler.sycri.io/runc": "true"}
    patch = node_info.node_patch(Config(), "1.0.0", current)
    labels = patch["metadata"]["labels"]
    assert labels["handler.sycri.io/old"] is None  # JSON merge patch: delete
    assert "team" not in labels  # not ours: untouched
    assert labels["handler.sycri.io/runc"] == "true"
    assert patch["metadata"]["annotations"]["sycri.io/runtime-handlers"] == "runc"
