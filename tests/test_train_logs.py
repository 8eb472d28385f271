"""The training logs' one reader reads back what RunLog writes, including after a resume."""

from __future__ import annotations

from mma.train.logs import RunLog, read_train_log, read_val_log


def test_the_reader_reads_what_the_writer_wrote_and_a_resume_drops_the_rows_after_it(tmp_path):
    run = RunLog(tmp_path, 0)
    for iteration in (10, 20, 30):
        run.train(iteration, 0.5, 2e-4, 1.25, 20.0)
    run.val(20, "Set5", 5, 33.25, 0.91, 1.5)
    run.close()
    rows = read_train_log(tmp_path)
    assert [row["iteration"] for row in rows] == ["10", "20", "30"]
    assert rows[0] == {"iteration": "10", "loss": "0.500000", "lr": "0.0002", "iters_per_s": "1.2500",
                       "patches_per_s": "20.000"}  # fmt: skip
    assert read_val_log(tmp_path)[0]["psnr"] == "33.2500"
    RunLog(tmp_path, 20).close()  # resumed from the checkpoint at 20: the row written after it goes
    assert [row["iteration"] for row in read_train_log(tmp_path)] == ["10", "20"]
    assert [row["set"] for row in read_val_log(tmp_path)] == ["Set5"]
