"""Training logs: CSV files that are always written, TensorBoard event files when it is installed, and the one
reader of those CSV files (weights/bundle.py renders model cards from it).

Why CSV first: it needs nothing, survives any environment and is what the training-log tables in the
docs are made from. On resume, rows past the resumed iteration (written after the last checkpoint by the
interrupted run) are dropped, so each file reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TRAIN_LOG, VAL_LOG = "train_log.csv", "val_log.csv"
TRAIN_COLUMNS = ("iteration", "loss", "lr", "iters_per_s", "patches_per_s")
VAL_COLUMNS = ("iteration", "set", "images", "psnr", "ssim", "seconds")

LogRow = dict[str, str]


def read_rows(path: Path) -> list[LogRow]:
    """Every row of a CSV log this module writes, each column as written (the caller converts what it uses)."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_train_log(run: Path) -> list[LogRow]:
    """The rows of a run's train_log.csv (one every `log_every` iterations, across every resume)."""
    return read_rows(run / TRAIN_LOG)


def read_val_log(run: Path) -> list[LogRow]:
    """The rows of a run's val_log.csv (one per validation set and validation)."""
    return read_rows(run / VAL_LOG)


def _open_csv(path: Path, columns: tuple[str, ...], keep_until: int) -> Any:
    rows = [row for row in read_rows(path) if int(row["iteration"]) <= keep_until] if path.is_file() else []
    handle = path.open("w", newline="")
    writer = csv.DictWriter(handle, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    handle.flush()
    return handle, writer


class RunLog:
    """Appends training and validation rows under `out` (train_log.csv, val_log.csv, tensorboard/)."""

    def __init__(self, out: Path, start_iteration: int) -> None:
        self._train_file, self._train = _open_csv(out / TRAIN_LOG, TRAIN_COLUMNS, start_iteration)
        self._val_file, self._val = _open_csv(out / VAL_LOG, VAL_COLUMNS, start_iteration)
        self._board = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.debug("tensorboard is not installed: logging to CSV only")
        else:
            self._board = SummaryWriter(str(out / "tensorboard"), purge_step=start_iteration + 1)

    def train(self, iteration: int, loss: float, lr: float, iters_per_s: float, patches_per_s: float) -> None:
        self._train.writerow(
            {
                "iteration": iteration,
                "loss": f"{loss:.6f}",
                "lr": f"{lr:.4g}",
                "iters_per_s": f"{iters_per_s:.4f}",
                "patches_per_s": f"{patches_per_s:.3f}",
            }
        )
        self._train_file.flush()
        if self._board is not None:
            self._board.add_scalar("train/loss", loss, iteration)
            self._board.add_scalar("train/lr", lr, iteration)
            self._board.add_scalar("train/iters_per_s", iters_per_s, iteration)

    def val(self, iteration: int, name: str, images: int, psnr: float, ssim: float, seconds: float) -> None:
        self._val.writerow(
            {
                "iteration": iteration,
                "set": name,
                "images": images,
                "psnr": f"{psnr:.4f}",
                "ssim": f"{ssim:.5f}",
                "seconds": f"{seconds:.2f}",
            }
        )
        self._val_file.flush()
        if self._board is not None:
            self._board.add_scalar(f"val/{name}/psnr", psnr, iteration)
            self._board.add_scalar(f"val/{name}/ssim", ssim, iteration)

    def close(self) -> None:
        self._train_file.close()
        self._val_file.close()
        if self._board is not None:
            self._board.close()
