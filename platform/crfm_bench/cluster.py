"""Ray: a local Ray by default, an existing cluster by ``ray.address`` or ``RAY_ADDRESS``.

Safe by default (STACK.md, "Security"; the class of CVE-2023-48022: whoever reaches a Ray
port can run code through it):

* **The local Ray listens on loopback only.** On Linux, Ray replaces ``127.0.0.1`` by the
  host's address and its gRPC servers listen on every interface, even with
  ``_node_ip_address="127.0.0.1"``. Ray's single-machine mode (the one it uses on macOS and
  Windows, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) keeps the node address at 127.0.0.1, and
  then the GCS, raylet, workers, dashboard and agents all bind to loopback (checked by
  ``tests/engine/test_ray_security.py`` with ``psutil.net_connections``). It applies to the
  local Ray only: a driver joining a cluster must register its real address.
* **Token authentication stays on** (``RAY_AUTH_MODE=token``, a token only the user can read:
  :func:`crfm_bench.stackenv.ensure_ray_token`), so a local process without the token is
  refused as well.
* **A local Ray is always a new one** (``address="local"``): ``ray.init()`` without an
  address would join the cluster that the last ``ray start`` on this machine left in
  ``/tmp/ray/ray_current_cluster``, someone else's cluster, with its load and its resources.
"""

from __future__ import annotations

import os

from crfm_bench.config import Params, RayConfig, TrainConfig
from crfm_bench.errors import InputError, ServiceError
from crfm_bench.stackenv import apply_defaults, ensure_ray_token

# True once this process has started its own local Ray (resources then are known and fixed)
_local = False

# Ray's switch for its single-machine mode (node address 127.0.0.1, servers on loopback)
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"  # Ray Train V2
_saved_single_machine: tuple[str | None, bool] | None = None
_api_server_set: str | None = None  # the RAY_API_SERVER_ADDRESS this process exported


def loopback_only(enabled: bool) -> None:
    """Put Ray in (or back out of) its single-machine, loopback-only mode for this process
    and the Ray processes it starts.

    The environment variable reaches the GCS, raylet and workers that ``ray.init`` starts;
    the driver reads Ray's constant, which was fixed when ``ray`` was first imported, so it
    is set alongside (Ray exposes no other switch for it).
    """
    import ray._private.ray_constants as ray_constants

    global _saved_single_machine
    if enabled:
        if _saved_single_machine is None:
            _saved_single_machine = (
                os.environ.get(SINGLE_MACHINE_ENV),
                ray_constants.ENABLE_RAY_CLUSTER,
            )
        os.environ[SINGLE_MACHINE_ENV] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    elif _saved_single_machine is not None:
        env, constant = _saved_single_machine
        if env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = env
        ray_constants.ENABLE_RAY_CLUSTER = constant
        _saved_single_machine = None


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


def ray_address(cfg: RayConfig, address: str | None = None) -> str | None:
    """The cluster to join: ``--address``, else ``ray.address``, else ``RAY_ADDRESS``; None for
    a local Ray started by crfm-bench."""
    return address or cfg.address or os.environ.get("RAY_ADDRESS") or None


def _state_api_of_this_ray() -> int:
    """A free loopback port for the local Ray's dashboard, announced to every process of it.

    Ray's state API (which Ray Train's placement-group cleaner asks whether a stopped Tune
    trial's controller is gone) finds its cluster by auto-detection when no address is
    given. With another Ray on the host, it finds that one, or several and gives up, so the
    stopped trial's workers are never freed and the next trial waits for CPUs forever (the
    "suite hangs under load" of issue 11). ``RAY_API_SERVER_ADDRESS``, set before the Ray
    processes start, points them at this Ray's own dashboard instead.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    global _api_server_set
    _api_server_set = os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    return port


def ensure_ray(cfg: RayConfig, address: str | None = None) -> str:
    """Connect to (or start) Ray once per process; return a description of where it runs."""
    # the auth mode must be in the environment before Ray is first imported: Ray's C++
    # config reads it then, and a driver that missed it would not send its token
    apply_defaults()
    import ray

    global _local
    address = ray_address(cfg, address)
    if ray.is_initialized():
        return "ray (already initialised)"
    ensure_ray_token()
    verbose = os.environ.get("CRFM_BENCH_RAY_LOGS", "0") == "1"
    if address and address != "auto":
        check_reachable(address)
    loopback_only(not address)
    if address and _api_server_set and os.environ.get("RAY_API_SERVER_ADDRESS") == _api_server_set:
        del os.environ["RAY_API_SERVER_ADDRESS"]  # ours, for an earlier local Ray: not theirs
    try:
        if address:
            ray.init(address=address, log_to_driver=verbose)
            return f"ray cluster at {address}"
        dashboard_port = _state_api_of_this_ray() if cfg.dashboard else None
        context = ray.init(
            address="local",  # a new Ray of our own, never the last `ray start` on the host
            num_cpus=cfg.num_cpus,
            include_dashboard=cfg.dashboard,
            dashboard_port=dashboard_port,
            log_to_driver=verbose,
            configure_logging=True,
            logging_level="WARNING",
        )
    except (ConnectionError, TimeoutError, ValueError) as exc:
        where = address or "local"
        raise ServiceError(f"ray.address {where}: cannot connect ({exc})") from None
    _local = True
    # Nothing on one machine is drained or pre-empted, so Ray Train's pre-emption watcher
    # (one more actor process per training run, ~2 CPU s of imports each) is off for the
    # local Ray; a user's own setting wins, and a cluster keeps Ray's default.
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")
    where = f"local ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs"
    url = context.dashboard_url if cfg.dashboard else None
    return where + (f", dashboard http://{url})" if url else ")")


def worker_group(t: TrainConfig) -> dict[str, float]:
    """Resources one Ray Train worker group asks for."""
    group = {"CPU": float(t.num_workers * t.cpus_per_worker)}
    if t.use_gpu:
        group["GPU"] = float(t.num_workers)
    return group


def local_resources(cfg: RayConfig) -> dict[str, float]:
    """What the local Ray has (or will have when :func:`ensure_ray` starts it)."""
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    import torch

    cpus = cfg.num_cpus or len(os.sched_getaffinity(0))
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def check_worker_group_fits(params: Params, address: str | None = None, concurrent: int = 1) -> int:
    """On a local Ray, fail in one line if a training worker group can never be placed (Ray
    Train would wait for it forever); return how many groups fit at once (at most
    ``concurrent``). Called before any work. On a cluster nothing is checked: an autoscaler
    may add the nodes.
    """
    import ray

    if ray_address(params.ray, address):
        return concurrent
    if ray.is_initialized() and not _local:
        return concurrent
    t = params.train
    have = local_resources(params.ray)
    need = worker_group(t)
    fits = min(int(have.get(k, 0.0) // v) for k, v in need.items() if v > 0)
    if fits < 1:
        detail = " + ".join(f"{v:g} {k}" for k, v in need.items())
        got = " + ".join(f"{have.get(k, 0.0):g} {k}" for k in need)
        raise InputError(
            f"train.num_workers {t.num_workers} x train.cpus_per_worker {t.cpus_per_worker}"
            f"{' (use_gpu)' if t.use_gpu else ''}: a worker group needs {detail}, the local "
            f"Ray has {got} (lower them, or set ray.num_cpus)"
        )
    return max(1, min(concurrent, fits))


def loopback_ray() -> bool:
    """True in any process of a local Ray that crfm-bench started (the driver, and every Ray
    worker, which inherits the environment): the Ray is in its loopback-only mode."""
    return os.environ.get(SINGLE_MACHINE_ENV) == "0"
