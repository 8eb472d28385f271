"""Before and after on a real photo: bicubic, the bundled MMA-T and the original, zoomed where they differ.

    python examples/before_after.py                                   # Set14 comic.png, x4, temporary folder
    python examples/before_after.py --image ../shared/data/Set5/HR/butterfly.png --scale 2 --out bf.png
    python examples/before_after.py --out docs/images/before_after.webp   # the README's opening figure

The photo is shrunk with MATLAB-compatible bicubic (`mma.imresize`), then brought back by bicubic and by the
bundled MMA-T; the figure (`mma.report.compare.compare_image`, as `mma compare --hr` draws it) shows the three
whole and a window of each enlarged, with PSNR / SSIM on Y against the original. Beside the figure goes a JSON
file of its numbers and the sha256 of the weights that made it: a test compares that with the bundled
weights, so the README's figure is made again whenever they change (run the third command above).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mma.api import load_model, write_image
from mma.errors import MMAError
from mma.metrics import psnr, ssim
from mma.report.compare import compare_image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", type=Path, default=DATA / "Set14" / "HR" / "comic.png")
    parser.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    parser.add_argument("--model", default="mma-t", help="registry name, weights file or Hub repo id")
    parser.add_argument("--width", type=int, default=250, help="width of each column, pixels (at least 200)")
    parser.add_argument("--zoom", type=int, default=64, help="side of the enlarged window, HR pixels")
    parser.add_argument("--out", type=Path, help="figure path, .png or .webp (default: a temporary folder)")
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if not args.image.is_file():
        sys.exit(
            f"error: {args.image}: no such image (pass --image; ../shared/data holds the benchmark sets)"
        )
    try:
        weights = load_model(args.model, args.scale, device="cpu")
        figure = compare_image(
            args.image, args.scale, [args.model], hr=True, zoom=args.zoom, column=args.width, device="cpu"
        )
    except MMAError as exc:
        sys.exit(f"error: {exc}")
    bicubic, ours, truth = (panel.image for panel in figure.panels)
    scores = {
        name: {"psnr": round(psnr(sr, truth, args.scale), 3), "ssim": round(ssim(sr, truth, args.scale), 4)}
        for name, sr in (("bicubic", bicubic), (args.model, ours))
    }
    out = (
        args.out
        or Path(tempfile.mkdtemp(prefix="mma-before-after-")) / f"{args.image.stem}_x{args.scale}.png"
    )
    write_image(figure.image, out, overwrite=True, quality=90)
    record = {
        "image": args.image.name,
        "scale": args.scale,
        "model": args.model,
        "weights_sha256": weights.sha256,
        "zoom": dict(zip(("x", "y", "size"), figure.crop)),
        "scores": scores,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(
        f"{args.image.name} x{args.scale}: bicubic {scores['bicubic']['psnr']:.2f} dB, "
        f"MMA-T {scores[args.model]['psnr']:.2f} dB -> {out}"
    )


if __name__ == "__main__":
    main()
