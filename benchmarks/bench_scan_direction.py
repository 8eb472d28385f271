"""Does a scan's direction through memory cost time? The numba scan of one layer's input, walked upwards and
downwards over the same values, and the two directions of a layer as one pair.

A reverse scan of x walks time downwards; a forward scan of x flipped in time computes the same sums walking
upwards. Both are timed on one thread (median of `--repeat` calls, alternating), then `selective_scan_pair`
of a forward and a reverse scan on all threads, as the network runs its layers on a CPU.

Beside them, the floor: the scan's arithmetic alone on one thread, the kernel's own vectorised exp and two
multiply-adds per (step, channel, state) element on data that stays in the cache, over as many elements.

    python benchmarks/bench_scan_direction.py                    # D 96, L 76,800: MMA-T on 320x240
    python benchmarks/bench_scan_direction.py --length 16384 --channels 96
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mma.ops import ScanArgs, selective_scan, selective_scan_pair
from mma.ops.testing import scan_inputs


def flipped(x: dict[str, torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
    """The inputs with time reversed, in the same channels-last layout."""
    sequences = ("u", "delta", "z", "B", "C")
    return {
        k: v.transpose(1, 2).flip(1).contiguous().transpose(1, 2) if k in sequences and v is not None else v
        for k, v in x.items()
    }


def floor_seconds(length: int, channels: int, nstate: int = 16) -> float:
    """One thread: exp(dt a) h + dt u and the output's multiply-add for length x channels x nstate elements,
    the per-element work of the scan without its loads, softplus, gate or memory traffic."""
    import numba
    import numpy as np

    from mma.ops._cpu_kernels import BLOCK, fast_exp

    @numba.njit(fastmath=True, nogil=True)
    def arithmetic(a, dt, h, y, steps):
        for _ in range(steps):
            for n in range(a.shape[0]):
                for c in range(BLOCK):
                    h[n, c] = fast_exp(dt[c] * a[n, c]) * h[n, c] + dt[c]
                    y[c] += h[n, c] * dt[c]
        return y

    rng = np.random.default_rng(0)
    a = -rng.random((nstate, BLOCK), dtype=np.float32)
    dt = rng.random(BLOCK, dtype=np.float32) * np.float32(0.01)
    h, y = np.zeros((nstate, BLOCK), np.float32), np.zeros(BLOCK, np.float32)
    steps = length * -(-channels // BLOCK)
    arithmetic(a, dt, h, y, 1)  # compile
    start = time.perf_counter()
    arithmetic(a, dt, h, y, steps)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", type=int, default=96)
    parser.add_argument("--length", type=int, default=76800)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    x = scan_inputs(1, args.channels, args.length, 16)
    x_flipped = flipped(x)
    calls = {
        "reverse scan (walks down)": lambda: selective_scan(
            **x, delta_softplus=True, reverse=True, backend="numba"
        ),
        "forward scan of the flipped input (walks up)": lambda: selective_scan(
            **x_flipped, delta_softplus=True, backend="numba"
        ),
    }
    threads = torch.get_num_threads()
    times: dict[str, list[float]] = {name: [] for name in calls}
    with torch.inference_mode():
        torch.set_num_threads(1)
        same = torch.equal(
            calls["reverse scan (walks down)"](),
            calls["forward scan of the flipped input (walks up)"]().flip(-1),
        )
        for _ in range(args.repeat):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        floor = floor_seconds(args.length, args.channels)
        torch.set_num_threads(threads)
        pair = (ScanArgs(**x, delta_softplus=True), ScanArgs(**x_flipped, delta_softplus=True))
        selective_scan_pair(*pair, backend="numba")
        pair_times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            selective_scan_pair(*pair, backend="numba")
            pair_times.append(time.perf_counter() - start)
    elements = args.length * args.channels * 16
    print(f"D {args.channels}, L {args.length}, N 16, float32; median of {args.repeat}")
    for name, values in times.items():
        seconds = statistics.median(values)
        print(f"  1 thread, {name}: {1e3 * seconds:.0f} ms ({1e9 * seconds / elements:.2f} ns per element)")
    print(
        f"  1 thread, the floor (exp and multiply-adds only): {1e3 * floor:.0f} ms ({1e9 * floor / elements:.2f} ns)"
    )
    print(f"  (the two give the same output up to the flip: {same})")
    print(f"  {threads} threads, the pair (forward + flipped): {1e3 * statistics.median(pair_times):.0f} ms")


if __name__ == "__main__":
    main()
