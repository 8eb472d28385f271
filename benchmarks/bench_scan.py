"""Speed of the selective scan per backend against the float64 sequential reference (`mma.ops.reference`).

Inputs are laid out as the network passes them (channels-last views), N = 16 states, softplus on delta,
D skip and SiLU(z) gate on. For each (channels D, length L) it times, at `--batch` (default 16), the forward
without autograd and forward + backward (gradients of every input), and separately the forward at batch 1.
Each time is the minimum over `--repeat` calls after one warm-up call (which also compiles the numba kernels);
the reference runs once. Cases whose autograd tensors would exceed `--max-gib` are skipped and marked so:
the torch backend and the reference keep (B, D, L, N) tensors for backward, the numba backend every 64th state.

    python benchmarks/bench_scan.py                  # the full table (takes a while: the reference is slow)
    python benchmarks/bench_scan.py --quick          # batch 2, L = 4096 only
    python benchmarks/bench_scan.py --configs 96x4096 --backends numba --no-reference
"""

from __future__ import annotations

import argparse
import os
import platform
from collections.abc import Callable

import torch
from timing import time_calls

from mma.ops import available_backends, reference, selective_scan
from mma.ops.testing import scan_inputs

DEFAULT_CONFIGS = "96x4096,96x16384,96x65536,384x4096,384x16384"
# bytes held per (batch, channel, token, state) element by a forward kept for backward (measured roughly);
# without autograd every backend needs memory for a bounded number of tokens only, except `export`, which builds
# the (B, D, L, N) tensors of the whole sequence (its figures are estimates, not measurements)
AUTOGRAD_BYTES = {"numba": 1, "torch": 16, "export": 48, "reference": 48}
FORWARD_BYTES = {"numba": 0, "torch": 0, "export": 16, "reference": 0}


def scan_fn(backend: str) -> Callable[..., torch.Tensor]:
    if backend == "reference":
        return lambda **x: reference.selective_scan(**x, delta_softplus=True)
    return lambda **x: selective_scan(**x, delta_softplus=True, backend=backend)


def best_ms(func: Callable[[], object], repeat: int) -> float:
    return 1e3 * min(time_calls(func, repeat))


def time_forward(backend: str, batch: int, channels: int, length: int, nstate: int, repeat: int) -> float:
    x = scan_inputs(batch, channels, length, nstate)
    fn = scan_fn(backend)
    with torch.no_grad():
        if backend == "reference":  # seconds per call: once, no warm-up
            return 1e3 * time_calls(lambda: fn(**x), 1, warmup=0)[0]
        return best_ms(lambda: fn(**x), repeat)


def time_training(backend: str, batch: int, channels: int, length: int, nstate: int, repeat: int) -> float:
    x = scan_inputs(batch, channels, length, nstate, grad=True)
    fn = scan_fn(backend)

    def step() -> None:
        out = fn(**x)
        torch.autograd.grad(out.float().square().mean(), list(x.values()))

    if backend == "reference":
        return 1e3 * time_calls(step, 1, warmup=0)[0]
    return best_ms(step, repeat)


def fits(
    backend: str,
    per_element: dict[str, int],
    batch: int,
    channels: int,
    length: int,
    nstate: int,
    max_gib: float,
) -> bool:
    return per_element[backend] * batch * channels * length * nstate <= max_gib * 2**30


def cell(ms: float | None) -> str:
    return "skipped" if ms is None else f"{ms:,.1f}"


def ratio(ms: float | None, ref: float | None) -> str:
    if ms is None or ref is None:
        return ""
    return f"{ref / ms:.1f}x" if ref / ms < 10 else f"{ref / ms:,.0f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    usable = [name for name, reason in available_backends().items() if reason is None]
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated DxL cases")
    parser.add_argument("--backends", default=",".join(usable), help=f"comma-separated (usable: {usable})")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--nstate", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per case (minimum reported)")
    parser.add_argument("--max-gib", type=float, default=8.0, help="skip cases needing more memory than this")
    parser.add_argument("--no-reference", action="store_true", help="do not time the float64 reference")
    parser.add_argument("--no-backward", action="store_true", help="forward only")
    parser.add_argument("--quick", action="store_true", help="batch 2, L = 4096 cases only, one repeat")
    args = parser.parse_args()
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    if args.quick:
        args.batch, args.repeat = 2, 1
        configs = [c for c in configs if c[1] == 4096] or configs[:1]
    backends = args.backends.split(",") + ([] if args.no_reference else ["reference"])

    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"batch {args.batch}, N={args.nstate}, float32 (reference: float64), softplus + D + gate, "
        f"min of {args.repeat} after a warm-up (reference: one call)\n"
    )
    print(
        "| D | L | backend | forward ms (batch 1) | forward ms | forward+backward ms | fwd vs ref | fwd+bwd vs ref |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for channels, length in configs:
        rows = {}
        for backend in backends:
            shape = (args.batch, channels, length, args.nstate)
            forward = one = training = None
            if fits(backend, FORWARD_BYTES, *shape, args.max_gib):
                forward = time_forward(backend, *shape, args.repeat)
                if backend != "reference":
                    one = time_forward(backend, 1, channels, length, args.nstate, max(args.repeat, 5))
            if not args.no_backward and fits(backend, AUTOGRAD_BYTES, *shape, args.max_gib):
                training = time_training(backend, *shape, args.repeat)
            rows[backend] = (one, forward, training)
        ref = rows.get("reference", (None, None, None))
        for backend, (one, forward, training) in rows.items():
            print(
                f"| {channels} | {length} | {backend} | {'' if one is None else cell(one)} | {cell(forward)} | "
                f"{cell(training)} | {ratio(forward, ref[1])} | {ratio(training, ref[2])} |",
                flush=True,
            )
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
