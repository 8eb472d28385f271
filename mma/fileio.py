"""Atomic file writes: an output is either complete or absent, never half-written."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

from mma.errors import OutputError


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object], *, overwrite: bool = True,
                 make_parents: bool = False) -> Path:
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
            raise OutputError(f"{path}: cannot create its folder ({exc.strerror or exc})") from None
    elif not path.parent.is_dir():
        raise OutputError(f"{path}: directory {path.parent} does not exist")
    # A unique name rather than mkstemp, so the file gets the usual permissions (mkstemp's are 0600).
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path
