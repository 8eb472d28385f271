"""weights/bundle.py writes model cards from the run's log and measurements: the card must say what happened."""

from __future__ import annotations

import json

import pytest

from mma.evaluate import DatasetResult, ImageScore


@pytest.fixture(scope="module")
def bundle(load_script):
    return load_script("weights/bundle.py")


META = {
    "variant": "mma-t",
    "recipe": {"betas": [0.9, 0.99], "batch": 16, "patch": 48, "ema": 0.999, "seed": 0},
    "data": {"folders": ["T91", "BSDS200"], "images": 267, "held_out_for_validation": 10},
    "iterations": 40,
}
# A run logged every 10 iterations, resumed at 20 with a longer schedule: the rate goes back up.
LOG = [
    {"iteration": "10", "lr": "0.0005", "iters_per_s": "0.5", "patches_per_s": "8.0"},
    {"iteration": "20", "lr": "0.00025", "iters_per_s": "0.25", "patches_per_s": "4.0"},
    {"iteration": "30", "lr": "0.0005", "iters_per_s": "0.5", "patches_per_s": "8.0"},
    {"iteration": "40", "lr": "0.0005", "iters_per_s": "0.5", "patches_per_s": "8.0"},
]
# The same run with its last stretch at batch 32 (0.4 it/s, 12.8 patches/s).
MIXED_LOG = [*LOG[:3], {"iteration": "40", "lr": "0.0005", "iters_per_s": "0.4", "patches_per_s": "12.8"}]


def _result(name: str, psnr: float) -> DatasetResult:
    return DatasetResult(name, 3, (ImageScore("a.png", psnr, 0.9, 0.1),))


def _card(bundle, set5: float, set14: float) -> str:
    ours = [_result("Set5", set5), _result("Set14", set14)]
    bicubic = [_result("Set5", 30.0), _result("Set14", 27.0)]
    return bundle.card(META, 3, ours, bicubic, LOG, "a test machine")


def test_log_gives_time_and_learning_rate_as_run(bundle) -> None:
    assert bundle.training_hours(LOG) == pytest.approx((10 / 0.5 + 10 / 0.25 + 10 / 0.5 + 10 / 0.5) / 3600)
    summary = bundle.lr_summary(LOG)
    assert summary.startswith("0.0005 at the start, 0.0005 at the end (lowest 0.00025)")
    assert "raised again once (to at most 0.0005)" in summary
    assert "raised" not in bundle.lr_summary(LOG[:2])


def test_log_gives_the_batch_of_each_stretch_and_the_patches_seen(bundle) -> None:
    assert bundle.batches(LOG) == [(16, 40)]
    assert bundle.batches(MIXED_LOG) == [(16, 30), (32, 40)]
    assert bundle.patches_seen(MIXED_LOG) == 30 * 16 + 10 * 32


def test_a_run_whose_batch_changed_needs_its_recipe_stated(bundle) -> None:
    ours = [_result("Set5", 33.5), _result("Set14", 29.5)]
    with pytest.raises(
        ValueError, match=r"batch changed during the run \(16 to iteration 30, 32 to iteration 40\)"
    ):
        bundle.card(META, 3, ours, ours, MIXED_LOG, "a test machine")
    stated = "batch 16 with LR patch 48x48 to iteration 30, then batch 32 with 64x64"
    text = bundle.card(META, 3, ours, ours, MIXED_LOG, "a test machine", stated)
    assert f"Adam (0.9, 0.99), {stated}, random flips" in text
    assert bundle.scores(ours, ours, 3, 40, batch_and_patch=stated)["batch_and_patch"] == stated
    assert "40 iterations, 1K LR patches in all" in text


def test_a_bundled_branch_leaves_its_logs_beside_the_main_run(bundle, tmp_path) -> None:
    branch, main_run = tmp_path / "branch", tmp_path / "main"
    for folder, rows in ((branch, "iteration,lr\n50,0.0\n"), (main_run, "iteration,lr\n40,0.0005\n")):
        folder.mkdir()
        (folder / "train_log.csv").write_text(rows)
        (folder / "config.json").write_text("{}")
    assert bundle.read_log(main_run) == [{"iteration": "40", "lr": "0.0005"}]
    bundle.keep_release_logs(branch, main_run)
    assert (main_run / "release" / "config.json").read_text() == "{}"
    assert bundle.read_log(main_run) == [{"iteration": "50", "lr": "0.0"}]
    bundle.keep_release_logs(main_run, main_run)  # bundling the main run itself copies nothing
    assert not (main_run / "release" / "val_log.csv").exists()


def test_card_names_each_set_below_the_bar(bundle) -> None:
    text = _card(bundle, 32.90, 29.40)
    assert "does not clear the FSRCNN row on Set5 (32.90 < 33.18)." in text
    assert "Set14 (" not in text
    assert "| **this model** | **32.90 / 0.9000** | **29.40 / 0.9000** |" in text


def test_card_is_for_users_with_the_commands_that_reproduce_it(bundle) -> None:
    text = _card(bundle, 33.50, 29.50)
    assert "It clears the FSRCNN row on both sets." in text
    assert "mma eval Set5 Set14 --scale 3 --model mma-t\n" in text
    assert "mma train --resume --out weights/training/mma-t-x3\n" in text
    assert "| hardware | a test machine |" in text
    # forecasts and development notes live in weights/TRAINING.md, not in the wheel's card
    assert "would take" not in text and "outlook" not in text.lower()
    assert "\n\n\n" not in text


def test_card_only_renders_the_numbers_scores_json_holds(bundle) -> None:
    text = _card(bundle, 33.50, 29.50)
    measured = (
        [_result("Set5", 33.50), _result("Set14", 29.50)],
        [_result("Set5", 30.0), _result("Set14", 27.0)],
    )
    stored = json.loads(
        json.dumps(
            bundle.scores(
                *measured, 3, 40, hardware="a test machine", batch_and_patch="batch 16, LR patch 48x48"
            )
        )
    )
    ours, bicubic = bundle.stored_results(stored)
    assert [(r.name, r.psnr, r.ssim) for r in ours] == [("Set5", 33.5, 0.9), ("Set14", 29.5, 0.9)]
    assert [r.psnr for r in bicubic] == [30.0, 27.0]
    rendered = bundle.card(META, 3, ours, bicubic, LOG, stored["hardware"], stored["batch_and_patch"])
    assert rendered == text


def test_bundled_cards_are_what_the_template_renders(bundle) -> None:
    """The shipped cards were rendered by this bundle.py (rerun `--card-only` after changing the template)."""
    for folder in sorted(bundle.BUNDLED_DIR.glob("*-x*")):
        meta = bundle.load_checkpoint(folder / "model.safetensors")[1]
        run = bundle.REPO / "weights" / "training" / folder.name
        shipped = (folder / "README.md").read_text(encoding="utf-8")
        stored = json.loads((folder / bundle.SCORES_NAME).read_text(encoding="utf-8"))
        ours, bicubic = bundle.stored_results(stored)
        hardware, recipe = stored["hardware"], stored["batch_and_patch"]
        assert json.loads((run / "config.json").read_text())["scale"] == meta["scale"] == stored["scale"]
        rendered = bundle.card(meta, meta["scale"], ours, bicubic, bundle.read_log(run), hardware, recipe)
        assert rendered == shipped, folder.name
        assert f"| {bundle.HARDWARE_ROW} | {hardware} |" in shipped
