"""The local Ray that crfm-bench starts is safe by default: it listens on loopback only, and
Ray's token authentication stays on, with a token only the user can read.

Checked on real processes: the listening sockets of a real ``crfm-bench run`` (Ray's GCS,
raylet, workers, dashboard and agents) with ``psutil``, and a real client that presents a
wrong token and is refused by the GCS.
"""

from __future__ import annotations

import ipaddress
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from crfm_bench.stackenv import DEFAULTS, ensure_ray_token

EXE = Path(sys.executable).with_name("crfm-bench")


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    mapped = getattr(addr, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is IPv4 loopback
    return (mapped or addr).is_loopback


def _listening(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, ip, port) of every listening TCP socket of ``root`` and descendants."""
    out = set()
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            name = p.name()
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    out.add((name, c.laddr.ip, c.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def test_loopback_check_itself():
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("::")
    assert not _is_loopback("192.0.2.2") and not _is_loopback("::ffff:192.0.2.2")


def test_ray_auth_is_never_disabled_by_our_defaults():
    assert DEFAULTS["RAY_AUTH_MODE"] == "token"


def test_ray_token_is_created_private_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    path = ensure_ray_token()
    assert path == tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # Ray itself writes 0644
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = path.read_text()
    assert len(token) == 64 and int(token, 16) >= 0  # 256 bits, hex, as Ray's own
    assert ensure_ray_token() == path and path.read_text() == token  # kept, not replaced


def test_a_token_the_user_chose_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "f" * 64)
    assert ensure_ray_token() is None
    assert not (tmp_path / ".ray").exists()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_real_run_listens_on_loopback_only(project, tmp_path, workers):
    # one worker (the default) and DDP with two: Ray, the dashboard, the agents, the Train
    # workers and their rendezvous. HOME in the project: the run's token is made there.
    project.write({"train": {"num_workers": workers}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        [str(EXE), "run", "--models", "edsr"],
        cwd=project.dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: set[tuple[str, str, int]] = set()
    root = psutil.Process(proc.pid)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        seen |= _listening(root)
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    names = {name for name, _, _ in seen}
    # the sample saw Ray's servers while they were up (else the check below proves nothing)
    assert {"gcs_server", "raylet"} <= names, names
    assert any("Dashboard" in n for n in names), names
    exposed = sorted((n, ip, port) for n, ip, port in seen if not _is_loopback(ip))
    assert exposed == [], f"listening beyond loopback: {exposed}"
    token = tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600


HEAD = textwrap.dedent(
    """
    import sys
    from crfm_bench.config import RayConfig
    from crfm_bench.cluster import ensure_ray
    ensure_ray(RayConfig(num_cpus=1, dashboard=False))
    import ray
    print("GCS", ray.get_runtime_context().gcs_address, flush=True)
    sys.stdin.read()  # until the test closes stdin
    """
)

CLIENT = textwrap.dedent(
    """
    import sys, ray
    try:
        ray.init(address=sys.argv[1], log_to_driver=False)
        print("CONNECTED", int(ray.cluster_resources()["CPU"]))
    except Exception as exc:
        print("REFUSED", type(exc).__name__)
    """
)


@pytest.mark.slow
def test_the_local_ray_refuses_a_client_without_its_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    env["HOME"] = str(tmp_path)
    head = subprocess.Popen(
        [sys.executable, "-c", HEAD],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = head.stdout.readline()  # bounded: the head prints or exits
        assert line.startswith("GCS "), f"the local Ray did not start: {line!r}"
        gcs = line.split()[1]
        assert gcs.startswith("127.0.0.1:"), gcs
        # a client on this machine reaches the loopback-only Ray in Ray's single-machine mode
        client_env = {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

        def client(**extra: str) -> str:
            res = subprocess.run(
                [sys.executable, "-c", CLIENT, gcs],
                env={**client_env, **extra},
                capture_output=True,
                text=True,
                timeout=180,
            )
            return res.stdout + res.stderr

        wrong = client(RAY_AUTH_TOKEN="0" * 64)
        assert "REFUSED" in wrong and "CONNECTED" not in wrong, wrong[-2000:]
        assert "InvalidAuthToken" in wrong, wrong[-2000:]  # refused by the GCS, for the token
        assert "CONNECTED 1" in client()  # the user's own token (in HOME) is accepted
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
