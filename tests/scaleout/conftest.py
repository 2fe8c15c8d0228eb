"""Fixtures of the scale-out tests: see tests/scaleout_support.py."""

from scaleout_support import netns, s3, stack  # noqa: F401 - fixtures
