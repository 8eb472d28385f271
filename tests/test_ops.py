"""Every usable scan/conv backend against the float64 sequential reference in `mma.ops.reference`."""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from mma.errors import BackendUnavailableError, ConfigError
from mma.ops import (
    ScanArgs,
    available_backends,
    causal_conv1d,
    reference,
    resolve_backend,
    scan_torch,
    scan_triton,
    selective_scan,
    selective_scan_pair,
)
from mma.ops.dispatch import DEVICE_TYPES
from mma.ops.testing import scan_inputs
from mma.runtime import assumed_absent

# backends that take the CPU tensors these tests make
USABLE = [
    name
    for name, reason in available_backends().items()
    if reason is None and DEVICE_TYPES.get(name, "cpu") == "cpu"
]
# The Triton kernels, run by Triton's interpreter on CPU tensors where there is no GPU: slow (a few ms per
# token), so they take the short cases only, but every line of the kernels runs against the reference.
TRITON_INTERPRETED = (
    ["triton-interpreted"]
    if importlib.util.find_spec("triton") and not assumed_absent("triton") and not torch.cuda.is_available()
    else []
)
if TRITON_INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"  # read when mma.ops._triton_kernels is first imported
KERNELS = USABLE + ["torch-chunked"] + TRITON_INTERPRETED


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert torch.isfinite(out).all(), "non-finite output"
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def _inputs(batch=2, dch=20, n=16, length=50, dtype=torch.float32, delta_scale=1.0, seed=0, grad=False):
    """Random inputs in the layouts the model passes (channels-last views for u, delta, z, B, C)."""
    return scan_inputs(batch, dch, length, n, dtype=dtype, delta_scale=delta_scale, seed=seed, grad=grad)


@pytest.mark.parametrize("backend", USABLE + TRITON_INTERPRETED)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("softplus", [True, False])
def test_scan_matches_reference(backend, reverse, softplus):
    x = _inputs(delta_scale=1.0 if softplus else 0.3)
    if not softplus:
        x["delta"], x["delta_bias"] = x["delta"].abs(), x["delta_bias"].abs()  # keep delta > 0
    out = _scan(backend, x, delta_softplus=softplus, reverse=reverse)
    ref = reference.selective_scan(**x, delta_softplus=softplus, reverse=reverse)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert _rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("backend", USABLE + TRITON_INTERPRETED)
def test_scan_optional_inputs_and_contiguous_layout(backend):
    x = _inputs(batch=1, dch=7, n=5, length=33)
    x = {k: v.contiguous() for k, v in x.items()}
    delta = x["delta"].abs()
    out = _scan(backend, {"u": x["u"], "delta": delta, "A": x["A"], "B": x["B"], "C": x["C"]})
    ref = reference.selective_scan(x["u"], delta, x["A"], x["B"], x["C"])
    assert _rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("backend", USABLE + TRITON_INTERPRETED)
def test_scan_reads_any_strides(backend):
    x = _inputs(batch=3, dch=5, n=4, length=80)
    x["u"] = torch.randn(3, 5, 160)[..., ::2]  # every other token
    x["B"] = torch.randn(1, 4, 80).expand(3, 4, 80)  # stride 0 over the batch
    x["C"] = torch.randn(4, 80, 3).permute(2, 0, 1)  # batch innermost
    out = _scan(backend, x, delta_softplus=True)
    ref = reference.selective_scan(**x, delta_softplus=True)
    assert _rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("backend", USABLE + TRITON_INTERPRETED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_scan_half_inputs_keep_their_dtype(backend, dtype):
    x = _inputs(batch=1, dch=6, n=4, length=40)
    out = _scan(backend, {k: v.to(dtype) for k, v in x.items()}, delta_softplus=True)
    ref = reference.selective_scan(**{k: v.to(dtype) for k, v in x.items()}, delta_softplus=True)
    assert out.dtype == dtype and _rel_err(out, ref) <= 1e-2


def _scan_in_child(queue) -> None:
    torch.set_num_threads(1)  # as DataLoader workers do: torch's own OpenMP pool is not fork-safe
    x = _inputs(batch=1, dch=40, n=4, length=100)
    queue.put(selective_scan(**x, delta_softplus=True).abs().sum().item())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_scan_works_in_a_forked_child_after_the_parent_used_it():
    x = _inputs(batch=1, dch=40, n=4, length=100)
    expected = selective_scan(**x, delta_softplus=True).abs().sum().item()
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_scan_in_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():  # never let a hung child hang the suite
        child.kill()
        child.join()
    assert child.exitcode == 0 and queue.get(timeout=5) == expected


def test_scan_from_several_threads_at_once():
    x = _inputs(batch=3, dch=70, n=4, length=200)
    expected = selective_scan(**x, delta_softplus=True)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: selective_scan(**x, delta_softplus=True), range(8)))
    assert all(torch.equal(r, expected) for r in results)


@pytest.mark.skipif("numba" not in USABLE, reason="the numba backend is not usable here")
@pytest.mark.parametrize("threads", [1, 2, 3, 5])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("reverse", [False, True])
def test_numba_scan_splits_channels_over_threads_exactly(threads, batch, reverse):
    """Each thread scans a run of adjacent 32-channel blocks; any split (a partial last block, more threads
    than blocks) gives the reference's result, with and without the states kept for backward."""
    x = _inputs(batch=batch, dch=80, n=5, length=140, grad=True)  # 80 channels: blocks of 32, 32 and 16
    ref = reference.selective_scan(**x, delta_softplus=True, reverse=reverse)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            plain = selective_scan(**x, delta_softplus=True, reverse=reverse, backend="numba")
        kept = selective_scan(**x, delta_softplus=True, reverse=reverse, backend="numba")
        grads = torch.autograd.grad(kept.sum(), [x["u"], x["B"]])
    finally:
        torch.set_num_threads(previous)
    ref_grads = torch.autograd.grad(ref.sum(), [x["u"], x["B"]])
    assert _rel_err(plain, ref) <= 1e-5 and torch.equal(plain, kept.detach())
    assert all(_rel_err(g, r) <= 1e-4 for g, r in zip(grads, ref_grads))


@pytest.mark.parametrize("backend", USABLE)
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("grad", [False, True])
def test_scan_pair_equals_two_scans(backend, threads, grad):
    """The two directions at once (threads shared between them) give each direction's own scan exactly; with
    autograd they run in turn and their gradients match the reference's."""
    first = _inputs(batch=2, dch=70, n=5, length=90, seed=1, grad=grad)
    second = _inputs(batch=2, dch=70, n=5, length=90, seed=2, grad=grad)
    args = (ScanArgs(**first, delta_softplus=True), ScanArgs(**second, delta_softplus=True, reverse=True))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.set_grad_enabled(grad):
            pair = selective_scan_pair(*args, backend=backend)
            alone = [
                selective_scan(**x, delta_softplus=True, reverse=r, backend=backend)
                for x, r in ((first, False), (second, True))
            ]
    finally:
        torch.set_num_threads(previous)
    refs = [
        reference.selective_scan(**x, delta_softplus=True, reverse=r)
        for x, r in ((first, False), (second, True))
    ]
    for out, single, ref in zip(pair, alone, refs):
        assert torch.equal(out.detach(), single.detach()) and _rel_err(out.detach(), ref.detach()) <= 1e-5
    if grad:
        grads = torch.autograd.grad(pair[0].sum() + pair[1].sum(), [first["u"], second["B"]])
        ref_grads = torch.autograd.grad(refs[0].sum() + refs[1].sum(), [first["u"], second["B"]])
        assert all(_rel_err(g, r) <= 1e-4 for g, r in zip(grads, ref_grads))


@pytest.mark.skipif("numba" not in USABLE, reason="the numba backend is not usable here")
@pytest.mark.parametrize("reverse", [False, True])
def test_numba_reads_bfloat16_in_place_exactly(reverse):
    """bfloat16 sequences are widened inside the kernel (no float32 copy): bit for bit what the float32
    copies give, for ordinary, huge, tiny (subnormal) and negative-zero values; the pair does the same."""
    x = _inputs(batch=2, dch=40, n=5, length=70)
    x["u"][0, 0, :4] = torch.tensor([1e30, -1e-39, -0.0, 3e-41])  # huge, subnormal, -0, subnormal
    x["z"][1, 3, :3] = torch.tensor([-1e30, 1e-40, -0.0])
    half = {k: v.to(torch.bfloat16) if k in ("u", "delta", "z", "B", "C") else v for k, v in x.items()}
    widened = {k: v.float() for k, v in half.items()}
    with torch.no_grad():
        out = selective_scan(**half, delta_softplus=True, reverse=reverse, backend="numba")
        expected = selective_scan(**widened, delta_softplus=True, reverse=reverse, backend="numba")
        pair = selective_scan_pair(
            ScanArgs(**half, delta_softplus=True, reverse=reverse),
            ScanArgs(**widened, delta_softplus=True, reverse=reverse),
            backend="numba",
        )
    assert out.dtype == torch.bfloat16 and not torch.isnan(expected).any()
    assert torch.equal(out, expected.to(torch.bfloat16)) and torch.equal(pair[0], out)
    assert torch.equal(pair[1], expected)


@pytest.mark.parametrize("method", ["loop", "chunked"])
@pytest.mark.parametrize("reverse", [False, True])
def test_torch_methods_match_reference(method, reverse):
    x = _inputs(length=1100)  # several segments, not a multiple of the chunk length
    out = scan_torch.selective_scan(**x, delta_softplus=True, reverse=reverse, method=method)
    ref = reference.selective_scan(**x, delta_softplus=True, reverse=reverse)
    assert _rel_err(out, ref) <= 1e-5


@pytest.mark.parametrize("backend", KERNELS)
def test_scan_extreme_delta(backend):
    x = _inputs(length=300)
    x["delta"] = x["delta"] * 10.0  # softplus inputs from about -40 to +40: both tails of softplus
    x["A"] = x["A"] * 20.0  # decays down to exp(-1000): underflow, never NaN
    out = _scan(backend, x, delta_softplus=True)
    ref = reference.selective_scan(**x, delta_softplus=True)
    assert _rel_err(out, ref) <= 1e-5


@functools.cache
def _long_case() -> tuple[dict, torch.Tensor]:
    x = _inputs(batch=1, dch=3, n=4, length=65_536, delta_scale=3.0)
    return x, reference.selective_scan(**x, delta_softplus=True, reverse=True)


@pytest.mark.parametrize("backend", USABLE + ["torch-chunked"])  # the interpreter would take minutes
def test_scan_long_sequence_is_finite_and_exact(backend):
    x, ref = _long_case()
    out = _scan(backend, x, delta_softplus=True, reverse=True)
    assert _rel_err(out, ref) <= 1e-5


def _scan(backend: str, x: dict, **kw) -> torch.Tensor:
    """A dispatch backend by name, or "torch-chunked" / "triton-interpreted" called directly."""
    if backend == "torch-chunked":
        return scan_torch.selective_scan(**x, method="chunked", **kw)
    if backend == "triton-interpreted":
        return scan_triton.selective_scan(**x, **kw)
    return selective_scan(**x, backend=backend, **kw)


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradients_match_reference(backend, reverse):
    length = 150 if backend == "triton-interpreted" else 600  # else several checkpoints and torch segments
    x = _inputs(batch=2, dch=9, n=6, length=length, grad=True)
    weight = torch.randn(2, 9, length, generator=torch.Generator().manual_seed(1))
    out = _scan(backend, x, delta_softplus=True, reverse=reverse)
    grads = torch.autograd.grad((out * weight).sum(), list(x.values()))
    ref = reference.selective_scan(**x, delta_softplus=True, reverse=reverse)
    ref_grads = torch.autograd.grad((ref.double() * weight).sum(), list(x.values()))
    for name, g, r in zip(x, grads, ref_grads):
        assert _rel_err(g, r) <= 1e-4, name


@pytest.mark.parametrize(
    "backend",
    USABLE
    + ["torch-chunked"]
    + [pytest.param(name, marks=pytest.mark.slow) for name in TRITON_INTERPRETED],  # about a minute each
)
@pytest.mark.parametrize("reverse", [False, True])
def test_scan_gradcheck_float64(backend, reverse):
    x = _inputs(batch=2, dch=3, n=2, length=9, dtype=torch.float64, grad=True)
    names = list(x)

    def f(*tensors):
        return _scan(backend, dict(zip(names, tensors)), delta_softplus=True, reverse=reverse)

    assert torch.autograd.gradcheck(f, tuple(x.values()))


@pytest.mark.parametrize("backend", USABLE)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_conv_matches_reference_with_gradients(backend, reverse, activation):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 31, 6, generator=g).transpose(1, 2).requires_grad_(True)
    weight = torch.randn(6, 4, generator=g, requires_grad=True)
    bias = torch.randn(6, generator=g, requires_grad=True)
    out = causal_conv1d(x, weight, bias, activation, reverse=reverse, backend=backend)
    ref = reference.causal_conv1d(x, weight, bias, activation, reverse=reverse)
    assert out.shape == (2, 6, 31) and _rel_err(out, ref) <= 1e-5
    grads = torch.autograd.grad(out.sum(), (x, weight, bias))
    ref_grads = torch.autograd.grad(ref.double().sum(), (x, weight, bias))
    for g_out, g_ref in zip(grads, ref_grads):
        assert _rel_err(g_out, g_ref) <= 1e-5


@pytest.mark.parametrize("reverse", [False, True])
def test_conv_gradients_pass_gradcheck(reverse):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 11, 3, generator=g, dtype=torch.float64).transpose(1, 2).requires_grad_(True)
    weight = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: causal_conv1d(*t, "silu", reverse=reverse), (x, weight, bias))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize(("length", "magnitude"), [(2, 1.0), (40, 1e18), (40, 1e-20)])
def test_conv_gradients_at_extremes_and_short_sequences(reverse, length, magnitude):
    """Sequences shorter than the kernel, and values near float32's range ends, still match float64."""
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(3, length, 5, generator=g) * magnitude).transpose(1, 2).requires_grad_(True)
    weight = torch.randn(5, 4, generator=g, requires_grad=True)
    bias = (torch.randn(5, generator=g) * magnitude).requires_grad_(True)
    out = causal_conv1d(x, weight, bias, reverse=reverse)
    ref = reference.causal_conv1d(x.double(), weight, bias, reverse=reverse)
    assert _rel_err(out, ref) <= 1e-5
    upstream = torch.randn(out.shape, generator=g)
    grads = torch.autograd.grad(out, (x, weight, bias), upstream)
    ref_grads = torch.autograd.grad(ref, (x, weight, bias), upstream.double())
    for g_out, g_ref in zip(grads, ref_grads):
        assert _rel_err(g_out, g_ref) <= 1e-5


@pytest.mark.parametrize("reverse", [False, True])
def test_conv_bfloat16_gradients_keep_float32_parameters(reverse):
    """Under bf16 activations (autocast training) the weight gradient is summed in float32."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 300, 8, generator=g).to(torch.bfloat16).transpose(1, 2).requires_grad_(True)
    weight = torch.randn(8, 4, generator=g, requires_grad=True)
    bias = torch.randn(8, generator=g, requires_grad=True)
    out = causal_conv1d(x, weight, bias, "silu", reverse=reverse)
    ref = reference.causal_conv1d(x.double(), weight, bias, "silu", reverse=reverse)
    assert out.dtype == torch.bfloat16 and _rel_err(out, ref) <= 1e-2
    upstream = torch.randn(out.shape, generator=g).to(torch.bfloat16)
    grads = torch.autograd.grad(out, (x, weight, bias), upstream)
    ref_grads = torch.autograd.grad(ref, (x, weight, bias), upstream.double())
    assert [t.dtype for t in grads] == [torch.bfloat16, torch.float32, torch.float32]
    for g_out, g_ref in zip(grads, ref_grads):
        assert _rel_err(g_out, g_ref) <= 2e-2


def test_conv_is_causal():
    x = torch.zeros(1, 2, 10)
    x[..., 5] = 1.0
    weight = torch.ones(2, 4)
    fwd = causal_conv1d(x, weight, backend="torch")
    bwd = causal_conv1d(x, weight, reverse=True, backend="torch")
    assert fwd[..., :5].abs().sum() == 0 and fwd[..., 5:9].eq(1).all() and fwd[..., 9].eq(0).all()
    assert bwd[..., 6:].abs().sum() == 0 and bwd[..., 2:6].eq(1).all() and bwd[..., :2].eq(0).all()


def test_unavailable_backend_says_why_and_what_to_install(monkeypatch):
    monkeypatch.delenv("MMA_ASSUME_ABSENT", raising=False)  # the machine's own reason, not the switch's
    if available_backends()["mamba-ssm"] is None:
        pytest.skip("the mamba-ssm backend is usable here")
    with pytest.raises(
        BackendUnavailableError, match=r"'mamba-ssm' is unavailable.*pip install mma-sr\[cuda\]"
    ):
        resolve_backend("mamba-ssm", "cpu")


def test_cpu_backend_without_numba_says_what_to_install(monkeypatch):
    from mma.ops import dispatch

    monkeypatch.setattr(
        dispatch.scan_cpu,
        "unavailable_reason",
        lambda: "numba does not work here (x); install it with `pip install numba`",
    )
    with pytest.raises(BackendUnavailableError, match=r"'numba' is unavailable.*pip install numba"):
        resolve_backend("numba", "cpu")
    assert resolve_backend(None, "cpu") == "torch"


def test_backend_on_wrong_device_is_refused():
    with pytest.raises(BackendUnavailableError, match="CUDA tensors only|unavailable"):
        resolve_backend("mamba-ssm", "cpu")


def test_unknown_backend_is_a_config_error(monkeypatch):
    with pytest.raises(ConfigError, match="unknown scan backend 'fast'"):
        resolve_backend("fast", "cpu")
    monkeypatch.setenv("MMA_SCAN_BACKEND", "nope")
    with pytest.raises(ConfigError, match="MMA_SCAN_BACKEND"):
        resolve_backend(None, "cpu")


def test_env_var_overrides_automatic_choice_and_argument_overrides_env(monkeypatch):
    monkeypatch.setenv("MMA_SCAN_BACKEND", "torch")
    assert resolve_backend(None, "cpu") == "torch"
    monkeypatch.setenv("MMA_SCAN_BACKEND", "auto")
    assert resolve_backend(None, "cpu") == ("numba" if "numba" in USABLE else "torch")
    monkeypatch.setenv("MMA_SCAN_BACKEND", "mamba-ssm")
    assert resolve_backend("torch", "cpu") == "torch"


def test_automatic_choice_on_cpu():
    assert resolve_backend(None, torch.device("cpu")) == ("numba" if "numba" in USABLE else "torch")
    assert resolve_backend("auto", "cpu") in USABLE


@pytest.mark.parametrize(
    ("unavailable", "expected"),
    [((), "mamba-ssm"), (("mamba-ssm",), "triton"), (("mamba-ssm", "triton"), "torch")],
)
def test_automatic_choice_on_cuda_prefers_mamba_then_triton(monkeypatch, unavailable, expected):
    from mma.ops import dispatch

    monkeypatch.setattr(
        dispatch,
        "available_backends",
        lambda: {
            "numba": None,
            "torch": None,
            **{name: ("missing" if name in unavailable else None) for name in ("mamba-ssm", "triton")},
        },
    )
    assert resolve_backend(None, "cuda") == expected


def test_triton_backend_on_cpu_tensors_is_refused():
    with pytest.raises(BackendUnavailableError, match="'triton' is unavailable: .*(CUDA|triton)"):
        resolve_backend("triton", "cpu")


@pytest.mark.parametrize(("old", "new"), [("cpu", "numba"), ("cuda", "mamba-ssm")])
def test_old_backend_names_still_work_with_a_deprecation_warning(monkeypatch, old, new):
    from mma.ops import dispatch

    monkeypatch.setattr(dispatch, "available_backends", lambda: dict.fromkeys(dispatch.BACKENDS))
    device = dispatch.DEVICE_TYPES[new]
    with pytest.warns(DeprecationWarning, match=f"'{old}' \\(backend argument\\) is now called '{new}'"):
        assert resolve_backend(old, device) == new
    monkeypatch.setenv("MMA_SCAN_BACKEND", old)
    with pytest.warns(DeprecationWarning, match=f"'{old}' \\(MMA_SCAN_BACKEND\\) is now called '{new}'"):
        assert resolve_backend(None, device) == new


def test_backends_are_named_by_implementation():
    from mma.ops import dispatch

    assert set(dispatch.BACKENDS) == {"numba", "triton", "torch", "mamba-ssm", "export"}
    assert set(available_backends()) == set(dispatch.BACKENDS) == set(dispatch.SCANS) == set(dispatch.CONVS)


def test_every_backend_function_has_the_protocol_signature():
    import inspect

    from mma.ops import dispatch, protocol

    tables = (
        (dispatch.SCANS, protocol.SelectiveScan),
        (dispatch.CONVS, protocol.CausalConv1d),
        (dispatch.PAIRS, protocol.SelectiveScanPair),
    )
    for table, shape in tables:
        expected = [
            (p.name, p.kind, p.default)
            for p in list(inspect.signature(shape.__call__).parameters.values())[1:]
        ]
        for name, function in table.items():
            parameters = list(inspect.signature(function).parameters.values())
            found = [(p.name, p.kind, p.default) for p in parameters[: len(expected)]]
            assert found == expected, f"{name}: {function.__module__}.{function.__name__}"
            extras = parameters[len(expected) :]  # a backend's own options: keyword-only, with defaults
            assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in extras), name


@pytest.mark.parametrize("backend", USABLE)
@pytest.mark.parametrize("reverse", [False, True])
def test_conv_without_autograd_applies_silu_in_place_correctly(backend, reverse):
    """Inference takes the SiLU into the conv's own output: same values, the caller's input untouched."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 40, 8, generator=g).transpose(1, 2) * 30.0
    x[0, 0, :4] = torch.tensor([1e4, -1e4, 88.5, -88.5])  # SiLU's saturated tails
    weight, bias = torch.randn(8, 4, generator=g), torch.randn(8, generator=g)
    before = x.clone()
    with torch.inference_mode():
        out = causal_conv1d(x, weight, bias, "silu", reverse=reverse, backend=backend)
    ref = reference.causal_conv1d(x, weight, bias, "silu", reverse=reverse)
    assert torch.equal(x, before)
    assert _rel_err(out, ref) <= 1e-5
