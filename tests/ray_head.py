"""Waiting for a Ray head started with ``ray start --head --block`` (shared by the tests that
start one): cheaply, then surely (importable from tests: pytest's ``pythonpath``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

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
