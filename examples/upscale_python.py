"""Upscaling from Python: a file, a numpy array and a torch batch, tiled, with a progress callback.

    python examples/upscale_python.py [IMAGE] [OUTPUT_DIR]

Uses the bundled/published MMA-T x4 weights when this installation has them. None ship yet, so it
falls back to a tiny randomly initialised MMA network and says so: the calls are exactly the ones you
would make with real weights, only the pictures are not worth looking at. Pass a converted checkpoint
instead with `MMA_WEIGHTS=mma-t_x4.safetensors python examples/upscale_python.py`.
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
from mma.errors import WeightsNotFoundError
from mma.imaging.io import write_image


def pick_model():
    """Real weights when available, else a tiny stand-in with the same interface."""
    try:
        return mma.load_model(os.environ.get("MMA_WEIGHTS", "mma-t"), scale=4)
    except WeightsNotFoundError as exc:
        print(f"note: {exc}\nnote: using a tiny random MMA network instead (output is not meaningful)")
        torch.manual_seed(0)
        return mma.build_model("mma-t", 4, num_feat=8, num_block=1).eval()


def sample_image(folder: Path) -> Path:
    """A small synthetic test card, so the example runs without any data."""
    y, x = np.mgrid[0:48, 0:64]
    card = np.stack([x * 4, y * 5, ((x // 8 + y // 8) % 2) * 255], axis=-1).astype(np.uint8)
    path = folder / "card.png"
    Image.fromarray(card).save(path)
    return path


def main() -> None:
    out_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp(prefix="mma-example-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else sample_image(out_dir)
    model = pick_model()

    # 1. A path in, a PIL image out (EXIF orientation applied; ICC profile and EXIF kept in .info),
    #    written atomically with its metadata.
    result = mma.upscale(source, scale=4, model=model)
    target = write_image(result, out_dir / f"{source.stem}_x4.png", overwrite=True)
    print(f"{source} {Image.open(source).size} -> {target} {result.size}")

    # 2. A numpy array in, the same dtype and layout out; small tiles with a progress callback.
    array = np.asarray(Image.open(source).convert("RGB"))
    seen = []
    upscaled = mma.upscale(array, scale=4, model=model, tile=32, overlap=16,
                           progress=lambda done, total: seen.append(done))
    print(f"numpy {array.shape} {array.dtype} -> {upscaled.shape} {upscaled.dtype} in {len(seen)} tiles")

    # 3. A torch batch (B, C, H, W) in [0, 1] in, the same layout out (on the input's device).
    batch = torch.rand(2, 3, 24, 24)
    print(f"torch {tuple(batch.shape)} -> {tuple(mma.upscale(batch, scale=4, model=model, tile=0).shape)}")


if __name__ == "__main__":
    main()
