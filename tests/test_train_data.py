"""Training data: LR made with the MATLAB resize and cached, aligned LR/HR patches, the 8 flips/rotations,
stateless (seeded) sampling, DDP sharding, the held-out validation split."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mma.errors import ConfigError
from mma.imaging.resize import imresize, modcrop
from mma.train.data import (
    IterationBatches,
    PairStore,
    PatchDataset,
    dihedral,
    load_pair,
    make_loader,
    random_patch,
    split_validation,
    training_images,
)


def _png(path: Path, height: int, width: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        path
    )
    return path


class _BlockStore:
    """Pairs whose HR is the LR with every pixel repeated scale x scale: a crop misaligned by even one LR
    pixel, or transformed differently from its partner, no longer matches."""

    def __init__(self, scale: int, sizes: list[tuple[int, int]], seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.scale = scale
        lrs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
        self.pairs = [(lr.repeat(scale, 0).repeat(scale, 1), lr) for lr in lrs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.pairs[index]


def _block_mean(hr: torch.Tensor, scale: int) -> torch.Tensor:
    c, h, w = hr.shape
    return hr.double().view(c, h // scale, scale, w // scale, scale).mean((2, 4))


def test_pairs_are_modcropped_hr_and_matlab_bicubic_lr(tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png", 31, 22, seed=1)
    hr, lr = load_pair(path, 3)
    expected_hr = modcrop(np.asarray(Image.open(path)), 3)
    assert np.array_equal(hr, expected_hr) and hr.shape == (30, 21, 3)
    assert lr.dtype == np.uint8 and np.array_equal(lr, imresize(expected_hr, 1 / 3))


def test_disk_cache_is_reused_and_invalidated_when_the_image_changes(tmp_path: Path) -> None:
    path = _png(tmp_path / "img" / "a.png", 20, 24, seed=2)
    cache = tmp_path / "cache"
    first = PairStore([path], 2, cache_dir=cache)
    files = sorted(cache.iterdir())
    assert [f.name.endswith(s) for f, s in zip(files, ("-hr.npy", "-lr.npy"))] == [True, True]
    again = PairStore([path], 2, cache_dir=cache)
    assert isinstance(again[0][1], np.memmap)  # read back, not recomputed
    assert all(np.array_equal(a, b) for a, b in zip(first[0], again[0]))
    _png(path, 20, 24, seed=3)
    os.utime(path, ns=(1, 1))
    changed = PairStore([path], 2, cache_dir=cache)
    assert len(list(cache.iterdir())) == 4 and not np.array_equal(changed[0][0], first[0][0])


def test_images_too_small_for_a_patch_are_left_out(tmp_path: Path) -> None:
    paths = [_png(tmp_path / "big.png", 40, 40, 0), _png(tmp_path / "small.png", 10, 40, 1)]
    store = PairStore(paths, 2, min_lr_size=8)
    assert store.paths == [paths[0]]
    with pytest.raises(ConfigError, match="large enough"):
        PairStore(paths[1:], 2, min_lr_size=8)


def test_training_images_reads_folders_and_their_hr_subfolders(tmp_path: Path) -> None:
    _png(tmp_path / "A" / "HR" / "x.png", 8, 8, 0)
    _png(tmp_path / "B" / "y.bmp", 8, 8, 1)
    (tmp_path / "B" / "notes.txt").write_text("not an image")
    assert [p.name for p in training_images([tmp_path / "A", tmp_path / "B"])] == ["x.png", "y.bmp"]
    with pytest.raises(ConfigError):
        training_images([])


def test_dihedral_gives_the_eight_distinct_symmetries() -> None:
    image = np.arange(3 * 4 * 2).reshape(3, 4, 2)
    variants = {
        dihedral(image, k, f).tobytes() + bytes(dihedral(image, k, f).shape)
        for k in range(4)
        for f in (False, True)
    }
    assert len(variants) == 8
    assert np.array_equal(dihedral(image, 1, False), np.rot90(image))
    assert np.array_equal(dihedral(image, 0, True), image[:, ::-1])


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_patches_are_aligned_and_identically_augmented(scale: int) -> None:
    store = _BlockStore(scale, [(20, 13), (9, 31)])
    rng = np.random.default_rng(5)
    transforms = set()
    for _ in range(200):
        k = int(rng.integers(0, 2))
        hr, lr = store[k]
        lr_patch, hr_patch = random_patch(hr, lr, scale, 7, rng)
        assert lr_patch.shape == (7, 7, 3) and hr_patch.shape == (7 * scale, 7 * scale, 3)
        assert np.array_equal(hr_patch[::scale, ::scale], lr_patch)
        transforms.add(lr_patch.tobytes())
    assert len(transforms) > 100


def test_samples_are_a_pure_function_of_seed_and_sample_number() -> None:
    store = _BlockStore(2, [(12, 12), (16, 10), (11, 14)])
    a, b, c = PatchDataset(store, 6, seed=1), PatchDataset(store, 6, seed=1), PatchDataset(store, 6, seed=2)
    forward = [a[g] for g in range(12)]
    backward = [b[g] for g in reversed(range(12))][::-1]  # any order, any process: the same samples
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(forward, backward))
    assert not all(torch.equal(x[0], c[g][0]) for g, x in enumerate(forward))
    for lr, hr in forward:
        assert lr.dtype == torch.uint8 and lr.shape == (3, 6, 6) and hr.shape == (3, 12, 12)
        assert torch.equal(_block_mean(hr, 2), lr.double())


def test_each_epoch_visits_every_image_once_in_a_new_order() -> None:
    store = _BlockStore(2, [(8, 8)] * 5)
    store.pairs = [(np.full((16, 16, 3), i, np.uint8), np.full((8, 8, 3), i, np.uint8)) for i in range(5)]
    data = PatchDataset(store, 4, seed=0)
    orders = [[int(data[epoch * 5 + i][0][0, 0, 0]) for i in range(5)] for epoch in range(4)]
    assert all(sorted(order) == list(range(5)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1


def test_ranks_take_disjoint_slices_of_the_same_global_batches() -> None:
    single = list(IterationBatches(3, 6, global_batch=4))
    ranks = [list(IterationBatches(3, 6, global_batch=4, rank=r, world_size=2)) for r in range(2)]
    assert single == [[12, 13, 14, 15], [16, 17, 18, 19], [20, 21, 22, 23]]
    assert [a + b for a, b in zip(*ranks)] == single
    assert len(IterationBatches(5, 5, 4)) == 0
    with pytest.raises(ConfigError, match="split evenly"):
        IterationBatches(0, 1, global_batch=5, world_size=2)


def test_loader_batches_do_not_depend_on_the_number_of_workers() -> None:
    store = _BlockStore(2, [(12, 12), (16, 10), (11, 14)])
    data = PatchDataset(store, 5, seed=7)

    def batches(workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(make_loader(data, IterationBatches(2, 6, 4), workers, pin_memory=False))

    inline, parallel = batches(0), batches(2)
    assert len(inline) == 4 and inline[0][0].shape == (4, 3, 5, 5) and inline[0][1].shape == (4, 3, 10, 10)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(inline, parallel))


class _SignalProbe(torch.utils.data.Dataset):
    """Reports, from inside a loader worker, whether SIGINT and SIGTERM are ignored there."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor(
            [signal.getsignal(sig) == signal.SIG_IGN for sig in (signal.SIGINT, signal.SIGTERM)]
        )


def test_loader_workers_leave_stop_signals_to_the_main_process() -> None:
    """A group-wide SIGTERM (timeout, Slurm) must reach only the trainer, which saves before it stops."""
    before = signal.getsignal(signal.SIGTERM)
    batches = list(make_loader(_SignalProbe(), [[0, 1], [2, 3]], workers=2, pin_memory=False))
    assert all(batch.all() for batch in batches)
    assert signal.getsignal(signal.SIGTERM) == before


def test_validation_split_is_seeded_and_disjoint() -> None:
    paths = [Path(f"{i}.png") for i in range(20)]
    train, held = split_validation(paths, 4, seed=3)
    assert len(held) == 4 and set(train) | set(held) == set(paths) and not set(train) & set(held)
    assert split_validation(paths, 4, seed=3) == (train, held)
    assert split_validation(paths, 4, seed=4)[1] != held
    with pytest.raises(ConfigError):
        split_validation(paths, 20, seed=0)
