"""Half precision by default on a CPU: only where it is native, measured under the quality bound and faster.
The CPU's capabilities and the measurements are injected, so both branches run on any host."""

from __future__ import annotations

import pytest
import torch

from mma import runtime
from mma.runtime import cpu_auto_dtype  # the rule itself (conftest pins `auto` to fp32 for other tests)

CPU = torch.device("cpu")


@pytest.fixture
def rule(monkeypatch):
    """Use the real rule with this CPU's native dtypes and these measurements."""

    def set_up(native: set[torch.dtype], measured: dict[torch.dtype, tuple[float, float]]) -> None:
        monkeypatch.setattr(runtime, "cpu_auto_dtype", cpu_auto_dtype)
        monkeypatch.setattr(runtime, "cpu_has_native", lambda dtype: dtype in native)
        monkeypatch.setattr(runtime, "CPU_HALF_MEASURED", measured)

    return set_up


def test_native_accurate_and_faster_half_is_the_default(rule):
    rule({torch.bfloat16}, {torch.bfloat16: (0.002, 1.2)})
    assert runtime.resolve_dtype("auto", CPU) == torch.bfloat16


@pytest.mark.parametrize(
    "native,measured",
    [
        (set(), {torch.bfloat16: (0.002, 1.2)}),  # emulated: several times slower
        ({torch.bfloat16}, {torch.bfloat16: (0.01, 1.2)}),  # loses the bound itself
        ({torch.bfloat16}, {torch.bfloat16: (0.002, 1.0)}),  # not faster
        ({torch.float16}, {torch.bfloat16: (0.002, 1.2)}),  # native fp16, but only bf16 was measured
        ({torch.bfloat16, torch.float16}, {}),  # nothing measured
    ],
)
def test_otherwise_cpus_run_float32(rule, native, measured):
    rule(native, measured)
    assert runtime.resolve_dtype("auto", CPU) == torch.float32


def test_explicit_choices_are_kept_and_other_devices_unchanged(rule, monkeypatch):
    rule({torch.bfloat16}, {torch.bfloat16: (0.002, 1.2)})
    assert runtime.resolve_dtype("fp32", CPU) == torch.float32
    assert runtime.resolve_dtype(None, CPU) == torch.float32
    assert runtime.resolve_dtype("auto", torch.device("mps")) == torch.float16


def test_the_shipped_measurements_are_plausible():
    for loss_db, speedup in runtime.CPU_HALF_MEASURED.values():
        assert loss_db >= 0 and speedup > 0
    assert runtime.MAX_CPU_HALF_LOSS_DB == 0.01
