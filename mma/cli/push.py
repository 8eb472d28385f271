"""`mma push`: publish a Hub-layout folder (weights, config, model card) to a Hugging Face Hub repository."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mma.cli.app import command


@command(
    "push",
    help="Publish a Hub-layout folder (model.safetensors, config.json, README.md) to the Hub; the "
    "uploaded card states the weights' sha256. Needs a token: `hf auth login` or HF_TOKEN.",
)
def push(
    folder: Annotated[
        Path,
        typer.Argument(
            help="The folder: model.safetensors and config.json (e.g. from "
            "save_pretrained), and the model card README.md."
        ),
    ],
    repo_id: Annotated[str, typer.Argument(help="The repository, owner/name (created when missing).")],
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision", help="Branch to commit to, created from main when missing. Default: main."
        ),
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository private.")] = False,
    message: Annotated[str | None, typer.Option("--message", help="Commit message.")] = None,
) -> None:
    from mma.weights.hub import CARD_NAME, WEIGHTS_NAME, push_folder

    published = push_folder(folder, repo_id, revision=revision, private=private, message=message)
    typer.echo(
        f"pushed {folder} to {published.repo_id} (branch {published.revision}): commit {published.commit}"
    )
    typer.echo(
        f"{WEIGHTS_NAME} sha256 {published.sha256}"
        + (
            f" (stated in the uploaded {CARD_NAME}; the folder is unchanged)"
            if published.card_updated
            else ""
        )
    )
    typer.echo(f"load exactly these weights with --model {published.repo_id}@{published.commit}")
