"""The CPU heap policy (mma.heap): what it asks of glibc, when, and that runs on a CPU go through it.

The C library is replaced by a recorder, so both branches (glibc present or not) run on any host."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_training_images

from mma import heap
from mma.engine import Engine
from mma.train import build_config
from mma.train import loop as train_loop


class FakeLibc:
    """Records mallopt and malloc_trim calls as glibc would receive them."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


KEEP = [
    ("mallopt", heap.M_MMAP_THRESHOLD, heap.KEEP_THRESHOLD),
    ("mallopt", heap.M_TRIM_THRESHOLD, heap.KEEP_THRESHOLD),
]
RESTORE = [
    ("mallopt", heap.M_MMAP_THRESHOLD, heap.DEFAULT_MMAP_THRESHOLD),
    ("mallopt", heap.M_TRIM_THRESHOLD, heap.DEFAULT_TRIM_THRESHOLD),
    ("malloc_trim", 0),
]


@pytest.fixture
def fake_libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(heap, "libc", lambda: fake)
    monkeypatch.delenv(heap.HEAP_ENV, raising=False)
    return fake


def test_thresholds_rise_inside_and_come_back_with_a_trim_on_leaving(fake_libc: FakeLibc) -> None:
    with heap.reuse_freed_memory():
        assert fake_libc.calls == KEEP
        with heap.reuse_freed_memory():  # nested: nothing more until the outermost leaves
            pass
        assert fake_libc.calls == KEEP
    assert fake_libc.calls == KEEP + RESTORE


def test_an_error_inside_still_restores(fake_libc: FakeLibc) -> None:
    with pytest.raises(RuntimeError), heap.reuse_freed_memory():
        raise RuntimeError("boom")
    assert fake_libc.calls == KEEP + RESTORE


def test_concurrent_users_restore_only_when_the_last_one_leaves(fake_libc: FakeLibc) -> None:
    inside, release = threading.Barrier(3), threading.Event()

    def user() -> None:
        with heap.reuse_freed_memory():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=user) for _ in range(2)]
    for thread in threads:
        thread.start()
    inside.wait()
    assert fake_libc.calls == KEEP  # the second user found the thresholds already raised
    release.set()
    for thread in threads:
        thread.join()
    assert fake_libc.calls == KEEP + RESTORE


def test_turned_off_by_the_environment(fake_libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heap.HEAP_ENV, "system")
    assert not heap.enabled()
    with heap.reuse_freed_memory():
        pass
    assert fake_libc.calls == []


def test_without_glibc_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "libc", lambda: None)
    assert not heap.enabled()
    with heap.reuse_freed_memory():
        pass


def test_the_real_c_library_is_glibc_or_absent() -> None:
    lib = heap.libc()
    assert lib is None or (hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"))


def test_a_cpu_engine_runs_its_network_inside(fake_libc: FakeLibc) -> None:
    seen = []

    class Spy(torch.nn.Module):
        scale = 2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(list(fake_libc.calls))
            return x.repeat_interleave(2, -1).repeat_interleave(2, -2)

    Engine(Spy(), device="cpu", tile=None).upscale_array(np.zeros((4, 4, 3), np.uint8))
    assert seen == [KEEP] and fake_libc.calls == KEEP + RESTORE


def test_cpu_training_runs_inside(
    fake_libc: FakeLibc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    original = train_loop.Trainer.run

    def spy_run(self, export):
        seen.append(list(fake_libc.calls))
        return original(self, export)

    monkeypatch.setattr(train_loop.Trainer, "run", spy_run)
    (tmp_path / "hr").mkdir()
    images = write_training_images(tmp_path / "hr", count=3, seed=0)
    config = build_config(
        overrides={
            "train": [str(images)],
            "model": {"num_feat": 8, "num_block": 1},
            "patch": 8,
            "batch": 2,
            "iters": 1,
            "workers": 0,
            "val_every": 100,
            "out": str(tmp_path / "run"),
            "device": "cpu",
        }
    )
    train_loop.train(config)
    assert seen == [KEEP] and fake_libc.calls[-3:] == RESTORE
