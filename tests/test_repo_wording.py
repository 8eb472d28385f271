"""The repository speaks of the project: dated measurements, not numbered work periods or the means used to
do the work, and every file it points a reader to exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("mma", "tests", "benchmarks", "examples", "weights", "docs", ".ci")
SKIP_PARTS = {"__pycache__", "runs", "build", "dist", ".venv"}

_ORDINALS = (
    "first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|next|previous|last|this|that|each"
)
# "session 5", "sessions 3-4", "session 6's numbers", "the sixth session", "this sitting"; not pytest's
# scope="session" nor the gpu_session.sh file name.
WORK_PERIOD = re.compile(
    rf"\b(?:sessions?|sittings?)\s+\d|\b(?:{_ORDINALS})\s+(?:gpu\s+|cpu\s+|work\s+)?(?:sessions?|sittings?)\b",
    re.IGNORECASE,
)
# A tracker's number (the word issue followed by a number, a range or a possessive; "#" and digits) means
# nothing to a reader of the repository; say what the thing is. Not "#" comments, Markdown anchors (#onnx) or colours (#ff0000).
ISSUE_REFERENCE = re.compile(r"\bissues?\s+#?\d|(?<![\w&/$#\"'])(?<!: )#\d+\b(?![\w-])", re.IGNORECASE)
# Words about how the work was carried out rather than about the project.
MEANS = re.compile(r"\b(?:device|gpu) tool\b|\blent\b", re.IGNORECASE)
# Repository paths a text names: docs/ops.md, weights/TRAINING.md, benchmarks/gpu_check.py, ...
NAMED_PATH = re.compile(
    r"(?<![\w/.-])((?:docs|weights|benchmarks|examples|tests)/[\w/.-]*\w\.(?:md|py|sh))\b"
)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
TRACKER_WORD = "issue"  # the examples below are built from it, so this file holds no such reference itself
MISSING_SPEC = "ARCHITECTURE" + ".md"  # a file outside the repository; split so this test does not name it


def _tracked_texts() -> list[Path]:
    files = [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "pyproject.toml"]
    for top in SOURCE_DIRS:
        for path in (REPO / top).rglob("*"):
            if path.suffix in {".md", ".py", ".sh", ".toml", ".json"} and not SKIP_PARTS & set(path.parts):
                files.append(path)
    return sorted(set(files))


def _documents() -> list[Path]:
    """What readers open: README, CHANGELOG, docs, weights notes, examples notes, the bundled model cards."""
    found = [
        REPO / "README.md",
        REPO / "CHANGELOG.md",
        *(REPO / "docs").glob("*.md"),
        *(REPO / "weights").glob("*.md"),
        *(REPO / "examples").glob("*.md"),
        *(REPO / "mma" / "weights" / "bundled").glob("*/README.md"),
    ]
    return sorted(path for path in found if path.is_file())


TEXTS = _tracked_texts()
DOCUMENTS = _documents()


def _name(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _hits(pattern: re.Pattern[str], paths: list[Path]) -> list[str]:
    hits = []
    for path in paths:
        if path == Path(__file__).resolve():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{_name(path)}:{number}: {line.strip()[:100]}")
    return hits


def test_the_scan_covers_the_documents_and_sources() -> None:
    names = {_name(path) for path in TEXTS}
    assert {
        "README.md",
        "CHANGELOG.md",
        "docs/model.md",
        "weights/TRAINING.md",
        "weights/bundle.py",
        "benchmarks/gpu_check.py",
        "mma/weights/bundled/mma-t-x2/README.md",
    } <= names
    assert {_name(path) for path in DOCUMENTS} <= names


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        ("docs: session 6 numbers", True),
        ("as in sessions 3-4", True),
        ("measured in the sixth session", True),
        ("this session's GPU minutes", True),
        ('@pytest.fixture(scope="session")', False),
        ("bash benchmarks/gpu_session.sh weights/training/mma-t-x3 240 440", False),
        ("measured on 2026-11-27", False),
    ],
)
def test_work_period_pattern(text: str, flagged: bool) -> None:
    assert bool(WORK_PERIOD.search(text)) is flagged


@pytest.mark.parametrize(
    ("text", "flagged"),
    [
        (f"Above the FSRCNN bar of {TRACKER_WORD} 5", True),
        (f"as {TRACKER_WORD}s 3-4 asked", True),
        (f"for {TRACKER_WORD} 6's LAM figure", True),
        ("fixed in #12", True),
        (f"see {TRACKER_WORD.title()} #7", True),
        ("the issue is the border", False),
        ("# 1. read the file", False),
        ("[ONNX](integrations.md#onnx-runtime)", False),
        ("colour #ff0000 and #123abc", False),
        ('color: #555; and stroke="#555"', False),
        ("shell $# and &#39;", False),
    ],
)
def test_issue_reference_pattern(text: str, flagged: bool) -> None:
    assert bool(ISSUE_REFERENCE.search(text)) is flagged


def test_no_issue_numbers() -> None:
    """Name what a tracker issue decided (e.g. "FSRCNN, the project's minimum") instead of its number."""
    assert _hits(ISSUE_REFERENCE, TEXTS) == []


def test_no_numbered_work_periods() -> None:
    """Use dates (e.g. "on 2026-11-27") where the repository says when something was done."""
    assert _hits(WORK_PERIOD, TEXTS) == []


def test_no_words_about_the_means_of_work() -> None:
    """State the constraint that matters to a contributor (e.g. "a job carries at most 64 MiB") instead."""
    assert _hits(MEANS, TEXTS) == []


def test_no_citation_of_the_spec_outside_the_repository() -> None:
    assert _hits(re.compile(re.escape(MISSING_SPEC)), TEXTS) == []


def test_named_repository_paths_exist() -> None:
    missing = []
    for path in TEXTS:
        if path == Path(__file__).resolve():
            continue
        for named in NAMED_PATH.findall(path.read_text(encoding="utf-8", errors="replace")):
            # a name relative to the text's own folder (docs/ops.md inside docs/) counts too
            if not (REPO / named).exists() and not (path.parent / named).exists():
                missing.append(f"{_name(path)}: {named}")
    assert missing == []


def test_relative_markdown_links_resolve() -> None:
    broken = []
    for path in DOCUMENTS:
        for target in MARKDOWN_LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            if not (path.parent / target.split("#")[0]).exists():
                broken.append(f"{_name(path)}: {target}")
    assert broken == []
