"""Screenshots of a finished benchmark in the MLflow UI (``make screenshot``).

Starts ``mlflow server`` on 127.0.0.1 at a free port against a backend store (default: the
``mlflow.db`` of ``make run`` in the current folder), waits for ``/health`` (bounded), and
has headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright, which is told
not to fetch a browser of its own) render:

* ``docs/mlflow-leaderboard.png``: the experiment's runs table showing the model runs only
  (``tags.`crfm.kind` = 'model'``), sorted by test PSNR, best first, with their metric
  columns (``rank``, ``psnr``, ``ssim``, ...). The MLflow 3.17 UI keeps that table's state in
  the URL's query: ``searchFilter``, ``orderByKey`` (``metrics.`psnr```) and ``orderByAsc``
  (``true``/``false``), next to ``startTime``, ``lifecycleFilter``, ``modelVersionFilter``,
  ``datasetsFilter`` (read from the UI bundle's experiment-page state hook).
* ``docs/mlflow-leaderboard-run.png`` (``--run-out``; "" skips it): the benchmark's parent
  run page, whose description is the leaderboard as the CLI prints it.
* ``docs/mlflow-compare.png`` (``--compare-out``; "" skips it): the compare view of the
  ranked model runs (``#/compare-runs?runs=[...]&experiments=[...]``), best PSNR first: the
  top of the page (a parallel-coordinates plot and the runs in rank order; the metrics
  table is further down).

The runs table's columns (rank, psnr, ssim, ...), auto-refresh off and the assistant panel
closed are the UI's local-storage state, seeded before the page loads (:func:`ui_state`).
The server is stopped (its process group, by the PID this script started) in every case.
Errors are one line on stderr naming what failed, exit code 2.

    python docs/screenshot.py [--backend-store-uri sqlite:///$PWD/mlflow.db] [--experiment NAME]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

BENCHMARK_FILTER = "tags.`crfm.kind` = 'benchmark'"
MODEL_FILTER = "tags.`crfm.kind` = 'model'"
SORT_KEY = "metrics.`psnr`"
GRID_ROW = ".ag-center-cols-container .ag-row"  # a row of the runs table
DESCRIPTION_TABLE = "table"  # the parent run's description, rendered from markdown  # the leaderboard's short name of test PSNR (mean over subjects)

# Headless Chromium as root in a container: no sandbox, no GPU, no phoning home, and a fresh
# profile each time (so no earlier UI state from local storage).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


class ShotError(Exception):
    """A one-line error for the user (exit code 2)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_store(uri: str) -> None:
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise ShotError(
                f"--backend-store-uri {uri}: {db} does not exist (run `make run` first, or "
                "point --backend-store-uri at a store)"
            )


def pick_benchmark(uri: str, experiment: str | None):
    """``(experiment, parent run)``: the newest finished benchmark run of ``experiment``
    (default: of any experiment)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise ShotError(f"--experiment {experiment!r}: no such experiment in {uri}")
        exps = [exp]
    else:
        exps = client.search_experiments()
    runs = client.search_runs(
        [e.experiment_id for e in exps],
        filter_string=f"{BENCHMARK_FILTER} and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        where = f"experiment {experiment!r}" if experiment else uri
        raise ShotError(f"{where}: no finished crfm-bench run (tag crfm.kind=benchmark)")
    parent = runs[0]
    return client.get_experiment(parent.info.experiment_id), parent


def ranked_model_runs(uri: str, experiment_id: str) -> list[str]:
    """Run ids of the experiment's model runs, the newest finished one per model (what the
    leaderboard ranks), best test PSNR first."""
    from mlflow import MlflowClient

    runs = MlflowClient(uri).search_runs(
        [experiment_id],
        filter_string=f"{MODEL_FILTER} and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
    )
    newest: dict[str, object] = {}
    for run in runs:
        newest.setdefault(run.data.tags.get("crfm.model", run.info.run_id), run)
    best_first = sorted(newest.values(), key=lambda r: -r.data.metrics.get("psnr", float("-inf")))
    return [r.info.run_id for r in best_first]


def start_server(
    mlflow_exe: str, uri: str, port: int, log: Path, artifacts: Path
) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:port in its own process group, output to ``log``; new
    artifacts (none are written) would go to ``artifacts``, not into the project."""
    with log.open("w") as out:
        return subprocess.Popen(
            [
                mlflow_exe,
                "server",
                "--backend-store-uri",
                uri,
                "--default-artifact-root",
                Path(artifacts).as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # no background job runner: it starts seven huey consumer processes, which a
            # read-only look at the runs table does not need
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )


def wait_healthy(proc: subprocess.Popen, base: str, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ShotError(f"mlflow server exited with code {proc.returncode} (log: {log})")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise ShotError(f"mlflow server at {base}: no /health answer within {timeout_s:.0f} s ({log})")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (its own session, started by this script, so
    the group id is the server's PID), then SIGKILL to whatever of it is left after 15 s."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(timeout=15)


def leaderboard_url(base: str, experiment_id: str) -> str:
    query = urllib.parse.urlencode(
        {"searchFilter": MODEL_FILTER, "orderByKey": SORT_KEY, "orderByAsc": "false"},
        quote_via=urllib.parse.quote,
    )
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


# The runs table's metric columns: rank, the headline metrics under their short names, then
# the std and efficiency the leaderboard prints (MLflow keys ``metrics.`name```). The UI
# shows them in alphabetical order whatever the order here (``columnOrder`` with the grid's
# column ids did not change it in 3.17.2).
COLUMNS = (
    "rank",
    "psnr",
    "ssim",
    "test_psnr_std",
    "test_psnr_masked_mean",
    "test_ssim_slice_mean",
    "params",
    "macs_g",
    "train_seconds",
    "infer_seconds_per_volume",
)


def ui_state(experiment_id: str) -> dict[str, str]:
    """The MLflow 3.17 UI's local storage for a clean, still table: the experiment page's
    columns and sort, auto-refresh off (its polling never lets the page settle), and the
    assistant panel closed. The UI reads this on load; the URL's query wins where both set."""
    state = {
        "searchFilter": MODEL_FILTER,
        "orderByKey": SORT_KEY,
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": [f"metrics.`{m}`" for m in COLUMNS],
        "columnOrder": [],
        "columnWidths": {},
        "runsExpanded": {},
        "runsPinned": [],
        "runsHidden": [],
        "runsVisibilityMap": {},
        "runsHiddenMode": "FIRST_10_RUNS",
        "viewMaximized": False,
        "runListHidden": False,
        "isAccordionReordered": False,
        "useGroupedValuesInCharts": True,
        "hideEmptyCharts": True,
        "groupBy": None,
        "groupsExpanded": {},
        "autoRefreshEnabled": False,
    }
    return {
        f'MLflowLocalStorage-1.1-ExperimentPage-["{experiment_id}"]-ReactComponentState': (
            json.dumps(state)
        ),
        "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": "true",
        "mlflow.assistant.panelOpen_v1": "false",
    }


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    """The UI's compare view of ``run_ids`` (``#/compare-runs?runs=[..]&experiments=[..]``)."""
    runs = urllib.parse.quote(json.dumps(run_ids))
    exps = urllib.parse.quote(json.dumps([experiment_id]))
    return f"{base}/#/compare-runs?runs={runs}&experiments={exps}"


def shoot(
    chromium: str,
    shots: list[tuple[str, Path, str]],
    storage: dict[str, str],
    size: tuple[int, int],
    timeout_s: float,
) -> None:
    """Render each ``(url, png, selector)``: open ``url`` in headless ``chromium`` (driven by
    Playwright, no browser of its own), wait for ``selector``, write ``png`` atomically."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    seed = "".join(
        f"window.localStorage.setItem({json.dumps(k)}, {json.dumps(v)});"
        for k, v in storage.items()
    )
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=chromium,
                headless=True,
                args=list(CHROMIUM_FLAGS),
                timeout=timeout_s * 1000,
            )
        except PlaywrightError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ShotError(f"--chromium {chromium}: did not start ({first})") from None
        try:
            context = browser.new_context(viewport={"width": size[0], "height": size[1]})
            context.add_init_script(seed)
            for url, out, selector in shots:
                page = context.new_page()
                try:
                    page.goto(url, timeout=timeout_s * 1000)
                    page.wait_for_selector(selector, timeout=timeout_s * 1000)
                    more = page.get_by_text("Show more", exact=True)  # a folded description
                    if more.count():
                        more.first.click()
                    page.wait_for_timeout(1500)  # let the grid lay out its columns
                    out.parent.mkdir(parents=True, exist_ok=True)
                    tmp = out.with_name(f".{out.name}.tmp.png")
                    page.screenshot(path=str(tmp))
                    tmp.replace(out)
                except PlaywrightError as exc:
                    first = str(exc).strip().splitlines()[0]
                    raise ShotError(f"{url}: no {selector!r} on the page ({first})") from None
                finally:
                    page.close()
        finally:
            browser.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--backend-store-uri",
        default=f"sqlite:///{Path.cwd() / 'mlflow.db'}",
        help="MLflow backend store (default: sqlite:///$PWD/mlflow.db of `make run`)",
    )
    ap.add_argument("--experiment", help="experiment name (default: newest benchmark run's)")
    ap.add_argument("--out", type=Path, default=Path("docs/mlflow-leaderboard.png"))
    ap.add_argument(
        "--run-out",
        default="docs/mlflow-leaderboard-run.png",
        help="PNG of the parent run's page (its description); '' skips it",
    )
    ap.add_argument(
        "--compare-out",
        default="docs/mlflow-compare.png",
        help="PNG of the compare view of the ranked model runs; '' skips it",
    )
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    ap.add_argument("--mlflow", default=str(Path(sys.executable).with_name("mlflow")))
    ap.add_argument("--window-size", default="1600,1000", help="WIDTH,HEIGHT in pixels")
    ap.add_argument(
        "--server-timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the server's /health (it took ~90 s on the busy 2-core box)",
    )
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per screenshot")
    args = ap.parse_args(argv)

    try:
        size = tuple(int(v) for v in args.window_size.split(","))
        if len(size) != 2 or min(size) < 200:
            raise ValueError
    except ValueError:
        print(f"error: --window-size {args.window_size!r}: expected WIDTH,HEIGHT", file=sys.stderr)
        return 2
    proc, log, keep_log = None, None, True  # the server's log is kept when something failed
    artifacts = Path(tempfile.mkdtemp(prefix="crfm-shot-artifacts-"))
    try:
        if not os.access(args.chromium, os.X_OK):
            raise ShotError(f"--chromium {args.chromium}: not found (make chromium installs it)")
        if not os.access(args.mlflow, os.X_OK):
            raise ShotError(f"--mlflow {args.mlflow}: not an executable")
        check_store(args.backend_store_uri)
        exp, parent = pick_benchmark(args.backend_store_uri, args.experiment)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = Path(tempfile.gettempdir()) / f"crfm-shot-mlflow-{port}.log"
        proc = start_server(args.mlflow, args.backend_store_uri, port, log, artifacts)
        wait_healthy(proc, base, args.server_timeout, log)
        shots = [(leaderboard_url(base, exp.experiment_id), args.out, GRID_ROW)]
        if args.run_out:
            url = run_url(base, exp.experiment_id, parent.info.run_id)
            shots.append((url, Path(args.run_out), DESCRIPTION_TABLE))
        if args.compare_out:
            ids = ranked_model_runs(args.backend_store_uri, exp.experiment_id)
            if len(ids) > 1:
                url = compare_url(base, exp.experiment_id, ids)
                shots.append((url, Path(args.compare_out), DESCRIPTION_TABLE))
        shoot(args.chromium, shots, ui_state(exp.experiment_id), size, args.timeout)
        for url, out, *_ in shots:
            print(f"{out}: {url}")
        print(f"experiment {exp.name!r}, benchmark run {parent.info.run_id}")
        keep_log = False
        return 0
    except ShotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if proc is not None:
            stop_server(proc)
        shutil.rmtree(artifacts, ignore_errors=True)
        if log is not None and not keep_log:
            log.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
