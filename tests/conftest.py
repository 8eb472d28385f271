"""Shared test fixtures: where the read-only data and the published spec live, and the repository's scripts."""

from __future__ import annotations

import builtins
import errno
import importlib
import importlib.util
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
SPEC = SHARED / "spec"


def optional_package(name: str, extra: str) -> ModuleType:
    """Import an optional test dependency, or skip the module saying why. Under MMA_REQUIRE_INTEGRATIONS=1
    (the integration step of CI) a missing or broken package fails instead, so those tests cannot pass by
    skipping. Any import failure counts: spandrel fails with a RuntimeError when torchvision does not match
    torch (PyPI's torchvision wheels are CUDA builds that a CPU build of torch cannot load)."""
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 (a broken install raises more than ImportError)
        reason = f"{name} is not usable here ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
        reason += f'pip install "mma-sr[{extra}]"'
        if os.environ.get("MMA_REQUIRE_INTEGRATIONS") == "1":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason, allow_module_level=True)


def write_training_images(folder: Path, count: int = 6, seed: int = 0) -> Path:
    """Small photo-like training images in `folder`: smooth colour ramps with edges and a little noise, each
    a different size, so cropping, patching and held-out splits all have something to do."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = 36 + 2 * i, 44 - i
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        ramp = np.stack([np.sin(6 * x + i), np.cos(5 * y - i), (x > 0.5) ^ (y > 0.4)], -1)
        image = 127.5 + 100 * ramp + rng.normal(0, 6, (h, w, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    if not SPEC.is_dir():
        pytest.skip(f"published spec not found at {SPEC} (../shared is absent)")
    return SPEC


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA} (../shared is absent)")
    return DATA


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Import a script that is not part of the package (weights/bundle.py, benchmarks/...) by its path."""

    def load(relative: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(Path(relative).stem + "_script", REPO / relative)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Two colour images and one grayscale image, of sizes that are not multiples of 2 or 3."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "Tiny"
    folder.mkdir()
    smooth = np.kron(rng.integers(0, 256, size=(8, 9, 3)), np.ones((5, 5, 1))).astype(np.uint8)
    Image.fromarray(smooth[:37, :41]).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, size=(30, 34, 3), dtype=np.uint8)).save(folder / "b.bmp")
    Image.fromarray(smooth[:33, :35, 0]).save(folder / "c_gray.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    """An untrained one-block MMA x2 saved as safetensors (its scores are meaningless but deterministic)."""
    import torch

    from mma.model import build_model
    from mma.weights import save_safetensors

    torch.manual_seed(0)
    return save_safetensors(
        build_model("mma-t", 2, num_feat=8, num_block=1), tmp_path / "tiny_x2.safetensors"
    )


@pytest.fixture(params=["mounted", "simulated"])
def read_only_folder(request, tmp_path, monkeypatch) -> Iterator[Path]:
    """A folder holding `inside.txt` in which nothing can be created, changed or removed.

    Tests run as root, which ignores permission bits, so a chmod'ed folder would stay writable. "mounted" is a
    real read-only file system (a tmpfs remounted read-only; skipped where mounting is not allowed).
    "simulated" runs everywhere: os.open, os.unlink, os.replace, os.mkdir and opening for writing fail with
    EROFS for paths in the folder, as the kernel answers on a read-only mount.
    """
    folder = tmp_path / "read-only"
    folder.mkdir()
    if request.param == "mounted":

        def mount(*args: str) -> bool:
            return (
                shutil.which("mount") is not None
                and subprocess.run(["mount", *args], check=False, capture_output=True).returncode == 0
            )

        if not mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)):
            pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
        try:
            (folder / "inside.txt").write_text("kept")
            if not mount("-o", "remount,ro", str(folder)):
                pytest.skip("cannot remount a tmpfs read-only here")
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=False, capture_output=True)
        return
    (folder / "inside.txt").write_text("kept")
    _simulate_read_only(folder, monkeypatch)
    yield folder


@pytest.fixture()
def simulate_read_only(monkeypatch) -> Callable[[Path], None]:
    """Make an existing folder act as if it were on a read-only file system (as `read_only_folder`
    "simulated"), for tests whose inputs must be inside it."""
    return lambda folder: _simulate_read_only(folder, monkeypatch)


def _simulate_read_only(folder: Path, monkeypatch) -> None:
    def inside(path: object) -> bool:
        return not isinstance(path, int) and Path(os.fsdecode(path)).absolute().parent == folder

    def refuse(path: object) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    def guard(function: Callable, writes: Callable[..., bool] = lambda *a, **k: True) -> Callable:
        def guarded(path, *args, **kwargs):
            if inside(path) and writes(*args, **kwargs):
                refuse(path)
            return function(path, *args, **kwargs)

        return guarded

    def opens_for_writing(mode: str = "r", *args, **kwargs) -> bool:
        return any(flag in mode for flag in "wax+")

    def flags_write(flags: int, *args, **kwargs) -> bool:
        return bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))

    monkeypatch.setattr(os, "open", guard(os.open, flags_write))
    for name in ("unlink", "remove", "mkdir"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    monkeypatch.setattr(os, "replace", guard(os.replace))
    monkeypatch.setattr(builtins, "open", guard(builtins.open, opens_for_writing))
    monkeypatch.setattr(io, "open", guard(io.open, opens_for_writing))


@pytest.fixture
def hub():
    """A local Hugging Face Hub on 127.0.0.1 (tests/hub_server.py): downloads and uploads, never the internet."""
    from hub_server import serving

    with serving() as server:
        yield server


class Host:
    """The machine as a test declares it: each method replaces probes of `mma.runtime` (and the free-memory
    probe of `mma.tiling`) for the rest of the test, so both branches of host-dependent code run anywhere."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch

    def native(self, *, fp16: bool, bf16: bool) -> None:
        """Whether the CPU computes in half precision natively (AVX512-FP16 / AVX512-BF16, AMX)."""
        import torch

        from mma import runtime

        answers = {torch.float16: fp16, torch.bfloat16: bf16, torch.float32: True, torch.float64: True}
        self.monkeypatch.setattr(runtime, "cpu_has_native", lambda dtype: answers.get(dtype, False))

    def cuda(self, count: int, *, bf16: bool = True) -> None:
        """How many CUDA GPUs torch sees, and whether they compute in bfloat16."""
        from mma import runtime

        self.monkeypatch.setattr(runtime, "cuda_device_count", lambda: count)
        self.monkeypatch.setattr(runtime, "cuda_has_bf16", lambda: bf16)
        self.monkeypatch.setattr(runtime, "mps_available", lambda: False)

    def cpus(self, usable: int, idle: float | None) -> None:
        """CPUs this process may use and how many of them sit idle (None: unknown), with no thread count
        fixed by the environment."""
        from mma import runtime

        self.monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        self.monkeypatch.delenv(runtime.THREADS_ENV, raising=False)
        self.monkeypatch.setattr(runtime, "usable_cpus", lambda: usable)
        self.monkeypatch.setattr(runtime, "idle_cpus", lambda window=0.05: idle)

    def free_memory(self, size: int) -> None:
        """Bytes free on every device, as the tiling policy reads them."""
        from mma import tiling

        self.monkeypatch.setattr(tiling, "available_memory", lambda device=None: size)


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    """Declare what the machine can do (`host.native(fp16=False, bf16=True)`, `host.cuda(0)`,
    `host.cpus(4, idle=1.0)`, `host.free_memory(2 << 30)`): tests must hold on every machine, so behaviour
    that depends on the hardware is tested with each answer injected, never with the host's own."""
    return Host(monkeypatch)


@pytest.fixture(autouse=True)
def _cpu_auto_precision_is_fp32(monkeypatch) -> None:
    """`auto` precision on a CPU follows the host (bf16 where it is native, mma.runtime.cpu_auto_dtype), so
    every test runs float32 there unless it asks; tests/test_cpu_half_rule.py tests the rule itself."""
    from mma import runtime

    monkeypatch.setattr(runtime, "cpu_auto_dtype", lambda: runtime.torch.float32)
