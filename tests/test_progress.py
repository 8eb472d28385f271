"""Progress displays (mma.progress): a bar on a terminal, sparse plain lines in a log, and a whole-image
forward that advances block by block."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest
import torch

import mma.api
from mma import progress
from mma.api import upscale
from mma.model import build_model
from mma.progress import Meter, TileProgressBar, forward_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def fast_ticks(monkeypatch):
    monkeypatch.setattr(progress, "TICK_S", 0.01)


def test_the_tile_bar_lives_in_progress_and_is_still_importable_from_api():
    assert mma.api.TileProgressBar is TileProgressBar


def test_a_log_gets_sparse_plain_lines_never_a_redrawn_bar(fast_ticks):
    log = io.StringIO()  # not a terminal: what a pipe or a CI log is
    started = time.monotonic()
    with Meter("job", total=100, stream=log, every=0.05) as meter:
        for done in range(0, 101, 2):
            meter.set(done)
            time.sleep(0.005)
    took = time.monotonic() - started
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "|" not in text  # no tqdm bar and no carriage returns
    assert 2 <= len(lines) <= took / 0.05 + 2 < 51  # one line per 0.05 s at most, not one per update
    assert all(line.startswith("job: ") for line in lines)
    assert "% " not in lines[0] and "elapsed" in lines[0]
    assert lines[-1].startswith("job: finished in ")


def test_a_quick_job_writes_nothing_to_a_log():
    log = io.StringIO()
    with Meter("job", total=3, stream=log) as meter:
        for done in range(4):
            meter.set(done)
    assert log.getvalue() == ""


def test_a_plain_line_says_share_elapsed_and_estimate():
    meter = Meter("x", total=4, stream=io.StringIO(), disable=True)
    meter.started -= 30
    meter.set(1, note="1/4 tiles")
    assert meter.line() == "x: 25%, 1/4 tiles, 30 s elapsed, about 1 min 30 s left"
    meter.total = None
    assert meter.line() == "x: 1/4 tiles, 30 s elapsed"


def test_a_terminal_gets_a_tqdm_bar_with_elapsed_and_estimate(fast_ticks):
    screen = Terminal()
    with Meter("job", total=4, stream=screen) as meter:
        meter.set(1)
        meter.set(2.5)
    text = screen.getvalue()
    assert "\r" in text and "job:  62%" in text and "<" in text  # [elapsed<remaining]


def test_elapsed_time_moves_while_one_long_step_runs(fast_ticks):
    log = io.StringIO()
    with Meter("export", stream=log, every=0.03) as meter:
        meter.stage("tracing")
        time.sleep(0.2)  # one long call that reports nothing
    lines = log.getvalue().splitlines()
    assert len(lines) >= 3 and re.fullmatch(r"export: tracing, \d+ s elapsed", lines[0])


def test_disabled_shows_nothing_anywhere():
    screen = Terminal()
    with TileProgressBar(stream=screen, disable=True) as bar:
        bar(0, 2)
        bar.within_tile(0.5)
        bar(2, 2)
    assert screen.getvalue() == ""


def test_a_whole_image_forward_reports_each_block():
    network = build_model("mma-t", 2, num_feat=8, num_block=3)
    seen: list[tuple[int, int] | float] = []

    class Recorder:
        def __call__(self, done: int, total: int) -> None:
            seen.append((done, total))

        def within_tile(self, fraction: float, tiles: int = 1) -> None:
            seen.append(round(fraction, 3))

    upscale(np.zeros((12, 10, 3), np.uint8), 2, network, tile=None, progress=Recorder(), device="cpu")
    assert seen == [(0, 1), 0.333, 0.667, 1.0, (1, 1)]
    with forward_progress(network, Recorder()), torch.no_grad():
        pass
    assert not network._forward_pre_hooks and not any(b._forward_hooks for b in network.body)


def test_the_tile_bar_advances_inside_a_batch_of_tiles():
    bar = TileProgressBar(stream=io.StringIO(), disable=True)
    bar(0, 8)
    bar.within_tile(0.5, tiles=4)
    assert bar.done == 2
    bar(4, 8)
    bar.within_tile(0.25, tiles=4)
    assert bar.done == 5 and bar.note == "4/8 tiles"
