"""weights/bundle.py writes model cards from the run's log and measurements: the card must say what happened."""

from __future__ import annotations

import pytest

from mma.evaluate import DatasetResult, ImageScore


@pytest.fixture(scope="module")
def bundle(load_script):
    return load_script("weights/bundle.py")


META = {
    "recipe": {"betas": [0.9, 0.99], "batch": 16, "patch": 48, "ema": 0.999, "seed": 0},
    "data": {"folders": ["T91", "BSDS200"], "images": 267, "held_out_for_validation": 10},
    "iterations": 40,
}
# A run logged every 10 iterations, resumed at 20 with a longer schedule: the rate goes back up.
LOG = [
    {"iteration": "10", "lr": "0.0005", "iters_per_s": "0.5"},
    {"iteration": "20", "lr": "0.00025", "iters_per_s": "0.25"},
    {"iteration": "30", "lr": "0.0005", "iters_per_s": "0.5"},
    {"iteration": "40", "lr": "0.0005", "iters_per_s": "0.5"},
]


def _result(name: str, psnr: float) -> DatasetResult:
    return DatasetResult(name, 3, (ImageScore("a.png", psnr, 0.9, 0.1),))


def _card(bundle, set5: float, set14: float, outlook: str | None = None) -> str:
    ours = [_result("Set5", set5), _result("Set14", set14)]
    bicubic = [_result("Set5", 30.0), _result("Set14", 27.0)]
    return bundle.card(META, 3, ours, bicubic, LOG, "a test machine", outlook)


def test_log_gives_time_and_learning_rate_as_run(bundle) -> None:
    assert bundle.training_hours(LOG) == pytest.approx((10 / 0.5 + 10 / 0.25 + 10 / 0.5 + 10 / 0.5) / 3600)
    assert bundle.lr_history(LOG) == "0.0005 from 0, 0.00025 from 20, 0.0005 from 30"


def test_card_names_each_set_below_the_bar_and_the_outlook(bundle) -> None:
    text = _card(bundle, 32.90, 29.40, outlook="About 5,000 more iterations: 4 CPU hours.")
    assert "does not yet clear the FSRCNN row on Set5 (32.90 < 33.18)" in text
    assert "Set14 (" not in text
    assert "## What the rest would take\n\nAbout 5,000 more iterations: 4 CPU hours.\n" in text
    assert "| **this model** | **32.90 / 0.9000** | **29.40 / 0.9000** |" in text


def test_card_without_outlook_has_no_empty_section(bundle) -> None:
    text = _card(bundle, 33.50, 29.50)
    assert "It clears the FSRCNN row on both sets." in text
    assert "What the rest would take" not in text
    assert "\n\n\n" not in text
