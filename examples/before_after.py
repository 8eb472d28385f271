"""Before and after on a real photo: bicubic next to the bundled MMA-T, with PSNR against the original.

    python examples/before_after.py                                   # Set14 comic.png, x4
    python examples/before_after.py --image ../shared/data/Set5/HR/butterfly.png --scale 2 --out bf.png

The photo is shrunk with MATLAB-compatible bicubic (`mma.imresize`), then brought back by bicubic and by the
bundled MMA-T; the figure shows a crop of the LR input (pixel-doubled), both results and the original. The
figure is written at run time (nothing here is committed), by default to a temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import mma
from mma.errors import MMAError
from mma.evaluate import read_rgb
from mma.imaging.io import write_image
from mma.imaging.resize import modcrop
from mma.metrics import psnr

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAPTION = 18  # pixels of text under each panel


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=DATA / "Set14" / "HR" / "comic.png")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    parser.add_argument("--crop", type=int, default=160, help="side of the shown HR crop, pixels")
    parser.add_argument("--model", default="mma-t", help="registry name, weights file or Hub repo id")
    parser.add_argument("--out", type=Path, help="figure path (default: a temporary folder)")
    return parser.parse_args()


def panel(image: np.ndarray, caption: str, top: int, left: int, size: int) -> Image.Image:
    """A crop of `image` with a caption strip underneath."""
    crop = Image.fromarray(image[top : top + size, left : left + size])
    canvas = Image.new("RGB", (size, size + CAPTION), "white")
    canvas.paste(crop, (0, 0))
    ImageDraw.Draw(canvas).text((4, size + 3), caption, fill="black")
    return canvas


def main() -> None:
    args = arguments()
    if not args.image.is_file():
        sys.exit(
            f"error: {args.image}: no such image (pass --image; ../shared/data holds the benchmark sets)"
        )
    hr = modcrop(read_rgb(args.image), args.scale)
    lr = mma.imresize(hr, 1 / args.scale)
    try:
        ours = mma.upscale(lr, args.scale, args.model)
    except MMAError as exc:
        sys.exit(f"error: {exc}")
    bicubic = mma.imresize(lr, args.scale)
    pixelated = np.repeat(np.repeat(lr, args.scale, axis=0), args.scale, axis=1)

    size = min(args.crop, hr.shape[0], hr.shape[1])
    top, left = (hr.shape[0] - size) // 2, (hr.shape[1] - size) // 2

    def score(sr: np.ndarray) -> float:
        return psnr(sr, hr, args.scale)  # the paper's convention: Y channel, `scale` border pixels shaved

    panels = [
        panel(pixelated, f"input {lr.shape[1]}x{lr.shape[0]}", top, left, size),
        panel(bicubic, f"bicubic {score(bicubic):.2f} dB", top, left, size),
        panel(ours, f"MMA-T x{args.scale} {score(ours):.2f} dB", top, left, size),
        panel(hr, "original", top, left, size),
    ]
    figure = Image.new("RGB", (len(panels) * size, size + CAPTION), "white")
    for index, image in enumerate(panels):
        figure.paste(image, (index * size, 0))
    out = (
        args.out
        or Path(tempfile.mkdtemp(prefix="mma-before-after-")) / f"{args.image.stem}_x{args.scale}.png"
    )
    write_image(figure, out, overwrite=True)
    print(
        f"{args.image.name} x{args.scale}: bicubic {score(bicubic):.2f} dB, MMA-T {score(ours):.2f} dB -> {out}"
    )


if __name__ == "__main__":
    main()
