"""Shrink image folders for a trip to the GPU machine, and restore them there, pixel for pixel.

Why: a job on the project's GPU machine carries at most 64 MiB with the working tree, and the training
and benchmark images (T91, BSDS200, Set5, Set14: 72 MB as BMP/PNG) only fit as lossless WebP (45 MB).
`pack` writes `<name>.<ext>.webp` beside the folder layout it mirrors and checks every file decodes to the
same pixels; files WebP cannot hold exactly (modes other than RGB/RGBA) are copied as they are. `unpack`
writes the original names back (same format as the suffix says), so training there reads the same paths,
pixels and file order as here.

    python benchmarks/pack_data.py pack ../shared/data .devdata T91/HR BSDS200/HR Set5/HR Set14/HR
    python benchmarks/pack_data.py unpack .devdata ../shared/data        # on the GPU machine
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

WEBP_MODES = ("RGB", "RGBA")
SUFFIX = ".webp"


def pack(source: Path, target: Path, folders: list[str]) -> None:
    for folder in folders:
        for path in sorted((source / folder).iterdir()):
            if not path.is_file():
                continue
            destination = target / folder / path.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            with Image.open(path) as image:
                image.load()
                if image.mode not in WEBP_MODES:
                    shutil.copyfile(path, destination)
                    continue
                packed = destination.with_name(path.name + SUFFIX)
                image.save(packed, lossless=True, quality=100, method=4)
                with Image.open(packed) as back:
                    if not np.array_equal(np.asarray(back.convert(image.mode)), np.asarray(image)):
                        sys.exit(f"{path}: lossless WebP changed the pixels; not packed")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"packed {', '.join(folders)} into {target}: {size / 1e6:.1f} MB")


def unpack(source: Path, target: Path) -> None:
    count = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(source)
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith(SUFFIX):
            with Image.open(path) as image:
                image.save(destination.with_name(path.name.removesuffix(SUFFIX)))
        else:
            shutil.copyfile(path, destination)
        count += 1
    print(f"unpacked {count} files from {source} into {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="lossless WebP copies of some folders of SOURCE")
    pack_parser.add_argument("source", type=Path)
    pack_parser.add_argument("target", type=Path)
    pack_parser.add_argument("folders", nargs="+", help="folders relative to SOURCE, e.g. T91/HR")
    unpack_parser = commands.add_parser("unpack", help="write the original files back")
    unpack_parser.add_argument("source", type=Path)
    unpack_parser.add_argument("target", type=Path)
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.source, args.target, args.folders)
    else:
        unpack(args.source, args.target)


if __name__ == "__main__":
    main()
