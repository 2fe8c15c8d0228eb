"""Keep freed memory in the process instead of handing it back to the kernel after each step.

PyTorch's CPU allocator takes every tensor from the C library's ``malloc``. glibc serves a
request above its mmap threshold (at most 32 MiB, lower until it adapts) with a fresh
``mmap`` and returns it with ``munmap`` on free. A training step frees its activations, so
the next step takes them again from the kernel, which zeroes every 4 KiB page on the first
touch. At the ``base`` training patch (HR 64^3, batch 4) one 16-channel feature map is
64 MiB: a 1x1x1 convolution's forward and backward took 210 ms there, 54 ms with the memory
kept (measured, ``docs/performance.md``), and a third of a training step's CPU time was the
kernel's. At the default patch (HR 24^3) FMP models' steps were about 10 % faster.

:func:`reuse_freed_memory` sets glibc's ``M_MMAP_MAX`` to 0 (every block from the heap, so
a freed block is reused) and ``M_TRIM_THRESHOLD`` to its maximum (the heap is not shrunk).
The process keeps its peak footprint until it exits, which is what a training or
evaluation process wants. Allocation only: the arithmetic, and so every result, is the same
to the bit. No effect off glibc (macOS, musl) or with ``CRFM_BENCH_MALLOC=system``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from crfm_bench.errors import InputError

# glibc <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_MAX = 2**31 - 1  # mallopt takes an int

ENV = "CRFM_BENCH_MALLOC"
_applied: bool | None = None


def reuse_freed_memory() -> bool:
    """Configure glibc's malloc as described in the module doc, once per process.

    Returns True when the settings are in force (now or from an earlier call); False when
    they do not apply: not glibc, or ``CRFM_BENCH_MALLOC=system``. InputError naming the
    variable for any other value than ``reuse`` (the default) or ``system``.
    """
    global _applied
    mode = malloc_mode()
    if _applied is not None:
        return _applied
    _applied = False
    if mode == "system":
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_MAX) == 1
    _applied = bool(ok)
    return _applied


def malloc_mode() -> str:
    """``CRFM_BENCH_MALLOC``: ``reuse`` (default) or ``system``; InputError otherwise."""
    mode = os.environ.get(ENV, "reuse").strip().lower() or "reuse"
    if mode not in ("reuse", "system"):
        raise InputError(f"{ENV}={os.environ[ENV]!r}: use 'reuse' (the default) or 'system'")
    return mode
