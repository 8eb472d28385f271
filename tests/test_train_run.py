"""The training loop end to end on a tiny network: EMA, schedule, atomic state, exact resume, longer runs and
decay branches, init from x2, export with provenance, the `mma train` command, and DDP with two gloo
processes."""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_training_images
from typer.testing import CliRunner

from mma.cli import app
from mma.errors import CheckpointError, ConfigError, OutputError
from mma.model import build_model
from mma.train import TrainConfig, TrainEvent, build_config, saved_config, start_decay_branch, train
from mma.train import state as state_module
from mma.train.ema import EMA, warmed_decay
from mma.train.export import init_from
from mma.train.state import load_state, save_state
from mma.weights import load_checkpoint, model_from_file, save_safetensors

TINY = {"num_feat": 8, "num_block": 1}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_images(tmp_path_factory.mktemp("hr"), count=6, seed=0)


def _config(images: Path, out: Path, **changes: object) -> TrainConfig:
    values = {
        "train": [str(images)],
        "model": TINY,
        "patch": 8,
        "batch": 2,
        "iters": 6,
        "lr": 1e-3,
        "milestones": [3, 5],
        "log_every": 1,
        "save_every": 100,
        "val_every": 100,
        "workers": 0,
        "out": str(out),
        **changes,
    }
    return build_config(overrides=values)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_tensors(a: Path, b: Path) -> bool:
    """True when the runs in folders `a` and `b` hold bit-identical network, EMA and Adam tensors."""
    first, second = _tensors(load_state(a / "state.ckpt")), _tensors(load_state(b / "state.ckpt"))
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a training state except RNG states, flattened to name -> tensor."""
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    flat.update({f"ema.{k}": v for k, v in state["ema"].items()})
    for index, slots in state["optimizer"]["state"].items():
        flat.update({f"adam.{index}.{k}": v for k, v in slots.items()})
    return flat


# ----- pieces ----------------------------------------------------------------------------------------------


def test_ema_is_the_exponential_average_of_the_weights() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    start = [p.detach().double().clone() for p in model.parameters()]
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model[1].running_mean.fill_(7.0)
    for updates in range(10**6, 10**6 + 3):  # long after the warm-up: the decay is the configured one
        ema.update(model, updates)
    for e, s, p in zip(ema.module.parameters(), start, model.parameters()):
        # constant weights p: ema_k = p + decay**k * (ema_0 - p)
        torch.testing.assert_close(e.double(), p.double() + 0.9**3 * (s - p.double()), rtol=0, atol=1e-6)
        assert not e.requires_grad
    assert torch.equal(ema.module[1].running_mean, torch.full((2,), 7.0))


def test_ema_warm_up_follows_the_weights_early_and_reaches_the_decay_later() -> None:
    assert warmed_decay(0.999, 0) == 0.1
    assert warmed_decay(0.999, 928) == 929 / 938
    assert warmed_decay(0.999, 10**5) == 0.999
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    for updates in range(20):  # after 20 warm-up updates only prod((1+n)/(10+n)) < 1e-6 of the start is left
        ema.update(model, updates)
    for e, p in zip(ema.module.parameters(), model.parameters()):
        torch.testing.assert_close(e, p, rtol=0, atol=1e-5)


def test_state_keeps_rng_states_and_is_read_with_weights_only(tmp_path: Path) -> None:
    torch.manual_seed(3)
    np.random.seed(4)
    path = save_state(tmp_path / "s.ckpt", {"iteration": 5})
    expected = torch.rand(3), np.random.rand(3)
    torch.rand(10), np.random.rand(10)
    state = load_state(path)
    state_module.restore_rng(state["rng"])
    assert state["iteration"] == 5
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])


def test_state_files_holding_objects_or_other_formats_are_refused(tmp_path: Path) -> None:
    torch.save({"format": "mma-train-state", "version": 1, "x": threading.Lock}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="refused"):
        load_state(tmp_path / "evil.ckpt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a training state"):
        load_state(tmp_path / "other.ckpt")


def test_a_failed_save_leaves_the_previous_state_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_state(tmp_path / "state.ckpt", {"iteration": 1})
    before = path.read_bytes()

    def crash(obj: object, file: Path) -> None:
        Path(file).write_bytes(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_module.torch, "save", crash)
    with pytest.raises(OutputError, match="No space left"):
        save_state(path, {"iteration": 2})
    assert path.read_bytes() == before and sorted(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("target", [3, 4])
def test_init_from_an_x2_model_loads_everything_but_the_upsampler(tmp_path: Path, target: int) -> None:
    source = build_model("mma-t", 2, **TINY)
    save_safetensors(source, tmp_path / "x2.safetensors")
    model = build_model("mma-t", target, **TINY)
    report = init_from(model, tmp_path / "x2.safetensors")
    if target == 3:  # x3: upsample.0 is C -> 9C instead of C -> 4C
        assert report.skipped == ("upsample.0.weight", "upsample.0.bias") and report.missing == ()
    else:  # x4: upsample.0 has the same shape, upsample.2 is new
        assert report.skipped == () and report.missing == ("upsample.2.weight", "upsample.2.bias")
    theirs, ours = source.state_dict(), model.state_dict()
    for key in report.loaded:
        assert torch.equal(ours[key], theirs[key])
    assert "conv_last.weight" in report.loaded and "body.0.attn.mamba.mamba.A_log" in report.loaded


# ----- whole runs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(images: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, list[TrainEvent]]:
    """24 iterations at lr 2e-3 with one held-out image, exported at the end."""
    out = tmp_path_factory.mktemp("run") / "out"
    cfg = _config(
        images,
        out,
        iters=24,
        lr=2e-3,
        milestones=[12, 20],
        val_split=1,
        val_every=12,
        save_every=12,
        val=str(images),
    )
    events: list[TrainEvent] = []
    train(cfg, export=out / "final.safetensors", progress=events.append)
    return cfg, events


def test_a_short_cpu_run_lowers_the_loss(finished: tuple[TrainConfig, list[TrainEvent]]) -> None:
    cfg, events = finished
    losses = [float(row["loss"]) for row in _read_csv(Path(cfg.out) / "train_log.csv")]
    assert len(losses) == 24 and np.isfinite(losses).all()
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5])
    kinds = [e.kind for e in events if e.kind not in ("step", "log", "data")]
    assert kinds == ["start", "val", "val", "save", "val", "val", "save", "end"]


def test_learning_rate_halves_at_the_milestones(finished: tuple[TrainConfig, list[TrainEvent]]) -> None:
    cfg, _ = finished
    lrs = {int(row["iteration"]): float(row["lr"]) for row in _read_csv(Path(cfg.out) / "train_log.csv")}
    for iteration, lr in lrs.items():  # logged after the step: halved once `iteration` reaches a milestone
        assert lr == pytest.approx(2e-3 * 0.5 ** sum(iteration >= m for m in (12, 20)))


def test_export_holds_the_ema_weights_and_their_provenance(
    finished: tuple[TrainConfig, list[TrainEvent]], images: Path
) -> None:
    cfg, _ = finished
    out = Path(cfg.out)
    weights, meta = load_checkpoint(out / "final.safetensors")
    state = load_state(out / "state.ckpt")
    assert weights.keys() == state["ema"].keys()
    assert all(torch.equal(weights[k], state["ema"][k]) for k in weights)
    assert meta["scale"] == 2 and meta["iterations"] == 24 and meta["config"]["num_feat"] == 8
    assert meta["data"] == {"folders": [Path(cfg.train[0]).name], "images": 5, "held_out_for_validation": 1}
    val = _read_csv(out / "val_log.csv")
    assert [(row["iteration"], row["set"], row["images"]) for row in val] == [
        ("12", "held-out", "1"),
        ("12", images.name, "6"),
        ("24", "held-out", "1"),
        ("24", images.name, "6"),
    ]
    held_out = float(val[2]["psnr"])  # the first set decides "best" and goes into the provenance
    assert meta["val_set"] == "held-out" and meta["val_psnr"] == pytest.approx(held_out, abs=1e-4)
    assert meta["recipe"]["lr"] == 2e-3 and meta["recipe"]["milestones"] == [12, 20]
    model = model_from_file(out / "final.safetensors")
    assert model.scale == 2 and (out / "best.safetensors").is_file() and (out / "ema.safetensors").is_file()


@pytest.mark.parametrize("interruption", ["stop", "kill"])
def test_an_interrupted_run_resumes_to_identical_weights(
    images: Path, tmp_path: Path, interruption: str
) -> None:
    whole = _config(images, tmp_path / "whole", iters=7, save_every=2)
    train(whole)

    cut = whole.replace(out=str(tmp_path / "cut"))
    stop = threading.Event()

    def interrupt(event: TrainEvent) -> None:
        if event.kind == "step" and event.iteration == 5:
            if interruption == "kill":  # dies mid-run: only the checkpoint of iteration 4 survives
                raise RuntimeError("killed")
            stop.set()  # asks for a clean stop: saves iteration 5

    if interruption == "kill":
        with pytest.raises(RuntimeError, match="killed"):
            train(cut, progress=interrupt)
    else:
        assert train(cut, progress=interrupt, stop=stop).stopped
    assert load_state(tmp_path / "cut" / "state.ckpt")["iteration"] == (4 if interruption == "kill" else 5)
    with pytest.raises(ConfigError, match="--resume"):
        train(cut)
    result = train(cut, resume=True)
    assert result.iteration == 7 and not result.stopped

    expected = _tensors(load_state(tmp_path / "whole" / "state.ckpt"))
    resumed = _tensors(load_state(tmp_path / "cut" / "state.ckpt"))
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    logged = [row["iteration"] for row in _read_csv(tmp_path / "cut" / "train_log.csv")]
    assert logged == [str(i) for i in range(1, 8)]  # rows of the lost iteration 5 were not duplicated


def test_a_saved_run_resumes_on_whatever_machine_it_finds(images: Path, tmp_path: Path) -> None:
    """A run trained with device="cuda" (here "cpu") must not carry that choice to the next machine."""
    cfg = _config(images, tmp_path / "run", iters=1, device="cpu")
    train(cfg)
    saved = saved_config(cfg.out)
    assert (saved.device, saved.workers) == ("auto", None)
    assert saved.replace(device="cpu", workers=0) == cfg


def test_resume_refuses_a_different_network(images: Path, tmp_path: Path) -> None:
    cfg = _config(images, tmp_path / "run", iters=1)
    train(cfg)
    with pytest.raises(ConfigError, match="another network"):
        train(cfg.replace(scale=3), resume=True)


def test_training_state_can_initialise_another_scale(images: Path, tmp_path: Path) -> None:
    x2 = _config(images, tmp_path / "x2", iters=2)
    train(x2)
    x4 = _config(images, tmp_path / "x4", iters=1, scale=4, init=str(tmp_path / "x2" / "state.ckpt"))
    from mma.train.distributed import setup
    from mma.train.loop import Trainer

    trainer = Trainer(x4, setup("cpu"))
    ema2 = load_state(tmp_path / "x2" / "state.ckpt")["ema"]
    assert torch.equal(
        trainer.model.state_dict()["body.0.ffn.dwconv.weight"], ema2["body.0.ffn.dwconv.weight"]
    )
    assert torch.equal(trainer.ema.state_dict()["conv_first.bias"], ema2["conv_first.bias"])


# ----- longer runs and decay branches ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["multistep", "constant"])
def test_a_longer_run_continues_the_learning_rate_curve_exactly(
    images: Path, tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Four iterations, then resumed with iters=7, equals seven iterations in one go: the milestones are
    kept (not rescaled), a constant run stays constant, and no recipe change is reported."""
    whole = _config(images, tmp_path / "whole", iters=7, milestones=[2, 5], schedule=kind, warmup=3)
    train(whole)
    train(whole.replace(out=str(tmp_path / "short"), iters=4))
    longer = build_config(overrides={"iters": 7}, base=saved_config(tmp_path / "short"))
    with caplog.at_level(logging.WARNING, logger="mma"):
        assert train(longer, resume=True).iteration == 7
    assert "changed" not in caplog.text
    assert _same_tensors(tmp_path / "whole", tmp_path / "short")
    rates = [float(row["lr"]) for row in _read_csv(tmp_path / "short" / "train_log.csv")]
    assert rates == [float(row["lr"]) for row in _read_csv(tmp_path / "whole" / "train_log.csv")]
    assert rates == pytest.approx([whole.lr_schedule.lr_at(i) for i in range(1, 8)], rel=1e-3)  # 4 digits


def test_a_decay_branch_leaves_the_main_run_untouched_and_ends_at_zero(images: Path, tmp_path: Path) -> None:
    main = _config(images, tmp_path / "main", iters=4, schedule="constant", warmup=2, lr=2e-3)
    train(main)
    before = _files(tmp_path / "main")
    branch = start_decay_branch(tmp_path / "main", tmp_path / "branch", 3)
    assert (branch.decay_start, branch.decay_iters, branch.iters, branch.out) == (
        4,
        3,
        7,
        str(tmp_path / "branch"),
    )
    assert train(branch, resume=True).iteration == 7
    assert _files(tmp_path / "main") == before
    rates = {
        int(row["iteration"]): float(row["lr"]) for row in _read_csv(tmp_path / "branch" / "train_log.csv")
    }
    assert [rates[i] for i in range(1, 8)] == pytest.approx(
        [2e-3, 2e-3, 2e-3, 2e-3, 4e-3 / 3, 2e-3 / 3, 0], rel=1e-3
    )
    # The branch is the run that had planned the decay from the start.
    train(branch.replace(out=str(tmp_path / "planned"), decay_start=4, decay_iters=3))
    assert _same_tensors(tmp_path / "planned", tmp_path / "branch")
    # The main run continues later, from where it was; a second branch of the same name is refused.
    assert (
        train(build_config(overrides={"iters": 6}, base=saved_config(main.out)), resume=True).iteration == 6
    )
    with pytest.raises(ConfigError, match="already exists"):
        start_decay_branch(tmp_path / "main", tmp_path / "branch", 3)
    with pytest.raises(ConfigError, match="itself a decay branch"):
        start_decay_branch(tmp_path / "branch", tmp_path / "twig", 3)
    with pytest.raises(ConfigError, match="no training state"):
        start_decay_branch(tmp_path / "absent", tmp_path / "twig", 3)
    assert not (tmp_path / "twig").exists()


def test_a_state_saved_with_a_multisteplr_scheduler_still_resumes(images: Path, tmp_path: Path) -> None:
    """Runs saved before the closed-form schedule carry a MultiStepLR state, which is no longer needed."""
    cfg = _config(images, tmp_path / "old", iters=2)
    train(cfg)
    path = tmp_path / "old" / "state.ckpt"
    state = load_state(path)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    state["scheduler"] = torch.optim.lr_scheduler.MultiStepLR(optimizer, [3, 5]).state_dict()
    torch.save(state, path)
    assert train(cfg.replace(iters=3), resume=True).iteration == 3


# ----- command line ----------------------------------------------------------------------------------------


def test_mma_train_cli_runs_resumes_and_exports(images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    args = [
        "train",
        "--preset",
        "cpu-tiny",
        "--data",
        str(images),
        "--iters",
        "3",
        "--patch",
        "8",
        "--batch",
        "2",
        "--out",
        str(out),
        "--val-split",
        "1",
        "--export",
        str(tmp_path / "w.safetensors"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "done: 3 iterations" in result.output and "held-out: PSNR" in result.output
    assert (tmp_path / "w.safetensors").is_file()

    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "error:" in again.output and "--resume" in again.output
    more = runner.invoke(app, ["train", "--resume", "--out", str(out), "--iters", "4"])
    assert more.exit_code == 0, more.output
    assert load_state(out / "state.ckpt")["iteration"] == 4
    assert runner.invoke(app, ["train", "--data", str(images)]).exit_code == 1
    listing = runner.invoke(app, ["train", "--list-presets"])
    assert listing.exit_code == 0 and "finetune-x3" in listing.output


def test_mma_train_progress_in_a_log_is_plain_lines(
    images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a log file or a batch job's output (not a terminal) training progress is plain lines with the
    iteration, loss and an estimate, never a redrawn bar's carriage returns."""
    from mma import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # a line at every update
    args = ["train", "--preset", "cpu-tiny", "--data", str(images), "--iters", "3", "--patch", "8"]
    args += ["--batch", "2", "--log-every", "1", "--out", str(tmp_path / "run"), "--val-split", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("training: ")]
    assert any("iteration 3/3, loss " in line for line in lines), result.output
    assert any("left" in line for line in lines) and any(
        line.startswith("preparing LR images: ") for line in result.output.splitlines()
    )


def test_mma_train_cli_branches_a_run_into_a_decay(images: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    main, branch = tmp_path / "main", tmp_path / "branch"
    args = [
        "train",
        "--preset",
        "cpu-tiny",
        "--data",
        str(images),
        "--iters",
        "2",
        "--patch",
        "8",
        "--batch",
        "2",
        "--schedule",
        "constant",
        "--warmup",
        "1",
        "--out",
        str(main),
    ]
    assert runner.invoke(app, args).exit_code == 0
    (main / "release").mkdir()  # an earlier bundled branch's logs: not this branch's to carry
    (main / "release" / "train_log.csv").write_text("iteration\n")
    result = runner.invoke(
        app, ["train", "--resume", "--out", str(main), "--decay-branch", str(branch), "--decay-iters", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "done: 4 iterations" in result.output
    assert load_state(main / "state.ckpt")["iteration"] == 2
    assert (saved_config(branch).decay_start, saved_config(branch).decay_iters) == (2, 2)
    assert not (branch / "release").exists() and (main / "release" / "train_log.csv").is_file()
    for wrong in (["--decay-iters", "2"], ["--resume", "--decay-iters", "2", "--iters", "9"]):
        result = runner.invoke(
            app, ["train", "--out", str(main), "--decay-branch", str(tmp_path / "b2"), *wrong]
        )
        assert result.exit_code == 1 and "error:" in result.output, result.output
    milestones = runner.invoke(app, ["train", "--resume", "--out", str(main), "--milestones", "3,x"])
    assert milestones.exit_code == 1 and "--milestones" in milestones.output


def test_mma_train_cli_trains_an_ablation_mixer_named_in_the_exported_metadata(
    images: Path, tmp_path: Path
) -> None:
    from mma.weights import load_checkpoint

    args = [
        "train",
        "--preset",
        "cpu-tiny",
        "--data",
        str(images),
        "--iters",
        "1",
        "--patch",
        "8",
        "--batch",
        "2",
        "--val-split",
        "1",
        "--mixer",
        "cnn+ca",
        "--out",
        str(tmp_path / "cnn"),
        "--export",
        str(tmp_path / "cnn.safetensors"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    state, metadata = load_checkpoint(tmp_path / "cnn.safetensors")
    assert metadata["config"]["mixer"] == "cnn+ca"
    assert any(".attn.cnn." in key for key in state) and not any(".attn.mamba." in key for key in state)


# ----- distributed -----------------------------------------------------------------------------------------


def test_ddp_on_two_gloo_processes_matches_one_process(images: Path, tmp_path: Path) -> None:
    (tmp_path / "run.toml").write_text(
        f'train = ["{images}"]\npatch = 8\nbatch = 4\niters = 4\nlr = 1e-3\nmilestones = [3]\n'
        f'log_every = 1\nsave_every = 100\nval_every = 100\nworkers = 0\ndevice = "cpu"\namp = false\n'
        f'cache_dir = "{tmp_path / "cache"}"\n'
        f"[model]\nnum_feat = 8\nnum_block = 1\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "mma",
        "train",
        "--config",
        str(tmp_path / "run.toml"),
        "--out",
        str(tmp_path / "ddp"),
    ]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert done.stdout.count("done: 4 iterations") == 1, done.stdout  # only rank 0 reports

    single = build_config(file=tmp_path / "run.toml", overrides={"out": str(tmp_path / "one")})
    train(single)
    ddp, one = load_state(tmp_path / "ddp" / "state.ckpt"), load_state(tmp_path / "one" / "state.ckpt")
    # The same global batches, the gradient averaged over two halves instead of one: equal up to float32
    # rounding (amp off: bf16 rounding of the two halves would differ by more).
    for key, value in one["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-5)
    assert len(_read_csv(tmp_path / "ddp" / "train_log.csv")) == 4
    assert len(list((tmp_path / "cache").glob("*-lr.npy"))) == 6  # written once, by local rank 0
