"""`mma upscale` end to end with a tiny model file: outputs, naming, metadata, and every bad-input case."""

from __future__ import annotations

import re
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
        assert out.getexif()[0x010F] == "TestMaker" and out.getexif()[0x0112] == 1  # reset, not removed


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

    source = write_pixels(
        RNG.integers(0, 65536, (6, 5, 4), dtype=np.uint16), ImageMeta(3, True, 16), tmp_path / "deep.png"
    )
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
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing", "no such file"),
        ("empty folder", "no images in this folder"),
        ("glob without matches", "no files match"),
        ("text file", "not an image"),
        ("truncated", "truncated or corrupt"),
        ("zero bytes", "empty file"),
        ("bomb", "decompression-bomb"),
    ],
)
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


@pytest.fixture()
def network_runs(monkeypatch) -> list[int]:
    """How many images went through the network (one entry per call of upscale_pixels)."""
    import mma.api

    calls: list[int] = []
    real = mma.api.upscale_pixels

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mma.api, "upscale_pixels", counted)
    return calls


def test_read_only_folder_fails_before_any_work_and_the_batch_goes_on(
    run, tmp_path, read_only_folder, network_runs
):
    good = picture(tmp_path / "good.png")
    result = run(good, "-o", read_only_folder / "out.png")  # one input, its output in the read-only folder
    assert result.exit_code == 1 and network_runs == []
    (line,) = errors(result)
    assert "out.png: cannot write there (" in line and "Read-only file system" in line
    result = run(
        picture(tmp_path / "other.png"), good, "-o", read_only_folder
    )  # several inputs into a read-only output folder
    assert result.exit_code == 1 and network_runs == []
    assert "cannot be the output folder" in errors(result)[0] and len(errors(result)) == 1
    assert sorted(p.name for p in read_only_folder.iterdir()) == ["inside.txt"]


def test_outputs_beside_inputs_in_a_read_only_folder(run, tmp_path, simulate_read_only, network_runs):
    """Inputs in a read-only folder with outputs beside them: each such file fails on one line before any
    upscaling, the others are done (simulated: the fixture cannot hold an image in its mounted form)."""
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    locked = [picture(shelf / "a.png"), picture(shelf / "b.png")]
    good = picture(tmp_path / "good.png")
    simulate_read_only(shelf)
    result = run(*locked, good)
    assert result.exit_code == 1 and len(network_runs) == 1
    lines = errors(result)
    assert len(lines) == 2 and all("cannot write there" in line and "Read-only" in line for line in lines)
    assert (tmp_path / "good_x2.png").exists()
    assert result.stdout.splitlines()[-1].startswith("1 done, 0 skipped, 2 failed in ")


def test_output_under_a_file_fails_before_any_work(run, tmp_path, network_runs):
    blocker = tmp_path / "blocker.png"
    blocker.write_text("a regular file where a folder should be")
    source = picture(tmp_path / "a.png")
    single = run(source, "-o", blocker / "out.png")
    assert single.exit_code == 1
    assert f"out.png: cannot write there ({blocker} is not a directory)" in errors(single)[0]
    several = run(source, picture(tmp_path / "b.png"), "-o", blocker / "dir")
    assert several.exit_code == 1
    assert f"cannot be the output folder ({blocker} is not a directory)" in errors(several)[0]
    assert blocker.read_text().startswith("a regular file") and network_runs == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_in_proc_fails_before_any_work(run, tmp_path, network_runs):
    result = run(picture(tmp_path / "a.png"), "-o", "/proc/mma-out.png")
    assert result.exit_code == 1 and "/proc/mma-out.png: cannot write there" in errors(result)[0]
    assert network_runs == []


def test_no_output_folder_is_left_when_every_input_fails(run, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    (tmp_path / "worse.png").write_bytes(b"")
    result = run(bad, tmp_path / "worse.png", "-o", tmp_path / "out" / "deeper")
    assert result.exit_code == 1 and len(errors(result)) == 2
    assert not (tmp_path / "out").exists()


def test_skip_existing_resumes_a_batch(run, tmp_path, network_runs):
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        picture(folder / name)
    out = tmp_path / "out"
    assert run(folder / "a.png", "-o", out / "a_x2.png").exit_code == 0
    finished = (out / "a_x2.png").read_bytes()
    network_runs.clear()
    plain = run(folder, "-o", out)  # without the flag an existing output is an error
    assert (
        plain.exit_code == 1 and "exists (use --force to replace it, or --skip-existing" in errors(plain)[0]
    )
    (out / "b_x2.png").unlink()
    (out / "c_x2.png").unlink()
    network_runs.clear()
    resumed = run(folder, "-o", out, "--skip-existing")
    assert resumed.exit_code == 0 and resumed.stderr == "" and len(network_runs) == 2
    assert (out / "a_x2.png").read_bytes() == finished
    assert "a.png -> " in resumed.stdout and "(exists, skipped)" in resumed.stdout
    assert re.fullmatch(r"2 done, 1 skipped, 0 failed in \d+\.\d s", resumed.stdout.splitlines()[-1])
    again = run(folder, "-o", out, "--skip-existing", "-q")
    assert again.exit_code == 0 and again.stdout == "" and again.stderr == ""


def test_force_and_skip_existing_exclude_each_other(run, tmp_path):
    result = run(picture(tmp_path / "a.png"), "--force", "--skip-existing")
    assert result.exit_code == 1 and "choose one" in errors(result)[0]


def test_earlier_outputs_are_not_inputs_by_their_metadata_not_their_name(run, tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    picture(folder / "good.png")
    picture(folder / "holiday_x2.png")  # a user's own file that only looks like an output
    assert run(folder).exit_code == 0
    first = {"good.png", "holiday_x2.png", "good_x2.png", "holiday_x2_x2.png"}
    assert {p.name for p in folder.iterdir()} == first
    second = run(folder, "--suffix", "_again")  # names no longer match the earlier outputs' suffix
    assert second.exit_code == 0, second.stderr
    assert {p.name for p in folder.iterdir()} == first | {"good_again.png", "holiday_x2_again.png"}
    globbed = run(str(folder / "*_x2*.png"), "--suffix", "_glob")
    assert {p.name for p in folder.iterdir()} - first - {"good_again.png", "holiday_x2_again.png"} == {
        "holiday_x2_glob.png"
    }
    assert globbed.exit_code == 0
    with Image.open(folder / "good_x2.png") as out:  # the mark: program, version, model file name, scale
        assert out.getexif()[0x0131] == f"mma-sr {mma.__version__} (tiny_x2.safetensors x2)"


def test_a_folder_of_earlier_outputs_only_says_so(run, tmp_path):
    source = picture(tmp_path / "a.png")
    out = tmp_path / "out"
    assert run(source, "-o", out / "a_big.png").exit_code == 0
    result = run(out)
    assert result.exit_code == 1
    assert (
        "no images in this folder (only 1 written by mma upscale, which are not taken as inputs)"
        in errors(result)[0]
    )
    assert run(out / "a_big.png", "-o", tmp_path / "again.png").exit_code == 0  # named explicitly: taken


def test_flags_take_no_value_and_help_shows_them_as_flags(run, tmp_path):
    help_text = CliRunner().invoke(app, ["upscale", "--help"]).stdout
    for flag in ("--force", "--skip-existing", "--quiet"):
        line = next(line for line in help_text.splitlines() if flag + " " in line)
        assert "<bool>" not in line and "bool" not in line.split(flag)[1].split()[0]
    assert "list[" not in help_text  # not `INPUT <list[str]>`
    assert "  INPUT...  Image or video files" in help_text
    source = picture(tmp_path / "a.png")
    result = run(source, "--force", "true")
    assert result.exit_code == 1
    assert "true: no such file or folder (flags such as --force take no value)" in errors(result)[0]
    assert (tmp_path / "a_x2.png").exists()


@pytest.mark.parametrize("scale", ["0", "1", "-2"])
def test_scale_below_two_is_explained(run, tmp_path, scale):
    result = run(picture(tmp_path / "a.png"), "--scale", scale)
    assert (
        result.exit_code == 1
        and f"--scale {scale}: the factor to enlarge by; use 2, 3 or 4" in errors(result)[0]
    )


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"mma-sr {mma.__version__}\n"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--tile", "big"], "--tile big"),
        (["--format", "gif"], "--format gif"),
        (["--alpha", "x"], "--alpha x"),
        (["--device", "toaster"], "device"),
        (["--dtype", "fp8"], "dtype"),
    ],
)
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


def test_progress_in_a_log_is_plain_lines_and_quiet_has_none(run, tmp_path, monkeypatch):
    from mma import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # every report gets its line, as a long image would
    source = picture(tmp_path / "a.png", size=(20, 16))
    result = run(source, "--tile", "0")  # whole image: one tile, advancing block by block
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("a.png: ")]
    assert lines and "\r" not in result.stderr and lines[-1].startswith("a.png: finished in ")
    assert any(line.startswith("a.png: 100%") for line in lines)
    quiet = run(source, "--tile", "0", "--force", "-q")
    assert quiet.exit_code == 0 and quiet.stderr == ""
