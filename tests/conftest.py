"""Shared fixtures: environment for the stack, tiny synthetic volumes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from crfm_bench.stackenv import apply_defaults

apply_defaults()

# `make test` runs the suite on pytest-xdist workers (PYTEST_XDIST_WORKER_COUNT of them): the
# machine's cores are shared between them, not claimed by each
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 2) // _WORKERS)))


# Ray Train's controller polls its workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S (2 s), and
# a worker's second report waits for the first to be polled: a tiny test epoch (a few steps)
# then waits up to 2 s, and every training's end is seen up to 2 s late. The tests' runs poll
# 8 times faster (a latency setting: the same reports, results and checkpoints).
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")


def _shared_fixture(item) -> str | None:
    """Where the first of our module- or session-scoped fixtures (a real run, a server) that
    the test uses is defined (a test module, or a conftest's folder); None if it uses none."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info else ()
    shared = sorted(d[-1].baseid for d in defs if d and d[-1].scope != "function" and d[-1].baseid)
    return shared[0] if shared else None


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """Order and groups for parallel workers (``make test``: pytest-xdist, ``--dist loadgroup``).

    * Slow end-to-end tests first (stable order otherwise): the long ones start at once and
      the many short ones fill the gaps, instead of a long test starting last.
    * The tests that share a module- or session-scoped fixture run on one worker, so the
      fixture (a real benchmark run, a two-node cluster) is built once.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    for item in items:
        if group := _shared_fixture(item):
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session):
    """Refuse to run with groups that xdist did not apply: the shared runs would be built once
    per worker, silently (pytest 9.2 with pytest-xdist 3.8, pytest-xdist#1386)."""
    if not getattr(session.config.option, "loadgroup", False):
        return  # not an xdist worker with --dist loadgroup
    lost = [
        item.nodeid
        for item in session.items
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
    ]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist did not apply --dist loadgroup (e.g. {lost[0]}): this pytest "
            "changed node ids (pytest-xdist#1386); use the versions in constraints.txt"
        )


# Variables an in-process step sets for the processes it starts (the local Ray's loopback mode
# and state-API address): a later test's subprocess must not inherit them from an earlier test.
_PROCESS_ENV = (
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    "RAY_API_SERVER_ADDRESS",
    "MLFLOW_TRACKING_URI",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER",
)


@pytest.fixture(autouse=True)
def _environment_per_test():
    before = {k: os.environ.get(k) for k in _PROCESS_ENV}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def free_port():
    """Function returning a free TCP port on the loopback interface (for real local servers)."""
    return _free_port
