"""Training configuration: the paper's presets, preset < file < flags, milestone rescaling, schedules, the
committed runs' configurations, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mma.errors import ConfigError
from mma.train.config import (
    PROVENANCE_FIELDS,
    RECIPE_FIELDS,
    SCHEDULE_FIELDS,
    TrainConfig,
    build_config,
    recipe_changes,
)
from mma.train.presets import DESCRIPTIONS, PRESETS


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_paper_presets_follow_section_4_1(scale: int) -> None:
    pre = build_config(f"pretrain-x{scale}")
    fine = build_config(f"finetune-x{scale}")
    for cfg in (pre, fine):
        assert (cfg.scale, cfg.batch, cfg.patch, cfg.betas, cfg.ema, cfg.gamma) == (
            scale,
            64,
            64,
            (0.9, 0.99),
            0.999,
            0.5,
        )
    assert (pre.iters, pre.lr, pre.milestones) == (
        800_000,
        2e-4,
        (300_000, 500_000, 650_000, 700_000, 750_000),
    )
    assert (fine.iters, fine.lr, fine.milestones) == (250_000, 1e-5, (125_000, 200_000, 225_000, 240_000))


def test_every_preset_builds_and_is_described() -> None:
    assert set(DESCRIPTIONS) == set(PRESETS)
    for name in PRESETS:
        cfg = build_config(name)
        assert all(m < cfg.iters for m in cfg.milestones) and cfg.out == f"runs/{name}"
    small = build_config("cpu-small")
    assert small.variant == "mma-t" and small.batch <= 16 and small.val_split > 0
    opened = build_config("cpu-open")  # cpu-small as an open-ended main run
    assert (opened.schedule, opened.lr, opened.warmup, opened.milestones) == ("constant", 2.5e-4, 500, ())
    assert (opened.batch, opened.patch, opened.val_split) == (small.batch, small.patch, small.val_split)


def test_flags_override_the_file_which_overrides_the_preset(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text(
        'preset = "cpu-small"\nbatch = 8\nlr = 1e-3\ntrain = ["a", "b"]\n[model]\nnum_block = 3\n'
    )
    cfg = build_config(file=file, overrides={"lr": 3e-4, "scale": 3, "model": {"num_feat": 24}, "seed": None})
    assert (cfg.batch, cfg.lr, cfg.scale, cfg.train) == (8, 3e-4, 3, ("a", "b"))
    assert cfg.model == {"num_block": 3, "num_feat": 24}
    assert cfg.seed == PRESETS["cpu-small"].get("seed", 0)  # None means "not given"


def test_new_iters_rescale_the_milestones_unless_given() -> None:
    cfg = build_config("pretrain-x2", overrides={"iters": 8000})
    assert cfg.milestones == (3000, 5000, 6500, 7000, 7500)
    cfg = build_config("pretrain-x2", overrides={"iters": 8000, "milestones": [100]})
    assert cfg.milestones == (100,)


def test_a_resumed_run_keeps_its_milestones_when_it_gets_longer() -> None:
    """A saved run's milestones are iterations it has passed: a longer run continues the curve."""
    saved = build_config("cpu-small", overrides={"iters": 4000})
    assert saved.milestones == (2000, 3000, 3600, 3800)
    longer = build_config(overrides={"iters": 6000}, base=saved)
    assert longer.milestones == saved.milestones and longer.iters == 6000
    assert recipe_changes(saved, longer, at=4000) == []
    moved = build_config(overrides={"iters": 6000, "milestones": [3000, 5000]}, base=saved)
    assert moved.milestones == (3000, 5000) and recipe_changes(saved, moved, at=4000) == ["milestones"]


def test_committed_runs_configurations_still_load() -> None:
    """Runs saved before the schedule options existed are step-decay runs with their own milestones."""
    files = sorted(Path(__file__).parents[1].glob("weights/training/*/config.json"))
    assert files
    old = 0
    for file in files:
        raw = json.loads(file.read_text())
        cfg = TrainConfig.from_dict(raw)
        if "schedule" in raw:  # continued since with the schedule options
            continue
        old += 1
        assert (cfg.schedule, cfg.warmup, cfg.decay_start, cfg.decay_iters) == ("multistep", 0, None, 0)
        assert cfg.lr_schedule.lr_at(cfg.iters) == cfg.lr * cfg.gamma ** len(cfg.milestones)
    assert old  # the ablation run at least is still in the old format


def test_schedule_options_build_the_schedule_and_are_recorded() -> None:
    cfg = build_config("cpu-tiny", overrides={"schedule": "constant", "warmup": 10, "lr": 1e-3})
    assert cfg.lr_schedule.lr_at(4) == pytest.approx(5e-4) and cfg.lr_schedule.lr_at(10**6) == 1e-3
    assert set(SCHEDULE_FIELDS) <= set(RECIPE_FIELDS) and set(SCHEDULE_FIELDS) <= set(PROVENANCE_FIELDS)
    assert set(RECIPE_FIELDS + PROVENANCE_FIELDS) <= set(cfg.to_dict())
    assert not {"variant", "scale", "model", "train"} & set(PROVENANCE_FIELDS)  # metadata of their own


@pytest.mark.parametrize(
    "bad",
    [
        {"scale": 5},
        {"variant": "mma-x"},
        {"batch": 0},
        {"patch": -1},
        {"lr": 0.0},
        {"milestones": [5, 3]},
        {"ema": 1.0},
        {"betas": [0.9]},
        {"seed": -1},
        {"iters": 2.5},
        {"schedule": "cosine"},
        {"warmup": -5},
        {"decay_start": 100},
        {"decay_start": 100, "decay_iters": 50, "iters": 151},  # past the end of the branch
        {"model": {"num_feats": 8}},  # the network's own checks apply
        {"model": {"mixer": "attention"}},
    ],
)
def test_invalid_values_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        build_config("cpu-tiny", overrides=bad)


def test_unknown_keys_presets_and_broken_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown training option"):
        TrainConfig.from_dict({"bacth": 4})
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("pretrain-x8")
    broken = tmp_path / "broken.toml"
    broken.write_text("batch = = 4")
    with pytest.raises(ConfigError, match="invalid TOML"):
        build_config(file=broken)
    with pytest.raises(ConfigError, match="cannot read"):
        build_config(file=tmp_path / "absent.toml")


def test_config_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    cfg = build_config("cpu-tiny", overrides={"train": ["x"], "model": {"num_block": 1}})
    torch.save({"config": cfg.to_dict()}, tmp_path / "c.pt")
    assert TrainConfig.from_dict(torch.load(tmp_path / "c.pt", weights_only=True)["config"]) == cfg


def test_recipe_changes_name_the_fields_that_break_exact_resume() -> None:
    cfg = build_config("cpu-tiny")
    assert recipe_changes(cfg, cfg.replace(iters=10_000, milestones=[5000], out="x", val_every=7)) == [
        "milestones"
    ]
    assert recipe_changes(cfg, cfg.replace(scale=4, seed=3)) == ["scale", "seed"]
