"""crfm-bench: benchmark and dataset management for reference-guided 3D brain MRI SR."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crfm-bench")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"
