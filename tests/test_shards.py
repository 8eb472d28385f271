"""Sharing a batch among torchrun's processes: every item has exactly one owner, a lone process is untouched,
and failures stop every process together with one message (two real gloo processes on the CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mma.cli.shards import gather, on_main, processes, share, threads_for, together
from mma.errors import ConfigError
from mma.train.distributed import Placement

REPO_ROOT = Path(__file__).resolve().parents[1]


def placement(
    rank: int, world_size: int, local_world_size: int | None = None, device: str = "cpu"
) -> Placement:
    return Placement(rank, world_size, rank, local_world_size or world_size, torch.device(device))


@pytest.mark.parametrize("world_size", [1, 2, 3, 7, 9])
@pytest.mark.parametrize("count", [0, 1, 5, 8])
def test_share_gives_every_item_exactly_one_owner(world_size, count):
    items = [f"img{i}.png" for i in range(count)]
    shares = [share(items, placement(rank, world_size)) for rank in range(world_size)]
    owned = [item for part in shares for item in part]
    assert sorted(owned) == sorted(items) and len(owned) == len(items)
    assert max(map(len, shares)) - min(map(len, shares)) <= 1  # balanced
    assert shares[0] == items[::world_size]  # deterministic: the same on every process


def test_a_lone_process_runs_everything_itself(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with processes("cpu") as alone:
        assert (alone.rank, alone.world_size, alone.distributed) == (0, 1, False)
        assert not torch.distributed.is_initialized()
        assert share([1, 2, 3], alone) == [1, 2, 3]
        assert gather({"done": 2}, alone) == [{"done": 2}]
        assert on_main(lambda: 41 + 1, alone) == 42
        assert together(lambda: "model", alone) == "model"
        with pytest.raises(ConfigError, match="bad"):  # alone, the error is the command's own to print
            together(lambda: (_ for _ in ()).throw(ConfigError("bad")), alone)


def test_threads_are_shared_among_the_processes_of_a_machine(monkeypatch):
    monkeypatch.delenv("MMA_NUM_THREADS", raising=False)
    monkeypatch.setattr("mma.cli.shards.usable_cpus", lambda: 16)
    assert threads_for(None, placement(0, 4)) == 4
    assert threads_for(None, placement(0, 8, local_world_size=4)) == 4  # two machines, four processes each
    assert threads_for(None, placement(0, 32, local_world_size=32)) == 1
    assert threads_for("3", placement(0, 4)) == "3"  # an explicit choice stands
    assert threads_for(None, placement(0, 1)) is None  # alone: the usual idle-CPU policy
    assert threads_for(None, placement(0, 2, device="meta")) is None  # GPUs: the usual policy
    monkeypatch.setenv("MMA_NUM_THREADS", "5")
    assert threads_for(None, placement(0, 4)) is None  # the engine reads $MMA_NUM_THREADS itself


# Each process runs the helpers and prints one JSON line; errors go to stderr as `mma` prints them.
WORKER = r"""
import json, sys
import typer
from mma.cli.app import fail
from mma.cli.shards import gather, on_main, processes, share, together
from mma.errors import ConfigError, MMAError

def main_fails():
    raise ConfigError("only rank 0 plans, and this plan is bad")

def rank1_fails():
    if p.rank == 1:
        raise ConfigError("rank 1 has no GPU")
    return "ok"

out = {}
with processes("cpu") as p:
    out["rank"] = p.rank
    out["mine"] = share(list(range(7)), p)
    out["all"] = gather(p.rank * 10, p)
    out["plan"] = on_main(lambda: {"planned_by": p.rank}, p)
    for name, step in (("on_main", lambda: on_main(main_fails, p)), ("together", lambda: together(rank1_fails, p)),
                       ("same", lambda: together(lambda: (_ for _ in ()).throw(ConfigError("same on all")), p))):
        try:
            step()
        except typer.Exit as exc:
            out[name] = f"exit {exc.exit_code}"
        except MMAError as exc:
            fail(str(exc))
            out[name] = "raised"
print(json.dumps(out))
"""


@pytest.mark.slow  # three Python processes importing torch: over ten seconds on a small machine
def test_two_gloo_processes_share_plan_once_and_stop_together(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    rows = sorted(
        (json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")),
        key=lambda row: row["rank"],
    )
    assert [row["mine"] for row in rows] == [[0, 2, 4, 6], [1, 3, 5]]
    assert all(row["all"] == [0, 10] and row["plan"] == {"planned_by": 0} for row in rows)
    assert [row["on_main"] for row in rows] == ["raised", "exit 1"]  # rank 0 prints it; rank 1 stops quietly
    assert [row["together"] for row in rows] == ["exit 1", "exit 1"]
    assert [row["same"] for row in rows] == ["exit 1", "exit 1"]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: only rank 0 plans, and this plan is bad",
        "error: rank 1 has no GPU",
        "error: same on all",
    ]
