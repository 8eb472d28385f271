"""Video: clips made here (a few dozen 32x24 frames, variable frame rate, with sound) go through
`mma.upscale_video`, its frame iterator and `mma upscale`, with a tiny untrained network."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import optional_package

av = optional_package("av", "video")

import mma  # noqa: E402
from mma.errors import (  # noqa: E402
    ConfigError,
    OutputError,
    VideoOutputError,
    VideoReadError,
    VideoTruncatedError,
    VideoUnavailableError,
)
from mma.video.segments import work_folder  # noqa: E402

WIDTH, HEIGHT = 32, 24


def make_clip(
    path: Path,
    frames: int = 30,
    *,
    codec: str = "ffv1",
    pix_fmt: str = "bgr0",
    audio: bool = True,
    rotation: int = 0,
    colour: bool = False,
    options: dict[str, str] | None = None,
) -> Path:
    """A clip of smooth random frames at a variable frame rate (40 and 80 ms apart) with a mono AAC track."""
    rng = np.random.default_rng(7)
    container = av.open(str(path), "w", options=options or {})
    video = container.add_stream(codec, rate=25)
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, pix_fmt
    video.time_base = Fraction(1, 1000)
    if colour:
        context = video.codec_context
        context.color_range, context.color_primaries, context.color_trc, context.colorspace = 1, 1, 1, 1
    if rotation:
        video.set_display_rotation(rotation)
    sound = None
    if audio:
        sound = container.add_stream("aac", rate=8000)
        sound.layout = "mono"
    pts = 0
    for index in range(frames):
        coarse = rng.integers(0, 256, size=(HEIGHT // 4, WIDTH // 4, 3))
        pixels = np.kron(coarse, np.ones((4, 4, 1))).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = pts, video.time_base
        pts += 80 if index % 3 == 0 else 40
        container.mux(video.encode(frame))
    container.mux(video.encode(None))
    if sound is not None:
        for index in range(pts * 8 // 1024):
            samples = (rng.standard_normal((1, 1024)) * 0.1).astype(np.float32)
            chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 8000, index * 1024
            container.mux(sound.encode(chunk))
        container.mux(sound.encode(None))
    container.close()
    return path


def video_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    """(time in seconds, RGB pixels) of every frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)]


def audio_packets(path: Path) -> list[tuple[float, bytes]]:
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [(float(p.pts * p.time_base), bytes(p)) for p in container.demux(stream) if p.size]


@pytest.fixture
def tiny_model(tiny_weights: Path):
    """The tiny x2 network, loaded once per test (CPU, float32)."""
    return mma.load_model(tiny_weights, device="cpu", dtype="fp32")


def upscale_video(source: Path, target: Path, model, **options):
    options = {"device": "cpu", "dtype": "fp32", "threads": 1, **options}
    return mma.upscale_video(source, target, model=model, **options)


def test_lossless_output_matches_upscale_of_each_frame_with_timestamps_and_sound(tmp_path, tiny_model):
    source = make_clip(tmp_path / "clip.mkv")
    result = upscale_video(source, tmp_path / "clip_x2.mkv", tiny_model, codec="ffv1", batch=4)
    assert result.frames == result.upscaled == 30
    before, after = video_frames(source), video_frames(result.path)
    assert [t for t, _ in after] == [t for t, _ in before]
    assert audio_packets(result.path) == audio_packets(source) != []
    for (_, small), (_, large) in zip(before, after):
        expected = mma.upscale(small, model=tiny_model, device="cpu", dtype="fp32", threads=1)
        assert large.shape == (HEIGHT * 2, WIDTH * 2, 3)
        assert np.abs(large.astype(int) - expected.astype(int)).max() <= 1
    assert not work_folder(result.path).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv", "clip_x2.mkv", "tiny_x2.safetensors"]
