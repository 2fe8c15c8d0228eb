"""Where the test suite's CPU goes: a pytest plugin (a measurement, not a test).

    PYTHONPATH=benchmarks .venv/bin/python -m pytest -p pytest_cpu -n 2 --dist loadgroup [...]

Each test runs in its own cgroup (v1 ``cpuacct``; needs a writable
``/sys/fs/cgroup/cpuacct``, e.g. root in a container). The test's process moves itself in at
the start of the test, so every process the test starts inherits it: Ray's GCS, raylet,
dashboard, actors and workers (which leave the test's process tree), DVC, MLflow and object
store servers. The cgroup's ``cpuacct.usage`` is then the CPU seconds of all of it, whatever
else runs on the machine: unlike wall time, a loaded machine hardly changes it (idle daemons
that poll on a timer do burn a little more over a longer wall time).

At the end the terminal summary lists the tests by CPU seconds, their wall seconds and the
total; ``CPU_OUT`` (default ``runs/bench/suite-cpu``) keeps one JSON line per test and worker.
The suite's CPU seconds over the machine's cores bound ``make test``'s wall time from below.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

ROOT = Path("/sys/fs/cgroup/cpuacct")
OUT = Path(os.environ.get("CPU_OUT", "runs/bench/suite-cpu"))
_group = ROOT / f"pytest-cpu-{os.getppid() if 'PYTEST_XDIST_WORKER' in os.environ else os.getpid()}"


def pytest_configure(config) -> None:
    if not os.access(ROOT, os.W_OK):
        raise pytest.UsageError(f"pytest_cpu: {ROOT} is not writable (cgroup v1 cpuacct needed)")
    if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller (or a run without xdist)
        OUT.mkdir(parents=True, exist_ok=True)
        for old in OUT.glob("*.jsonl"):
            old.unlink()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    _group.mkdir(exist_ok=True)
    cg = _group / f"{worker}-{time.monotonic_ns()}"
    cg.mkdir()
    (cg / "cgroup.procs").write_text(str(os.getpid()))
    t0 = time.monotonic()
    yield
    wall = time.monotonic() - t0
    (ROOT / "cgroup.procs").write_text(str(os.getpid()))  # back to the root group
    cpu = int((cg / "cpuacct.usage").read_text()) / 1e9
    left = (cg / "cgroup.procs").read_text().split()  # processes the test left running
    row = {"test": item.nodeid, "cpu_s": round(cpu, 2), "wall_s": round(wall, 2)}
    if left:
        row["left_running"] = len(left)
    with open(OUT / f"{worker}.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    if not left:
        cg.rmdir()


def pytest_terminal_summary(terminalreporter) -> None:
    if "PYTEST_XDIST_WORKER" in os.environ:
        return
    rows = [json.loads(line) for f in sorted(OUT.glob("*.jsonl")) for line in f.open()]
    if not rows:
        return
    rows.sort(key=lambda r: -r["cpu_s"])
    total = sum(r["cpu_s"] for r in rows)
    tr = terminalreporter
    tr.section("CPU seconds per test (whole process tree, cgroup cpuacct)")
    for r in rows[:25]:
        extra = f"  ({r['left_running']} processes left running)" if "left_running" in r else ""
        tr.write_line(f"{r['cpu_s']:8.1f} cpu s {r['wall_s']:8.1f} wall s  {r['test']}{extra}")
    cores = len(os.sched_getaffinity(0))
    tr.write_line(
        f"{len(rows)} tests, {total:.0f} CPU s in all: at least {total / cores / 60:.1f} min "
        f"of wall time on {cores} cores"
    )


def pytest_unconfigure(config) -> None:
    if "PYTEST_XDIST_WORKER" in os.environ or not _group.is_dir():
        return
    for cg in _group.iterdir():  # empty groups only: a group with processes left stays
        try:
            cg.rmdir()
        except OSError:
            pass
    try:
        _group.rmdir()
    except OSError:
        pass
