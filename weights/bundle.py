"""Put a finished training run into the package: its EMA weights as a Hub-layout folder, measured, with a card.

    python weights/bundle.py weights/training/mma-t-x2 --hardware "2-vCPU AMD EPYC VM, CPU only"
    python weights/bundle.py weights/training/mma-t-x2 --card-only     # rewrite the card alone

Writes mma/weights/bundled/<variant>-x<scale>/{model.safetensors, config.json, README.md, scores.json}: the
weights with their training provenance, the network's config, the measured scores for `mma models`, and a
model card whose quality table is measured here with
the paper's protocol (`mma.evaluate`: whole images, Y channel, border of `scale` pixels shaved) on Set5 and
Set14 from ../shared/data. Nothing is selected on those sets: the run's final EMA weights are what ships.

The card is for the wheel's users: what the model is, its data, recipe and hardware, the measured scores and
the commands that reproduce them. Forecasts and development notes (what more training would buy, how each
resume went) belong in weights/TRAINING.md, which is where to write them. `--card-only` re-renders the card
of an already bundled model from its stored provenance, the run's log and the scores (and hardware) the
current card states, without evaluating again and without touching the weights or config.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from itertools import pairwise
from pathlib import Path

import torch

from mma.evaluate import DatasetResult, ImageScore, bicubic_upscaler, evaluate_dataset
from mma.fileio import atomic_write
from mma.model import MMAConfig
from mma.train.loop import EMA_FILE
from mma.weights import load_checkpoint, model_from_file
from mma.weights.hub import save_pretrained
from mma.weights.registry import BUNDLED_DIR, SCORES_NAME

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SETS = ("Set5", "Set14")
# Published PSNR (dB) on (Set5, Set14) per scale: the bar (FSRCNN), aim (VDSR, the same 291 images)
# and the paper's MMA-T (DF2K, 8 GPUs).
REFERENCES = {
    "FSRCNN (the bar to clear)": {2: (37.05, 32.66), 3: (33.18, 29.37), 4: (30.72, 27.61)},
    "VDSR, same 291 images (the aim)": {2: (37.53, 33.03), 3: (33.66, 29.77), 4: (31.35, 28.01)},
    "MMA-T, paper (DF2K, 8 GPUs)": {2: (38.17, 33.96), 3: (34.57, 30.45), 4: (32.50, 28.80)},
}
MINIMUM = "FSRCNN (the bar to clear)"
OURS_ROW, BICUBIC_ROW, HARDWARE_ROW = "**this model**", "bicubic", "hardware"


def read_log(run: Path) -> list[dict[str, str]]:
    """The rows of the run's train_log.csv (one every `log_every` iterations, across every resume)."""
    with (run / "train_log.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def training_hours(rows: list[dict[str, str]]) -> float:
    """Training time from the log: every row covers the steps since the previous one at the logged speed."""
    total, previous = 0.0, 0
    for row in rows:
        iteration = int(row["iteration"])
        total += (iteration - previous) / float(row["iters_per_s"])
        previous = iteration
    return total / 3600


def lr_summary(rows: list[dict[str, str]]) -> str:
    """The learning rate as the run used it, in one sentence: a resumed run with a longer schedule goes back
    up, which the configured milestones alone would hide; every value is in the run's train_log.csv."""
    rates = [float(row["lr"]) for row in rows]
    raised = [now for before, now in pairwise(rates) if now > before]
    text = f"{rates[0]:.3g} at the start, {rates[-1]:.3g} at the end (lowest {min(rates):.3g})"
    if raised:
        times = "once" if len(raised) == 1 else f"{len(raised)} times"
        text += f"; raised again {times} (to at most {max(raised):.3g}) where a resume extended the schedule"
    return text


def measure(model: torch.nn.Module | None, scale: int) -> list[DatasetResult]:
    """Set5 and Set14 at `scale`: the model's scores, or bicubic's when `model` is None."""
    if model is None:
        upscaler = bicubic_upscaler(scale)
    else:
        from mma.engine import paper_engine

        upscaler = paper_engine(model, scale=scale, device="cpu").upscale_array

    return [evaluate_dataset(DATA / name, scale, upscaler) for name in SETS]


def scores(ours: list[DatasetResult], bicubic: list[DatasetResult], scale: int, iterations: int) -> dict:
    """The measured quality in the form `mma models` reads (mma.weights.registry.SCORES_NAME)."""
    return {
        "scale": scale,
        "iterations": iterations,
        "protocol": "mma eval: whole images, Y channel, border of `scale` pixels shaved, LR = MATLAB bicubic of "
        "the modcropped HR",
        "datasets": {
            r.name: {"psnr": r.psnr, "ssim": r.ssim, "bicubic_psnr": b.psnr, "bicubic_ssim": b.ssim}
            for r, b in zip(ours, bicubic)
        },
    }


def cell(result: DatasetResult) -> str:
    return f"{result.psnr:.2f} / {result.ssim:.4f}"


def card(
    meta: dict,
    scale: int,
    ours: list[DatasetResult],
    bicubic: list[DatasetResult],
    log: list[dict[str, str]],
    hardware: str,
) -> str:
    """The model card (README.md) of a bundled model, for the people who install the wheel. Only the log up
    to the bundled iteration counts: the run may have gone on since."""
    log = [row for row in log if int(row["iteration"]) <= int(meta["iterations"])]
    recipe, data, variant = meta["recipe"], meta["data"], meta["variant"]
    run = f"weights/training/{variant}-x{scale}"
    init = recipe.get("init")
    start = (
        f"`{Path(init).name}`, earlier weights of this project (weights/TRAINING.md in the repository)"
        if init
        else "random initialisation"
    )
    minimum = REFERENCES[MINIMUM][scale]
    short = [
        f"{name} ({ours[i].psnr:.2f} < {minimum[i]:.2f})"
        for i, name in enumerate(SETS)
        if ours[i].psnr < minimum[i]
    ]
    verdict = (
        "It clears the FSRCNN row on both sets."
        if not short
        else "It does not clear the FSRCNN row on " + ", ".join(short) + "."
    )
    rows = [
        f"| {BICUBIC_ROW} | {cell(bicubic[0])} | {cell(bicubic[1])} |",
        f"| {OURS_ROW} | **{cell(ours[0])}** | **{cell(ours[1])}** |",
    ]
    rows += [
        f"| {name} | {values[scale][0]:.2f} | {values[scale][1]:.2f} |" for name, values in REFERENCES.items()
    ]
    table = "\n".join(rows)
    return f"""---
license: mit
library_name: mma-sr
tags: [super-resolution, mamba, image-upscaling]
---

# MMA-T x{scale}, trained by mma-sr

The MMA-T network of *MMA: Meets More Areas for efficient image super-resolution* (Vision Mamba with channel
attention; the published configuration, the authors' parameter names), upscaling x{scale}. These weights were
trained by the mma-sr project and ship inside the `mma-sr` wheel, so they work offline:

```bash
mma upscale photo.png --scale {scale}
```

```python
import mma
image = mma.upscale("photo.png", scale={scale})
```

## Training

| | |
|---|---|
| data | {" + ".join(data["folders"])} HR images: {data["images"]} for training after holding out {data["held_out_for_validation"]} for validation; LR made with MATLAB-compatible bicubic (`mma.imresize`) |
| recipe | L1 loss, Adam {tuple(recipe["betas"])}, batch {recipe["batch"]}, LR patch {recipe["patch"]}x{recipe["patch"]}, random flips and rotations, EMA {recipe["ema"]} with warm-up, seed {recipe["seed"]} |
| learning rate | {lr_summary(log)} |
| start | {start} |
| iterations | {meta["iterations"]} |
| {HARDWARE_ROW} | {hardware} |
| training time | {training_hours(log):.1f} hours |

## Quality

PSNR (dB) / SSIM measured with `mma eval` conventions: whole images, Y channel, {scale} border pixels shaved,
LR made from the modcropped HR image with MATLAB bicubic. The benchmark sets were only measured, never used
to choose anything; the final EMA weights of the run are what ships.

| x{scale} | Set5 | Set14 |
|---|---|---|
{table}

{verdict}

## Reproducing

The scores, with the Set5 and Set14 folders of HR images at hand:

```bash
mma eval Set5 Set14 --scale {scale} --model {variant}
```

The training run is in the mma-sr repository:
`{run}/` holds its configuration, logs and resumable state, and weights/TRAINING.md lists each
stretch of training with its schedule and hardware. To continue it and ship the result with a freshly
measured card:

```bash
mma train --resume --out {run}
python weights/bundle.py {run} --hardware "..."
```

## Limitations

- Trained on bicubic downscaling only: photos with noise, JPEG artefacts or camera blur are not what it
  learned to undo, and it will sharpen those too.
- Far less training than the paper's: {meta["iterations"]} iterations at batch {recipe["batch"]} on 291 images (hardware above),
  against 800K iterations of ImageNet pre-training and 250K of DF2K fine-tuning at batch 64. That is why it
  scores below the paper's MMA-T.
- The training images (T91; BSDS200 from the Berkeley Segmentation Dataset) are research data sets; check
  their terms before commercial use of models trained on them.
"""


def _table_row(text: str, label: str) -> list[str]:
    """The cells after `label` in the card's first table row that starts with it."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells[1:]
    raise ValueError(f"the card has no '{label}' row")


def stated_scores(text: str, scale: int) -> tuple[list[DatasetResult], list[DatasetResult]]:
    """(ours, bicubic) as a card states them, so `--card-only` renders the same numbers without measuring."""

    def results(label: str) -> list[DatasetResult]:
        found = []
        for name, value in zip(SETS, _table_row(text, label)):
            psnr, ssim = (float(part) for part in re.findall(r"[\d.]+", value))
            found.append(DatasetResult(name, scale, (ImageScore(name, psnr, ssim, 0.0),)))
        return found

    return results(OURS_ROW), results(BICUBIC_ROW)


def _rewrite_card(run: Path, hardware: str | None) -> None:
    """--card-only: the bundled model of `run` gets a card in the current template, its numbers unchanged."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    target = BUNDLED_DIR / f"{config['variant']}-x{config['scale']}"
    _, meta = load_checkpoint(target / "model.safetensors")
    old = (target / "README.md").read_text(encoding="utf-8")
    ours, bicubic = stated_scores(old, meta["scale"])
    hardware = hardware or _table_row(old, HARDWARE_ROW)[0]
    text = card(meta, meta["scale"], ours, bicubic, read_log(run), hardware)
    atomic_write(target / "README.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    print(target / "README.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="training run directory (holds ema.safetensors)")
    parser.add_argument(
        "--hardware",
        help="what the run was trained on, for the card (required unless "
        "--card-only, which keeps the card's line by default)",
    )
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="rewrite the bundled model's card from "
        "the scores it states: no evaluation, weights and config.json untouched",
    )
    args = parser.parse_args()
    if args.card_only:
        _rewrite_card(args.run, args.hardware)
        return
    if not args.hardware:
        parser.error("--hardware is required (what the run was trained on, for the card)")

    weights = args.run / EMA_FILE
    _, meta = load_checkpoint(weights)
    model = model_from_file(weights).eval()
    scale = model.scale
    if model.config != MMAConfig.named(meta["variant"], scale):
        sys.exit(
            f"error: {weights} is not the published {meta['variant']} x{scale} configuration; only those ship"
        )
    target = BUNDLED_DIR / f"{meta['variant']}-x{scale}"
    provenance = {k: meta[k] for k in ("trained_with", "data", "iterations", "recipe") if k in meta}
    save_pretrained(model, target, **provenance)

    ours, bicubic = measure(model, scale), measure(None, scale)
    text = card(meta, scale, ours, bicubic, read_log(args.run), args.hardware)
    atomic_write(target / "README.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    measured = json.dumps(scores(ours, bicubic, scale, meta["iterations"]), indent=2) + "\n"
    atomic_write(target / SCORES_NAME, lambda tmp: tmp.write_text(measured, encoding="utf-8"))
    print(f"{target}:\n{measured}", end="")


if __name__ == "__main__":
    main()
