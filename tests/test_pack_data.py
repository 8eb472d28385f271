"""benchmarks/pack_data.py carries training images to the GPU machine: they must come back pixel for pixel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def pack_data(load_script):
    return load_script("benchmarks/pack_data.py")


def test_round_trip_keeps_names_formats_and_pixels(pack_data, tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "data"
    (source / "set" / "HR").mkdir(parents=True)
    images = {
        "noise.png": Image.fromarray(rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)),
        "photo.bmp": Image.fromarray(rng.integers(0, 256, (17, 9, 3), dtype=np.uint8)),
        "alpha.png": Image.fromarray(rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)),
        "grey.png": Image.fromarray(rng.integers(0, 256, (12, 5), dtype=np.uint8)),
    }
    for name, image in images.items():
        image.save(source / "set" / "HR" / name)

    pack_data.pack(source, tmp_path / "packed", ["set/HR"])
    packed = sorted(p.name for p in (tmp_path / "packed" / "set" / "HR").iterdir())
    # RGB(A) travels as lossless WebP; a grey image (WebP would make it RGB) is copied as it is.
    assert packed == ["alpha.png.webp", "grey.png", "noise.png.webp", "photo.bmp.webp"]

    pack_data.unpack(tmp_path / "packed", tmp_path / "restored")
    restored = tmp_path / "restored" / "set" / "HR"
    assert sorted(p.name for p in restored.iterdir()) == sorted(images)
    for name, image in images.items():
        with Image.open(restored / name) as back:
            assert back.format == {".png": "PNG", ".bmp": "BMP"}[restored.joinpath(name).suffix]
            assert back.mode == image.mode
            np.testing.assert_array_equal(np.asarray(back), np.asarray(image))
