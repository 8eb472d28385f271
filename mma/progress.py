"""Progress on every long wait, in one place: a bar on a terminal, sparse plain lines in a log.

A `Meter` shows how much of a job is done, the time elapsed and an estimate of the time left; a background
ticker keeps the elapsed time moving while a single long step (one whole-image forward, an ONNX export) runs.
On a terminal it draws a tqdm bar; when the stream is a file or a pipe it writes a plain line at most every
PLAIN_EVERY_S seconds (a bar's carriage returns would fill a log with hundreds of redrawn lines), and none at
all for a job that ends sooner. `TileProgressBar` is the tiling callback of `mma.upscale(progress=True)` and
`mma upscale`; `forward_progress` reports the blocks of a forward as they finish, so that a single tile (a
whole image) advances too.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TextIO

from torch import nn

if TYPE_CHECKING:
    from typing_extensions import Self

# A plain (non-terminal) progress line at most this often: a few lines per minute of work.
PLAIN_EVERY_S = 10.0
# How often the ticker redraws a terminal bar (elapsed time moves even when the work does not report).
TICK_S = 0.5


class Meter:
    """Progress of one job: `set(done, total)` as it goes (fractions allowed), `note` for what it is doing.

    `total=None`: the amount of work is unknown, so only the elapsed time shows. `stream` defaults to stderr;
    `terminal` (default: `stream.isatty()`) chooses a bar or plain lines, the latter at most every `every`
    seconds (default PLAIN_EVERY_S); `disable=True` shows nothing.
    Extra keyword arguments go to tqdm (position, leave, ...). Use it as a context manager, or `close()` it.
    """

    def __init__(
        self,
        desc: str = "",
        *,
        total: float | None = None,
        unit: str = "",
        stream: TextIO | None = None,
        terminal: bool | None = None,
        disable: bool = False,
        every: float | None = None,
        **options: Any,
    ) -> None:
        self.desc, self.total, self.unit, self.done, self.note = desc, total, unit, 0.0, ""
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = _is_terminal(self.stream) if terminal is None else terminal
        self.disable, self.options = disable, options
        self.every = PLAIN_EVERY_S if every is None else every
        self.started = self._last_line = time.monotonic()
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if not disable:
            self._ticker = threading.Thread(target=self._tick, name="mma-progress", daemon=True)
            self._ticker.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def set(self, done: float, total: float | None = None, note: str | None = None) -> None:
        """Record progress: `done` of `total` units (the total may change, e.g. on a retry)."""
        with self._lock:
            self.done = float(done)
            if total is not None:
                self.total = total
            if note is not None:
                self.note = note
            self._show()

    def stage(self, note: str) -> None:
        """Say what the job is doing now (for jobs whose amount of work is unknown)."""
        self.set(self.done, note=note)

    def close(self) -> None:
        """Stop the ticker and finish the display (a final plain line only when earlier lines were written)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            elif not self.disable and not self.terminal and self._last_line > self.started:
                self._write(f"{self.desc}: finished in {_duration(time.monotonic() - self.started)}")
            self.disable = True

    # ----- display ----------------------------------------------------------------------------------

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                self._show()

    def _show(self) -> None:
        if self.disable:
            return
        if self.terminal:
            self._draw_bar()
        elif time.monotonic() - self._last_line >= self.every:
            self._write(self.line())
            self._last_line = time.monotonic()

    def _draw_bar(self) -> None:
        from tqdm.auto import tqdm

        if self._bar is None or self._bar.total != self.total:
            if self._bar is not None:
                self._bar.close()
            known = "{percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
            self._bar = tqdm(
                total=self.total,
                desc=self.desc,
                file=self.stream,
                smoothing=0,  # the average rate: steps of a forward differ too much for a moving one
                bar_format="{desc}: " + (known if self.total else "[{elapsed}{postfix}]"),
                **{"leave": False, **self.options},
            )
            self._bar.start_t -= time.monotonic() - self.started  # tqdm counts from now, on its own clock
        self._bar.n = self.done
        self._bar.set_postfix_str(self.note, refresh=False)
        self._bar.refresh()

    def line(self) -> str:
        """The plain progress line: share done, what it is doing, elapsed and estimated time left."""
        elapsed = time.monotonic() - self.started
        parts = []
        if self.total:
            parts.append(f"{100 * min(self.done / self.total, 1):.0f}%")
        if self.note:
            parts.append(self.note)
        parts.append(f"{_duration(elapsed)} elapsed")
        if self.total and 0 < self.done < self.total:
            parts.append(f"about {_duration(elapsed * (self.total - self.done) / self.done)} left")
        return f"{self.desc}: {', '.join(parts)}"

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed pipe must not end the job
            self.stream.write(text + "\n")
            self.stream.flush()


class TileProgressBar(Meter):
    """The tiling progress callback (`(done_tiles, total_tiles)`), which also advances inside a tile while a
    forward runs (`within_tile`, fed by `forward_progress`); restarts when a retry with smaller tiles changes
    the total. Keyword arguments as `Meter`'s (desc, position, disable, stream, ...)."""

    def __init__(self, desc: str = "upscale", **options: Any) -> None:
        super().__init__(desc, unit="tile", **options)
        self.tiles_done = 0

    def __call__(self, done: int, total: int) -> None:
        self.update(done, total)

    def update(self, done: int, total: int) -> None:
        self.tiles_done = done
        self.set(done, total, note=f"{done}/{total} tiles" if total > 1 else "")

    def within_tile(self, fraction: float, tiles: int = 1) -> None:
        """`fraction` of the forward of the next `tiles` tiles (one batch) is done."""
        total = self.total or 1  # before the first tile reports its total: one tile, the whole image
        self.set(min(self.tiles_done + fraction * tiles, total), total)


@contextlib.contextmanager
def forward_progress(network: nn.Module, progress: object) -> Iterator[None]:
    """While the body runs, tell `progress.within_tile` (when it has one) how far each forward has come.

    The network's `body` (MMA's residual blocks, which hold nearly all of its time) is watched with forward
    hooks; networks without one, and callbacks without `within_tile`, are left alone."""
    report: Callable[..., None] | None = getattr(progress, "within_tile", None)
    body = getattr(network, "body", None)
    blocks = list(body.children()) if isinstance(body, nn.Module) else []
    if report is None or not blocks:
        yield
        return
    state = {"done": 0, "tiles": 1}

    def starting(_module: nn.Module, args: tuple[Any, ...]) -> None:
        state["done"], state["tiles"] = 0, int(args[0].shape[0]) if args and hasattr(args[0], "shape") else 1

    def finished(*_: object) -> None:
        state["done"] += 1
        report(min(state["done"] / len(blocks), 1.0), state["tiles"])

    handles = [network.register_forward_pre_hook(starting)]
    handles += [block.register_forward_hook(finished) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`: short enough for a log line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
