"""Training progress on the driver: per model a live ``rich`` bar (epoch n/N, train loss,
validation PSNR, ETA) in a terminal, one plain line per epoch elsewhere (CI, logs).

The numbers are the loop's epoch reports. With Ray Train they reach the driver through
:class:`ReportRelay`, a Train V2 ``UserCallback``: Ray runs it in the Train *controller*
(an actor, not the driver), so it forwards each report through a Ray queue that a thread of
the driver reads (:func:`relayed`). A :class:`~crfm_bench.engine.session.LocalSession` calls
:meth:`ProgressBoard.update` directly (``on_report``). Ray Tune trials are shown by
:class:`TrialTable`, a Tune callback (Tune's loop runs in the driver).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

from ray.train import UserCallback


def _eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class ProgressBoard:
    """Epoch progress of named runs. ``live``: a rich progress display (default: when the
    console is a terminal); otherwise :meth:`update` prints one line per epoch."""

    def __init__(self, console, live: bool | None = None) -> None:
        self.console = console
        self.live = console.is_terminal if live is None else live
        self._progress = None
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def start(self, name: str, epochs: int) -> None:
        with self._lock:
            self._started[name] = (time.monotonic(), -1)
            if not self.live:
                return
            if self._progress is None:
                from rich.progress import BarColumn, Progress, TextColumn

                self._progress = Progress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    TextColumn("epoch {task.completed}/{task.total}"),
                    TextColumn("{task.fields[info]}"),
                    console=self.console,
                    transient=False,
                )
                self._progress.start()
            self._tasks[name] = self._progress.add_task(name, total=epochs, info="starting")

    def update(self, name: str, metrics: dict[str, Any]) -> str:
        """Show one epoch report (``epoch`` 0-based, ``epochs``, ``train_loss``, ``val_psnr``);
        return the line shown."""
        with self._lock:
            t0, first = self._started.setdefault(name, (time.monotonic(), -1))
            epoch = int(metrics.get("epoch", 0))
            epochs = int(metrics.get("epochs") or 0)
            if first < 0:  # the first report seen (after a resume, not epoch 0)
                first = int(metrics.get("resumed_from", 0))
                self._started[name] = (t0, first)
            done_here = epoch + 1 - first
            per_epoch = (time.monotonic() - t0) / max(1, done_here)
            left = max(0, epochs - epoch - 1)
            info = (
                f"loss {metrics.get('train_loss', float('nan')):.5f}  "
                f"val PSNR {metrics.get('val_psnr', float('nan')):.2f} dB  "
                f"ETA {_eta(per_epoch * left)}"
            )
            line = f"{name}: epoch {epoch + 1}/{epochs}  {info}"
            if self.live and name in self._tasks:
                self._progress.update(
                    self._tasks[name], completed=epoch + 1, total=epochs or None, info=info
                )
            else:
                self.console.print(line, highlight=False)
            return line

    def stop(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
                self._tasks.clear()


class ReportRelay(UserCallback):
    """Forward each Ray Train report (rank 0's metrics) of run ``name`` to a Ray queue the
    driver reads."""

    def __init__(self, queue, name: str) -> None:
        self.queue = queue
        self.name = name

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if metrics:
            self.queue.put((self.name, dict(metrics[0])), timeout=10)


# One queue actor per driver and Ray session, shared by the runs it trains: an actor is a
# process of its own (about 2 CPU s to start), not worth one per training.
_queue: tuple[tuple[str, str], Any] | None = None


def _shared_queue():
    import ray
    from ray.util.queue import Queue

    global _queue
    context = ray.get_runtime_context()
    # the driver's node and job: a Ray started again in this process numbers its jobs from
    # 1 again, but its node is a new one
    session = (context.get_node_id(), context.get_job_id())
    if _queue is None or _queue[0] != session:  # first use, or a new Ray since
        _queue = (session, Queue(actor_options={"num_cpus": 0}))
    return _queue[1]


@contextlib.contextmanager
def relayed(board: ProgressBoard, name: str, epochs: int) -> Iterator[list]:
    """Yield the Train callbacks that feed ``board`` with the reports of run ``name``; a
    driver thread shows them until the block ends. Ray Train returns after the controller
    has put its last report, so the thread's final drain shows every report of the run.
    Each report carries its run's name: runs trained at once may read each other's."""
    from ray.util.queue import Empty

    queue = _shared_queue()
    stop = threading.Event()

    def pump() -> None:
        while True:
            try:
                board.update(*queue.get(timeout=0.5))
            except Empty:
                if stop.is_set():
                    return
            except Exception:  # the queue actor is gone: nothing more to show
                return

    board.start(name, epochs)
    thread = threading.Thread(target=pump, name=f"progress-{name}", daemon=True)
    thread.start()
    try:
        yield [ReportRelay(queue, name)]
    finally:
        stop.set()
        thread.join(timeout=10)


class TrialTable:
    """Ray Tune trials as a table (trial, sampled values, epoch, loss, val PSNR, best), live in
    a terminal; one line per trial result elsewhere. Built by :func:`trial_callback`."""

    def __init__(self, console, epochs: int, live: bool | None = None) -> None:
        self.console = console
        self.epochs = epochs
        self.live = console.is_terminal if live is None else live
        self.rows: dict[str, dict[str, Any]] = {}
        self._live = None

    def table(self):
        from rich.table import Table

        table = Table(title="trials")
        for col in ("trial", "sample", "epoch", "train loss", "val PSNR", "best val PSNR"):
            table.add_column(col, justify="left" if col in ("trial", "sample") else "right")
        for trial, r in self.rows.items():
            table.add_row(
                trial,
                r["sample"],
                f"{r['epoch']}/{self.epochs}",
                f"{r['train_loss']:.5f}",
                f"{r['val_psnr']:.2f}",
                f"{r['best']:.2f}",
            )
        return table

    def update(self, trial: str, sample: dict, metrics: dict[str, Any]) -> str:
        shown = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sample.items()
        )
        val = float(metrics.get("val_psnr", float("nan")))
        best = max(val, self.rows.get(trial, {}).get("best", float("-inf")))
        self.rows[trial] = {
            "sample": shown,
            "epoch": int(metrics.get("epoch", 0)) + 1,
            "train_loss": float(metrics.get("train_loss", float("nan"))),
            "val_psnr": val,
            "best": best,
        }
        r = self.rows[trial]
        line = (
            f"trial {trial} ({shown}): epoch {r['epoch']}/{self.epochs}  "
            f"loss {r['train_loss']:.5f}  val PSNR {val:.2f} dB"
        )
        if self.live:
            if self._live is None:
                from rich.live import Live

                self._live = Live(self.table(), console=self.console, refresh_per_second=2)
                self._live.start()
            else:
                self._live.update(self.table())
        else:
            self.console.print(line, highlight=False)
        return line

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def trial_callback(table: TrialTable):
    """A Ray Tune ``Callback`` feeding ``table`` (Tune calls it in the driver)."""
    from ray.tune import Callback

    class _TrialProgress(Callback):
        def __init__(self, live: TrialTable) -> None:  # an argument, not a closure: see below
            self.table: TrialTable | None = live

        def __getstate__(self) -> dict:
            # Tune pickles its run config with the experiment state; the live table (a rich
            # console, with locks) belongs to this driver only and is not saved
            return {}

        def __setstate__(self, state: dict) -> None:
            self.table = None

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            if self.table is not None:
                self.table.update(trial.trial_id, trial.config.get("sample", {}), result)

    return _TrialProgress(table)
