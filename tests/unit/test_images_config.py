"""The images.* trust settings: defaults, and impossible values refused at start."""

from __future__ import annotations

import pytest
from sycri import config
from sycri.config import ConfigError

from tests.support.sif import KEYS


def test_defaults_take_a_20_gb_image_and_mount_foreign_sifs_with_squashfuse():
    cfg = config.load(env={})
    assert cfg.images.max_image_bytes >= 20 << 30
    assert cfg.images.max_file_bytes >= 20 << 30
    assert cfg.images.max_image_entries >= 1_000_000
    assert (cfg.images.kernel_mount, cfg.images.sif_policy) == ("signed", "accept")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"images.kernel_mount": "some"}, "images.kernel_mount: 'some' is not one of own"),
        ({"images.sif_policy": "maybe"}, "images.sif_policy: 'maybe' is not one of accept"),
        ({"images.sif_policy": "require-trusted"}, "require-trusted needs images.trusted_keyrings"),
        ({"images.max_image_bytes": "0"}, "images.max_image_bytes: must be greater than zero"),
        ({"images.max_layers": "-1"}, "images.max_layers: must be greater than zero"),
        ({"images.trusted_keyrings": "relative.asc"}, "must hold absolute paths"),
        ({"images.trusted_keyrings": "/nonexistent/key.asc"}, "is not a readable file"),
        ({"images.trusted_keyrings": str(KEYS / "private.asc")}, "PGP private key block"),
    ],
)
def test_impossible_values_are_refused_naming_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        config.load(env={}, overrides=overrides)


def test_keyrings_from_a_comma_separated_flag():
    pems = f"{KEYS / 'ed25519-public.pem'},{KEYS / 'rsa-public.pem'}"
    cfg = config.load(
        env={}, overrides={"images.trusted_keyrings": pems, "images.sif_policy": "require-trusted"}
    )
    assert len(cfg.images.trusted_keyrings) == 2
