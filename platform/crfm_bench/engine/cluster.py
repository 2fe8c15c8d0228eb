"""Ray: a local Ray by default, an existing cluster by ``ray.address`` or ``RAY_ADDRESS``."""

from __future__ import annotations

import os

from crfm_bench.config import RayConfig
from crfm_bench.errors import ServiceError
from crfm_bench.stackenv import apply_defaults


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast, in one line, if nothing listens at a Ray address (``ray.init`` would retry
    for minutes). Accepts ``host:port`` and ``ray://host:port``."""
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ServiceError(f"ray.address {address}: expected host:port or ray://host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ServiceError(f"ray.address {address}: unreachable ({exc.strerror or exc})") from None


def ensure_ray(cfg: RayConfig, address: str | None = None) -> str:
    """Connect to (or start) Ray once per process; return a description of where it runs."""
    import ray

    address = address or cfg.address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return "ray (already initialised)"
    apply_defaults()
    verbose = os.environ.get("CRFM_BENCH_RAY_LOGS", "0") == "1"
    if address and address != "auto":
        check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=verbose)
            return f"ray cluster at {address}"
        ray.init(
            num_cpus=cfg.num_cpus,
            include_dashboard=False,
            log_to_driver=verbose,
            configure_logging=True,
            logging_level="WARNING",
        )
    except (ConnectionError, TimeoutError, ValueError) as exc:
        where = address or "local"
        raise ServiceError(f"ray.address {where}: cannot connect ({exc})") from None
    return f"local ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"
