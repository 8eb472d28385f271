"""Shrink training states for a trip to the GPU machine, and make them whole there.

Why: a job on the project's GPU machine carries at most 64 MiB with the working tree. The training images
take 41 MB as lossless WebP (benchmarks/pack_data.py), and three full training states take 43 MB, so the
states travel shrunk to about half:
- the EMA weights exactly (float32): they are what a release ships;
- the raw weights as their difference from the EMA in bfloat16 (the difference is small, so the rounding
  is far below the step Adam takes);
- Adam's second moments in bfloat16 (the scale of each step); the first moments are left out and restart
  at zero, which Adam rebuilds within a few tens of steps (beta1 = 0.9), with the step count kept.
Everything else (iteration, recipe, validations, random-generator states) travels as it is. `unpack`
writes a regular `state.ckpt` that `mma train --resume` reads, plus the run's `ema.safetensors`. The run
goes on from the same point, not bit for bit: GPU training is not bit-reproducible anyway.

    python benchmarks/pack_state.py pack .devdata/states weights/training/mma-t-x2 ...   # here
    python benchmarks/pack_state.py unpack .devdata/states weights/training              # on the GPU machine
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from mma.train.state import STATE_FILE, load_state, save_state

TRIP_FORMAT = "mma-train-state-trip"
SUFFIX = ".trip.pt"


def shrink(state: dict[str, Any]) -> dict[str, Any]:
    """The trip form of a training state (see the module docstring)."""
    ema = state["ema"]
    delta = {
        name: (tensor - ema[name]).to(torch.bfloat16) if tensor.is_floating_point() else tensor
        for name, tensor in state["model"].items()
    }
    moments = {
        index: {"step": entry["step"], "exp_avg_sq": entry["exp_avg_sq"].to(torch.bfloat16)}
        for index, entry in state["optimizer"]["state"].items()
    }
    trip = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
    trip["format"] = TRIP_FORMAT
    trip["model_minus_ema"] = delta
    trip["optimizer"] = {"state": moments, "param_groups": state["optimizer"]["param_groups"]}
    return trip


def grow(trip: dict[str, Any]) -> dict[str, Any]:
    """A training state from its trip form: raw weights = EMA + difference, first moments at zero."""
    ema = trip["ema"]
    model = {
        name: ema[name] + delta.float() if delta.is_floating_point() else delta
        for name, delta in trip["model_minus_ema"].items()
    }
    moments = {
        index: {
            "step": entry["step"],
            "exp_avg": torch.zeros_like(entry["exp_avg_sq"], dtype=torch.float32),
            "exp_avg_sq": entry["exp_avg_sq"].float(),
        }
        for index, entry in trip["optimizer"]["state"].items()
    }
    state = {k: v for k, v in trip.items() if k not in ("model_minus_ema", "optimizer", "format", "version")}
    state["model"] = model
    state["optimizer"] = {"state": moments, "param_groups": trip["optimizer"]["param_groups"]}
    return state


def pack(target: Path, runs: list[Path]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for run in runs:
        path = target / f"{run.name}{SUFFIX}"
        torch.save(shrink(load_state(run / STATE_FILE)), path)
        before = (run / STATE_FILE).stat().st_size
        print(f"{run}: {before / 1e6:.1f} MB -> {path} {path.stat().st_size / 1e6:.1f} MB")


def unpack(source: Path, runs_root: Path) -> None:
    from mma.model import MMA, MMAConfig
    from mma.train.export import export_weights

    for path in sorted(source.glob(f"*{SUFFIX}")):
        trip = torch.load(path, map_location="cpu", weights_only=True)
        if trip.get("format") != TRIP_FORMAT:
            raise SystemExit(f"error: {path} is not a packed training state")
        run = runs_root / path.name.removesuffix(SUFFIX)
        run.mkdir(parents=True, exist_ok=True)
        state = grow(trip)
        save_state(run / STATE_FILE, state)
        model = MMA(MMAConfig.from_dict(state["model_config"]))
        model.load_state_dict(state["ema"])
        export_weights(model, run / "ema.safetensors", iterations=state["iteration"])
        print(f"{path} -> {run}/{STATE_FILE}, ema.safetensors (iteration {state['iteration']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="shrink the runs' states into TARGET")
    packing.add_argument("target", type=Path)
    packing.add_argument("runs", nargs="+", type=Path)
    unpacking = commands.add_parser("unpack", help="write state.ckpt and ema.safetensors under RUNS_ROOT")
    unpacking.add_argument("source", type=Path)
    unpacking.add_argument("runs_root", type=Path)
    opts = parser.parse_args()
    if opts.command == "pack":
        pack(opts.target, opts.runs)
    else:
        unpack(opts.source, opts.runs_root)


if __name__ == "__main__":
    main()
