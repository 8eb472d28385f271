"""Training sets packed into one file (`mma pack`): pixels kept exactly in both encodings, the folders'
order, bad files refused in one line, and a run on the pack identical to a run on the folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from mma.cli import app
from mma.errors import ConfigError, ImageReadError
from mma.evaluate import read_rgb
from mma.train import build_config, train
from mma.train.data import PairStore, training_images
from mma.train.packed import pack_images, packed_images, read_training_image, source_name
from mma.train.state import load_state


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two dataset folders (one with an HR subfolder), PNG and BMP, colour and grey, extreme pixel values."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(3)
    first, second = root / "A" / "HR", root / "B"
    first.mkdir(parents=True)
    second.mkdir()
    for i in range(3):
        image = rng.integers(0, 256, (30 + 3 * i, 34, 3), dtype=np.uint8)
        image[0, 0], image[0, 1] = 0, 255
        Image.fromarray(image).save(first / f"a{i}.png")
    Image.fromarray(rng.integers(0, 256, (33, 31), dtype=np.uint8)).save(second / "grey.bmp")
    Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(second / "b.png")
    return [root / "A", second]


@pytest.mark.parametrize("encoding", ["raw", "webp"])
def test_a_pack_holds_every_pixel_in_the_folders_order(
    folders: list[Path], tmp_path: Path, encoding: str
) -> None:
    pack = pack_images(folders, tmp_path / "set.safetensors", encoding)
    files = training_images(folders)
    packed = training_images([pack])
    assert [image.name for image in packed] == [path.name for path in files]
    for image, path in zip(packed, files, strict=True):
        pixels = read_training_image(image)
        assert pixels.dtype == np.uint8 and pixels.shape[2] == 3
        assert np.array_equal(pixels, read_rgb(path))
    assert source_name(pack) == "A+B"
    assert len(packed_images(pack)) == 5


def test_a_run_on_the_pack_is_the_run_on_the_folders(folders: list[Path], tmp_path: Path) -> None:
    pack = pack_images(folders, tmp_path / "set.safetensors")

    def run(data: list[str], out: str) -> dict[str, torch.Tensor]:
        cfg = build_config(
            overrides={
                "train": data,
                "model": {"num_feat": 8, "num_block": 1},
                "patch": 8,
                "batch": 2,
                "iters": 3,
                "val_split": 1,
                "val_every": 3,
                "workers": 0,
                "out": str(tmp_path / out),
            }
        )
        result = train(cfg)
        assert result.validations[0].images == 1
        return load_state(tmp_path / out / "state.ckpt")["model"]

    from_files = run([str(f) for f in folders], "files")
    from_pack = run([str(pack)], "pack")
    assert all(torch.equal(from_files[k], from_pack[k]) for k in from_files)


def test_packed_images_use_the_disk_cache(folders: list[Path], tmp_path: Path) -> None:
    pack = pack_images(folders, tmp_path / "set.safetensors")
    images = training_images([pack])
    first = PairStore(images, 2, cache_dir=tmp_path / "cache")
    again = PairStore(images, 2, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2 * len(images)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first.pairs, again.pairs, strict=True))


def test_bad_packs_and_options_are_one_line_errors(folders: list[Path], tmp_path: Path) -> None:
    other = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ImageReadError, match="not a training-image pack"):
        training_images([other])
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 5)
    with pytest.raises(ImageReadError, match="not a readable pack"):
        training_images([broken])
    with pytest.raises(ConfigError, match="encoding"):
        pack_images(folders, tmp_path / "x.safetensors", "jpeg")
    with pytest.raises(ConfigError, match=r"\.safetensors"):
        pack_images(folders, tmp_path / "x.npz")


def test_mma_pack_writes_once_and_train_reads_it(folders: list[Path], tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "set.safetensors"
    made = runner.invoke(app, ["pack", str(out), *map(str, folders), "--encoding", "webp"])
    assert made.exit_code == 0, made.output
    assert "packed 5 images" in made.output
    again = runner.invoke(app, ["pack", str(out), *map(str, folders)])
    assert again.exit_code == 1 and "error:" in again.output and "--force" in again.output
    trained = runner.invoke(
        app,
        ["train", "--preset", "cpu-tiny", "--data", str(out), "--iters", "1", "--patch", "8", "--batch", "2"]
        + ["--val-split", "1", "--out", str(tmp_path / "run")],
    )
    assert trained.exit_code == 0, trained.output
