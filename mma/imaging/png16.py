"""16-bit colour PNG, which Pillow decodes at 8 bits and cannot write: just enough PNG to keep 16 bits.

Reads 16-bit grey+alpha, RGB and RGBA files, plain or Adam7-interlaced (with tRNS, iCCP and eXIf), and
writes them non-interlaced. Everything else (8-bit, palette, 16-bit grey) stays with Pillow.
"""

from __future__ import annotations

import struct
import zlib
from functools import cache
from pathlib import Path

import numpy as np

from mma.errors import ImageReadError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour type -> channels, for the 16-bit types handled here (0 = grey stays with Pillow).
CHANNELS = {4: 2, 2: 3, 6: 4}
COLOUR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}
# Adam7's seven passes: (first column, first row, column step, row step).
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
WHOLE = ((0, 0, 1, 1),)  # a non-interlaced image is one pass over every pixel
ICC_NAME = b"ICC Profile"
EXIF_PREFIX = b"Exif\x00\x00"


def is_deep_colour_png(path: str | Path) -> bool:
    """True for a 16-bit grey+alpha/RGB/RGBA PNG (judged from its first 29 bytes)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(29)
    except OSError:
        return False
    if len(head) < 29 or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return False
    depth, colour, interlace = head[24], head[25], head[28]
    return depth == 16 and colour in CHANNELS and interlace in (0, 1)


def read_png16(path: str | Path, max_pixels: int | None) -> tuple[np.ndarray, bytes | None, bytes | None]:
    """(H, W, C) uint16 pixels, ICC profile and EXIF of a file for which `is_deep_colour_png` holds."""
    data = Path(path).read_bytes()
    chunks = list(_chunks(data, path))
    width, height, _, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1][:13])
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            f"{path}: over the decompression-bomb limit of {max_pixels} pixels "
            "(raise PIL.Image.MAX_IMAGE_PIXELS if you trust it)"
        )
    if width == 0 or height == 0:
        raise ImageReadError(f"{path}: zero-size image ({width}x{height})")
    channels = CHANNELS[colour]
    passes = [(p, *_pass_size(width, height, p)) for p in (ADAM7 if interlace else WHOLE)]
    passes = [
        (p, columns, rows) for p, columns, rows in passes if columns and rows
    ]  # empty passes have no rows
    sizes = [rows * (columns * channels * 2 + 1) for _, columns, rows in passes]
    decoder = zlib.decompressobj()
    try:
        raw = decoder.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"), sum(sizes))
    except zlib.error as exc:
        raise ImageReadError(f"{path}: truncated or corrupt image ({exc})") from None
    if len(raw) < sum(sizes):
        raise ImageReadError(f"{path}: truncated or corrupt image (pixel data ends early)")
    raw = np.frombuffer(raw, np.uint8)
    pixels = np.empty((height, width, channels), np.uint16)
    start = 0
    for ((x0, y0, dx, dy), columns, rows), size in zip(passes, sizes):
        pixels[y0::dy, x0::dx] = _decode_rows(raw[start : start + size], columns, rows, channels)
        start += size
    found = dict(chunks)
    if b"tRNS" in found and colour == 2:
        key = np.frombuffer(found[b"tRNS"][:6], ">u2").astype(np.uint16)
        alpha = np.where((pixels == key).all(axis=2), 0, 65535).astype(np.uint16)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=2)
    icc = None
    if b"iCCP" in found:
        name_end = found[b"iCCP"].index(b"\x00")
        icc = zlib.decompress(found[b"iCCP"][name_end + 2 :])
    return pixels, icc, found.get(b"eXIf")


def _pass_size(width: int, height: int, adam7_pass: tuple[int, int, int, int]) -> tuple[int, int]:
    """(columns, rows) of one Adam7 pass; 0 when the image is too small to reach it."""
    x0, y0, dx, dy = adam7_pass
    return max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))


def _decode_rows(raw: np.ndarray, width: int, height: int, channels: int) -> np.ndarray:
    """(height, width, channels) uint16 pixels from filtered rows of big-endian samples."""
    rows = unfilter(raw, height, width * channels * 2, channels * 2)
    return rows.view(">u2").reshape(height, width, channels).astype(np.uint16)


def _chunks(data: bytes, path: str | Path):
    """(type, body) of every chunk up to IEND, CRC-checked."""
    position = len(SIGNATURE)
    while True:
        if position + 8 > len(data):
            raise ImageReadError(f"{path}: truncated or corrupt image (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        crc = data[position + 8 + length : position + 12 + length]
        if len(body) < length or len(crc) < 4 or zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            raise ImageReadError(f"{path}: truncated or corrupt image (bad {kind.decode('latin-1')} chunk)")
        if kind == b"IEND":
            return
        yield kind, body
        position += 12 + length


@cache
def _unfilter_kernel():
    """`_unfilter_rows` compiled by numba, on the first 16-bit PNG read: numba is imported here rather than
    with this module, which every engine reaches through mma.imaging.io, so an 8-bit run never pays for it.
    With numba's on-disk cache, or without it where no cache folder is writable."""
    import numba

    try:
        return numba.njit(cache=True)(_unfilter_rows)
    except RuntimeError:
        return numba.njit(_unfilter_rows)


def _unfilter_rows(raw: np.ndarray, height: int, stride: int, bpp: int) -> np.ndarray:
    out = np.empty((height, stride), np.uint8)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        if kind > 4:
            raise ValueError("unknown PNG filter type")
        for x in range(stride):
            left = np.int32(out[y, x - bpp]) if x >= bpp else np.int32(0)
            up = np.int32(out[y - 1, x]) if y > 0 else np.int32(0)
            corner = np.int32(out[y - 1, x - bpp]) if y > 0 and x >= bpp else np.int32(0)
            value = np.int32(raw[start + 1 + x])
            if kind == 1:
                value += left
            elif kind == 2:
                value += up
            elif kind == 3:
                value += (left + up) // 2
            elif kind == 4:
                estimate = left + up - corner
                distance_left, distance_up = abs(estimate - left), abs(estimate - up)
                distance_corner = abs(estimate - corner)
                if distance_left <= distance_up and distance_left <= distance_corner:
                    value += left
                elif distance_up <= distance_corner:
                    value += up
                else:
                    value += corner
            out[y, x] = value & 0xFF
    return out


def unfilter(raw: np.ndarray, height: int, stride: int, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters (None, Sub, Up, Average, Paeth): (height, stride) bytes."""
    try:
        return _unfilter_kernel()(raw, height, stride, bpp)
    except ValueError:
        raise ImageReadError("truncated or corrupt image (unknown PNG filter type)") from None


def encode_png16(pixels: np.ndarray, icc: bytes | None = None, exif: bytes | None = None) -> bytes:
    """A 16-bit PNG of (H, W, C) uint16 pixels, C = 1..4, each row Up-filtered, with iCCP and eXIf."""
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=">u2").view(np.uint8).reshape(height, width * channels * 2)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # Up filter: wraps modulo 256 as PNG requires
    body = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, COLOUR_TYPE[channels], 0, 0, 0)
    parts = [SIGNATURE, _chunk(b"IHDR", header)]
    if icc:
        parts.append(_chunk(b"iCCP", ICC_NAME + b"\x00\x00" + zlib.compress(icc)))
    if exif:
        parts.append(_chunk(b"eXIf", exif.removeprefix(EXIF_PREFIX)))
    parts += [_chunk(b"IDAT", zlib.compress(body.tobytes(), 6)), _chunk(b"IEND", b"")]
    return b"".join(parts)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
