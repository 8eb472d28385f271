"""`mma.evaluate` and `mma eval`: the paper's bicubic baselines, folder rules and error paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mma.cli import app
from mma.errors import ConfigError, ImageReadError
from mma.evaluate import dataset_name, evaluate_dataset, find_images, read_rgb
from mma.imaging.resize import imresize, modcrop
from mma.metrics import psnr, ssim

# Bicubic baselines under BasicSR's conventions, from an independent implementation.
BASELINES = {
    ("Set5", 2): (33.673, 0.9303),
    ("Set5", 3): (30.403, 0.8689),
    ("Set5", 4): (28.429, 0.8111),
    ("Set14", 2): (30.325, 0.8699),
    ("Set14", 3): (27.631, 0.7759),
    ("Set14", 4): (26.088, 0.7048),
}


@pytest.mark.data
@pytest.mark.parametrize(("dataset", "scale"), sorted(BASELINES))
def test_bicubic_baselines(dataset: str, scale: int, data_dir: Path) -> None:
    result = evaluate_dataset(data_dir / dataset, scale)
    expected_psnr, expected_ssim = BASELINES[dataset, scale]
    assert len(result.images) == {"Set5": 5, "Set14": 14}[dataset]
    assert result.psnr == pytest.approx(expected_psnr, abs=0.01)
    assert result.ssim == pytest.approx(expected_ssim, abs=0.001)


def test_scores_follow_the_protocol(tiny_dataset: Path) -> None:
    calls = []
    result = evaluate_dataset(tiny_dataset, 3, progress=calls.append)
    assert result.name == "Tiny" and result.scale == 3
    assert [image.name for image in result.images] == ["a.png", "b.bmp", "c_gray.png"] == calls
    hr = modcrop(np.asarray(Image.open(tiny_dataset / "a.png")), 3)
    sr = imresize(imresize(hr, 1 / 3), 3)
    assert result.images[0].psnr == pytest.approx(psnr(sr, hr, 3), abs=1e-12)
    assert result.images[0].ssim == pytest.approx(ssim(sr, hr, 3), abs=1e-12)
    assert result.psnr == pytest.approx(np.mean([image.psnr for image in result.images]), abs=1e-12)
    assert all(np.isfinite([image.psnr for image in result.images]))


def test_grayscale_scores_as_three_equal_channels(tiny_dataset: Path, tmp_path: Path) -> None:
    gray = np.asarray(Image.open(tiny_dataset / "c_gray.png"))
    rgb_folder = tmp_path / "Rgb"
    rgb_folder.mkdir()
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(rgb_folder / "c.png")
    from_gray = evaluate_dataset(tiny_dataset, 2).images[2]
    from_rgb = evaluate_dataset(rgb_folder, 2).images[0]
    assert (from_gray.psnr, from_gray.ssim) == (from_rgb.psnr, from_rgb.ssim)


def test_custom_upscaler_and_saved_images(tiny_dataset: Path, tmp_path: Path) -> None:
    seen = []

    def nearest(lr: np.ndarray) -> np.ndarray:
        seen.append(lr.shape)
        return np.repeat(np.repeat(lr, 2, axis=0), 2, axis=1)

    out = tmp_path / "sr"
    result = evaluate_dataset(tiny_dataset, 2, nearest, save_dir=out)
    assert seen == [(18, 20, 3), (15, 17, 3), (16, 17, 3)]
    saved = np.asarray(Image.open(out / "Tiny" / "a.png"))
    lr = imresize(modcrop(np.asarray(Image.open(tiny_dataset / "a.png")), 2), 1 / 2)
    np.testing.assert_array_equal(saved, nearest(lr))
    assert result.psnr < evaluate_dataset(tiny_dataset, 2).psnr  # nearest neighbour loses to bicubic


@pytest.mark.parametrize(
    "bad",
    [lambda lr: lr, lambda lr: imresize(lr.astype(np.float64), 2), lambda lr: None],
)
def test_rejects_upscaler_output_of_wrong_shape_or_type(tiny_dataset: Path, bad) -> None:
    with pytest.raises(ConfigError, match="a.png"):
        evaluate_dataset(tiny_dataset, 2, bad)


def test_hr_subfolder_is_preferred(tmp_path: Path) -> None:
    root = tmp_path / "Set9"
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic").mkdir()
    for name in ("z.png", "y.jpg"):
        Image.new("RGB", (16, 16)).save(root / "HR" / name)
    Image.new("RGB", (8, 8)).save(root / "LR_bicubic" / "z.png")
    assert [p.name for p in find_images(root)] == ["y.jpg", "z.png"]
    assert dataset_name(root) == dataset_name(root / "HR") == "Set9"


def test_lossless_webp_dataset_reads_like_png(tmp_path: Path) -> None:
    """Lossless WebP holds a data set in about 2/3 of PNG's bytes; its pixels must come back unchanged."""
    pixels = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.webp", lossless=True)
    (found,) = find_images(tmp_path)
    assert found.name == "a.webp"
    np.testing.assert_array_equal(read_rgb(found), pixels)


def test_missing_or_empty_dataset(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such dataset directory"):
        evaluate_dataset(tmp_path / "absent", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no HR images"):
        evaluate_dataset(tmp_path / "empty", 2)
    with pytest.raises(ConfigError):
        evaluate_dataset(tmp_path / "empty", 0)


def test_unreadable_image_is_an_image_read_error(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageReadError, match="broken.png"):
        evaluate_dataset(tmp_path, 2)


# --- the command line ---


@pytest.mark.data
def test_cli_bicubic_set5_table_and_json(data_dir: Path, tmp_path: Path) -> None:
    report = tmp_path / "reports" / "set5.json"
    result = CliRunner().invoke(
        app, ["eval", str(data_dir / "Set5"), "--scale", "4", "--model", "bicubic", "--json", str(report)]
    )
    assert result.exit_code == 0, result.output
    header, row = result.stdout.strip().splitlines()
    assert header.split() == ["dataset", "images", "PSNR", "SSIM", "seconds"]
    assert row.split()[:4] == ["Set5", "5", "28.429", "0.8111"]
    payload = json.loads(report.read_text())
    assert payload["scale"] == 4 and payload["model"] == "bicubic"
    assert payload["datasets"]["Set5"]["images"] == 5
    assert payload["datasets"]["Set5"]["psnr"] == pytest.approx(28.429, abs=0.01)
    assert payload["datasets"]["Set5"]["ssim"] == pytest.approx(0.8111, abs=0.001)
    assert [p.name for p in report.parent.iterdir()] == ["set5.json"]  # no temporary file left behind


def test_cli_saves_images(tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "sr"
    args = ["eval", str(tiny_dataset), "-s", "2", "-m", "bicubic", "--save-images", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "Tiny").iterdir()) == ["a.png", "b.png", "c_gray.png"]


def test_cli_reports_bad_folders_and_still_scores_good_ones(tiny_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "Empty").mkdir()
    report = tmp_path / "out.json"
    args = [str(tiny_dataset), str(tmp_path / "Absent"), str(tmp_path / "Empty"), "--json", str(report)]
    result = CliRunner().invoke(app, ["eval", *args, "--scale", "2", "--model", "bicubic"])
    assert result.exit_code == 1
    assert "Absent: no such dataset directory" in result.stderr
    assert "Empty: no HR images" in result.stderr
    assert result.stderr.count("error: ") == 2
    assert "Tiny" in result.stdout
    assert list(json.loads(report.read_text())["datasets"]) == ["Tiny"]


def test_cli_rejects_same_named_datasets(tiny_dataset: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["eval", str(tiny_dataset), str(tiny_dataset), "-s", "2", "-m", "bicubic"]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: two dataset folders have the same name")


def test_cli_scores_a_weights_file_like_the_api(
    tiny_dataset: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    from mma import api

    report = tmp_path / "tiny.json"
    args = [
        "eval",
        str(tiny_dataset),
        "-s",
        "2",
        "-m",
        str(tiny_weights),
        "--device",
        "cpu",
        "--json",
        str(report),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    payload = json.loads(report.read_text())
    assert payload["model"] == str(tiny_weights)

    def whole_image(lr: np.ndarray) -> np.ndarray:
        return api.upscale(lr, 2, model=str(tiny_weights), tile=None, device="cpu", dtype="fp32")

    expected = evaluate_dataset(tiny_dataset, 2, whole_image)
    assert payload["datasets"]["Tiny"]["images"] == 3
    assert payload["datasets"]["Tiny"]["psnr"] == pytest.approx(expected.psnr, abs=1e-9)
    assert payload["datasets"]["Tiny"]["ssim"] == pytest.approx(expected.ssim, abs=1e-9)


def test_cli_model_of_another_scale_is_one_error_line(tiny_dataset: Path, tiny_weights: Path) -> None:
    args = ["eval", str(tiny_dataset), "-s", "3", "-m", str(tiny_weights), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "x2" in result.stderr and result.stderr.count("\n") == 1
