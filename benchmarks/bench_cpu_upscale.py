"""`mma upscale` of one photo on the CPU: wall time and peak memory per tiling choice, each in a fresh process.

The photo is a BSDS200 image resized (bicubic) to the requested size, written to a temporary PNG, so the
command times what a user's run does: read, upscale, write. Peak memory is the process's ru_maxrss.

    python benchmarks/bench_cpu_upscale.py                                  # 640x480 at x4, default tiles
    python benchmarks/bench_cpu_upscale.py --runs "" "--tile 0" "--tile 256 --batch 1" "--max-memory 2G"
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT.parent / "shared" / "data" / "BSDS200" / "HR"


def child(arguments: list[str]) -> None:
    """Run the CLI in this process and print its wall time and peak resident memory."""
    from mma.cli.app import app

    start = time.perf_counter()
    try:
        app(arguments, prog_name="mma")
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak_bytes": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", nargs=2, type=int, default=[640, 480], metavar=("W", "H"))
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--runs", nargs="+", default=["", "--tile 0", "--tile 256 --batch 1"])
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    from PIL import Image

    source = min(PHOTO.glob("*.png"))
    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "photo.png"
        Image.open(source).convert("RGB").resize(tuple(args.size), Image.BICUBIC).save(photo)
        print(f"{source.name} resized to {args.size[0]}x{args.size[1]}, x{args.scale}")
        print("| options | wall (s) | peak memory (MiB) |")
        print("|---|---|---|")
        for options in args.runs:
            command = ["upscale", str(photo), "-o", str(Path(folder) / "out.png"), "--force", "-q"]
            command += ["-s", str(args.scale), *shlex.split(options)]
            done = subprocess.run(
                [sys.executable, __file__, "--child", *command], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                print(f"| `{options}` | failed: {(done.stderr.strip().splitlines() or ['?'])[-1]} | |")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            label = options or "(defaults)"
            print(f"| `{label}` | {result['seconds']:.1f} | {result['peak_bytes'] / 2**20:.0f} |", flush=True)


if __name__ == "__main__":
    main()
