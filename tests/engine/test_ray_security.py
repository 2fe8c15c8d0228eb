"""The local Ray that crfm-bench starts is safe by default: it listens on loopback only, and
Ray's token authentication stays on, with a token only the user can read.

Checked on real processes: a real client that presents a wrong token is refused by the GCS.
The listening sockets of a real ``crfm-bench run`` with DDP on two workers (Ray's GCS,
raylet, workers, dashboard, agents and the workers' rendezvous) are checked with ``psutil``
in ``test_run_e2e``'s full run, which serves several checks.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from ray_sockets import is_loopback, listening

from crfm_bench.stackenv import DEFAULTS, ensure_ray_token

EXE = Path(sys.executable).with_name("crfm-bench")


def test_loopback_check_itself():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::")
    assert not is_loopback("192.0.2.2") and not is_loopback("::ffff:192.0.2.2")


LISTEN = (
    "import socket, sys\n"
    "s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()\n"
    "print(s.getsockname()[1], flush=True); sys.stdin.read()\n"
)


def test_the_sampler_sees_each_listening_socket_of_the_tree_with_its_address():
    """What the e2e tests' socket check relies on: a descendant's listening sockets, with
    the address each is bound to (loopback or every interface)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LISTEN, host], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for host in ("127.0.0.1", "0.0.0.0")
    ]
    try:
        ports = [int(p.stdout.readline()) for p in procs]
        seen = listening(psutil.Process())
        assert {(ip, port) for _name, ip, port in seen} >= {
            ("127.0.0.1", ports[0]),
            ("0.0.0.0", ports[1]),
        }, seen
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=30)


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


def test_processes_starting_together_share_one_whole_token(tmp_path):
    # parallel test workers, or two runs started at once: each reads the same complete token
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    code = "from crfm_bench.stackenv import ensure_ray_token as e; print(e().read_text())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    tokens = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(tokens)) == 1 and len(tokens[0]) == 64
    assert [f.name for f in (tmp_path / ".ray").iterdir()] == ["auth_token"]  # no leftovers


def test_a_token_the_user_chose_is_respected(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "f" * 64)
    assert ensure_ray_token() is None
    assert not (tmp_path / ".ray").exists()


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

        # a refused driver retries its GCS connection once a second, 20 times: twice is enough
        wrong = client(RAY_AUTH_TOKEN="0" * 64, RAY_NUM_REDIS_GET_RETRIES="2")
        assert "REFUSED" in wrong and "CONNECTED" not in wrong, wrong[-2000:]
        assert "InvalidAuthToken" in wrong, wrong[-2000:]  # refused by the GCS, for the token
        assert "CONNECTED 1" in client()  # the user's own token (in HOME) is accepted
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
