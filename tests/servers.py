"""Servers the tests start themselves (a Ray head with ``ray start --head --block``, object
store, tracking server): waiting for one cheaply, stopping one and everything it started,
by PID (importable from tests: pytest's ``pythonpath``)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil

RAY = Path(sys.executable).with_name("ray")


def head_answers(
    proc: subprocess.Popen, address: str, env: dict, deadline: float, log: Path
) -> bool:
    """True once the head answers ``ray status``; False if it exits or the deadline passes.

    First wait for ``ray start`` to write "Ray runtime started" to ``log`` (its output), read
    every 0.25 s: each ``ray status`` is a Python process of its own (about 2 CPU s), so it
    is asked only once the head says it is up, and again each second while it is not."""
    while time.monotonic() < deadline and proc.poll() is None:
        if b"Ray runtime started" in log.read_bytes():
            break
        time.sleep(0.25)
    while time.monotonic() < deadline:
        try:
            probe = subprocess.run(
                [str(RAY), "status", f"--address={address}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=max(5.0, min(60.0, deadline - time.monotonic())),
            )
            if probe.returncode == 0 and "CPU" in probe.stdout:
                return True
        except subprocess.TimeoutExpired:
            pass  # `ray status` itself waited too long: ask again until the deadline
        if proc.poll() is not None:
            return False
        time.sleep(1)
    return False


def stop_tree(proc: subprocess.Popen, grace: float = 5.0, sig: int | None = None) -> None:
    """Stop ``proc`` and every process below it, by PID: ``sig`` (default SIGTERM) to
    ``proc``, then after ``grace`` seconds SIGKILL to whatever of its tree is left.

    A ``ray start --block`` head stops its processes gracefully, one after the other: with a
    live actor on it that takes 30 s, for a cluster that is thrown away."""
    stop_trees([(proc, sig)], grace)


def stop_trees(procs: list[tuple[subprocess.Popen, int | None]], grace: float = 5.0) -> None:
    """:func:`stop_tree` for several processes at once (signalled together, one grace)."""
    tree: list[psutil.Process] = []
    for proc, _sig in procs:  # the trees first: an orphan is no longer anyone's child
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(proc.pid)
            tree += [root, *root.children(recursive=True)]
    for proc, sig in procs:
        if proc.poll() is None:
            proc.send_signal(sig) if sig is not None else proc.terminate()
    _gone, alive = psutil.wait_procs(tree, timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=30)
    for proc, _sig in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
