"""Write-then-rename: a failed step never leaves a half-written file that a later step trusts.

Every output of crfm-bench is written to a temporary name in the destination directory and
renamed into place only when complete (``os.replace`` is atomic on POSIX within a
filesystem). A directory of outputs is staged the same way and swapped in whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from crfm_bench.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publishable(path: Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700; give outputs the usual mode (0666/0777 minus umask)."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def ensure_writable_dir(path: Path, what: str = "output directory") -> Path:
    """Create ``path`` if needed and check it is a writable directory; raise InputError if not."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot create it ({exc.strerror or exc})") from None
    if not path.is_dir():
        raise InputError(f"{what} {path}: exists and is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: not writable")
    return path


@contextlib.contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` if the block succeeds.

    The temporary name keeps ``dest``'s suffixes (``x.nii.gz`` -> ``.x.nii.gz.<rand>.tmp.nii.gz``
    would confuse nibabel), so it is ``.<name>.<rand>.tmp`` followed by the original suffixes.
    On failure the temporary file is removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    ensure_writable_dir(dest.parent)
    suffix = "".join(dest.suffixes)
    stem = dest.name[: len(dest.name) - len(suffix)] if suffix else dest.name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            _publishable(tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(dest: Path, text: str) -> Path:
    """Write ``text`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


@contextlib.contextmanager
def atomic_dir(dest: Path) -> Iterator[Path]:
    """Yield a fresh staging directory; on success it replaces ``dest`` whole.

    The previous ``dest`` (if any) is kept until the new one is complete, so a failure
    leaves the earlier good output intact.
    """
    dest = Path(dest)
    ensure_writable_dir(dest.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield stage
        _publishable(stage, directory=True)
        if dest.exists():
            old = dest.with_name(f".{dest.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dest, old)
            os.replace(stage, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
