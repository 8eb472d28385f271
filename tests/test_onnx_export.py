"""ONNX export (mma.export.onnx, `mma export`): the graph runs in ONNX Runtime and matches PyTorch."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from typer.testing import CliRunner

from mma.cli import app
from mma.errors import ConfigError
from mma.model import build_model

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxscript", "onnxruntime")),
    reason="needs the onnx extra: pip install 'mma-sr[onnx]'",
)


def _small_model() -> torch.nn.Module:
    """Every kind of layer of MMA-T x2, few of them: the export is quick and the graph covers the network."""
    torch.manual_seed(0)
    return build_model("mma-t", 2, num_feat=8, num_block=1).eval()


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory):
    from mma.export import export_onnx

    model = _small_model()
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "small.onnx", tile=16)
    return model, path


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 16, 16), (1, 21, 9), (1, 2, 37)])
def test_dynamic_graph_matches_pytorch_at_any_size(small_graph, shape):
    from mma.export import check_onnx

    model, path = small_graph
    batch, height, width = shape
    image = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
    assert check_onnx(model, path, image) <= 1e-4


def test_static_graph_and_the_callers_model_is_untouched(tmp_path):
    from mma.export import check_onnx, export_onnx
    from mma.export.onnx import onnx_session

    model = _small_model()
    path = export_onnx(model, tmp_path / "static.onnx", tile=12, dynamic=False)
    assert [layer.scan_backend for layer in model.modules() if hasattr(layer, "scan_backend")] == [None]
    assert onnx_session(path).get_inputs()[0].shape == [1, 3, 12, 12]
    assert check_onnx(model, path, torch.rand(1, 3, 12, 12)) <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["static.onnx"]  # nothing left beside it


@pytest.mark.slow  # torch.export's symbolic shape reasoning: about a minute on two busy cores
def test_dynamo_exporter_gives_a_dynamic_graph_too(tmp_path):
    from mma.export import check_onnx, export_onnx

    model = _small_model()
    path = export_onnx(model, tmp_path / "dynamo.onnx", tile=16, exporter="dynamo", opset=18)
    for height, width in [(16, 16), (21, 9)]:
        assert check_onnx(model, path, torch.rand(2, 3, height, width)) <= 1e-4


def test_bad_arguments_are_config_errors(tmp_path):
    from mma.export import export_onnx

    with pytest.raises(ConfigError, match="tile 1"):
        export_onnx(_small_model(), tmp_path / "x.onnx", tile=1)
    with pytest.raises(ConfigError, match="opset 11"):
        export_onnx(_small_model(), tmp_path / "x.onnx", tile=8, opset=11)
    with pytest.raises(ConfigError, match="exporter 'jit'"):
        export_onnx(_small_model(), tmp_path / "x.onnx", tile=8, exporter="jit")
    assert not list(tmp_path.iterdir())


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
    from mma.export import onnx as onnx_export

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r'needs onnxscript: pip install "mma-sr\[onnx\]"'):
        onnx_export.export_onnx(_small_model(), tmp_path / "x.onnx", tile=8, exporter="dynamo")


def test_unreadable_graph_is_a_one_line_error(tmp_path):
    from mma.export.onnx import onnx_session

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    with pytest.raises(ConfigError, match="ONNX Runtime cannot load it") as info:
        onnx_session(broken)
    assert "\n" not in str(info.value)


def test_a_dynamic_graph_is_traced_small_whatever_the_tile(monkeypatch, tmp_path):
    """Tracing cost grows with the size while a dynamic graph does not depend on it (MMA-T at 64x64: 4.8 GB)."""
    from mma.export import onnx as onnx_export

    traced = []

    def record(net, args, *rest, **options):
        traced.append(tuple(args[0].shape))
        raise KeyboardInterrupt  # stop before any real work

    monkeypatch.setattr(torch.onnx, "export", record)
    for dynamic in (True, False):
        with pytest.raises(KeyboardInterrupt):
            onnx_export.export_onnx(_small_model(), tmp_path / "x.onnx", tile=64, dynamic=dynamic)
    assert traced == [(2, 3, onnx_export.DYNAMIC_TRACE_SIZE, onnx_export.DYNAMIC_TRACE_SIZE), (1, 3, 64, 64)]


def test_several_sizes_are_checked_with_one_session(small_graph, monkeypatch):
    from mma.export import check_onnx_images
    from mma.export import onnx as onnx_export

    made = []
    real = onnx_export.onnx_session
    monkeypatch.setattr(onnx_export, "onnx_session", lambda *a, **k: made.append(1) or real(*a, **k))
    model, path = small_graph
    images = [torch.rand(1, 3, 16, 16), torch.rand(1, 3, 19, 11)]
    assert max(check_onnx_images(model, path, images)) <= 1e-4 and len(made) == 1


def _mma(*args) -> object:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def test_cli_refuses_an_existing_file_and_reports_bad_options(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"keep me")
    result = _mma("export", "--onnx", target, "--scale", "2", "--tile", "16")
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "--force" in result.stderr
    assert target.read_bytes() == b"keep me"
    result = _mma("export", "--onnx", tmp_path / "other.onnx", "--scale", "2", "--tile", "1")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and "tile 1" in result.stderr


@pytest.mark.slow  # exporting and checking the twelve blocks of MMA-T: about a minute on two busy cores
def test_cli_exports_bundled_mma_t_x2_and_checks_it(tmp_path):
    from mma.api import load_model
    from mma.export import check_onnx

    target = tmp_path / "mma-t-x2.onnx"
    result = _mma("export", "-m", "mma-t", "--scale", "2", "--onnx", target, "--tile", "24")
    assert result.exit_code == 0, result.output
    assert "max difference" in result.stdout and target.is_file()
    net = load_model("mma-t", 2, device="cpu", dtype="fp32")
    for height, width in [(24, 24), (31, 17)]:
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(width))
        assert check_onnx(net, target, image) <= 1e-3
