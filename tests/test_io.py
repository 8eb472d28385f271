"""Image IO: every mode in and out, EXIF orientation, ICC/EXIF carried, bad files, atomic writes."""

from __future__ import annotations

import struct
import warnings
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from mma.errors import ImageReadError, OutputError
from mma.fileio import atomic_write, check_writable, unwritable_reason
from mma.imaging.io import (
    ORIENTATION_TAG,
    SOFTWARE_TAG,
    ImageMeta,
    array_to_float,
    array_to_pil,
    format_for,
    made_by_mma,
    orient,
    pil_to_float,
    read_image,
    read_pixels,
    software_tag,
    write_image,
    write_pixels,
)
from mma.imaging.png16 import is_deep_colour_png, read_png16

RNG = np.random.default_rng(0)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims a size, with almost no pixel data (for bomb and corruption tests)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )
    return path


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize(
    "mode,channels,alpha",
    [("RGB", 3, False), ("RGBA", 3, True), ("L", 1, False), ("LA", 1, True), ("1", 1, False)],
)
def test_modes_to_float_and_back(mode, channels, alpha):
    source = Image.fromarray(RNG.integers(0, 256, (5, 7, 4), dtype=np.uint8), "RGBA").convert(mode)
    pixels, meta = pil_to_float(source)
    assert (meta.channels, meta.alpha, meta.bit_depth) == (channels, alpha, 8)
    assert pixels.shape == (channels + alpha, 5, 7) and pixels.dtype == torch.float32
    back = np.rint(pixels.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    restored = array_to_pil(back, meta)
    expected = source.convert("L") if mode == "1" else source
    assert restored.mode == expected.mode
    np.testing.assert_array_equal(np.asarray(restored), np.asarray(expected))


def test_palette_is_expanded_with_and_without_transparency():
    rgb = Image.fromarray(RNG.integers(0, 256, (6, 6, 3), dtype=np.uint8)).quantize(16)
    pixels, meta = pil_to_float(rgb)
    assert meta.channels == 3 and not meta.alpha
    expected = np.asarray(rgb.convert("RGB"))
    np.testing.assert_allclose(pixels.permute(1, 2, 0).numpy() * 255, expected, atol=1e-3)
    transparent = rgb.copy()
    transparent.info["transparency"] = 0
    pixels, meta = pil_to_float(transparent)
    assert meta.alpha and pixels.shape[0] == 4
    assert np.isin(pixels[3].numpy(), [0.0, 1.0]).all()


def test_sixteen_bit_grey_png_stays_sixteen_bit(tmp_path):
    values = RNG.integers(0, 65536, (9, 11), dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    pixels, meta = pil_to_float(read_image(path))
    assert meta.bit_depth == 16 and meta.channels == 1
    back = np.rint(pixels[0].numpy().astype(np.float64) * 65535).astype(np.uint16)
    np.testing.assert_array_equal(back, values)  # float32 holds every 16-bit level exactly
    out = tmp_path / "again.png"
    write_image(array_to_pil(back[..., None], meta), out)
    reread = read_image(out)
    assert reread.mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(reread), values)


def test_cmyk_becomes_rgb_with_srgb_profile(tmp_path):
    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # pure red ink-wise
    path = tmp_path / "print.jpg"
    cmyk.save(path)
    pixels, meta = pil_to_float(read_image(path))
    assert meta.channels == 3 and pixels.shape == (3, 3, 4)
    assert pixels[0].mean() > 0.8 and pixels[1].mean() < 0.2
    profile = ImageCms.ImageCmsProfile(BytesIO(meta.icc_profile))
    assert "sRGB" in ImageCms.getProfileDescription(profile)


def test_exif_orientation_is_applied_and_reset(tmp_path):
    array = np.zeros((2, 4, 3), np.uint8)
    array[0, 0] = 255  # top-left marker
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[ORIENTATION_TAG] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    exif[0x010F] = "TestMaker"
    path = tmp_path / "turned.jpg"
    image.save(path, exif=exif.tobytes(), quality=100)
    upright = read_image(path)
    assert upright.size == (2, 4)
    assert np.asarray(upright)[0, 1].min() > 200  # the marker moved to the top-right
    _, meta = pil_to_float(upright)
    reread = Image.Exif()
    reread.load(meta.exif)
    assert reread[ORIENTATION_TAG] == 1 and reread[0x010F] == "TestMaker"


@pytest.mark.parametrize("suffix", ["png", "jpg", "webp", "tiff"])
def test_write_carries_exif_and_icc(tmp_path, suffix):
    exif = Image.Exif()
    exif[0x010F] = "TestMaker"
    meta = ImageMeta(3, False, 8, srgb_icc(), exif.tobytes())
    image = array_to_pil(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8), meta)
    path = write_image(image, tmp_path / f"out.{suffix}")
    with Image.open(path) as reread:
        assert reread.info.get("icc_profile") == meta.icc_profile
        assert reread.getexif().get(0x010F) == "TestMaker"
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{suffix}"]  # no temporary file left


def test_jpeg_drops_alpha_with_a_warning_and_16_bit_is_reduced(tmp_path):
    rgba = array_to_pil(RNG.integers(0, 256, (4, 4, 4), dtype=np.uint8), ImageMeta(3, True, 8))
    with pytest.warns(UserWarning, match="alpha"):
        write_image(rgba, tmp_path / "a.jpg")
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"
    deep = array_to_pil(np.full((4, 4, 1), 65535, np.uint16), ImageMeta(1, False, 16))
    with pytest.warns(UserWarning, match="8 bits"):
        write_image(deep, tmp_path / "d.webp")
    assert np.asarray(Image.open(tmp_path / "d.webp").convert("L")).min() == 255


def test_read_errors_are_one_line_image_read_errors(tmp_path):
    cases = {
        "no such file": tmp_path / "missing.png",
        "is a directory": tmp_path,
        "empty file": tmp_path / "empty.png",
        "not an image": tmp_path / "notes.png",
        "truncated or corrupt": tmp_path / "cut.png",
        "decompression-bomb": png_header_only(tmp_path / "bomb.png", 40000, 40000),
    }
    cases["empty file"].write_bytes(b"")
    cases["not an image"].write_text("hello, not pixels\n")
    whole = tmp_path / "whole.png"
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(whole)
    cases["truncated or corrupt"].write_bytes(whole.read_bytes()[:-200])
    for reason, path in cases.items():
        with pytest.raises(ImageReadError, match=reason) as info:
            read_image(path)
        assert "\n" not in str(info.value)


def test_bomb_limit_follows_pillow_setting(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with warnings.catch_warnings(), pytest.raises(ImageReadError, match="decompression-bomb limit of 100"):
        read_image(path)


@pytest.mark.parametrize(
    "dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1), (np.float64, 1)]
)
@pytest.mark.parametrize(
    "shape,channels,alpha",
    [
        ((5, 6), 1, False),
        ((5, 6, 1), 1, False),
        ((5, 6, 2), 1, True),
        ((5, 6, 3), 3, False),
        ((5, 6, 4), 3, True),
    ],
)
def test_arrays_to_float(dtype, scale, shape, channels, alpha):
    array = (RNG.random(shape) * scale).astype(dtype)
    pixels, meta = array_to_float(array)
    assert (meta.channels, meta.alpha) == (channels, alpha)
    assert meta.bit_depth == (16 if dtype == np.uint16 else 8)
    reference = np.atleast_3d(array).astype(np.float64) / scale
    np.testing.assert_allclose(pixels.permute(1, 2, 0).numpy(), reference, atol=1e-6)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 4, 3), np.uint8),
        np.zeros((4, 4, 5), np.uint8),
        np.zeros((2, 2, 2, 3), np.uint8),
        np.zeros((4, 4), np.int32),
        np.full((4, 4), np.nan, np.float32),
    ],
)
def test_bad_arrays(array):
    with pytest.raises(ImageReadError):
        array_to_float(array)


def test_existing_output_and_bad_folders(tmp_path):
    image = Image.new("RGB", (3, 3))
    target = write_image(image, tmp_path / "x.png")
    with pytest.raises(OutputError, match="exists"):
        write_image(image, target)
    write_image(Image.new("RGB", (5, 5)), target, overwrite=True)
    assert Image.open(target).size == (5, 5)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    with pytest.raises(OutputError, match=r"cannot create its folder \(.*file.txt is not a directory\)"):
        write_image(image, blocker / "out.png")
    with pytest.raises(OutputError, match="unknown output format"):
        write_image(image, tmp_path / "out.xyz")
    assert format_for("a.JPG") == "JPEG" and format_for("a.png", "tiff") == "TIFF"


def test_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = write_image(Image.new("RGB", (3, 3), "red"), tmp_path / "keep.png")
    before = target.read_bytes()

    def explode(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half an image")
        raise KeyboardInterrupt

    monkeypatch.setattr(Image.Image, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        write_image(Image.new("RGB", (3, 3), "blue"), target, overwrite=True)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]


def test_writes_into_a_read_only_folder_fail_in_one_line(read_only_folder):
    """The cleanup's unlink fails too on a read-only file system (EROFS): it must not hide the reason."""
    with pytest.raises(OutputError, match="cannot write .*Read-only file system"):
        atomic_write(read_only_folder / "out.txt", lambda tmp: tmp.write_text("x"))
    with pytest.raises(OutputError, match="cannot write"):
        write_image(Image.new("RGB", (3, 3)), read_only_folder / "out.png")
    assert sorted(p.name for p in read_only_folder.iterdir()) == ["inside.txt"]


def test_writability_probe_asks_the_file_system(tmp_path, read_only_folder):
    assert unwritable_reason(tmp_path) is None
    assert unwritable_reason(tmp_path / "not" / "yet" / "made") is None  # creatable: its ancestor is writable
    assert not (tmp_path / "not").exists()  # the probe creates no folder
    assert "Read-only file system" in unwritable_reason(read_only_folder)
    assert "Read-only file system" in unwritable_reason(read_only_folder / "sub")
    blocker = tmp_path / "file.png"
    blocker.write_text("a file")
    assert unwritable_reason(blocker / "deeper") == f"{blocker} is not a directory"
    with pytest.raises(OutputError, match=r"x.png: cannot write there \(.*file.png is not a directory\)"):
        check_writable(blocker / "x.png")
    check_writable(tmp_path / "fine.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.png", "read-only"]  # no probe left behind


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_writability_probe_refuses_proc():
    assert unwritable_reason("/proc") is not None
    with pytest.raises(OutputError, match="/proc/x.png: cannot write there"):
        check_writable("/proc/x.png")


@pytest.mark.parametrize(
    "name,channels,dtype",
    [
        ("a.png", 3, np.uint8),
        ("b.jpg", 3, np.uint8),
        ("c.webp", 4, np.uint8),
        ("d.tiff", 3, np.uint8),
        ("e.tif", 1, np.uint16),
        ("f.png", 3, np.uint16),
        ("g.png", 1, np.uint16),
    ],
)
def test_software_tag_marks_what_mma_wrote(tmp_path, name, channels, dtype):
    exif = Image.Exif()
    exif[0x010F] = "TestMaker"
    exif[SOFTWARE_TAG] = "SomeEditor 1.0"
    top = 65535 if dtype == np.uint16 else 255
    array = RNG.integers(0, top + 1, (5, 6, channels)).astype(dtype)
    meta = ImageMeta(
        3 if channels >= 3 else 1, channels in (2, 4), 16 if dtype == np.uint16 else 8, exif=exif.tobytes()
    )
    tag = software_tag("mma-t", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # formats that store fewer bits say so
        ours = write_pixels(array, meta, tmp_path / name, software=tag)
        theirs = write_pixels(array, meta, tmp_path / f"plain_{name}")
        bare = write_pixels(
            array, ImageMeta(meta.channels, meta.alpha, meta.bit_depth), tmp_path / f"bare_{name}"
        )
    assert made_by_mma(ours) and not made_by_mma(theirs) and not made_by_mma(bare)
    with Image.open(ours) as image:
        written = image.getexif()
        assert written[SOFTWARE_TAG] == tag and tag.startswith("mma-sr ") and tag.endswith("(mma-t x3)")
        assert written[0x010F] == "TestMaker"  # the rest of the source's EXIF is kept


def test_made_by_mma_is_false_for_anything_else(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert not made_by_mma(text) and not made_by_mma(tmp_path / "missing.png")
    assert not made_by_mma(png_header_only(tmp_path / "bomb.png", 40000, 40000))


# --- 16-bit colour PNG (mma.imaging.png16): Pillow reads these at 8 bits and cannot write them ---


def reference_filter(rows: np.ndarray, kinds: list[int], bpp: int) -> bytes:
    """PNG filtering written straight from the specification, one byte at a time (slow, obviously right)."""
    out = bytearray()
    height, stride = rows.shape
    for y in range(height):
        out.append(kinds[y])
        for x in range(stride):
            a = int(rows[y, x - bpp]) if x >= bpp else 0
            b = int(rows[y - 1, x]) if y > 0 else 0
            c = int(rows[y - 1, x - bpp]) if y > 0 and x >= bpp else 0
            p = a + b - c
            if abs(p - a) <= abs(p - b) and abs(p - a) <= abs(p - c):
                paeth = a
            else:
                paeth = b if abs(p - b) <= abs(p - c) else c
            predictor = [0, a, b, (a + b) // 2, paeth][kinds[y]]
            out.append((int(rows[y, x]) - predictor) % 256)
    return bytes(out)


def png_from_rows(
    pixels: np.ndarray, kinds: list[int], extra: bytes = b"", interlaced: bool = False
) -> bytes:
    """A 16-bit PNG whose rows use the given filter types (as other encoders write them), cycling through
    `kinds` row by row; `interlaced` cuts the image into the seven Adam7 sub-images of the PNG specification
    (every 8th pixel from (0, 0); from (4, 0); every 4th row, 4th column from (0, 4); ...), each filtered
    on its own."""
    height, width, channels = pixels.shape
    passes = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ]
    stream = b""
    for x0, y0, dx, dy in passes if interlaced else [(0, 0, 1, 1)]:
        sub = pixels[y0::dy, x0::dx]
        if sub.size:
            rows = sub.astype(">u2").view(np.uint8).reshape(sub.shape[0], -1)
            stream += reference_filter(
                rows, [kinds[y % len(kinds)] for y in range(sub.shape[0])], channels * 2
            )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {2: 4, 3: 2, 4: 6}[channels], 0, 0, int(interlaced))
    idat = zlib.compress(stream)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png16_decoder_handles_every_filter_type(tmp_path, channels):
    pixels = RNG.integers(0, 65536, (10, 7, channels), dtype=np.uint16)
    pixels[0, 0] = 65535
    pixels[1] = 0
    pixels[2] = 65535  # extremes: every byte wraps
    path = tmp_path / "filters.png"
    path.write_bytes(png_from_rows(pixels, [0, 1, 2, 3, 4, 4, 3, 2, 1, 0]))
    decoded, icc, exif = read_png16(path, None)
    np.testing.assert_array_equal(decoded, pixels)
    assert icc is None and exif is None
    with Image.open(path) as pillow:  # an independent decoder agrees on the high bytes
        picked = {2: [0, 3], 3: [0, 1, 2], 4: [0, 1, 2, 3]}[channels]
        np.testing.assert_array_equal(np.asarray(pillow.convert("RGBA"))[..., picked], pixels >> 8)


@pytest.mark.parametrize(("height", "width"), [(10, 7), (1, 1), (3, 9), (17, 16)])
def test_png16_decoder_reads_adam7_interlaced_files(tmp_path, height, width):
    """Interlaced 16-bit files keep their 16 bits too, whatever passes their size leaves empty."""
    pixels = RNG.integers(0, 65536, (height, width, 3), dtype=np.uint16)
    path = tmp_path / "interlaced.png"
    path.write_bytes(png_from_rows(pixels, [0, 1, 2, 3, 4], interlaced=True))
    assert is_deep_colour_png(path)
    decoded, _, _ = read_png16(path, None)
    np.testing.assert_array_equal(decoded, pixels)
    with Image.open(path) as pillow:  # an independent decoder agrees on the high bytes
        np.testing.assert_array_equal(np.asarray(pillow.convert("RGB")), pixels >> 8)
    data = path.read_bytes()  # the same file with the last pass's final row missing from the pixel stream
    start = data.index(b"IDAT") - 4
    length = struct.unpack(">I", data[start : start + 4])[0]
    short = zlib.compress(zlib.decompress(data[start + 8 : start + 8 + length])[: -(width * 6 + 1)])
    idat = struct.pack(">I", len(short)) + b"IDAT" + short + struct.pack(">I", zlib.crc32(b"IDAT" + short))
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[:start] + idat + data[start + 12 + length :])
    with pytest.raises(ImageReadError, match="pixel data ends early"):
        read_pixels(cut)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_png16_roundtrip_with_metadata_through_read_and_write_pixels(tmp_path, channels):
    pixels = RNG.integers(0, 65536, (9, 6, channels), dtype=np.uint16)
    exif = Image.Exif()
    exif[0x010F] = "TestMaker"
    meta = ImageMeta(3 if channels > 2 else 1, channels in (2, 4), 16, srgb_icc(), exif.tobytes())
    path = write_pixels(pixels, meta, tmp_path / "deep.png")
    assert is_deep_colour_png(path)
    floats, read_meta = read_pixels(path)
    assert (read_meta.channels, read_meta.alpha, read_meta.bit_depth) == (meta.channels, meta.alpha, 16)
    assert read_meta.icc_profile == meta.icc_profile
    again = Image.Exif()
    again.load(read_meta.exif)
    assert again[0x010F] == "TestMaker"
    back = np.rint(floats.permute(1, 2, 0).numpy().astype(np.float64) * 65535).astype(np.uint16)
    np.testing.assert_array_equal(back, pixels)


def test_png16_transparency_key_orientation_and_fallbacks(tmp_path):
    pixels = RNG.integers(0, 65536, (4, 6, 3), dtype=np.uint16)
    pixels[1, 2] = (1, 2, 3)
    key = struct.pack(">HHH", 1, 2, 3)
    crc = struct.pack(">I", zlib.crc32(b"tRNS" + key))
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = 6
    raw = exif.tobytes()[6:]
    exif_chunk = struct.pack(">I", len(raw)) + b"eXIf" + raw + struct.pack(">I", zlib.crc32(b"eXIf" + raw))
    path = tmp_path / "keyed.png"
    path.write_bytes(png_from_rows(pixels, [0] * 4, struct.pack(">I", 6) + b"tRNS" + key + crc + exif_chunk))
    floats, meta = read_pixels(path)
    assert meta.alpha and floats.shape == (4, 6, 4)  # upright: 6 rows x 4 columns, RGB + alpha
    alpha = np.rint(floats[3].numpy() * 65535)
    assert alpha.min() == 0 and (alpha == 0).sum() == 1
    with pytest.warns(UserWarning, match="16-bit colour"):
        write_pixels(np.zeros((2, 2, 3), np.uint16), meta, tmp_path / "deep.tiff")
    assert Image.open(tmp_path / "deep.tiff").mode == "RGB"
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.zeros((3, 3), np.uint16)).save(grey)
    assert not is_deep_colour_png(grey)  # 16-bit grey stays with Pillow, which keeps it 16-bit


def test_png16_damage_is_an_image_read_error(tmp_path, monkeypatch):
    pixels = RNG.integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    good = tmp_path / "good.png"
    good.write_bytes(png_from_rows(pixels, [4] * 16))
    data = good.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) - 40])
    flipped = tmp_path / "flipped.png"
    flipped.write_bytes(data[:60] + bytes([data[60] ^ 0xFF]) + data[61:])
    for path in (cut, flipped):
        with pytest.raises(ImageReadError, match="truncated or corrupt"):
            read_pixels(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageReadError, match="decompression-bomb"):
        read_pixels(good)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow(orientation):
    array = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[ORIENTATION_TAG] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(orient(array, orientation), expected)
