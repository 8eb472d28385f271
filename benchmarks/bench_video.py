"""Frames per second of `mma.upscale_video` on a generated 480p clip (H.264 with AAC sound), at x2 and x4.

The whole pipeline is timed: decoding, the network, encoding at the default H.264 CRF 18 and the lossless
join of the segments. `--network nearest` swaps MMA for nearest-neighbour upscaling (free next to it), which
leaves the cost of the video pipeline alone. Beside each run a float32 matmul rate is measured, so numbers
from a shared, loaded machine can be compared with a ratio rather than by their wall time alone.

    python benchmarks/bench_video.py                          # mma-t at x2 and x4, 4 frames of 854x480
    python benchmarks/bench_video.py --frames 24 --device cuda
    python benchmarks/bench_video.py --network nearest --frames 48
"""

from __future__ import annotations

import argparse
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from bench_upscale_host import Nearest
from timing import matmul_gflops

import mma
from mma.engine import Engine
from mma.video import upscale_video_with


def make_clip(path: Path, frames: int, width: int, height: int) -> Path:
    """Smooth moving content (a drifting gradient with blocks), 25 fps H.264, with a mono AAC track."""
    import av

    rng = np.random.default_rng(0)
    blocks = np.kron(rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3)), np.ones((16, 16, 1)))
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = container.add_stream("aac", rate=48000)
        sound.layout = "mono"
        for index in range(frames):
            shift = index % 16
            pixels = blocks[shift : shift + height, shift : shift + width].astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for index in range(frames * 48000 // 25 // 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 48000, index * 1024
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="854x480", help="clip WIDTHxHEIGHT")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--scales", default="2,4")
    parser.add_argument("--model", default="mma-t")
    parser.add_argument("--network", choices=("mma", "nearest"), default="mma")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batch", default="auto", help="frames per forward: auto or a number")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    batch = args.batch if args.batch == "auto" else int(args.batch)
    print(
        f"{width}x{height}, {args.frames} frames, {args.network}, torch {torch.__version__}, device {args.device}"
    )
    with tempfile.TemporaryDirectory() as folder:
        source = make_clip(Path(folder) / "clip.mp4", args.frames, width, height)
        for scale in (int(s) for s in args.scales.split(",")):
            if args.network == "nearest":
                model = Nearest(scale)
            else:
                model = mma.load_model(args.model, scale, device=args.device, dtype=args.dtype)
            engine = Engine(model, scale=scale, device=args.device, dtype=args.dtype, batch=batch)
            before = matmul_gflops()
            start = time.perf_counter()
            result = upscale_video_with(engine, source, Path(folder) / f"out_x{scale}.mp4", overwrite=True)
            seconds = time.perf_counter() - start
            after = matmul_gflops()
            print(
                f"x{scale}: {result.frames} frames in {seconds:.1f} s = {result.frames / seconds:.3f} frames/s "
                f"({seconds / result.frames:.2f} s a frame); matmul {before:.0f} / {after:.0f} GFLOP/s "
                f"before / after; {engine.dtype}, {engine.threads or 'policy'} threads"
            )


if __name__ == "__main__":
    main()
