"""`mma upscale` end to end with a tiny model file: outputs, naming, metadata, and every bad-input case."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from typer.testing import CliRunner

import mma
from mma.cli import app
from mma.weights import save_safetensors

RNG = np.random.default_rng(2)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = mma.build_model("mma-t", 2, num_feat=8, num_block=1)
    return save_safetensors(net, tmp_path_factory.mktemp("weights") / "tiny_x2.safetensors")


@pytest.fixture()
def run(model_file):
    def invoke(*args: str | Path):
        result = CliRunner().invoke(app, ["upscale", "-m", str(model_file), *map(str, args)])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result

    return invoke


def picture(path: Path, size=(7, 5), mode="RGB", **save) -> Path:
    array = RNG.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    Image.fromarray(array, "RGBA").convert(mode).save(path, **save)
    return path


def errors(result) -> list[str]:
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines), lines  # one line per problem, no traceback
    return lines


def test_default_output_beside_input_with_suffix(run, tmp_path):
    source = picture(tmp_path / "cat.png")
    result = run(source)
    assert result.exit_code == 0, result.stderr
    with Image.open(tmp_path / "cat_x2.png") as out:
        assert out.size == (14, 10) and out.mode == "RGB"
    assert "cat.png -> " in result.stdout


def test_one_input_to_named_file_carries_exif_and_icc(run, tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestMaker"
    exif[0x0112] = 6
    source = picture(tmp_path / "in.jpg", icc_profile=icc, exif=exif.tobytes())
    target = tmp_path / "deep" / "out.webp"
    result = run(source, "-o", target, "--quiet")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    with Image.open(target) as out:
        assert out.format == "WEBP" and out.size == (10, 14)  # orientation applied: 5x7 upright, x2
        assert out.info["icc_profile"] == icc
        assert out.getexif()[0x010F] == "TestMaker" and out.getexif().get(0x0112, 1) == 1


def test_many_inputs_folders_and_globs_into_output_folder(run, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.jpg"):
        picture(photos / name)
    (photos / "notes.txt").write_text("not an image, and not picked from a folder")
    extra = picture(tmp_path / "c.bmp", mode="L")
    out = tmp_path / "out" / "nested"
    result = run(photos, str(tmp_path / "c.*"), "-o", out, "--suffix", "-big", "--format", "tiff")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a-big.tiff", "b-big.tiff", "c-big.tiff"]
    with Image.open(out / "c-big.tiff") as grey:
        assert grey.mode == "L" and grey.size == (14, 10)
    assert extra.exists()


def test_folder_run_skips_earlier_results(run, tmp_path):
    picture(tmp_path / "a.png")
    assert run(tmp_path).exit_code == 0
    assert run(tmp_path, "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "a_x2.png"]


def test_rgba_and_sixteen_bit(run, tmp_path):
    picture(tmp_path / "logo.png", mode="RGBA")
    deep = tmp_path / "deep.png"
    Image.fromarray(RNG.integers(0, 65536, (6, 5), dtype=np.uint16)).save(deep)
    assert run(tmp_path / "logo.png", "--alpha", "model").exit_code == 0
    assert run(deep, "--tile", "4", "--overlap", "2").exit_code == 0
    assert Image.open(tmp_path / "logo_x2.png").mode == "RGBA"
    with Image.open(tmp_path / "deep_x2.png") as out:
        assert out.mode.startswith("I;16") and np.asarray(out).max() > 255


def test_sixteen_bit_colour_png_stays_sixteen_bit(run, tmp_path):
    from mma.imaging.io import ImageMeta, write_pixels
    from mma.imaging.png16 import read_png16

    source = write_pixels(RNG.integers(0, 65536, (6, 5, 4), dtype=np.uint16), ImageMeta(3, True, 16),
                          tmp_path / "deep.png")
    result = run(source)
    assert result.exit_code == 0 and "warning" not in result.stderr
    pixels, _, _ = read_png16(tmp_path / "deep_x2.png", None)
    assert pixels.shape == (12, 10, 4) and pixels.dtype == np.uint16
    assert (pixels[..., :3] % 257 != 0).mean() > 0.5  # real 16-bit values, not 8-bit ones scaled up


def bomb(path: Path) -> Path:
    """A PNG header claiming 40000 x 40000 pixels (over Pillow's limit) with no real pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("case,needle", [
    ("missing", "no such file"),
    ("empty folder", "no images in this folder"),
    ("glob without matches", "no files match"),
    ("text file", "not an image"),
    ("truncated", "truncated or corrupt"),
    ("zero bytes", "empty file"),
    ("bomb", "decompression-bomb"),
])
def test_bad_inputs_are_reported_and_the_batch_goes_on(run, tmp_path, case, needle):
    good = picture(tmp_path / "good.png")
    if case == "missing":
        bad = tmp_path / "missing.png"
    elif case == "empty folder":
        bad = tmp_path / "empty"
        bad.mkdir()
    elif case == "glob without matches":
        bad = tmp_path / "*.nothing"
    elif case == "text file":
        bad = tmp_path / "text.png"
        bad.write_text("hello")
    elif case == "truncated":
        whole = picture(tmp_path / "whole.png", size=(64, 64))
        bad = tmp_path / "cut.png"
        bad.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    elif case == "zero bytes":
        bad = tmp_path / "zero.png"
        bad.write_bytes(b"")
    else:
        bad = bomb(tmp_path / "bomb.png")
    result = run(bad, good)
    assert result.exit_code == 1
    lines = errors(result)
    assert len(lines) == 1 and needle in lines[0] and str(bad) in lines[0]
    assert (tmp_path / "good_x2.png").exists()  # the rest of the batch was processed


@pytest.mark.parametrize("scale_args,needle", [(["-s", "4"], "x2, not x4"), (["-s", "5"], "x2, not x5")])
def test_unsupported_scale_for_the_model(run, tmp_path, scale_args, needle):
    result = run(picture(tmp_path / "a.png"), *scale_args)
    assert result.exit_code == 1 and needle in errors(result)[0]
    assert not (tmp_path / "a_x4.png").exists()


def test_unsupported_scale_for_a_named_model(tmp_path):
    result = CliRunner().invoke(app, ["upscale", str(picture(tmp_path / "a.png")), "-m", "mma-t", "-s", "5"])
    assert result.exit_code == 1 and "unsupported scale 5" in errors(result)[0]


def test_existing_output_needs_force_and_is_kept_otherwise(run, tmp_path):
    source = picture(tmp_path / "a.png")
    target = tmp_path / "a_x2.png"
    target.write_bytes(b"precious")
    result = run(source)
    assert result.exit_code == 1 and "exists (use --force" in errors(result)[0]
    assert target.read_bytes() == b"precious"
    assert run(source, "--force").exit_code == 0
    assert Image.open(target).size == (14, 10)


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_output_equal_to_an_input_is_refused_even_with_force(run, tmp_path, force):
    source = picture(tmp_path / "a.png")
    before = source.read_bytes()
    for args in (["-o", source], ["-o", tmp_path / "." / "a.png"], ["--suffix", ""]):
        result = run(source, *args, *force)
        assert result.exit_code == 1 and "output is one of the inputs" in errors(result)[0]
    assert source.read_bytes() == before


def test_two_inputs_to_one_output_name(run, tmp_path):
    picture(tmp_path / "a.png")
    picture(tmp_path / "a.jpg")
    result = run(tmp_path / "a.png", tmp_path / "a.jpg", "--format", "png", "-o", tmp_path / "out")
    assert result.exit_code == 1 and "also the output of" in errors(result)[0]
    assert (tmp_path / "out" / "a_x2.png").exists()


def test_unwritable_output_folder(run, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a regular file where a folder should be")
    source = picture(tmp_path / "a.png")
    single = run(source, "-o", blocker / "out.png")
    assert single.exit_code == 1 and "cannot create its folder" in errors(single)[0]
    several = run(source, picture(tmp_path / "b.png"), "-o", blocker / "dir")
    assert several.exit_code == 1 and "cannot create the output folder" in errors(several)[0]
    assert blocker.read_text().startswith("a regular file")


@pytest.mark.parametrize("args,needle", [(["--tile", "big"], "--tile big"),
                                         (["--format", "gif"], "--format gif"),
                                         (["--alpha", "x"], "--alpha x"), (["--device", "toaster"], "device"),
                                         (["--dtype", "fp8"], "dtype")])
def test_bad_options(run, tmp_path, args, needle):
    source = picture(tmp_path / "a.png")
    result = run(source, *args)
    assert result.exit_code == 1 and needle in errors(result)[0]


def test_one_output_file_for_several_inputs(run, tmp_path):
    result = run(picture(tmp_path / "a.png"), picture(tmp_path / "b.png"), "-o", tmp_path / "x.png")
    assert result.exit_code == 1 and "names one file but there are 2 inputs" in errors(result)[0]


def test_named_model_without_weights_says_what_to_do(tmp_path):
    source = picture(tmp_path / "a.png")
    result = CliRunner().invoke(app, ["upscale", str(source), "-m", "mma-b", "-s", "3"])
    assert result.exit_code == 1 and "mma convert" in errors(result)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]
