"""Reading and writing images without surprises: safe decoding, every common mode, EXIF and ICC kept.

Inputs become a float (C, H, W) tensor in [0, 1] plus an `ImageMeta` that remembers how to give the
result back the same way (mode, 8 or 16 bits, alpha, ICC profile, EXIF). Outputs are written to a
temporary file in the destination folder and renamed, so an interrupted run never leaves half an image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from mma.errors import ImageReadError, OutputError, ValueRangeError
from mma.fileio import atomic_write
from mma.imaging.png16 import encode_png16, is_deep_colour_png, read_png16

ORIENTATION_TAG = 0x0112
SOFTWARE_TAG = 0x0131  # EXIF and TIFF "Software": which program made the file
MADE_BY = "mma-sr"

# Pillow format name for each output suffix this project writes.
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "tif": "TIFF", "tiff": "TIFF"}


@dataclass(frozen=True)
class ImageMeta:
    """How a decoded image was stored, so the upscaled one can be stored the same way."""

    channels: int  # colour channels: 1 (gray) or 3 (RGB); alpha is counted separately
    alpha: bool
    bit_depth: int  # 8 or 16
    icc_profile: bytes | None = field(default=None, repr=False)
    exif: bytes | None = field(default=None, repr=False)  # orientation already reset to 1

    @property
    def total_channels(self) -> int:
        return self.channels + int(self.alpha)

    @property
    def max_value(self) -> int:
        return 65535 if self.bit_depth == 16 else 255

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16 if self.bit_depth == 16 else np.uint8)


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode `path` fully, upright (EXIF orientation applied), or raise ImageReadError saying why.

    Images over Pillow's `Image.MAX_IMAGE_PIXELS` are refused from the header alone (the warning
    Pillow would print is turned into the error), so a decompression bomb costs nothing.
    """
    path = _existing_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                _warn_if_precision_lost(image, path)
                image.load()
                return _upright_image(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(
            f"{path}: over the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} "
            "pixels (raise PIL.Image.MAX_IMAGE_PIXELS if you trust it)"
        ) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image (or a format Pillow cannot read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"{path}: truncated or corrupt image ({exc})") from None


def read_pixels(path: str | os.PathLike[str]) -> tuple[torch.Tensor, ImageMeta]:
    """A file as float (C, H, W) planes and its meta, keeping 16 bits where Pillow alone would not
    (16-bit colour PNG); everything else goes through `read_image`."""
    path = _existing_file(path)
    if not is_deep_colour_png(path):
        return pil_to_float(read_image(path))
    array, icc, raw_exif = read_png16(path, Image.MAX_IMAGE_PIXELS)
    exif = Image.Exif()
    if raw_exif:
        exif.load(raw_exif)
    pixels, meta = array_to_float(orient(array, exif.get(ORIENTATION_TAG, 1)))
    return pixels, ImageMeta(meta.channels, meta.alpha, 16, icc, _upright(exif))


def _existing_file(path: str | os.PathLike[str]) -> Path:
    """`path` when it is a non-empty file, else ImageReadError saying what it is instead."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    return path


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an (H, W, C) array upright for an EXIF orientation value, as `ImageOps.exif_transpose` does."""
    turns = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(turns[orientation](array)) if orientation in turns else array


def _warn_if_precision_lost(image: Image.Image, path: Path) -> None:
    """Pillow decodes 16-bit colour PNG/TIFF at 8 bits; say so instead of silently dropping bits."""
    rawmodes = {tile.args[0] if isinstance(tile.args, tuple) else tile.args for tile in image.tile}
    if any(isinstance(raw, str) and raw.startswith(("RGB;16", "RGBA;16", "LA;16")) for raw in rawmodes):
        warnings.warn(
            f"{path}: Pillow decodes 16-bit colour at 8 bits per channel "
            "(read_pixels keeps 16 bits for PNG; TIFF is read at 8)",
            stacklevel=3,
        )


def pil_to_float(image: Image.Image) -> tuple[torch.Tensor, ImageMeta]:
    """Any Pillow mode -> float32 (C, H, W) in [0, 1] (alpha last) and the metadata to restore it."""
    icc = image.info.get("icc_profile") or None
    exif = _upright(image.getexif())
    mode = image.mode
    if mode == "CMYK":
        image, icc = _cmyk_to_rgb(image, icc), _srgb_profile()
        mode = "RGB"
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        array = np.asarray(image).astype(np.float32)
        pixels = torch.from_numpy(np.clip(array, 0, 65535) / 65535.0)[None]
        return pixels.float(), ImageMeta(1, False, 16, icc, exif)
    if mode == "F":
        raise ImageReadError("32-bit float images (mode F) are not supported; save them as 16-bit PNG")
    target = _EIGHT_BIT_TARGET.get(mode)
    if target is None:
        target = "RGBA" if _has_transparency(image) else "RGB"
    if image.mode != target:
        image = image.convert(target)
    array = np.asarray(image)
    array = array[..., None] if array.ndim == 2 else array
    pixels = torch.from_numpy(array.transpose(2, 0, 1).astype(np.float32)).div_(255.0)
    return pixels, ImageMeta(3 if target.startswith("RGB") else 1, target.endswith("A"), 8, icc, exif)


# Pillow modes that map straight onto an 8-bit mode this module handles (P, PA and the rest go by
# whether they carry transparency).
_EIGHT_BIT_TARGET = {
    "1": "L",
    "L": "L",
    "LA": "LA",
    "La": "LA",
    "RGB": "RGB",
    "RGBX": "RGB",
    "RGBA": "RGBA",
    "RGBa": "RGBA",
    "YCbCr": "RGB",
    "LAB": "RGB",
    "HSV": "RGB",
}


def _has_transparency(image: Image.Image) -> bool:
    return "A" in image.getbands() or "transparency" in image.info or image.mode == "PA"


def _srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """Colour-managed when the file embeds a CMYK profile, Pillow's plain formula otherwise."""
    if icc:
        with contextlib.suppress(ImageCms.PyCMSError, OSError):
            source = ImageCms.ImageCmsProfile(BytesIO(icc))
            converted = ImageCms.profileToProfile(
                image, source, ImageCms.createProfile("sRGB"), outputMode="RGB"
            )
            if converted is not None:
                return converted
    return image.convert("RGB")


def _upright_image(image: Image.Image) -> Image.Image:
    """`image` turned upright by its EXIF orientation, which is then 1 (Pillow's exif_transpose removes the tag;
    keeping it at 1 tells every viewer the pixels need no turning, as docs/cli.md promises)."""
    had_orientation = ORIENTATION_TAG in image.getexif()
    upright = ImageOps.exif_transpose(image)
    if had_orientation:
        exif = upright.getexif()
        exif[ORIENTATION_TAG] = 1
        upright.info["exif"] = exif.tobytes()
    return upright


def _upright(exif: Image.Exif) -> bytes | None:
    """EXIF with orientation set to 1, because the pixels are already upright."""
    if not exif:
        return None
    if ORIENTATION_TAG in exif:
        exif[ORIENTATION_TAG] = 1
    return exif.tobytes()


def array_to_float(array: np.ndarray) -> tuple[torch.Tensor, ImageMeta]:
    """HxW or HxWxC (C = 1, 2, 3, 4; uint8, uint16 or float in [0, 1]) -> float (C, H, W) and meta."""
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"expected an HxW or HxWxC array with C in 1..4, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageReadError(f"zero-size image array of shape {array.shape}")
    if array.dtype == np.uint8:
        depth, scaled = 8, array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        depth, scaled = 16, array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageReadError("image array contains NaN or infinite values")
        values = array.astype(np.float32)
        check_unit_range(float(values.min()), float(values.max()), "image array")
        depth, scaled = 8, np.clip(values, 0.0, 1.0)
    else:
        raise ImageReadError(f"unsupported array dtype {array.dtype}: use uint8, uint16 or float in [0, 1]")
    channels = array.shape[2]
    pixels = torch.from_numpy(np.ascontiguousarray(scaled.transpose(2, 0, 1)))
    return pixels, ImageMeta(3 if channels >= 3 else 1, channels in (2, 4), depth)


# Float images are taken as [0, 1]. Values past this margin cannot be the overshoot of a filter or resize:
# they are another scale (0..255 most often), which clipping would turn into a white image.
FLOAT_RANGE_MARGIN = 0.5
# Overshoot smaller than this is rounding, clipped without a word.
FLOAT_ROUNDING = 1e-3


def check_unit_range(low: float, high: float, what: str) -> None:
    """Refuse float image values clearly outside [0, 1] (ValueRangeError naming the fix), and warn when a
    small overshoot is clipped: float input is never silently changed by more than rounding."""
    if high > 1 + FLOAT_RANGE_MARGIN or low < -FLOAT_RANGE_MARGIN:
        if low >= -FLOAT_RANGE_MARGIN and high <= 255 + FLOAT_RANGE_MARGIN:
            hint = "divide by 255 (or pass uint8)"
        elif low >= -1 - FLOAT_ROUNDING and high <= 1 + FLOAT_RANGE_MARGIN:
            hint = "map [-1, 1] data with (x + 1) / 2"
        else:
            hint = "scale it to [0, 1]"
        raise ValueRangeError(
            f"{what} holds values from {low:.4g} to {high:.4g} but float images must be in [0, 1]: {hint}"
        )
    if high > 1 + FLOAT_ROUNDING or low < -FLOAT_ROUNDING:
        warnings.warn(
            f"{what} holds values from {low:.4g} to {high:.4g}; clipped to [0, 1]",
            RuntimeWarning,
            stacklevel=3,
        )


def array_to_pil(array: np.ndarray, meta: ImageMeta) -> Image.Image:
    """An HxWxC uint8/uint16 result -> Pillow image carrying the source's ICC profile and EXIF."""
    if array.dtype == np.uint16:
        if array.shape[2] != 1:
            raise OutputError("Pillow cannot hold 16-bit colour; ask for a numpy or torch result instead")
        image = Image.fromarray(np.ascontiguousarray(array[..., 0], dtype="<u2"))  # Pillow: I;16
    else:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
        image = Image.fromarray(array[..., 0] if mode == "L" else array, mode=mode)
    if meta.icc_profile:
        image.info["icc_profile"] = meta.icc_profile
    if meta.exif:
        image.info["exif"] = meta.exif
    return image


def format_for(path: str | os.PathLike[str], format: str | None = None) -> str:
    """Pillow format name from an explicit choice or the file suffix; OutputError when unknown."""
    key = (format or Path(path).suffix.lstrip(".")).lower()
    if key not in FORMATS:
        raise OutputError(f"{path}: unknown output format {key!r}; use one of png, jpg, webp, tiff")
    return FORMATS[key]


def write_image(
    image: Image.Image,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    overwrite: bool = False,
    quality: int = 95,
) -> Path:
    """Write atomically (temporary file beside it, then rename), with EXIF and ICC where the format allows."""
    fmt = format_for(path, format)

    def save(target: Path) -> None:
        fitted = _fit_mode(image, fmt)
        options = {key: fitted.info[key] for key in ("icc_profile", "exif") if fitted.info.get(key)}
        if fmt in ("JPEG", "WEBP"):
            options["quality"] = quality
        fitted.save(target, format=fmt, **options)

    return atomic_write(path, save, overwrite=overwrite, make_parents=True)


def write_pixels(
    array: np.ndarray,
    meta: ImageMeta,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    overwrite: bool = False,
    software: str | None = None,
) -> Path:
    """Write an (H, W, C) uint8/uint16 result with the source's metadata; 16-bit colour stays 16-bit
    in PNG. `software` (see `software_tag`) goes into the EXIF Software tag, so the file says what made it."""
    fmt = format_for(path, format)
    if software is not None:
        meta = with_software(meta, software)
    if array.dtype == np.uint16 and array.shape[2] > 1:
        if fmt == "PNG":
            encoded = encode_png16(array, meta.icc_profile, meta.exif)
            return atomic_write(
                path, lambda tmp: tmp.write_bytes(encoded), overwrite=overwrite, make_parents=True
            )
        warnings.warn(
            f"{fmt} cannot store 16-bit colour here: written at 8 bits (use PNG to keep 16)", stacklevel=2
        )
        array = np.rint(array / 257.0).astype(np.uint8)
    return write_image(array_to_pil(array, meta), path, format=format, overwrite=overwrite)


def _fit_mode(image: Image.Image, fmt: str) -> Image.Image:
    """Convert only where the format cannot store the mode (JPEG: no alpha, no 16 bits)."""
    if fmt == "JPEG" and image.mode not in ("L", "RGB"):
        if "A" in image.getbands():
            warnings.warn("JPEG has no alpha channel: transparency dropped", stacklevel=3)
        target = "L" if image.mode in ("LA", "I;16") else "RGB"
        info = image.info
        image = _to_8bit(image) if image.mode == "I;16" else image.convert(target)
        image.info.update({k: v for k, v in info.items() if k in ("icc_profile", "exif")})
    if fmt == "WEBP" and image.mode in ("L", "LA", "I;16"):
        info = image.info
        image = _to_8bit(image) if image.mode == "I;16" else image
        image = image.convert("RGBA" if image.mode == "LA" else "RGB")
        image.info.update({k: v for k, v in info.items() if k in ("icc_profile", "exif")})
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    warnings.warn("16-bit image stored at 8 bits: the output format has no 16-bit mode", stacklevel=4)
    array = np.asarray(image).astype(np.float32) / 257.0
    return Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")


def software_tag(model: str, scale: int) -> str:
    """What `mma upscale` writes into an output's Software tag: program, version, model and scale."""
    from mma import __version__

    return f"{MADE_BY} {__version__} ({model} x{scale})"


def with_software(meta: ImageMeta, software: str) -> ImageMeta:
    """`meta` whose EXIF (the source's, or a new one) names `software` as the program that made the file."""
    exif = Image.Exif()
    if meta.exif:
        exif.load(meta.exif)
    exif[SOFTWARE_TAG] = software
    return dataclasses.replace(meta, exif=exif.tobytes())


def made_by_mma(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is an image that this package wrote, by its Software tag (not its name).

    Reads the header only: a folder of large photos is sorted without decoding them. Files we write carry
    the tag before the pixels (PNG's eXIf precedes IDAT), so a PNG without EXIF in its header is not ours.
    """
    try:
        with Image.open(path) as image:
            if image.format == "PNG" and "exif" not in image.info:
                return False
            software = image.getexif().get(SOFTWARE_TAG)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return False
    return isinstance(software, str) and software.startswith(f"{MADE_BY} ")
