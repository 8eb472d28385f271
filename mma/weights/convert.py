"""Turning any readable checkpoint (above all the authors' BasicSR `.pth`) into a self-describing safetensors file."""

from __future__ import annotations

import os
from pathlib import Path

from mma import __version__
from mma.errors import OutputError
from mma.model import MMAConfig
from mma.weights.checkpoint import load_checkpoint, save_safetensors
from mma.weights.hub import sha256_of
from mma.weights.loading import config_from_metadata


def convert_checkpoint(
    source: str | os.PathLike[str], output: str | os.PathLike[str], *, overwrite: bool = False
) -> MMAConfig:
    """Write `source`'s weights to `output` as safetensors with their config and where they came from.

    Variant and scale come from the tensor shapes when the file does not declare them; `save_safetensors` checks
    the weights against that network before writing, so a converted file always loads.
    """
    source, output = Path(source), Path(output)
    if output.exists() and output.resolve() == source.resolve():
        raise OutputError(f"{output}: the output is the input file")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: exists (use --force to overwrite)")
    state, metadata = load_checkpoint(source)
    config = config_from_metadata(metadata, state)
    save_safetensors(
        state,
        output,
        config,
        source_file=source.name,
        source_sha256=sha256_of(source),
        source_format=metadata.get("file_format", "safetensors"),
        source_state_key=metadata.get("state_key"),
        converted_by=f"mma-sr {__version__}",
    )
    return config
