"""sycri: a Kubernetes CRI v1 runtime whose images are SIF files."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sycri")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
