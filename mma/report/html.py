"""The evaluation report: one self-contained HTML file (styles, script, plot and crops inline; nothing
fetched), readable from disk in any browser.

It holds everything `mma eval --json` writes, twice: as the visible tables (each number's full value in the
cell's `data-value`, which is also what sorting reads) and as the JSON itself in a `<script
type="application/json" id="mma-scores">` block, so a program can read a report as it reads the JSON file.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from html import escape

from mma.evaluate import DatasetResult, ImageScore
from mma.report.compare import BICUBIC, label_for
from mma.report.crops import TRUTH, ImageCrops, encode

Run = tuple[str, Sequence[DatasetResult]]  # a method as given to `mma eval -m`, and its datasets' scores
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")

NOTE = (
    "PSNR (dB) and SSIM on the Y channel with a border of the scale removed, as SR papers report them; LR "
    "inputs are MATLAB-bicubic reductions of the HR images. Click a column header to sort."
)

STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em;
       color: #1b1b1b; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; cursor: pointer; user-select: none; position: sticky; top: 0; }
th[aria-sort="ascending"]::after { content: " \\25B2"; } th[aria-sort="descending"]::after { content: " \\25BC"; }
td.text, th.text { text-align: left; }
td.up { color: #146c2e; } td.down { color: #b3261e; }
.crops { display: flex; flex-wrap: wrap; gap: 1.2em; }
.image { border: 1px solid #ddd; padding: 0.5em; }
.image h3 { font-size: 1em; margin: 0 0 0.4em; }
.row { display: flex; gap: 0.4em; }
figure { margin: 0; text-align: center; font-size: 0.85em; }
figure img { width: 160px; height: 160px; image-rendering: pixelated; display: block; }
.note { color: #555; }
"""

SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((header) => {
  header.addEventListener("click", () => {
    const table = header.closest("table");
    const body = table.tBodies[0];
    const column = Array.from(header.parentNode.children).indexOf(header);
    const ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach((other) => other.removeAttribute("aria-sort"));
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    const key = (row) => {
      const cell = row.cells[column];
      const text = cell.dataset.value ?? cell.textContent;
      const number = Number(text);
      return text !== "" && !Number.isNaN(number) ? number : text;
    };
    const rows = Array.from(body.rows).sort((a, b) => {
      const x = key(a), y = key(b);
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return ascending ? order : -order;
    });
    rows.forEach((row) => body.appendChild(row));
  });
});
"""


def number(value: float) -> str:
    """A cell's full value as JavaScript's Number() reads it (an identical image scores an infinite PSNR)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def cell(value: float | None, digits: int, signed: bool = False) -> str:
    """A numeric cell: rounded to read, full in `data-value`; an empty one where there is no score."""
    if value is None:
        return '<td data-value=""></td>'
    shown = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    tone = ' class="up"' if signed and value > 0 else ' class="down"' if signed and value < 0 else ""
    return f'<td{tone} data-value="{number(value)}">{escape(shown)}</td>'


def text_cell(text: str) -> str:
    return f'<td class="text" data-value="{escape(text)}">{escape(text)}</td>'


def header_row(names: Sequence[str], text_columns: int) -> str:
    cells = "".join(
        f'<th class="text" scope="col">{escape(n)}</th>'
        if i < text_columns
        else f'<th scope="col">{escape(n)}</th>'
        for i, n in enumerate(names)
    )
    return f"<thead><tr>{cells}</tr></thead>"


def render_report(
    scale: int,
    runs: Sequence[Run],
    payload: object,
    crops: dict[tuple[str, str], ImageCrops] | None = None,
    *,
    webp: bool | None = None,
    title: str | None = None,
) -> str:
    """The report's HTML: summary per dataset and method, per-image table, gain plot, crops, and `payload`
    (the `--json` document) embedded as it is."""
    crops = crops or {}
    methods = [method for method, _ in runs]
    labels = {method: label_for(method) for method in methods}
    models = [method for method in methods if method != BICUBIC]
    heading = title or f"mma eval x{scale}: {', '.join(labels[m] for m in methods)}"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(heading)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{escape(heading)}</h1>",
        f'<p class="note">{NOTE}</p>',
        summary_table(scale, runs, labels),
    ]
    rows = image_rows(runs)
    if BICUBIC in methods and models and rows:
        parts += ["<h2>Gain over bicubic, per image</h2>", gain_plot(rows, models, labels)]
    parts += ["<h2>Per image</h2>", image_table(rows, methods, models, labels)]
    if crops:
        parts += ["<h2>Crops</h2>", crop_gallery(rows, crops, methods, labels, webp)]
    embedded = json.dumps(payload, indent=1).replace("<", "\\u003c")
    parts += [
        f'<script type="application/json" id="mma-scores">{embedded}</script>',
        f"<script>{SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def summary_table(scale: int, runs: Sequence[Run], labels: dict[str, str]) -> str:
    """One row per dataset and method, with the gain over bicubic on the same dataset where it was run."""
    baseline = {
        result.name: result.psnr for method, results in runs if method == BICUBIC for result in results
    }
    names = ["dataset", "method", "scale", "images", "PSNR", "SSIM", "gain over bicubic (dB)", "seconds"]
    body = []
    for method, results in runs:
        for result in results:
            gain = (
                result.psnr - baseline[result.name] if method != BICUBIC and result.name in baseline else None
            )
            body.append(
                "<tr>"
                + text_cell(result.name)
                + text_cell(labels[method])
                + cell(scale, 0)
                + cell(len(result.images), 0)
                + cell(result.psnr, 3)
                + cell(result.ssim, 4)
                + cell(gain, 3, signed=True)
                + cell(result.seconds, 2)
                + "</tr>"
            )
    return (
        f'<h2>Summary</h2><table class="sortable" id="summary">{header_row(names, 2)}'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


ImageRow = tuple[str, str, dict[str, ImageScore]]  # dataset, image name, each method's scores


def image_rows(runs: Sequence[Run]) -> list[ImageRow]:
    """Every scored image once, in the order the datasets and their images were given."""
    rows: dict[tuple[str, str], dict[str, ImageScore]] = {}
    for method, results in runs:
        for result in results:
            for score in result.images:
                rows.setdefault((result.name, score.name), {})[method] = score
    return [(dataset, name, scores) for (dataset, name), scores in rows.items()]


def image_table(
    rows: Sequence[ImageRow], methods: Sequence[str], models: Sequence[str], labels: dict[str, str]
) -> str:
    """PSNR and SSIM of every method, the gain of each model over bicubic and over the first model."""
    names = ["dataset", "image"]
    for method in methods:
        names += [f"{labels[method]} PSNR", f"{labels[method]} SSIM"]
    pairs = [(model, BICUBIC) for model in models if BICUBIC in methods]
    pairs += [(model, models[0]) for model in models[1:]]
    names += [f"{labels[a]} - {labels[b]} (dB)" for a, b in pairs]
    body = []
    for dataset, image, scores in rows:
        cells = [text_cell(dataset), text_cell(image)]
        for method in methods:
            score = scores.get(method)
            cells += [cell(score.psnr if score else None, 3), cell(score.ssim if score else None, 4)]
        for a, b in pairs:
            gain = scores[a].psnr - scores[b].psnr if a in scores and b in scores else None
            cells.append(cell(gain, 3, signed=True))
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="sortable" id="images">{header_row(names, 2)}<tbody>{"".join(body)}</tbody></table>'


def gain_plot(rows: Sequence[ImageRow], models: Sequence[str], labels: dict[str, str]) -> str:
    """An inline SVG bar chart: one bar per image and model, its PSNR gain over bicubic (dB)."""
    gains = [
        [scores[m].psnr - scores[BICUBIC].psnr if m in scores and BICUBIC in scores else 0.0 for m in models]
        for _, _, scores in rows
    ]
    finite = [g for row in gains for g in row if math.isfinite(g)] or [0.0]
    top, bottom = max(0.0, *finite), min(0.0, *finite)
    span = (top - bottom) or 1.0
    width, height, left, right, margin = 760, 220, 64, 8, 18
    plot_height = height - 2 * margin
    slot = (width - left - right) / max(1, len(rows))
    bar = max(1.0, slot * 0.8 / len(models))

    def y(value: float) -> float:
        clipped = min(top, max(bottom, value)) if math.isfinite(value) else (top if value > 0 else bottom)
        return margin + (top - clipped) / span * plot_height

    shapes = [
        f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#555"/>',
        f'<text x="{left - 4}" y="{y(top) + 4:.1f}" text-anchor="end">{top:+.2f} dB</text>',
        f'<text x="{left - 4}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>',
    ]
    if bottom < 0:
        shapes.append(
            f'<text x="{left - 4}" y="{y(bottom) + 4:.1f}" text-anchor="end">{bottom:+.2f} dB</text>'
        )
    previous = None
    for index, ((dataset, image, _), row) in enumerate(zip(rows, gains)):
        x0 = left + index * slot + slot * 0.1
        if dataset != previous:
            shapes.append(f'<text x="{x0:.1f}" y="{height - 4}" class="set">{escape(dataset)}</text>')
            if previous is not None:
                shapes.append(
                    f'<line x1="{x0 - slot * 0.1:.1f}" x2="{x0 - slot * 0.1:.1f}" y1="{margin}" y2="{height - margin}" stroke="#bbb"/>'
                )
            previous = dataset
        for k, gain in enumerate(row):
            y_top, y_bottom = sorted((y(gain), y(0)))
            shapes.append(
                f'<rect x="{x0 + k * bar:.1f}" y="{y_top:.1f}" width="{bar:.1f}" height="{max(0.5, y_bottom - y_top):.1f}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{escape(dataset)}/{escape(image)} '
                f"{escape(labels[models[k]])}: {gain:+.3f} dB</title></rect>"
            )
    legend = "".join(
        f'<text x="{left + 8 + 150 * k}" y="12" fill="{PALETTE[k % len(PALETTE)]}">&#9632; {escape(labels[m])}</text>'
        for k, m in enumerate(models)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" id="gain-plot" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-size="11" font-family="sans-serif" role="img" '
        f'aria-label="PSNR gain over bicubic per image">{legend}{"".join(shapes)}</svg>'
    )


def crop_gallery(
    rows: Sequence[ImageRow],
    crops: dict[tuple[str, str], ImageCrops],
    methods: Sequence[str],
    labels: dict[str, str],
    webp: bool | None,
) -> str:
    """For each image, the same window of the truth and of every method, enlarged 2x without smoothing."""
    blocks = []
    for dataset, image, scores in rows:
        entry = crops.get((dataset, image))
        if entry is None:
            continue
        window = entry.window
        figures = []
        for method in (TRUTH, *methods):
            pixels = entry.pixels.get(method)
            if pixels is None:
                continue
            mime, data = encode(pixels, webp)
            name = "HR" if method == TRUTH else labels[method]
            score = scores.get(method)
            caption = escape(name) + (f"<br>{score.psnr:.2f} dB" if score is not None else "")
            figures.append(
                f'<figure><img alt="{escape(f"{dataset}/{image} {name}")}" '
                f'src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        blocks.append(
            f'<div class="image" data-image="{escape(f"{dataset}/{image}")}"><h3>{escape(dataset)} / {escape(image)} '
            f'<span class="note">({window.size}x{window.size} at {window.x},{window.y})</span></h3>'
            f'<div class="row">{"".join(figures)}</div></div>'
        )
    return f'<div class="crops">{"".join(blocks)}</div>'
