"""`mma eval --report`: a self-contained HTML report holding every image and number `--json` gives."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mma.cli import app
from mma.evaluate import DatasetResult, ImageScore, evaluate_images, find_images
from mma.report.crops import TRUTH, CropCollector, ImageCrops, detail_window, encode, merged
from mma.report.html import render_report
from mma.report.regions import Crop


class Report(HTMLParser):
    """The parts of a report the tests read: tables as rows of (text, data-value) cells, images, scripts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str | None]]]] = {}
        self.headers: dict[str, list[str]] = {}
        self.images: list[dict[str, str | None]] = []
        self.scripts: list[tuple[dict[str, str | None], str]] = []
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._value: str | None = None
        self._script: dict[str, str | None] | None = None
        self._in_header = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name in ("href", "src"):
            if attributes.get(name) and not str(attributes[name]).startswith("data:"):
                self.links.append(str(attributes[name]))
        if tag == "table":
            self._table = attributes.get("id")
            self.tables[self._table] = []
            self.headers[self._table] = []
        elif tag == "thead":
            self._in_header = True
        elif tag == "tbody":
            self._in_header = False
        elif tag == "tr" and self._table and not self._in_header:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell, self._value = [], attributes.get("data-value")
        elif tag == "img":
            self.images.append(attributes)
        elif tag == "script":
            self._script = attributes
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None and self._table:
            text = "".join(self._cell)
            if tag == "th":
                self.headers[self._table].append(text)
            else:
                self.tables[self._table][-1].append((text, self._value))
            self._cell = None
        elif tag == "script" and self._script is not None:
            self.scripts.append((self._script, "".join(self._cell or [])))
            self._script, self._cell = None, None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def embedded_scores(self) -> object:
        (text,) = [body for attributes, body in self.scripts if attributes.get("id") == "mma-scores"]
        return json.loads(text)


def run_eval(*arguments: str) -> tuple[object, str, str]:
    result = CliRunner().invoke(app, ["eval", *arguments, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result, result.stdout, result.stderr


def numbers(payload: object) -> list[float]:
    """Every number in a JSON document."""
    if isinstance(payload, dict):
        return [n for value in payload.values() for n in numbers(value)]
    if isinstance(payload, list):
        return [n for value in payload for n in numbers(value)]
    return [float(payload)] if isinstance(payload, (int, float)) and not isinstance(payload, bool) else []


def test_report_holds_every_image_and_number_of_the_json(tmp_path, tiny_dataset, tiny_weights):
    scores, page = tmp_path / "scores.json", tmp_path / "out" / "report.html"
    run_eval(
        str(tiny_dataset),
        "-s",
        "2",
        "-m",
        "bicubic",
        "-m",
        str(tiny_weights),
        "--json",
        str(scores),
        "--report",
        str(page),
    )
    payload = json.loads(scores.read_text())
    assert set(payload) == {"scale", "models"} and set(payload["models"]) == {"bicubic", str(tiny_weights)}
    report = Report(page.read_text(encoding="utf-8"))
    assert report.embedded_scores() == payload
    assert report.links == []  # nothing fetched: every image is a data: URI, no stylesheet or script files
    summary = report.tables["summary"]
    for method, label in [("bicubic", "bicubic"), (str(tiny_weights), "tiny_x2.safetensors")]:
        for dataset, expected in payload["models"][method]["datasets"].items():
            (row,) = [r for r in summary if r[0][0] == dataset and r[1][0] == label]
            values = [float(value) for _, value in row[2:] if value]
            assert values[0] == payload["scale"]
            assert values[1:4] == [
                expected["images"],
                expected["psnr"],
                expected["ssim"],
            ]  # exact, not rounded
    shown = {float(value) for row in summary for _, value in row if value and value[0].isdigit()}
    assert set(numbers(payload)) <= shown
    names = [path.name for path in find_images(tiny_dataset)]
    per_image = report.tables["images"]
    assert [row[1][0] for row in per_image] == names
    assert report.headers["images"][2:] == [
        "bicubic PSNR", "bicubic SSIM", "tiny_x2.safetensors PSNR", "tiny_x2.safetensors SSIM",
        "tiny_x2.safetensors - bicubic (dB)",
    ]  # fmt: skip
    bicubic = evaluate_images("Tiny", find_images(tiny_dataset), 2)
    for row, score in zip(per_image, bicubic.images):
        assert float(row[2][1]) == score.psnr and float(row[3][1]) == score.ssim
        assert math.isclose(float(row[6][1]), float(row[4][1]) - score.psnr)
    assert len(report.images) == len(names) * 3  # HR, bicubic and the model for each image
    assert all(
        str(image["src"]).startswith(("data:image/webp;base64,", "data:image/png;base64,"))
        for image in report.images
    )
    assert any(attributes.get("id") is None and "sortable" in body for attributes, body in report.scripts)
    assert "<svg" in page.read_text(encoding="utf-8")


def test_one_model_keeps_the_json_as_it_was_and_the_report_adds_bicubic(tmp_path, tiny_dataset):
    scores, page = tmp_path / "scores.json", tmp_path / "report.html"
    _, stdout, _ = run_eval(
        str(tiny_dataset), "-s", "3", "-m", "bicubic", "--json", str(scores), "--report", str(page)
    )
    payload = json.loads(scores.read_text())
    assert set(payload) == {"scale", "model", "datasets"} and payload["model"] == "bicubic"
    assert stdout.splitlines()[0].startswith("dataset  images")  # the table as before: no model column
    assert f"report: {page}" in stdout
    report = Report(page.read_text(encoding="utf-8"))
    assert report.embedded_scores() == payload
    assert len(report.tables["summary"]) == 1


def test_several_models_print_a_model_column_and_save_images_apart(tmp_path, tiny_dataset, tiny_weights):
    _, stdout, _ = run_eval(
        str(tiny_dataset),
        "-s",
        "2",
        "-m",
        "bicubic",
        "-m",
        str(tiny_weights),
        "--save-images",
        str(tmp_path / "sr"),
    )
    lines = stdout.splitlines()
    assert lines[0].split()[:2] == ["model", "dataset"] and len(lines) == 3
    assert (
        sorted(p.parent.parent.name for p in (tmp_path / "sr").rglob("*.png"))
        == ["bicubic"] * 3 + ["tiny_x2.safetensors"] * 3
    )


def test_two_weights_files_of_one_name_are_refused(tmp_path, tiny_dataset, tiny_weights):
    twin = tmp_path / "other" / tiny_weights.name
    twin.parent.mkdir()
    twin.write_bytes(tiny_weights.read_bytes())
    result = CliRunner().invoke(
        app, ["eval", str(tiny_dataset), "-s", "2", "-m", str(tiny_weights), "-m", str(twin)]
    )
    assert result.exit_code == 1
    assert (
        result.stderr
        == "error: several -m models are named tiny_x2.safetensors; give the files different names\n"
    )


def test_an_unwritable_report_is_refused_before_any_work(tmp_path, tiny_dataset):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = CliRunner().invoke(
        app, ["eval", str(tiny_dataset), "-s", "2", "-m", "bicubic", "--report", str(blocker / "r.html")]
    )
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")


def test_keep_sees_the_modcropped_truth_and_each_result(tiny_dataset):
    seen = []
    evaluate_images(
        "Tiny",
        find_images(tiny_dataset),
        3,
        keep=lambda path, hr, sr: seen.append((path.name, hr.shape, sr.shape)),
    )
    assert seen == [
        ("a.png", (36, 39, 3), (36, 39, 3)),
        ("b.bmp", (30, 33, 3), (30, 33, 3)),
        ("c_gray.png", (33, 33, 3), (33, 33, 3)),
    ]


def test_the_crop_window_is_where_bicubic_loses_the_most():
    image = np.full((96, 120, 3), 128, dtype=np.uint8)
    rows, cols = np.indices((24, 24))
    image[20:44, 70:94] = np.where((rows + cols) % 2 == 0, 30, 230)[..., None]
    window = detail_window(image, 2, 24)
    assert abs(window.x - 70) <= 4 and abs(window.y - 20) <= 4 and window.size == 24
    assert detail_window(image[:3, :3], 2, 24) == Crop(0, 0, 3)  # too small to reduce: the whole image


def test_collector_cuts_every_method_at_one_window_and_merges_shares():
    one, two = CropCollector(2, size=8), CropCollector(2, size=8)
    hr = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    one.keeper("Set", "bicubic")(Path("a.png"), hr, hr // 2)
    two.keeper("Set", "model")(Path("a.png"), hr, hr // 3)
    two.keeper("Set", "model")(Path("b.png"), hr, hr // 3)
    both = merged([one.crops, two.crops])
    assert set(both) == {("Set", "a.png"), ("Set", "b.png")}
    entry = both[("Set", "a.png")]
    assert set(entry.pixels) == {TRUTH, "bicubic", "model"}
    x, y, size = entry.window
    np.testing.assert_array_equal(entry.pixels["model"], (hr // 3)[y : y + size, x : x + size])


@pytest.mark.parametrize("webp", [True, False])
def test_crops_are_encoded_losslessly_as_webp_or_png(webp):
    pixels = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    mime, data = encode(pixels, webp)
    assert mime == ("image/webp" if webp else "image/png")
    assert data[:4] == (b"RIFF" if webp else b"\x89PNG")
    from io import BytesIO

    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(BytesIO(data)).convert("RGB")), pixels)


def results(method_scores: dict[str, list[float]]) -> list[tuple[str, list[DatasetResult]]]:
    return [
        (
            method,
            [
                DatasetResult(
                    "Set", 4, tuple(ImageScore(f"{i}.png", p, 0.5, 0.1) for i, p in enumerate(scores))
                )
            ],
        )
        for method, scores in method_scores.items()
    ]


def test_gains_are_signed_and_an_infinite_psnr_stays_readable():
    runs = results({"bicubic": [20.0, 30.0, 25.0], "m1": [21.0, 29.0, math.inf], "m2": [22.0, 28.0, 24.0]})
    page = render_report(
        4,
        runs,
        {"scale": 4},
        {("Set", "0.png"): ImageCrops(Crop(0, 0, 2), {TRUTH: np.zeros((2, 2, 3), np.uint8)})},
    )
    report = Report(page)
    header = report.headers["images"]
    assert header[-3:] == ["m1 - bicubic (dB)", "m2 - bicubic (dB)", "m2 - m1 (dB)"]
    first, _, third = report.tables["images"]
    assert first[-3] == ("+1.000", "1.0") and first[-1] == ("+1.000", "1.0")
    assert third[4][1] == "Infinity" and third[-3][1] == "Infinity"
    assert "<title>Set/1.png m1: -1.000 dB</title>" in page
    assert len(report.images) == 1  # only the crops that were kept are shown
    assert 'data-value="NaN"' not in page and "nan" not in page
