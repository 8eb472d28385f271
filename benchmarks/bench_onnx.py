"""ONNX Runtime (CPU) running the exported graph against PyTorch running the network, on the same input.

The graph is exported once with dynamic sizes (or read with --onnx) and timed at every size; PyTorch runs
the network with the `numba` scan backend (numba kernels; what `mma upscale` uses on a CPU) and, with
--torch-backends, others, e.g. `export` (the formulation the graph was traced from, in eager PyTorch).
Both sides get the same number of threads. "max diff" is ONNX Runtime against the first PyTorch backend.

    python benchmarks/bench_onnx.py                                   # MMA-T x2, 64 and 128, 2 and 1 threads
    python benchmarks/bench_onnx.py --sizes 64 --threads 2 --onnx mma-t-x2.onnx
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from timing import time_calls

from mma.api import load_model
from mma.export.onnx import INPUT_NAME, export_onnx, onnx_session


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="mma-t")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="square LR input sizes")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--torch-backends", nargs="+", default=["numba"])
    parser.add_argument("--repeat", type=int, default=3, help="timed calls after one warm-up (minimum kept)")
    parser.add_argument("--onnx", type=Path, help="an exported graph to time (default: export one now)")
    parser.add_argument("--tile", type=int, default=32, help="size the graph is traced at when exporting")
    args = parser.parse_args()

    net = load_model(args.model, args.scale, device="cpu", dtype="fp32").network
    with tempfile.TemporaryDirectory() as folder:
        path = args.onnx
        if path is None:
            path = Path(folder) / "model.onnx"
            start = time.perf_counter()
            export_onnx(net, path, args.tile)
            print(
                f"export ({args.model} x{args.scale}, traced at {args.tile}x{args.tile}, dynamic): "
                f"{time.perf_counter() - start:.1f} s, {path.stat().st_size / 2**20:.1f} MiB"
            )
        _table(net, path, args)


def _table(net: torch.nn.Module, path: Path, args: argparse.Namespace) -> None:
    print(
        f"| model | LR input | threads | {' | '.join(f'PyTorch `{b}` (s)' for b in args.torch_backends)} "
        f"| ONNX Runtime (s) | ORT / PyTorch `{args.torch_backends[0]}` | max diff |"
    )
    print("|---|---|---:|" + "---:|" * (len(args.torch_backends) + 3))
    for size in args.sizes:
        image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
        for threads in args.threads:
            torch.set_num_threads(threads)
            torch_times, first_output = [], None
            for backend in args.torch_backends:
                net.set_scan_backend(backend)
                with torch.inference_mode():
                    torch_times.append(min(time_calls(lambda image=image: net(image), args.repeat)))
                    if first_output is None:
                        first_output = net(image).numpy()
            session = onnx_session(path, threads)
            feed = {INPUT_NAME: image.numpy()}
            ort_time = min(time_calls(lambda run=session.run, feed=feed: run(None, feed), args.repeat))
            diff = float(np.abs(session.run(None, feed)[0] - first_output).max())
            cells = " | ".join(f"{t:.3f}" for t in torch_times)
            print(
                f"| {args.model} x{args.scale} | {size}x{size} | {threads} | {cells} | {ort_time:.3f} "
                f"| {ort_time / torch_times[0]:.1f}x | {diff:.1e} |",
                flush=True,
            )
    net.set_scan_backend(None)


if __name__ == "__main__":
    main()
