"""`mma compare` and the figure under it: the panels and their sizes, and a zoom placed where images differ."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFont
from typer.testing import CliRunner

from mma.cli import app
from mma.errors import ConfigError
from mma.report import figure as figure_module
from mma.report.compare import compare_image, label_for
from mma.report.figure import GAP, LABEL_SIZE, MARK_COLOUR, MIN_COLUMN, Panel, fitted_text, render
from mma.report.regions import Crop, checked_crop, largest_difference


def scene(height: int = 60, width: int = 90, seed: int = 0) -> np.ndarray:
    """A smooth colour image (a gradient with a little noise)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, width)[None, :, None] + np.linspace(0, 30, height)[:, None, None]
    return np.clip(ramp + rng.normal(0, 2, (height, width, 3)), 0, 255).astype(np.uint8)


def detailed(height: int = 96, width: int = 120, x: int = 70, y: int = 20, side: int = 24) -> np.ndarray:
    """A flat grey image with one patch of fine checkerboard at (x, y): the only place a resize loses much."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    rows, cols = np.indices((side, side))
    image[y : y + side, x : x + side] = np.where((rows + cols) % 2 == 0, 30, 230)[..., None]
    return image


def test_largest_difference_finds_the_one_changed_patch():
    base = scene()
    changed = base.copy()
    changed[30:42, 50:62] = 255 - changed[30:42, 50:62]
    assert largest_difference([base, changed], 12) == Crop(50, 30, 12)
    wider = largest_difference([base, changed, base], 20)
    assert wider.size == 20 and wider.x <= 50 and wider.x + 20 >= 62 and wider.y <= 30 and wider.y + 20 >= 42


def test_largest_difference_of_identical_images_is_the_top_left_and_fits_the_image():
    base = scene(10, 14)
    assert largest_difference([base, base.copy()], 64) == Crop(0, 0, 10)


def test_largest_difference_refuses_images_of_different_sizes():
    with pytest.raises(ConfigError, match="differ in size"):
        largest_difference([scene(10, 14), scene(12, 14)], 4)


def test_a_crop_outside_the_image_is_one_clear_error():
    with pytest.raises(ConfigError, match=r"crop 80,10,20 does not fit in the 90x60 output"):
        checked_crop(Crop(80, 10, 20), (60, 90, 3))


def test_figure_has_one_column_per_panel_of_the_promised_size():
    images = [scene(seed=s) for s in range(3)]
    panels = [
        Panel("bicubic x2", images[0], "30.00 dB / 0.9000"),
        Panel("a", images[1], "x"),
        Panel("b", images[2]),
    ]
    crop = Crop(30, 12, 16)
    result = render(panels, crop, column=240)
    view_height = round(60 * 240 / 90)
    assert result.image.width == GAP + 3 * (240 + GAP)
    assert [box.left for box in result.zooms] == [GAP + i * (240 + GAP) for i in range(3)]
    assert all(box.width == box.height == 240 for box in result.zooms)
    assert all((box.width, box.height) == (240, view_height) for box in result.overviews)
    assert result.image.height > result.zooms[0].top + 240  # the captions' strip
    pixels = np.asarray(result.image)
    for box, image in zip(result.zooms, images):
        expected = Image.fromarray(image[12:28, 30:46]).resize((240, 240), Image.Resampling.NEAREST)
        shown = pixels[box.top : box.top + 240, box.left : box.left + 240]
        np.testing.assert_array_equal(shown, np.asarray(expected))
    overview = pixels[result.overviews[0].top :, result.overviews[0].left :][:view_height, :240]
    assert (overview == MARK_COLOUR).all(axis=2).sum() > 100  # the window is outlined in the view
    label_strip = pixels[GAP : GAP + LABEL_SIZE + 12, GAP : GAP + 240]
    assert (label_strip.max(axis=2) < 100).sum() > 50  # dark text on the light strip


def test_narrow_images_get_columns_wide_enough_for_their_labels():
    result = render([Panel("bicubic x4", scene(20, 16))], Crop(0, 0, 8), column=50)
    assert result.zooms[0].width == MIN_COLUMN


def test_long_labels_shrink_to_their_column():
    text, face = fitted_text("a-very-long-weights-file-name_x4.safetensors", 200, LABEL_SIZE)
    assert face.getlength(text) <= 200


def test_figure_draws_without_freetype(monkeypatch):
    """Where Pillow lacks FreeType, its bitmap font is used (no anchors, no sizes) and the figure still draws."""
    plain = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)
    bitmap = plain()

    def no_sizes(size=None):
        if size is not None:
            raise ImportError("The _imagingft C module is not installed")
        return bitmap

    monkeypatch.setattr(ImageFont, "load_default", no_sizes)
    figure_module.font.cache_clear()
    try:
        result = render([Panel("bicubic", scene()), Panel("model", scene(seed=1), "1 dB")], Crop(0, 0, 8))
    finally:
        figure_module.font.cache_clear()
    assert result.image.width == GAP + 2 * (320 + GAP)


def test_compare_zooms_where_bicubic_loses_detail_and_scores_against_the_truth():
    truth = detailed()
    result = compare_image(truth, 2, ["bicubic"], hr=True, zoom=24, device="cpu")
    assert len(result.zooms) == 2  # bicubic, HR (truth)
    assert abs(result.crop.x - 70) <= 4 and abs(result.crop.y - 20) <= 4 and result.crop.size == 24
    caption_row = np.asarray(result.image)[result.zooms[0].top + 320 :]
    assert (caption_row.max(axis=2) < 100).any()  # a PSNR/SSIM line under the panel


def test_label_of_a_weights_file_is_its_name_not_its_folder(tiny_weights):
    assert label_for(str(tiny_weights)) == "tiny_x2.safetensors"
    assert label_for("mma-t") == "mma-t" and label_for("bicubic") == "bicubic"


def test_cli_writes_the_figure_with_every_model_and_the_truth(tmp_path, tiny_weights):
    source = tmp_path / "photo.png"
    Image.fromarray(scene(41, 57)).save(source)
    out = tmp_path / "cmp.png"
    result = CliRunner().invoke(
        app, ["compare", str(source), "-m", str(tiny_weights), "--hr", "-o", str(out), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as written:
        assert written.width == GAP + 3 * (320 + GAP)  # bicubic, the model, the truth
    assert "zoom" in result.stdout and str(out) in result.stdout
    again = CliRunner().invoke(app, ["compare", str(source), "-m", "bicubic", "-o", str(out)])
    assert again.exit_code == 1 and again.stderr == f"error: {out}: exists (use --force to replace it)\n"


def test_cli_places_a_given_crop_and_refuses_bad_ones_in_one_line(tmp_path):
    source = tmp_path / "photo.png"
    Image.fromarray(scene(20, 30)).save(source)
    out = tmp_path / "cmp.png"
    ok = CliRunner().invoke(
        app, ["compare", str(source), "-m", "bicubic", "-s", "2", "--crop", "4,6,10", "-o", str(out)]
    )
    assert ok.exit_code == 0, ok.output
    assert "zoom 10x10 at 4,6" in ok.stdout
    for crop, message in [
        ("4,6", "--crop 4,6: use X,Y,SIZE (output pixels, e.g. 120,80,64)"),
        ("4,6,0", "--crop 4,6,0: SIZE must be at least 1"),
        ("50,6,20", "crop 50,6,20 does not fit in the 60x40 output (X + SIZE <= 60, Y + SIZE <= 40)"),
    ]:
        bad = CliRunner().invoke(
            app, ["compare", str(source), "-m", "bicubic", "-s", "2", "--crop", crop, "-o", str(out), "-f"]
        )
        assert bad.exit_code == 1 and bad.stderr == f"error: {message}\n"


def test_cli_never_overwrites_its_input(tmp_path):
    source = tmp_path / "photo.png"
    Image.fromarray(scene(20, 30)).save(source)
    result = CliRunner().invoke(app, ["compare", str(source), "-m", "bicubic", "-o", str(source), "--force"])
    assert result.exit_code == 1 and "is the input image" in result.stderr
