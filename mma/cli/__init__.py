"""The `mma` command line. Each sub-command lives in its own module and registers itself on import."""

from mma.cli import (  # noqa: F401  (registration)
    compare,
    doctor,
    evaluate,
    export,
    lam,
    models,
    pack,
    push,
    train,
    upscale,
)
from mma.cli.app import app, main

__all__ = ["app", "main"]
