"""Freed memory stays in the process (glibc's malloc without mmap for large blocks)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

EXE = Path(sys.executable).with_name("crfm-bench")

# In a fresh process: apply the setting, allocate a 64 MiB tensor, and read glibc's
# mallinfo2: hblks counts the blocks served by mmap (each a fresh, zero-filled mapping).
PROBE = """
import ctypes, json
import torch
from crfm_bench.engine.memory import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
applied = reuse_freed_memory()
before = libc.mallinfo2().hblks
big = torch.ones(16 * 2**20)  # 64 MiB
during = libc.mallinfo2().hblks
heap = libc.mallinfo2().arena
del big
again = torch.ones(16 * 2**20)
print(json.dumps({"applied": applied, "mmapped": during - before, "heap": heap,
                  "sum": float(again.sum())}))
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the setting is glibc's; elsewhere it is a no-op (tested below)",
)


def test_no_effect_off_glibc_and_bad_values_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from crfm_bench.engine import memory
    from crfm_bench.errors import InputError

    monkeypatch.setattr(memory, "_applied", None)  # as in a fresh process; restored after
    monkeypatch.setattr(memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    monkeypatch.delenv("CRFM_BENCH_MALLOC", raising=False)
    assert memory.reuse_freed_memory() is False  # musl: nothing to set, no mallopt call
    monkeypatch.setenv("CRFM_BENCH_MALLOC", "Fast")
    with pytest.raises(InputError, match="CRFM_BENCH_MALLOC='Fast'"):
        memory.reuse_freed_memory()
    monkeypatch.setenv("CRFM_BENCH_MALLOC", " SYSTEM ")
    assert memory.malloc_mode() == "system"


def _probe(mode: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CRFM_BENCH_MALLOC"}
    if mode is not None:
        env["CRFM_BENCH_MALLOC"] = mode
    res = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@glibc_only
def test_a_large_tensor_comes_from_the_heap_not_a_fresh_mapping() -> None:
    reuse = _probe(None)  # the default
    assert reuse["applied"] is True
    assert reuse["mmapped"] == 0
    assert reuse["heap"] >= 64 * 2**20  # the 64 MiB block sits in the heap
    assert reuse["sum"] == 16 * 2**20
    system = _probe("system")  # glibc's own behaviour: a large block is its own mapping
    assert system["applied"] is False
    assert system["mmapped"] == 1
    assert system["sum"] == 16 * 2**20


def test_a_bad_value_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("synth: {n_subjects: 4, n_val: 1, n_test: 1}\n")
    env = {**os.environ, "CRFM_BENCH_MALLOC": "jemalloc"}
    res = subprocess.run(
        [str(EXE), "run", "--models", "edsr"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "CRFM_BENCH_MALLOC" in lines[0] and "jemalloc" in lines[0], lines
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing built
