"""Upscaling from Python: a file, a numpy array and a torch batch, tiled, with a progress callback.

    python examples/upscale_python.py [IMAGE] [OUTPUT_DIR]

Uses the MMA-T x4 weights bundled with the package (offline) on the sample photo `examples/astronaut.png`
unless IMAGE is given. Other weights: `MMA_WEIGHTS=mma-t-x4.safetensors python examples/upscale_python.py`.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import mma
from mma.imaging.io import write_image

SAMPLE = Path(__file__).resolve().parent / "astronaut.png"


def main() -> None:
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="mma-example-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE
    model = mma.load_model(os.environ.get("MMA_WEIGHTS", "mma-t"), scale=4)

    # 1. A path in, a PIL image out (EXIF orientation applied; ICC profile and EXIF kept in .info),
    #    written atomically with its metadata.
    result = mma.upscale(source, scale=4, model=model)
    target = write_image(result, out_dir / f"{source.stem}_x4.png", overwrite=True)
    print(f"{source} {Image.open(source).size} -> {target} {result.size}")

    # 2. A numpy array in, the same dtype and layout out; small tiles with a progress callback.
    array = np.asarray(Image.open(source).convert("RGB"))
    seen = []
    upscaled = mma.upscale(
        array, scale=4, model=model, tile=32, overlap=16, progress=lambda done, total: seen.append(done)
    )
    print(f"numpy {array.shape} {array.dtype} -> {upscaled.shape} {upscaled.dtype} in {len(seen)} tiles")

    # 3. A torch batch (B, C, H, W) in [0, 1] in, the same layout out (on the input's device).
    batch = torch.rand(2, 3, 24, 24)
    print(f"torch {tuple(batch.shape)} -> {tuple(mma.upscale(batch, scale=4, model=model, tile=0).shape)}")


if __name__ == "__main__":
    main()
