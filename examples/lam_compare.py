"""LAM of MMA-T next to its "w/ CNN" ablation on a Set14 image (the MMA paper's Figs. 4 and 7), with DI values.

    python examples/lam_compare.py                       # barbara.png, tablecloth window, x2
    python examples/lam_compare.py --model mma-t-x2.safetensors --cnn-model mma-t-cnn-x2.safetensors

Writes a figure (columns: HR crop with the window | MMA-T | w/ CNN; rows: heat over the image, the heatmap
on the LAM papers' linear scale, the same on a log scale that shows the faint far reach) and a JSON file of
the DI values and of each map's reach (the distance from the window that holds 90% / 99% / 99.9% of it).
Both networks see the same LR crop, so the comparison is fair; a wider --crop lets the Vim branch reach
further, at one forward and backward pass per path step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mma import api
from mma.errors import MMAError
from mma.imaging.io import read_image, write_image
from mma.lam import LAMResult, analysis_input, heatmap_image, lam, overlay_image
from mma.lam.render import WINDOW_COLOUR, colorize
from mma.weights.checkpoint import atomic_write

REPO = Path(__file__).resolve().parents[1]
SET14 = REPO.parent / "shared" / "data" / "Set14" / "HR"
LABELS = {"vim+ca": "MMA-T", "vim": "w/o CA", "cnn+ca": "w/ CNN"}
CAPTION = 18  # pixels of text under each panel
PANEL = 256  # smallest panel side, pixels
DECADES = 4  # the log-scale heatmap spans 10^-4 .. 1 of the map's maximum
REACH_SHARES = (0.9, 0.99, 0.999)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--image", type=Path, default=SET14 / "barbara.png", help="HR image (shrunk by --scale)"
    )
    parser.add_argument("--x", type=int, default=160, help="window left, HR pixels")
    parser.add_argument("--y", type=int, default=330, help="window top, HR pixels")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--model", default="mma-t", help="MMA-T weights: registry name or file")
    parser.add_argument(
        "--cnn-model", help="'w/ CNN' weights (default: weights/training/mma-t-cnn-x<scale>/ema.safetensors)"
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument(
        "--crop", type=int, default=128, help="LR crop side around the window; 0 = whole image"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "lam_compare.png")
    return parser.parse_args()


def load(name: str, scale: int, device: str, role: str):
    """The network, or exit saying how to get it: the 'w/ CNN' weights are not shipped in the package."""
    try:
        return api.load_model(name, scale, device=device).network
    except MMAError as exc:
        sys.exit(
            f"error: {role} weights: {exc}\n"
            "Only x2 'w/ CNN' weights are committed (weights/training/mma-t-cnn-x2/ema.safetensors); "
            f"train others with `mma train --preset cpu-small --mixer cnn+ca --scale {scale} --data HR_DIR "
            "--export FILE` and pass --cnn-model FILE."
        )


def shown(name: str) -> str:
    """A weights name for the report: paths inside the repository relative to it."""
    path = Path(name).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else name


def panel(image: Image.Image, caption: str) -> Image.Image:
    """`image` with a caption strip underneath."""
    framed = Image.new("RGB", (image.width, image.height + CAPTION), "white")
    framed.paste(image, (0, 0))
    ImageDraw.Draw(framed).text((4, image.height + 3), caption, fill="black")
    return framed


def log_heatmap(attribution: np.ndarray, zoom: int) -> Image.Image:
    """|attribution| on a log scale over DECADES decades below its maximum: white below, dark red at the top."""
    magnitude = np.abs(attribution)
    peak = magnitude.max()
    levels = np.log10(np.maximum(magnitude / peak, 10.0**-DECADES)) / DECADES + 1 if peak > 0 else magnitude
    image = Image.fromarray(colorize(levels), mode="RGB")
    return image.resize((image.width * zoom, image.height * zoom), Image.Resampling.NEAREST)


def reach(result: LAMResult) -> dict[str, int]:
    """For each share in REACH_SHARES, the smallest distance (LR pixels, Chebyshev, 0 = inside the window)
    from the window within which that share of the total |attribution| lies."""
    magnitude = np.abs(result.attribution)
    left, top, right, bottom = (v // result.scale for v in result.box)
    rows, cols = np.indices(magnitude.shape)
    distance = np.maximum(
        np.maximum(top - rows, rows - (bottom - 1)).clip(min=0),
        np.maximum(left - cols, cols - (right - 1)).clip(min=0),
    ).ravel()
    order = np.argsort(distance, kind="stable")
    cumulative = np.cumsum(magnitude.ravel()[order]) / magnitude.sum()
    return {
        f"{share:.1%}": int(distance[order][min(np.searchsorted(cumulative, share), distance.size - 1)])
        for share in REACH_SHARES
    }


def figure(hr: Image.Image, box: tuple[int, int, int, int], results: dict[str, LAMResult]) -> Image.Image:
    """Row 1: the HR crop with the window, then each model's overlay; rows 2 and 3: each model's heatmap,
    linear and log scale.

    Panels are enlarged (nearest neighbour) to at least PANEL pixels so single input pixels stay visible.
    """
    zoom = max(1, -(-PANEL // hr.width))
    hr = hr.resize((hr.width * zoom, hr.height * zoom), Image.Resampling.NEAREST)
    marked = hr.copy()
    left, top, right, bottom = (zoom * v for v in box)
    ImageDraw.Draw(marked).rectangle([left, top, right - 1, bottom - 1], outline=WINDOW_COLOUR, width=2)
    blank = panel(Image.new("RGB", hr.size, "white"), "")
    rows = [[panel(marked, "HR, window")], [blank], [blank]]
    for label, result in results.items():
        rows[0].append(panel(overlay_image(result, hr), f"{label}  DI {result.diffusion_index:.2f}"))
        rows[1].append(panel(heatmap_image(result.attribution, zoom=result.scale * zoom), f"{label}, linear"))
        rows[2].append(
            panel(log_heatmap(result.attribution, result.scale * zoom), f"{label}, log (4 decades)")
        )
    width, height = blank.size
    sheet = Image.new("RGB", (width * len(rows[0]), len(rows) * height), "white")
    for row_index, row in enumerate(rows):
        for column, tile in enumerate(row):
            sheet.paste(tile, (column * width, row_index * height))
    return sheet


def main() -> None:
    args = arguments()
    cnn_name = args.cnn_model or str(
        REPO / "weights" / "training" / f"mma-t-cnn-x{args.scale}" / "ema.safetensors"
    )
    networks = {}
    for name, role in ((args.model, "MMA-T"), (cnn_name, "'w/ CNN'")):
        network = load(name, args.scale, args.device, role)
        config = getattr(network, "config", None)
        networks[LABELS.get(getattr(config, "mixer", ""), role)] = (name, network)
    try:
        pixels = np.asarray(read_image(args.image).convert("RGB"))
        analysed = analysis_input(
            pixels, args.x, args.y, args.window, args.scale, downscale=True, crop=args.crop
        )
    except MMAError as exc:
        sys.exit(f"error: {exc}")
    results: dict[str, LAMResult] = {}
    for label, (_, network) in networks.items():
        print(f"{label}: LAM over {args.steps} path steps ...", flush=True)
        results[label] = lam(
            network, analysed.lr, analysed.x, analysed.y, args.window, steps=args.steps, batch_size=args.batch
        )
        print(f"{label}: DI {results[label].diffusion_index:.2f}, reach {reach(results[label])}")
    hr = Image.fromarray(analysed.hr)
    box = next(iter(results.values())).box
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(figure(hr, box, results), args.out, overwrite=True)
    report = {
        "image": args.image.name,
        "window": {"x": args.x, "y": args.y, "size": args.window},
        "scale": args.scale,
        "crop": args.crop,
        "crop_origin_lr": analysed.origin,
        "steps": args.steps,
        "models": {
            label: {
                "weights": shown(name),
                "diffusion_index": round(results[label].diffusion_index, 3),
                "reach_lr_pixels": reach(results[label]),
                "completeness_gap": results[label].completeness_gap,
                "detector_gain": results[label].detector_gain,
            }
            for label, (name, _) in networks.items()
        },
    }
    json_path = args.out.with_suffix(".json")
    atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    print(f"figure: {args.out}\nDI values: {json_path}")


if __name__ == "__main__":
    main()
