"""The host's capabilities as the library sees them, and $MMA_ASSUME_ABSENT, which hides the optional ones."""

from __future__ import annotations

import pytest
import torch

from mma import runtime
from mma.errors import BackendUnavailableError, ConfigError
from mma.ops import available_backends, resolve_backend


@pytest.mark.parametrize("value", ["all", "fp16,bf16,numba,triton,mamba-ssm", " ALL "])
def test_every_optional_capability_can_be_assumed_absent(monkeypatch, value):
    monkeypatch.setenv(runtime.ASSUME_ABSENT_ENV, value)
    assert all(runtime.assumed_absent(name) for name in runtime.OPTIONAL_CAPABILITIES)
    assert not runtime.cpu_has_native(torch.float16) and not runtime.cpu_has_native(torch.bfloat16)
    assert runtime.cpu_has_native(torch.float32)
    reasons = available_backends()
    for backend, capability in (("numba", "numba"), ("triton", "triton"), ("mamba-ssm", "mamba-ssm")):
        assert capability in reasons[backend] and runtime.ASSUME_ABSENT_ENV in reasons[backend]
    assert reasons["torch"] is None and resolve_backend(None, "cpu") == "torch"
    with pytest.raises(BackendUnavailableError, match="numba is taken as absent"):
        resolve_backend("numba", "cpu")
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert runtime.resolve_dtype("bf16", torch.device("cpu")) == torch.float32


def test_only_the_named_capabilities_are_hidden(monkeypatch):
    monkeypatch.setenv(runtime.ASSUME_ABSENT_ENV, "fp16, triton")
    assert runtime.assumed_absent("fp16") and runtime.assumed_absent("triton")
    assert not runtime.assumed_absent("bf16") and not runtime.assumed_absent("numba")
    monkeypatch.setenv(runtime.ASSUME_ABSENT_ENV, "")
    assert not any(runtime.assumed_absent(name) for name in runtime.OPTIONAL_CAPABILITIES)


def test_a_misspelt_capability_is_an_error_not_a_silent_no_op(monkeypatch):
    monkeypatch.setenv(runtime.ASSUME_ABSENT_ENV, "fp16,numbaa")
    with pytest.raises(ConfigError, match="unknown numbaa; use all or any of fp16"):
        runtime.assumed_absent("fp16")


def test_the_host_fixture_answers_for_the_machine(host):
    host.native(fp16=True, bf16=False)
    assert runtime.cpu_has_native(torch.float16) and not runtime.cpu_has_native(torch.bfloat16)
    host.cuda(3)
    assert runtime.cuda_device_count() == 3 and runtime.resolve_device("cuda:2") == torch.device("cuda", 2)
    host.free_memory(1 << 20)
    from mma import tiling

    assert tiling.available_memory("cpu") == 1 << 20
