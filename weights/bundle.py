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
scores.json, without evaluating again and without touching the weights or config.json. scores.json holds
every number and statement of the card that the run's files do not (the measured scores, the hardware, the
batch-and-patch words), so a card is always rendered from data, never read back from its own Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import pairwise
from pathlib import Path

import torch

from mma.evaluate import DatasetResult, ImageScore, bicubic_upscaler, evaluate_dataset
from mma.fileio import atomic_write
from mma.model import MMAConfig
from mma.train.branch import RELEASE_LOGS as RELEASE
from mma.train.logs import TRAIN_LOG, VAL_LOG, LogRow, read_train_log
from mma.train.loop import EMA_FILE
from mma.weights import load_checkpoint, model_from_file
from mma.weights.hub import save_pretrained
from mma.weights.registry import BUNDLED_DIR, SCORES_NAME

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SETS = ("Set5", "Set14")
# Published PSNR (dB) on (Set5, Set14) per scale: the project's minimum (FSRCNN), its aim (VDSR, the same 291
# images) and the paper's MMA-T (DF2K, 8 GPUs).
REFERENCES = {
    "FSRCNN": {2: (37.05, 32.66), 3: (33.18, 29.37), 4: (30.72, 27.61)},
    "VDSR, same 291 images (the aim)": {2: (37.53, 33.03), 3: (33.66, 29.77), 4: (31.35, 28.01)},
    "MMA-T, paper (DF2K, 8 GPUs)": {2: (38.17, 33.96), 3: (34.57, 30.45), 4: (32.50, 28.80)},
}
MINIMUM = "FSRCNN"
OURS_ROW, BICUBIC_ROW, HARDWARE_ROW = "**this model**", "bicubic", "hardware"


RELEASE_FILES = ("config.json", TRAIN_LOG, VAL_LOG)


def read_log(run: Path) -> list[LogRow]:
    """The rows of the run's train_log.csv (one every `log_every` iterations, across every resume); for a
    main run whose decay branch was bundled, the branch's (kept in `release/`)."""
    return read_train_log(run / RELEASE if (run / RELEASE / TRAIN_LOG).is_file() else run)


def keep_release_logs(branch: Path, main_run: Path) -> None:
    """A bundled decay branch lives outside the repository: its logs go to `main_run/release/`, so that the
    card can be rendered again and weights/TRAINING.md can point at them."""
    if branch.resolve() == main_run.resolve():
        return
    target = main_run / RELEASE
    target.mkdir(parents=True, exist_ok=True)
    for name in RELEASE_FILES:
        if (branch / name).is_file():
            data = (branch / name).read_bytes()
            atomic_write(target / name, lambda tmp, data=data: tmp.write_bytes(data))


def training_hours(rows: list[LogRow]) -> float:
    """Training time from the log: every row covers the steps since the previous one at the logged speed."""
    total, previous = 0.0, 0
    for row in rows:
        iteration = int(row["iteration"])
        total += (iteration - previous) / float(row["iters_per_s"])
        previous = iteration
    return total / 3600


def lr_summary(rows: list[LogRow]) -> str:
    """The learning rate as the run used it, in one sentence: a resumed run with a longer schedule goes back
    up, which the configured milestones alone would hide; every value is in the run's train_log.csv."""
    rates = [float(row["lr"]) for row in rows]
    raised = [now for before, now in pairwise(rates) if now > before]
    text = f"{rates[0]:.3g} at the start, {rates[-1]:.3g} at the end (lowest {min(rates):.3g})"
    if raised:
        times = "once" if len(raised) == 1 else f"{len(raised)} times"
        text += f"; raised again {times} (to at most {max(raised):.3g}) where a resume changed the schedule"
    return text


def row_batch(row: LogRow) -> int:
    """The batch a log row was trained at: its patches per second over its iterations per second."""
    return round(float(row["patches_per_s"]) / float(row["iters_per_s"]))


def batches(rows: list[LogRow]) -> list[tuple[int, int]]:
    """(batch, last iteration) of each stretch of one batch size, read off the log (patches/s over it/s)."""
    stretches: list[tuple[int, int]] = []
    for row in rows:
        batch = row_batch(row)
        if stretches and stretches[-1][0] == batch:
            stretches[-1] = (batch, int(row["iteration"]))
        else:
            stretches.append((batch, int(row["iteration"])))
    return stretches


def patches_seen(rows: list[LogRow]) -> int:
    """Training patches over the whole run: each row's steps times its batch."""
    total, previous = 0, 0
    for row in rows:
        iteration = int(row["iteration"])
        total += (iteration - previous) * row_batch(row)
        previous = iteration
    return total


def measure(model: torch.nn.Module | None, scale: int) -> list[DatasetResult]:
    """Set5 and Set14 at `scale`: the model's scores, or bicubic's when `model` is None."""
    if model is None:
        upscaler = bicubic_upscaler(scale)
    else:
        from mma.engine import paper_engine

        upscaler = paper_engine(model, scale=scale, device="cpu").upscale_array

    return [evaluate_dataset(DATA / name, scale, upscaler) for name in SETS]


def scores(
    ours: list[DatasetResult],
    bicubic: list[DatasetResult],
    scale: int,
    iterations: int,
    *,
    hardware: str | None = None,
    batch_and_patch: str | None = None,
) -> dict:
    """The measured quality in the form `mma models` reads (mma.weights.registry.SCORES_NAME), with what the
    card states beside it that the run's files do not say (hardware, batch and patch), so `--card-only`
    renders the card from this file alone."""
    stored = {
        "scale": scale,
        "iterations": iterations,
        "protocol": "mma eval: whole images, Y channel, border of `scale` pixels shaved, LR = MATLAB bicubic of "
        "the modcropped HR",
        "datasets": {
            r.name: {"psnr": r.psnr, "ssim": r.ssim, "bicubic_psnr": b.psnr, "bicubic_ssim": b.ssim}
            for r, b in zip(ours, bicubic)
        },
    }
    card_words = {"hardware": hardware, "batch_and_patch": batch_and_patch}
    return stored | {key: value for key, value in card_words.items() if value is not None}


def stored_results(stored: dict) -> tuple[list[DatasetResult], list[DatasetResult]]:
    """(ours, bicubic) from a scores.json, so `--card-only` renders the measured numbers without measuring."""

    def results(psnr: str, ssim: str) -> list[DatasetResult]:
        scale = int(stored["scale"])
        return [
            DatasetResult(
                name,
                scale,
                (ImageScore(name, stored["datasets"][name][psnr], stored["datasets"][name][ssim], 0.0),),
            )
            for name in SETS
        ]

    return results("psnr", "ssim"), results("bicubic_psnr", "bicubic_ssim")


def cell(result: DatasetResult) -> str:
    return f"{result.psnr:.2f} / {result.ssim:.4f}"


def batch_and_patch(recipe: dict, log: list[LogRow], given: str | None) -> str:
    """The card's words for batch and LR patch: `given`, else the weights' recipe, which holds for the whole
    run only when the log shows one batch size throughout (else ValueError: the card would misstate it)."""
    if given:
        return given
    stretches = batches(log)
    if len(stretches) > 1:
        changes = ", ".join(f"{batch} to iteration {end}" for batch, end in stretches)
        raise ValueError(f"the batch changed during the run ({changes}): say how with --recipe")
    return f"batch {recipe['batch']}, LR patch {recipe['patch']}x{recipe['patch']}"


def card(
    meta: dict,
    scale: int,
    ours: list[DatasetResult],
    bicubic: list[DatasetResult],
    log: list[LogRow],
    hardware: str,
    recipe_text: str | None = None,
) -> str:
    """The model card (README.md) of a bundled model, for the people who install the wheel. Only the log up
    to the bundled iteration counts: the run may have gone on since. `recipe_text` states batch and patch
    where they changed during the run (the weights' metadata hold the last stretch's only)."""
    log = [row for row in log if int(row["iteration"]) <= int(meta["iterations"])]
    recipe, data, variant = meta["recipe"], meta["data"], meta["variant"]
    recipe_text = batch_and_patch(recipe, log, recipe_text)
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
| data | {" + ".join(data["folders"])} HR images: {data["held_out_for_validation"]} held out for validation, the rest for training ({data["images"]} of them large enough for the final LR patch); LR made with MATLAB-compatible bicubic (`mma.imresize`) |
| recipe | L1 loss, Adam {tuple(recipe["betas"])}, {recipe_text}, random flips and rotations, EMA {recipe["ema"]} with warm-up, seed {recipe["seed"]} |
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
- Far less training than the paper's: {meta["iterations"]} iterations, {patches_seen(log) / 1e3:.0f}K LR patches in all, on 291 images
  (hardware above), against 800K iterations of ImageNet pre-training and 250K of DF2K fine-tuning at batch
  64 (67M patches). That is why it scores below the paper's MMA-T.
- The training images (T91; BSDS200 from the Berkeley Segmentation Dataset) are research data sets; check
  their terms before commercial use of models trained on them.
"""


def _rewrite_card(run: Path, hardware: str | None, recipe_text: str | None) -> None:
    """--card-only: the bundled model of `run` gets a card in the current template, rendered from its
    scores.json (whose hardware and batch-and-patch words `hardware` and `recipe_text` replace when given)."""
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    target = BUNDLED_DIR / f"{config['variant']}-x{config['scale']}"
    _, meta = load_checkpoint(target / "model.safetensors")
    stored = json.loads((target / SCORES_NAME).read_text(encoding="utf-8"))
    stored["hardware"] = hardware or stored.get("hardware")
    stored["batch_and_patch"] = recipe_text or stored.get("batch_and_patch")
    for key, option in (("hardware", "--hardware"), ("batch_and_patch", "--recipe")):
        if not stored[key]:
            sys.exit(f"error: {target / SCORES_NAME} has no {key}: give it with {option}")
    ours, bicubic = stored_results(stored)
    text = card(
        meta, meta["scale"], ours, bicubic, read_log(run), stored["hardware"], stored["batch_and_patch"]
    )
    atomic_write(target / "README.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    updated = json.dumps(stored, indent=2) + "\n"
    atomic_write(target / SCORES_NAME, lambda tmp: tmp.write_text(updated, encoding="utf-8"))
    print(target / "README.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="training run directory (holds ema.safetensors)")
    parser.add_argument(
        "--hardware",
        help="what the run was trained on, for the card (required unless "
        "--card-only, which keeps the one in scores.json by default)",
    )
    parser.add_argument(
        "--recipe",
        help="batch and LR patch as the card should state them, needed when they changed during the run "
        "(e.g. 'batch 16 with LR patch 48x48 to iteration 4727, then batch 32 with 64x64')",
    )
    parser.add_argument(
        "--card-only",
        action="store_true",
        help="rewrite the bundled model's card from its scores.json: no evaluation, weights and config.json "
        "untouched",
    )
    args = parser.parse_args()
    if args.card_only:
        _rewrite_card(args.run, args.hardware, args.recipe)
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
    # the run's own log: a decay branch may hold a copy of its main run's `release/` from an earlier release
    log = [row for row in read_train_log(args.run) if int(row["iteration"]) <= int(meta["iterations"])]
    try:  # before anything is written
        recipe_text = batch_and_patch(meta["recipe"], log, args.recipe)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    target = BUNDLED_DIR / f"{meta['variant']}-x{scale}"
    provenance = {k: meta[k] for k in ("trained_with", "data", "iterations", "recipe") if k in meta}
    save_pretrained(model, target, **provenance)

    ours, bicubic = measure(model, scale), measure(None, scale)
    text = card(meta, scale, ours, bicubic, log, args.hardware, recipe_text)
    atomic_write(target / "README.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    stored = scores(
        ours, bicubic, scale, meta["iterations"], hardware=args.hardware, batch_and_patch=recipe_text
    )
    measured = json.dumps(stored, indent=2) + "\n"
    atomic_write(target / SCORES_NAME, lambda tmp: tmp.write_text(measured, encoding="utf-8"))
    keep_release_logs(args.run, REPO / "weights" / "training" / target.name)
    print(f"{target}:\n{measured}", end="")


if __name__ == "__main__":
    main()
