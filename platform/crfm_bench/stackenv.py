"""Environment defaults for the stack (STACK.md): no telemetry, no tokens in the home folder.

Applied once by the CLI (and the tests) before Ray, MLflow or DVC are imported; values the
user has set are kept.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",  # else Ray writes an auth token to the home directory
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}


def apply_defaults() -> None:
    """Set each of :data:`DEFAULTS` unless the environment already has it."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
