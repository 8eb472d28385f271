"""`mma eval`'s own bad-input messages: one line each, and a pointer to where the benchmark sets come from."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mma.cli import app


@pytest.mark.parametrize("scale", ["0", "-3"])
def test_scale_below_one_is_one_clear_line(tmp_path, scale):
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--scale", scale, "-m", "bicubic"])
    assert result.exit_code == 1
    assert (
        result.stderr == f"error: --scale {scale}: the factor the HR images are reduced and enlarged by; "
        "use 2, 3 or 4\n"
    )


def test_missing_dataset_folder_points_to_where_the_sets_come_from(tmp_path):
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "Set5"), "--scale", "2", "-m", "bicubic"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Set5: no such dataset directory" in result.stderr
    assert "docs/evaluation.md says where Set5 and Set14 come from" in result.stderr
