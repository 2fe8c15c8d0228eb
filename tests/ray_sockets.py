"""Sampling the listening sockets of a real ``crfm-bench`` process tree (Ray's GCS, raylet,
workers, dashboard and agents) with ``psutil``: the security check that every socket a run
opens is on loopback. Shared by the end-to-end tests, so the check rides on runs they make
anyway instead of a run of its own (importable from tests: pytest's ``pythonpath``)."""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import time
from pathlib import Path

import psutil


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4 loopback
    return (mapped or addr).is_loopback


def listening(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket of ``root`` and descendants.

    One system-wide ``psutil.net_connections`` per sample (one read of the kernel's socket
    tables), filtered to the tree's PIDs: asking each process instead re-reads the whole
    table per process, about 200 ms of CPU per sample of a Ray tree against 45 ms."""
    try:
        pids = {root.pid, *(p.pid for p in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()
    out = set()
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            try:
                out.add((psutil.Process(c.pid).name(), c.laddr.ip, c.laddr.port))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
    return out


def private_home_env(home: Path) -> dict[str, str]:
    """The environment of a run whose Ray token is made in ``home`` (no token inherited)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env["HOME"] = str(home)
    return env


def run_sampled(
    cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600
) -> tuple[subprocess.CompletedProcess, set[tuple[str, str, int]]]:
    """Run ``cmd`` to its end while sampling its process tree's listening sockets every 0.5 s;
    (the completed process, every socket seen). Killed after ``timeout`` seconds."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: set[tuple[str, str, int]] = set()
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    # pipes are read only at the end: a run's output is small (progress lines), far below
    # the pipe buffer, so the child never blocks on a full pipe meanwhile
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= listening(root)
        time.sleep(0.5)
    timed_out = proc.poll() is None
    if timed_out:
        proc.kill()
    out, err = proc.communicate(timeout=60)
    assert not timed_out, f"{' '.join(cmd)} did not end within {timeout:.0f} s\n{err[-2000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), seen


def assert_loopback_only(seen: set[tuple[str, str, int]], home: Path) -> None:
    """Ray's servers were seen while up, none listened beyond loopback, and the run's token
    in ``home`` is private."""
    names = {name for name, _, _ in seen}
    # the sample saw Ray's servers while they were up (else the check below proves nothing)
    assert {"gcs_server", "raylet"} <= names, names
    assert any("Dashboard" in n for n in names), names
    exposed = sorted((n, ip, port) for n, ip, port in seen if not is_loopback(ip))
    assert exposed == [], f"listening beyond loopback: {exposed}"
    token = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
