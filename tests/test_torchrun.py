"""`mma upscale` and `mma eval` under torchrun: two gloo processes on the CPU share the files, every good
output is written once, a bad file is reported once, one merged summary, and the same means as one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mma.cli import app

REPO_ROOT = Path(__file__).resolve().parents[1]
GOOD = [f"img{i}" for i in range(5)]

pytestmark = pytest.mark.slow  # each run starts torchrun and two Python processes that import torch


def torchrun(*args: object, processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m mma ARGS` (a free port of its own), our checkout first."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("MMA_NUM_THREADS", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
            "-m",
            "mma",
            *map(str, args),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_upscale_shares_the_files_and_reports_each_once(tmp_path, tiny_weights):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in GOOD:
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    (folder / "bad.png").write_text("not an image")
    out = tmp_path / "out"
    done = torchrun("upscale", folder, "-o", out, "--scale", 2, "-m", tiny_weights, "--device", "cpu")

    assert done.returncode != 0  # a file failed: torchrun reports the job as failed
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}_x2.png" for name in GOOD)
    assert all(Image.open(out / f"{name}_x2.png").size == (24, 24) for name in GOOD)
    for name in GOOD:  # each written by exactly one process
        assert done.stdout.count(f"{folder / name}.png -> {out / name}_x2.png") == 1, done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {folder / 'bad.png'}: "), done.stderr
    summaries = [line for line in done.stdout.splitlines() if " done, " in line]
    assert len(summaries) == 1 and summaries[0].startswith("5 done, 0 skipped, 1 failed in "), done.stdout

    rerun = torchrun(
        "upscale", folder, "-o", out, "--scale", 2, "-m", tiny_weights, "--device", "cpu", "--skip-existing"
    )  # planned once, by rank 0: each existing output skipped once
    assert rerun.returncode != 0
    for name in GOOD:
        assert rerun.stdout.count(f"{folder / name}.png -> {out / name}_x2.png (exists, skipped)") == 1
    summaries = [line for line in rerun.stdout.splitlines() if " done, " in line]
    assert len(summaries) == 1 and summaries[0].startswith("0 done, 5 skipped, 1 failed in "), rerun.stdout
    assert [line for line in rerun.stderr.splitlines() if line.startswith("error: ")] == errors


def test_eval_means_over_all_images_equal_one_process(tmp_path, tiny_dataset, tiny_weights):
    single = tmp_path / "single.json"
    alone = CliRunner().invoke(
        app,
        [
            "eval",
            str(tiny_dataset),
            "--scale",
            "2",
            "-m",
            str(tiny_weights),
            "--device",
            "cpu",
            "--json",
            str(single),
            "--report",
            str(tmp_path / "single.html"),
        ],
    )
    assert alone.exit_code == 0, alone.output
    merged = tmp_path / "merged.json"
    done = torchrun(
        "eval", tiny_dataset, "--scale", 2, "-m", tiny_weights, "--device", "cpu", "--json", merged,
        "--report", tmp_path / "merged.html",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(merged.read_text()) == json.loads(single.read_text())  # exactly, not approximately
    assert done.stdout.count("dataset  images") == 1  # one table, from rank 0
    assert json.loads(merged.read_text())["datasets"]["Tiny"]["images"] == 3
    # the report: each process's crops gathered and one page written, with the crops one process makes
    pages = [(tmp_path / f"{name}.html").read_text() for name in ("single", "merged")]
    crops = [re.findall(r'<img alt="([^"]*)" src="([^"]*)"', page) for page in pages]
    assert crops[0] == crops[1] and len(crops[0]) == 3 * 3  # HR, bicubic and the model for each image
