"""Shared test fixtures: where the read-only data and the published spec live, and the repository's scripts."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
SPEC = SHARED / "spec"


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    if not SPEC.is_dir():
        pytest.skip(f"published spec not found at {SPEC} (../shared is absent)")
    return SPEC


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"benchmark data not found at {DATA} (../shared is absent)")
    return DATA


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """Import a script that is not part of the package (weights/bundle.py, benchmarks/...) by its path."""

    def load(relative: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(Path(relative).stem + "_script", REPO / relative)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
