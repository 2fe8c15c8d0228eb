"""Environment defaults for the stack (STACK.md): no telemetry, Ray's token auth kept on.

Applied once by the CLI (and the tests) before Ray, MLflow or DVC are imported; values the
user has set are kept.

Security (STACK.md, "Security"): Ray 2.59+ protects a cluster with token authentication
unless the user opts out (auth mode "disabled"). crfm-bench never does: ``RAY_AUTH_MODE=token`` is
set explicitly (so every process we start, and every worker, agrees on the mode), and the
token is created privately (:func:`ensure_ray_token`). Where the local Ray listens is decided
in :mod:`crfm_bench.cluster` (loopback only).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DEFAULTS = {
    "RAY_AUTH_MODE": "token",  # Ray's secure default, made explicit; never "disabled"
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
}


def apply_defaults() -> None:
    """Set each of :data:`DEFAULTS` unless the environment already has it."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


def ray_token_path() -> Path:
    """Where Ray looks for its token when neither ``RAY_AUTH_TOKEN`` nor
    ``RAY_AUTH_TOKEN_PATH`` is set: ``~/.ray/auth_token`` (Ray's own default)."""
    return Path.home() / ".ray" / "auth_token"


def ensure_ray_token() -> Path | None:
    """Make sure Ray's token auth has a token that only this user can read.

    The user's own choice wins: with ``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH`` set (every
    node of a cluster needs the same token), nothing is done and None is returned. Otherwise
    the default token file is created if missing, with mode 0600 from the first byte (Ray
    itself would write it world-readable, 0644), and its path is returned. An existing file
    is left as it is: it may be the token of the user's own cluster.
    """
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = ray_token_path()
    if path.exists():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # written whole under a private name, then linked into place (link never replaces): a
    # process starting at the same moment sees no file or the whole token, never a partial one
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        os.link(tmp, path)
    except FileExistsError:  # another process made it first: use theirs
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path
