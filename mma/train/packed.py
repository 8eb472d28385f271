"""A training set packed into one file: the decoded HR images of some folders, in the order training reads
them, as one safetensors file (`mma pack`), given to `mma train --data FILE` like a folder.

Why one file: a job that must carry its data somewhere (a cluster node, a cloud instance, a container)
moves one file instead of hundreds, and reading it needs no image decoding (`raw`: memory-mapped pixels)
or one lossless WebP decode per image (`webp`, about a third of the size, for travel). Images keep the
folders' order, so a run on the pack draws the same samples and holds out the same validation images as a
run on the folders (tested bit for bit).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from mma.errors import ConfigError, ImageReadError
from mma.evaluate import dataset_name, find_images, read_rgb
from mma.fileio import atomic_write

PACK_FORMAT = "mma-train-images"
PACK_SUFFIX = ".safetensors"
ENCODINGS = ("raw", "webp")


@dataclass(frozen=True)
class PackedImage:
    """One image inside a pack; `name` and `stem` are those of the file it was packed from."""

    pack: Path
    key: str
    name: str
    encoding: str

    @property
    def stem(self) -> str:
        return Path(self.name).stem

    def read(self) -> np.ndarray:
        """uint8 HxWx3."""
        with safe_open(str(self.pack), framework="pt") as handle:
            data = handle.get_tensor(self.key).numpy()
        if self.encoding == "webp":
            with Image.open(io.BytesIO(data.tobytes())) as image:
                return np.asarray(image.convert("RGB"))
        return data


TrainingImage = Path | PackedImage


def is_pack(entry: str | Path) -> bool:
    return Path(entry).suffix == PACK_SUFFIX and Path(entry).is_file()


def read_training_image(image: TrainingImage) -> np.ndarray:
    """uint8 HxWx3 of an image file or a packed image."""
    return image.read() if isinstance(image, PackedImage) else read_rgb(image)


def pack_images(
    folders: Sequence[str | Path],
    out: str | Path,
    encoding: str = "raw",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write the HR images of `folders` (an `HR` subfolder is used when present) into one pack at `out`."""
    if encoding not in ENCODINGS:
        raise ConfigError(f"unknown encoding {encoding!r}: choose one of {', '.join(ENCODINGS)}")
    if not folders:
        raise ConfigError("nothing to pack: give at least one HR image folder")
    out = Path(out)
    if out.suffix != PACK_SUFFIX:
        raise ConfigError(f"{out}: a pack is a {PACK_SUFFIX} file")
    paths = [(folder, path) for folder in folders for path in find_images(folder)]
    tensors: dict[str, torch.Tensor] = {}
    names = []
    for done, (folder, path) in enumerate(paths, 1):
        pixels = read_rgb(path)
        key = f"{done - 1:06d}"
        tensors[key] = torch.from_numpy(_encoded(pixels, encoding, path))
        names.append(f"{dataset_name(folder)}/{path.name}")
        if progress is not None:
            progress(done, len(paths))
    metadata = {
        "format": PACK_FORMAT,
        "encoding": encoding,
        "names": json.dumps(names),
        "folders": json.dumps([dataset_name(folder) for folder in folders]),
    }
    data = save(tensors, metadata=metadata)
    return atomic_write(out, lambda tmp: tmp.write_bytes(data), make_parents=True)


def _encoded(pixels: np.ndarray, encoding: str, path: Path) -> np.ndarray:
    if encoding == "raw":
        return np.array(pixels, dtype=np.uint8, order="C")  # a writable copy, as torch wants
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", lossless=True, quality=100, method=4)
    data = np.frombuffer(buffer.getvalue(), dtype=np.uint8).copy()
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        if not np.array_equal(np.asarray(image.convert("RGB")), pixels):  # never store a lossy copy
            raise ImageReadError(f"{path}: lossless WebP did not give the same pixels back")
    return data


def _metadata(pack: Path) -> dict[str, str]:
    try:
        with safe_open(str(pack), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ImageReadError(f"{pack}: not a readable pack ({exc})") from None
    if metadata.get("format") != PACK_FORMAT:
        raise ImageReadError(f"{pack}: not a training-image pack written by `mma pack`")
    return metadata


def packed_images(pack: str | Path) -> list[PackedImage]:
    """The images of a pack, in the order they were packed."""
    pack = Path(pack)
    metadata = _metadata(pack)
    names = json.loads(metadata["names"])
    return [
        PackedImage(pack, f"{i:06d}", Path(name).name, metadata["encoding"]) for i, name in enumerate(names)
    ]


def source_name(entry: str | Path) -> str:
    """How provenance names a training source: a folder's dataset name, or a pack's folders joined by '+'."""
    if is_pack(entry):
        return "+".join(json.loads(_metadata(Path(entry))["folders"]))
    return dataset_name(entry)
