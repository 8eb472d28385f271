"""The typer application and the one place where library errors become one-line messages."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

import click
import typer
from typer.core import TyperCommand

from mma.errors import MMAError

app = typer.Typer(
    name="mma",
    help="MMA super-resolution: upscale, evaluate and train the Vision-Mamba + channel-attention network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: typer's rich panels print flags as `--force <bool>`, which reads as if they took a value.
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from mma import __version__

        typer.echo(f"mma-sr {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """MMA super-resolution: upscale, evaluate and train the Vision-Mamba + channel-attention network."""
    quiet_libraries()


def quiet_libraries() -> None:
    """Keep library log lines (huggingface_hub's "Retrying in 8s" and the like) out of the CLI's output: what
    goes wrong reaches the user as one `error:` line. HF_HUB_VERBOSITY set by the user still wins."""
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # read when huggingface_hub is imported
    level = logging.getLevelName(os.environ["HF_HUB_VERBOSITY"].upper())
    logging.getLogger("huggingface_hub").setLevel(level if isinstance(level, int) else logging.ERROR)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print `error: message` on stderr and return the Exit to raise (so callers read `raise fail(...)`)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


class Command(TyperCommand):
    """A typer command whose help names a repeatable argument `INPUT...` rather than `INPUT <list[str]>`
    (typer prints the Python annotation, which means nothing to a user)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        write_dl = formatter.write_dl

        def plain(rows: Any, *args: Any, **kwargs: Any) -> None:
            rows = [(_LIST_TYPE.sub("...", name), text) for name, text in rows]
            write_dl(rows, *args, **kwargs)

        formatter.write_dl = plain  # type: ignore[method-assign]
        try:
            super().format_options(ctx, formatter)
        finally:
            del formatter.write_dl


_LIST_TYPE = re.compile(r" <list\[\w+\]>")


def command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`app.command` that turns `MMAError` into one line on stderr and exit status 1, without a traceback."""

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def guarded(*f_args: Any, **f_kwargs: Any) -> Any:
            try:
                return func(*f_args, **f_kwargs)
            except MMAError as exc:
                raise fail(str(exc)) from None
            except KeyboardInterrupt:
                raise fail("interrupted", code=130) from None

        return app.command(*args, **{"cls": Command, **kwargs})(guarded)

    return register


def main() -> None:
    """Console-script entry point."""
    app(prog_name="mma")
    sys.exit(0)
