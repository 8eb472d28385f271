"""The evaluation report in a real browser: Debian's headless Chromium, driven by Playwright.

It opens from disk with every request off the file refused, logs no console error, re-sorts the per-image
table when a header is clicked, and renders a screenshot that is not blank. Skipped (saying why) where
Chromium or Playwright is missing; under MMA_REQUIRE_INTEGRATIONS=1, as in CI's integrations step, it fails.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
from conftest import optional_package
from PIL import Image

from mma.evaluate import DatasetResult, ImageScore
from mma.report.crops import TRUTH, ImageCrops
from mma.report.html import render_report
from mma.report.regions import Crop

sync_api = optional_package("playwright.sync_api", "browser")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGUMENTS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
if not os.path.isfile(CHROMIUM):
    reason = "Chromium is not installed (apt-get install chromium)"
    if os.environ.get("MMA_REQUIRE_INTEGRATIONS") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)

# PSNR per image and method, in an order that no column's sort keeps.
SCORES = {"bicubic": [27.5, 31.0, 24.0, 29.0], "mma-t": [29.0, 31.5, 27.0, 29.2]}
NAMES = ["d.png", "a.png", "c.png", "b.png"]


@pytest.fixture
def report_file(tmp_path):
    rng = np.random.default_rng(0)
    runs = [
        (
            method,
            [DatasetResult("Set", 4, tuple(ImageScore(n, p, p / 40, 0.1) for n, p in zip(NAMES, scores)))],
        )
        for method, scores in SCORES.items()
    ]
    crops = {
        ("Set", name): ImageCrops(
            Crop(0, 0, 16),
            {key: rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for key in (TRUTH, *SCORES)},
        )
        for name in NAMES
    }
    path = tmp_path / "report.html"
    path.write_text(render_report(4, runs, {"scale": 4}, crops), encoding="utf-8")
    return path


def column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        "#images tbody tr", f"rows => rows.map(row => row.cells[{index}].textContent)"
    )


def test_report_renders_sorts_and_is_not_blank(report_file):
    errors, fetched = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGUMENTS)
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 800})
            page.on(
                "console", lambda message: errors.append(message.text) if message.type == "error" else None
            )
            page.on("pageerror", lambda error: errors.append(str(error)))

            def refuse(route):
                if not route.request.url.startswith(("file:", "data:")):
                    fetched.append(route.request.url)
                    route.abort()
                else:
                    route.continue_()

            page.route("**/*", refuse)
            page.goto(report_file.as_uri())
            assert column(page, 1) == NAMES
            header = page.locator("#images th", has_text="mma-t - bicubic (dB)")
            header.click()
            gains = [b - a for a, b in zip(SCORES["bicubic"], SCORES["mma-t"])]
            ascending = [name for _, name in sorted(zip(gains, NAMES))]
            assert column(page, 1) == ascending != NAMES
            assert header.get_attribute("aria-sort") == "ascending"
            header.click()
            assert column(page, 1) == ascending[::-1]
            page.locator("#images th", has_text="image").click()
            assert column(page, 1) == sorted(NAMES)
            assert page.eval_on_selector_all(
                "img", "images => images.every(i => i.complete && i.naturalWidth === 16)"
            )
            shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
        finally:
            browser.close()
    assert errors == [] and fetched == []
    pixels = np.asarray(shot)
    assert shot.width >= 1000 and pixels.std() > 10  # text, tables and crops, not one flat colour
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
