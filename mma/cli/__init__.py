"""The `mma` command line. Each sub-command lives in its own module and registers itself on import."""

from mma.cli import doctor, evaluate, export, lam, models, pack, push, train, upscale  # noqa: F401  (registration)
from mma.cli.app import app, main

__all__ = ["app", "main"]
