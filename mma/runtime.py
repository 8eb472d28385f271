"""Where and how the network runs: device, precision and CPU threads, decided in one place.

Every path that runs the network (upscale, eval, training validation, LAM, bundling, training itself)
asks this module, so `auto` means the same everywhere and a bad request fails the same way.

What the host can do is asked through the small probe functions below (`cuda_device_count`, `cuda_has_bf16`,
`mps_available`, `cpu_has_native`, `usable_cpus`, `idle_cpus`), never of torch directly, so a test replaces
one function to see either answer on any machine. `$MMA_ASSUME_ABSENT` makes the optional capabilities read
as absent (native CPU fp16/bf16, numba, Triton, mamba-ssm), to check that nothing depends on having them.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from mma.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}

# Environment variable that fixes the inference thread count (like OMP_NUM_THREADS, but for mma only).
THREADS_ENV = "MMA_NUM_THREADS"
# Environment variable naming optional capabilities to treat as absent: `all`, or a comma-separated list of
# OPTIONAL_CAPABILITIES. CI runs the tests once with `all`, so a machine without them cannot fail there.
ASSUME_ABSENT_ENV = "MMA_ASSUME_ABSENT"
OPTIONAL_CAPABILITIES = ("fp16", "bf16", "numba", "triton", "mamba-ssm")
# How long the thread policy watches the machine before choosing: long enough to see a busy core.
_LOAD_WINDOW_S = 0.05


def resolve_device(device: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """`auto`: CUDA (this process's GPU under torchrun), then Apple MPS, then CPU. `cuda` without an index
    means the process's local rank (0 outside torchrun); an explicit device must exist here."""
    if isinstance(device, torch.device):
        chosen = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            if cuda_device_count():
                name = "cuda"
            elif mps_available():
                name = "mps"
            else:
                name = "cpu"
        try:
            chosen = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if chosen.type == "cuda":
        count = cuda_device_count()
        if not count:
            raise ConfigError(f"device {str(device)!r} requested but this torch sees no CUDA GPU")
        if chosen.index is None:
            rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))
            chosen = torch.device("cuda", rank % count)
        elif chosen.index >= count:
            raise ConfigError(f"device {chosen} requested but this machine has {count} CUDA GPU(s)")
    if chosen.type == "mps" and not mps_available():
        raise ConfigError("device 'mps' requested but Apple MPS is not available here")
    return chosen


# The rule for half precision by default on a CPU (`auto`): the CPU has it natively, and it was measured to
# lose under MAX_CPU_HALF_LOSS_DB of Set5 PSNR against fp32 (worst of the scales measured) and to run
# faster (benchmarks/bench_half_cpu.py; docs/benchmarks.md, "Half precision on CPUs"). The measurements:
# dtype -> (Set5 loss in dB, fp32 time / half time). bf16: 0.0020 dB at x3 and x4, 0.0001 at x2; 1.39x at x4
# on 256x256 (median of 5 alternating pairs, quiet AVX512-BF16 CPU, 2026-12-03). fp16 is unmeasured (no
# AVX512-FP16 CPU to hand).
MAX_CPU_HALF_LOSS_DB = 0.01
CPU_HALF_MEASURED: dict[torch.dtype, tuple[float, float]] = {torch.bfloat16: (0.0020, 1.39)}


def cpu_auto_dtype() -> torch.dtype:
    """What `auto` means on this CPU: the first half precision the rule above admits, else fp32."""
    for dtype, (loss_db, speedup) in CPU_HALF_MEASURED.items():
        if loss_db < MAX_CPU_HALF_LOSS_DB and speedup > 1.0 and cpu_has_native(dtype):
            return dtype
    return torch.float32


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The precision to run in. `auto`: bf16 on CUDA GPUs that have it, else fp16 on GPUs; on CPUs
    `cpu_auto_dtype()` (half precision only where it is native, measured accurate and faster).

    Half precision on a CPU without native half arithmetic is emulated and several times slower than
    float32, so it is replaced by float32 with one warning instead of silently costing minutes.
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    else:
        name = str(dtype).strip().lower()
        if name == "auto":
            if device.type == "cuda":
                return torch.bfloat16 if cuda_has_bf16() else torch.float16
            return torch.float16 if device.type == "mps" else cpu_auto_dtype()
        if name not in DTYPES:
            raise ConfigError(f"unknown dtype {dtype!r}: use auto, fp32, fp16 or bf16")
        chosen = DTYPES[name]
    if device.type == "cpu" and chosen in (torch.float16, torch.bfloat16) and not cpu_has_native(chosen):
        warnings.warn(
            f"this CPU has no native {dtype_name(chosen)} arithmetic (it would run several times "
            "slower): using fp32",
            RuntimeWarning,
            stacklevel=2,
        )
        return torch.float32
    return chosen


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed precision for training: bfloat16 where the hardware has it (CUDA, or a CPU with native bf16:
    faster steps, docs/benchmarks.md "bfloat16 autocast"), float16 on older GPUs, None (full precision)
    elsewhere. The same hardware test as `resolve_dtype`'s, so training and inference agree."""
    if device.type == "cuda":
        return torch.bfloat16 if cuda_has_bf16() else torch.float16
    if device.type == "cpu" and cpu_has_native(torch.bfloat16):
        return torch.bfloat16
    return None


def dtype_name(dtype: torch.dtype) -> str:
    """`fp32`, `fp16` or `bf16`: the spelling the options use."""
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def assumed_absent(capability: str) -> bool:
    """Whether $MMA_ASSUME_ABSENT names `capability` (one of OPTIONAL_CAPABILITIES) or says `all`.

    Read at every call, so a test may set it with monkeypatch; an unknown name fails rather than being
    ignored, since a misspelt switch would silently test nothing."""
    text = os.environ.get(ASSUME_ABSENT_ENV, "")
    names = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = names - {"all", *OPTIONAL_CAPABILITIES}
    if unknown:
        raise ConfigError(
            f"{ASSUME_ABSENT_ENV}={text!r}: unknown {', '.join(sorted(unknown))}; use all or any of "
            + ", ".join(OPTIONAL_CAPABILITIES)
        )
    return "all" in names or capability in names


def absent_reason(capability: str) -> str:
    """Why a capability that $MMA_ASSUME_ABSENT names is missing, for the backends' reason strings."""
    return (
        f"{capability} is taken as absent here ({ASSUME_ABSENT_ENV}={os.environ.get(ASSUME_ABSENT_ENV, '')})"
    )


def cuda_device_count() -> int:
    """CUDA GPUs this torch can use (0 without a CUDA build, driver or GPU)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cuda_has_bf16() -> bool:
    """Whether the current CUDA GPU computes in bfloat16 natively (Ampere and later)."""
    return torch.cuda.is_bf16_supported()


def mps_available() -> bool:
    """Whether Apple's Metal backend can run here."""
    return torch.backends.mps.is_available()


def cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether oneDNN has native kernels for `dtype` on this CPU (AVX512-BF16/FP16, AMX); False for a half
    precision that $MMA_ASSUME_ABSENT names."""
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported", torch.float16: "_is_mkldnn_fp16_supported"}
    name = probe.get(dtype)
    if name is None:
        return dtype in (torch.float32, torch.float64)
    if assumed_absent(dtype_name(dtype)):
        return False
    try:
        return bool(getattr(torch.ops.mkldnn, name)())
    except (AttributeError, RuntimeError):
        return False


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, so containers and `taskset` are respected)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def idle_cpus(window: float = _LOAD_WINDOW_S) -> float | None:
    """How many of the CPUs this process may run on sat idle over the last `window` seconds (per-CPU lines of
    /proc/stat, so a container pinned to a few CPUs of a large host counts its own), or None where unknown."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    try:
        allowed: set[str] | None = {f"cpu{index}" for index in os.sched_getaffinity(0)}
    except AttributeError:
        allowed = None

    def sample() -> dict[str, tuple[int, int]]:
        times = {}
        for line in stat.read_text().splitlines():
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu" and (allowed is None or name in allowed):
                fields = [int(value) for value in values]
                times[name] = (
                    fields[3] + (fields[4] if len(fields) > 4 else 0),
                    sum(fields[:8]),
                )  # idle+iowait
        return times

    before = sample()
    time.sleep(window)
    after = sample()
    spans = [
        (after[name], before[name]) for name in after if name in before and after[name][1] > before[name][1]
    ]
    if not spans:
        return None
    return sum((idle1 - idle0) / (total1 - total0) for (idle1, total1), (idle0, total0) in spans)


def default_threads() -> int:
    """The inference thread count: $MMA_NUM_THREADS, else torch's own when $OMP_NUM_THREADS fixes it, else
    one per CPU that is idle right now.

    Why not all CPUs: a thread pool larger than the idle CPUs makes every parallel region wait for a
    thread that another process has descheduled (measured in docs/benchmarks.md, "Threads").
    """
    fixed = parse_threads(os.environ.get(THREADS_ENV))
    if fixed:
        return fixed
    if os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()
    cpus = usable_cpus()
    if cpus == 1:
        return 1
    idle = idle_cpus()
    if idle is None:
        return cpus
    return max(1, min(cpus, int(idle + 0.3)))


def parse_threads(value: int | str | None) -> int | None:
    """A thread count from an option or the environment: None/`auto`/0 mean "let the policy choose"."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("", "auto", "0"):
        return None
    if not text.isdigit():
        raise ConfigError(f"threads must be a positive whole number or 'auto', got {value!r}")
    return int(text)


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[int]:
    """Run the body with `count` torch threads (None: the policy's choice), restoring the previous count."""
    chosen = count or default_threads()
    previous = torch.get_num_threads()
    if chosen != previous:
        torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
