"""`mma models`, `mma download` and `mma convert`, including their bad-input cases (one-line error, exit 1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mma.cli import app
from mma.model import build_model
from mma.weights import load_checkpoint, model_from_file, registry, save_safetensors
from mma.weights.hub import sha256_of


def mma(*args: str | Path):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


@pytest.fixture
def bundled_dir(tmp_path, monkeypatch):
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(registry, "BUNDLED_DIR", folder)
    return folder


def authors_pth(path: Path, model: torch.nn.Module) -> Path:
    """As the authors' BasicSR release stores weights: params and params_ema, DDP `module.` prefix."""
    state = {f"module.{name}": tensor for name, tensor in model.state_dict().items()}
    torch.save({"params": state, "params_ema": state}, path)
    return path


def tiny(scale: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mma-t", scale, num_feat=8, num_block=1).eval()


def models_rows(result) -> dict[tuple[str, str], list[str]]:
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["model", "scale", "parameters", "offline", "Set5", "Set14", "weights"]
    assert lines[-1].startswith("Set5, Set14: PSNR (dB, Y channel)")
    return {tuple(line.split()[:2]): line.split() for line in lines[1:-1]}


def test_models_lists_every_model_with_counts_and_sources(bundled_dir):
    (bundled_dir / "mma-t-x2").mkdir()
    save_safetensors(tiny(2), bundled_dir / "mma-t-x2" / "model.safetensors")
    rows = models_rows(mma("models"))
    assert set(rows) == {(v, f"x{s}") for v in ("mma-t", "mma-b") for s in (2, 3, 4)}
    counts = {
        ("mma-t", "x2"): "795,735",
        ("mma-t", "x3"): "899,655",
        ("mma-t", "x4"): "878,871",
        ("mma-b", "x2"): "19,824,627",
    }
    for key, count in counts.items():
        assert rows[key][2] == count
    assert rows["mma-t", "x2"][3:] == ["yes", "-", "-", "bundled"]  # bundled, but no scores file
    assert rows["mma-b", "x4"][3:7] == ["no", "-", "-", "none"]


def test_models_shows_the_bundled_scores_that_bundle_py_writes(bundled_dir, load_script):
    from mma.evaluate import DatasetResult, ImageScore

    bundle = load_script("weights/bundle.py")
    (bundled_dir / "mma-t-x3").mkdir()
    save_safetensors(tiny(3), bundled_dir / "mma-t-x3" / "model.safetensors")

    def result(name: str, psnr: float) -> DatasetResult:
        return DatasetResult(name, 3, (ImageScore("a.png", psnr, 0.91, 0.1),))

    scores = bundle.scores(
        [result("Set5", 33.234), result("Set14", 29.6049)],
        [result("Set5", 30.4), result("Set14", 27.6)],
        3,
        6637,
    )
    (bundled_dir / "mma-t-x3" / registry.SCORES_NAME).write_text(json.dumps(scores))
    rows = models_rows(mma("models"))
    assert rows["mma-t", "x3"][3:] == ["yes", "33.23", "29.60", "bundled"]
    assert registry.REGISTRY["mma-t", 3].bundled_scores()["Set14"] == {
        "psnr": 29.6049,
        "ssim": 0.91,
        "bicubic_psnr": 27.6,
        "bicubic_ssim": 0.91,
    }


def test_models_reports_a_damaged_scores_file(bundled_dir):
    (bundled_dir / "mma-t-x4").mkdir()
    save_safetensors(tiny(4), bundled_dir / "mma-t-x4" / "model.safetensors")
    (bundled_dir / "mma-t-x4" / registry.SCORES_NAME).write_text("{not json")
    assert_one_line_error(mma("models"), "scores.json: unreadable scores file")


def test_shipped_scores_match_the_model_cards():
    """scores.json of each bundled model holds the numbers its card's quality table shows."""
    for scale in (2, 3, 4):
        folder = registry.BUNDLED_DIR / f"mma-t-x{scale}"
        scores = json.loads((folder / registry.SCORES_NAME).read_text())
        assert scores["scale"] == scale
        card = (folder / "README.md").read_text()
        ours = next(line for line in card.splitlines() if line.startswith("| **this model**"))
        bicubic = next(line for line in card.splitlines() if line.startswith("| bicubic"))
        for name in ("Set5", "Set14"):
            got = scores["datasets"][name]
            assert f"{got['psnr']:.2f} / {got['ssim']:.4f}" in ours
            assert f"{got['bicubic_psnr']:.2f} / {got['bicubic_ssim']:.4f}" in bicubic


def test_download_of_bundled_weights_prints_their_path(bundled_dir):
    (bundled_dir / "mma-t-x3").mkdir()
    path = save_safetensors(tiny(3), bundled_dir / "mma-t-x3" / "model.safetensors")
    result = mma("download", "mma-t", "--scale", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(path)


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["mma-b", "-s", "2"], ["no weights for mma-b x2", "mma convert AUTHORS.pth mma-b-x2.safetensors"]),
        (["mma-t", "-s", "5"], ["unsupported scale 5"]),
        (["mma-z"], ["unknown model 'mma-z'"]),
        (["missing.safetensors"], ["missing.safetensors: no such weights file"]),
    ],
)
def test_download_errors(bundled_dir, tmp_path, monkeypatch, args, fragments):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(mma("download", *args), *fragments)


def test_convert_infers_variant_and_scale_and_keeps_outputs(tmp_path):
    model = tiny(4)
    source = authors_pth(tmp_path / "MMA_x4.pth", model)
    output = tmp_path / "mma.safetensors"
    result = mma("convert", source, output)
    assert result.exit_code == 0, result.output
    # sizes of no published variant: "custom", read off the shapes like the scale
    assert result.stdout.strip() == f"wrote {output}: custom x4 (num_feat=8, num_block=1)"
    _, metadata = load_checkpoint(output)
    assert (metadata["variant"], metadata["scale"]) == ("custom", 4)
    assert metadata["source_file"] == "MMA_x4.pth"
    assert metadata["source_sha256"] == sha256_of(source)
    assert (metadata["source_format"], metadata["source_state_key"]) == ("pth", "params_ema")
    image = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model_from_file(output)(image), model(image))


def test_convert_full_size_authors_checkpoint(tmp_path):
    source = authors_pth(tmp_path / "mma-t_x2.pth", build_model("mma-t", 2))
    result = mma("convert", source, tmp_path / "out.safetensors")
    assert result.exit_code == 0, result.output
    assert "mma-t x2 (num_feat=48, num_block=12)" in result.stdout


def test_convert_refuses_to_overwrite_without_force(tmp_path):
    source = authors_pth(tmp_path / "a.pth", tiny())
    output = tmp_path / "out.safetensors"
    output.write_bytes(b"keep me")
    assert_one_line_error(
        mma("convert", source, output), "out.safetensors: exists (use --force to overwrite)"
    )
    assert output.read_bytes() == b"keep me"
    assert mma("convert", source, output, "--force").exit_code == 0
    assert load_checkpoint(output)[1]["scale"] == 2


def _malicious(path: Path, marker: Path) -> Path:
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"params_ema": RunsCode()}, path)
    return path


def _corrupt(path: Path) -> Path:
    path.write_bytes(b'\x20\x00\x00\x00\x00\x00\x00\x00{"w": {"dtype": "F32", "shape": [9')
    return path


def _not_mma(path: Path) -> Path:
    torch.save({"params": {"fc.weight": torch.zeros(2, 2)}}, path)
    return path


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda d: _malicious(d / "evil.pth", d / "ran"), ["evil.pth: refused"]),
        (lambda d: _corrupt(d / "bad.safetensors"), ["bad.safetensors: not a valid safetensors file"]),
        (lambda d: _not_mma(d / "other.pth"), ["not an MMA checkpoint"]),
        (lambda d: d / "absent.pth", ["absent.pth: no such weights file"]),
    ],
)
def test_convert_bad_inputs_write_nothing(tmp_path, make, fragments):
    source = make(tmp_path)
    output = tmp_path / "out.safetensors"
    assert_one_line_error(mma("convert", source, output), *fragments)
    assert not output.exists()
    assert not (tmp_path / "ran").exists()


def test_convert_output_problems(tmp_path):
    source = authors_pth(tmp_path / "a.pth", tiny())
    assert_one_line_error(mma("convert", source, source), "the output is the input file")
    assert_one_line_error(mma("convert", source, tmp_path / "no" / "dir.safetensors"), "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]
