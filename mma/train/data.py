"""Training data: HR images, their MATLAB-bicubic LR versions (made once per image and scale), and random
aligned LR/HR patches with flips and rotations.

Why stateless sampling: the patch of global sample number `g` is a pure function of (seed, g) -- which
image (a per-epoch permutation), where to crop and how to flip/rotate. A run therefore resumes exactly
from nothing but its iteration count, DDP ranks take disjoint slices of the same global batches, and the
result does not depend on how many loader workers produced it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mma.errors import ConfigError
from mma.evaluate import find_images
from mma.fileio import atomic_write
from mma.imaging.resize import imresize, modcrop
from mma.train.packed import PackedImage, TrainingImage, is_pack, packed_images, read_training_image

log = logging.getLogger(__name__)

_CACHE_VERSION = 1  # bump when the way LR images are made changes, so old cache files are not reused
_PERMUTATION, _PATCH = 1, 2  # tags that keep the two random streams apart


def training_images(folders: Sequence[str | Path]) -> list[TrainingImage]:
    """All HR images of the given folders (an `HR` subfolder is used when present) or packs (`mma pack`),
    in a stable order."""
    if not folders:
        raise ConfigError("no training data: give at least one HR image folder")
    images: list[TrainingImage] = []
    for source in folders:
        images += packed_images(source) if is_pack(source) else find_images(source)
    return images


def split_validation(
    paths: Sequence[TrainingImage], count: int, seed: int
) -> tuple[list[TrainingImage], list[TrainingImage]]:
    """Hold out `count` images chosen by `seed`; returns (training, validation), each in input order."""
    if count >= len(paths):
        raise ConfigError(f"val_split={count} would leave no training images out of {len(paths)}")
    held = set(
        np.random.default_rng((seed, _PERMUTATION, 2**32 - 1)).choice(len(paths), count, replace=False)
    )
    return ([p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held])


def _cache_stem(image: TrainingImage, scale: int) -> str:
    """Changes whenever the file (path, size, modification time; a pack's and the key in it) or the LR
    recipe changes."""
    path = image.pack if isinstance(image, PackedImage) else image
    inside = f"|{image.key}" if isinstance(image, PackedImage) else ""
    stat = path.stat()
    key = f"{path.resolve()}{inside}|{stat.st_size}|{stat.st_mtime_ns}|x{scale}|v{_CACHE_VERSION}"
    return f"{image.stem}-{hashlib.sha1(key.encode()).hexdigest()[:16]}-x{scale}"


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a handle, so numpy does not append ".npy" to the temporary name
            np.save(handle, array)

    atomic_write(path, write)


def load_pair(
    path: TrainingImage, scale: int, cache_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(HR modcropped, LR = imresize(HR, 1/scale)), uint8 HxWx3; memory-mapped from `cache_dir` if cached."""
    if cache_dir is not None:
        stem = cache_dir / _cache_stem(path, scale)
        hr_file, lr_file = stem.with_name(stem.name + "-hr.npy"), stem.with_name(stem.name + "-lr.npy")
        if hr_file.is_file() and lr_file.is_file():
            return np.load(hr_file, mmap_mode="r"), np.load(lr_file, mmap_mode="r")
    hr = np.ascontiguousarray(modcrop(read_training_image(path), scale))
    lr = imresize(hr, 1 / scale)
    if cache_dir is not None:
        _save_npy(hr_file, hr)
        _save_npy(lr_file, lr)
    return hr, lr


class PairStore:
    """The HR/LR pairs of a list of images at one scale, all made up front and kept (or memory-mapped).

    Images whose LR side is shorter than `min_lr_size` cannot give a patch and are left out (logged).
    """

    def __init__(
        self,
        paths: Sequence[TrainingImage],
        scale: int,
        *,
        min_lr_size: int = 1,
        cache_dir: str | Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        cache = Path(cache_dir) if cache_dir is not None else None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        self.scale = scale
        self.paths: list[TrainingImage] = []
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []
        for done, path in enumerate(paths, 1):
            image = path if isinstance(path, PackedImage) else Path(path)
            hr, lr = load_pair(image, scale, cache)
            if min(lr.shape[:2]) >= min_lr_size:
                self.paths.append(image)
                self.pairs.append((hr, lr))
            if progress is not None:
                progress(done, len(paths))
        skipped = len(paths) - len(self.paths)
        if skipped:
            log.warning(
                "%d of %d images are smaller than %d LR pixels and are not used",
                skipped,
                len(paths),
                min_lr_size,
            )
        if not self.pairs:
            raise ConfigError(
                f"none of the {len(paths)} training images is large enough for "
                f"{min_lr_size}x{min_lr_size} LR patches at x{scale}"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pairs[index]


def dihedral(image: np.ndarray, rotations: int, flip: bool) -> np.ndarray:
    """One of the 8 flips/rotations of an HxWxC image: an optional horizontal flip, then k * 90 degrees."""
    if flip:
        image = image[:, ::-1]
    return np.rot90(image, rotations, axes=(0, 1))


def random_patch(
    hr: np.ndarray, lr: np.ndarray, scale: int, patch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random `patch`-sized LR crop and the HR crop covering the same area, equally flipped/rotated."""
    height, width = lr.shape[:2]
    top, left = int(rng.integers(0, height - patch + 1)), int(rng.integers(0, width - patch + 1))
    rotations, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    lr_patch = lr[top : top + patch, left : left + patch]
    hr_patch = hr[top * scale : (top + patch) * scale, left * scale : (left + patch) * scale]
    return dihedral(lr_patch, rotations, flip), dihedral(hr_patch, rotations, flip)


def _chw(image: np.ndarray) -> torch.Tensor:
    """uint8 CxHxW tensor owning its memory (the source may be a read-only memory map)."""
    return torch.from_numpy(np.array(image.transpose(2, 0, 1), order="C", copy=True))


class PatchDataset(Dataset):
    """Global sample number -> (LR patch, HR patch), uint8 (3, p, p) and (3, sp, sp); see module docstring.

    Epoch e visits every image once in the order of a permutation drawn from (seed, e).
    """

    def __init__(self, store: PairStore, patch: int, seed: int) -> None:
        self.store, self.patch, self.seed = store, patch, seed
        self._epoch, self._permutation = -1, np.empty(0, dtype=np.int64)

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:  # consecutive samples share an epoch: draw each permutation once
            self._epoch = epoch
            self._permutation = np.random.default_rng((self.seed, _PERMUTATION, epoch)).permutation(
                len(self.store)
            )
        return self._permutation

    def __getitem__(self, sample: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(sample, len(self.store))
        hr, lr = self.store[int(self._order(epoch)[position])]
        rng = np.random.default_rng((self.seed, _PATCH, sample))
        lr_patch, hr_patch = random_patch(hr, lr, self.store.scale, self.patch, rng)
        return _chw(lr_patch), _chw(hr_patch)


class IterationBatches(Sampler[list[int]]):
    """Sample numbers for iterations `start`..`stop`-1: this rank's share of each global batch."""

    def __init__(self, start: int, stop: int, global_batch: int, rank: int = 0, world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ConfigError(f"batch {global_batch} does not split evenly over {world_size} processes")
        self.start, self.stop = start, stop
        self.global_batch, self.per_rank, self.rank = global_batch, global_batch // world_size, rank

    def __iter__(self) -> Iterator[list[int]]:
        for iteration in range(self.start, self.stop):
            first = iteration * self.global_batch + self.rank * self.per_rank
            yield list(range(first, first + self.per_rank))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def default_workers(device: torch.device, local_world_size: int = 1) -> int:
    """0 on a CPU: a batch of crops costs milliseconds against a step of seconds, and worker processes
    would only compete with the model for the same cores. On a GPU, the host cores shared among ranks."""
    if device.type == "cpu":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(8, cores // max(1, local_world_size) - 1))


def make_loader(
    dataset: PatchDataset, batches: IterationBatches, workers: int, pin_memory: bool
) -> DataLoader:
    """Batches of uint8 patches in iteration order; workers prefetch a few batches ahead."""
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
        worker_init_fn=_leave_signals_to_the_main_process if workers else None,
    )


def _leave_signals_to_the_main_process(worker_id: int) -> None:
    """Ctrl-C and `timeout`/Slurm/`docker stop` signal the whole process group. A worker that died of
    it would make the main process fail mid-step instead of finishing the step and saving, so workers
    ignore both signals and end when the main process shuts its loader down (or itself ends)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
