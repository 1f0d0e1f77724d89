"""kubetrain: train PyTorch models on Kubernetes with Ray, or locally with the same spec."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kubetrain")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
