"""Atomic file writes: an output is either complete or absent, never half-written.

And the cheap question asked before any long job: can a file be created where an output will go?
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from mma.errors import OutputError


def atomic_write(
    path: str | os.PathLike[str],
    write: Callable[[Path], object],
    *,
    overwrite: bool = True,
    make_parents: bool = False,
) -> Path:
    """Call `write` on a temporary file beside `path`, then rename it into place (same file system).

    On any failure, interruption included, the temporary file is removed and an existing `path` is left
    as it was. Filesystem problems become `OutputError` with a one-line reason.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory")
    if not overwrite and path.exists():
        raise OutputError(f"{path}: exists (use --force / overwrite=True to replace it)")
    if make_parents:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = _nearest_existing(path.parent)
            why = f"{blocker} is not a directory" if not blocker.is_dir() else exc.strerror or exc
            raise OutputError(f"{path}: cannot create its folder ({why})") from None
    elif not path.parent.is_dir():
        raise OutputError(f"{path}: directory {path.parent} does not exist")
    tmp = _scratch_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        # On a read-only file system even unlinking a file that was never created fails (EROFS): the
        # cleanup must not replace the one-line reason above with a traceback.
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return path


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise OutputError unless a file can be created at `path` (its folders may not exist yet)."""
    reason = unwritable_reason(Path(path).parent)
    if reason is not None:
        raise OutputError(f"{path}: cannot write there ({reason})")


def unwritable_reason(folder: str | os.PathLike[str]) -> str | None:
    """Why no file can be created in `folder`, or None when one can (missing folders count as creatable).

    Asks the file system rather than the permission bits (root ignores those; read-only mounts and /proc
    do not): a temporary file is created and removed in the nearest folder that exists.
    """
    existing = _nearest_existing(Path(folder))
    if not existing.is_dir():
        return f"{existing} is not a directory"
    probe = _scratch_name(existing / ".mma-probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        return f"{existing}: {exc.strerror or exc}"
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (a file under a file does not exist: ENOTDIR)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _scratch_name(path: Path) -> Path:
    # A unique name rather than mkstemp, so the file gets the usual permissions (mkstemp's are 0600).
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
