"""Helpers shared by the test suites: a real sycri server, registries, images."""
