"""The example scripts run as their docstrings say, with the bundled weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_upscale_python_upscales_the_sample_photo(tmp_path: Path) -> None:
    output = run("upscale_python.py", str(EXAMPLES / "astronaut.png"), str(tmp_path))
    assert "(128, 128)" in output
    with Image.open(tmp_path / "astronaut_x4.png") as image:
        assert image.size == (512, 512)


@pytest.mark.data
def test_before_after_writes_the_figure_and_beats_bicubic(data_dir: Path, tmp_path: Path) -> None:
    from mma.report.figure import GAP

    out = tmp_path / "figure.png"
    output = run(
        "before_after.py",
        "--image",
        str(data_dir / "Set5" / "HR" / "butterfly.png"),
        "--scale",
        "4",
        "--width",
        "200",
        "--zoom",
        "48",
        "--out",
        str(out),
    )
    bicubic, ours = (float(part.split()[-2]) for part in output.split(":", 1)[1].split("->")[0].split(","))
    assert ours > bicubic
    with Image.open(out) as figure:
        assert figure.width == GAP + 3 * (200 + GAP)  # bicubic, MMA-T, the original
    record = json.loads(out.with_suffix(".json").read_text())
    assert abs(record["scores"]["mma-t"]["psnr"] - ours) <= 0.005  # the printed figure, to its two decimals
    assert record["zoom"]["size"] == 48


def test_the_readme_figure_was_made_with_the_bundled_weights() -> None:
    """The README opens with this figure: when the bundled x4 weights change, make it again
    (`python examples/before_after.py --out docs/images/before_after.webp`)."""
    import hashlib

    figure = EXAMPLES.parent / "docs" / "images" / "before_after.webp"
    record = json.loads(figure.with_suffix(".json").read_text())
    bundled = (
        EXAMPLES.parent / "mma" / "weights" / "bundled" / f"mma-t-x{record['scale']}" / "model.safetensors"
    )
    assert record["weights_sha256"] == hashlib.sha256(bundled.read_bytes()).hexdigest()
    assert figure.stat().st_size < 300_000
    assert "docs/images/before_after.webp" in (EXAMPLES.parent / "README.md").read_text().split("## ")[0]


def test_lam_compare_writes_the_figure_and_a_report(tmp_path: Path) -> None:
    from mma import build_model
    from mma.weights.checkpoint import save_safetensors

    cnn = tmp_path / "cnn.safetensors"
    save_safetensors(build_model("mma-t", 2, mixer="cnn+ca"), cnn)
    out = tmp_path / "lam.png"
    run(
        "lam_compare.py",
        "--image",
        str(EXAMPLES / "astronaut.png"),
        "--x",
        "56",
        "--y",
        "56",
        "--window",
        "8",
        "--crop",
        "16",
        "--steps",
        "2",
        "--cnn-model",
        str(cnn),
        "--out",
        str(out),
    )
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["models"]) == {"MMA-T", "w/ CNN"}
    for model in report["models"].values():
        assert 0 < model["diffusion_index"] <= 100
        reach = list(model["reach_lr_pixels"].values())
        assert reach == sorted(reach) and 0 <= reach[0] <= 16  # more of the map needs at least as much room
    with Image.open(out) as figure:
        assert figure.height == 3 * (figure.width // 3 + 18)  # three rows of square panels with captions
