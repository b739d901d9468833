"""Python code generated from ``proto/api.proto``. Never edit by hand: run ``python -m sycri.api.regen``."""
