"""Video: clips made here (a few dozen 32x24 frames, variable frame rate, with sound) go through
`mma.upscale_video`, its frame iterator and `mma upscale`, with a tiny untrained network."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import optional_package

av = optional_package("av", "video")

import itertools

import mma
from mma.errors import (
    ConfigError,
    OutputError,
    VideoOutputError,
    VideoReadError,
    VideoTruncatedError,
    VideoUnavailableError,
)
from mma.video.segments import work_folder

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
        return [
            (float(f.pts * stream.time_base), f.to_ndarray(format="rgb24")) for f in container.decode(stream)
        ]


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


def test_default_codec_keeps_rotation_colour_tags_pixel_format_and_timestamps(tmp_path, tiny_model):
    source = make_clip(
        tmp_path / "clip.mp4", 12, codec="libx264", pix_fmt="yuv420p", rotation=90, colour=True
    )
    result = upscale_video(source, tmp_path / "out.mp4", tiny_model)
    with av.open(str(result.path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        assert (context.name, context.pix_fmt, context.width, context.height) == ("h264", "yuv420p", 64, 48)
        tags = (context.color_range, context.color_primaries, context.color_trc, context.colorspace)
        assert tags == (1, 1, 1, 1)
        assert next(container.decode(stream)).rotation == 90
    assert [t for t, _ in video_frames(result.path)] == [t for t, _ in video_frames(source)]
    assert audio_packets(result.path) == audio_packets(source)


def test_crf_reaches_the_encoder_and_lower_means_larger(tmp_path, tiny_model):
    source = make_clip(tmp_path / "clip.mkv", 6, audio=False)
    sizes = [
        upscale_video(source, tmp_path / f"q{crf}.mkv", tiny_model, crf=crf).path.stat().st_size
        for crf in (4, 40)
    ]
    assert sizes[0] > sizes[1]
    webm = upscale_video(source, tmp_path / "clip.webm", tiny_model, codec="vp9", crf=30)
    with av.open(str(webm.path)) as container:
        assert container.streams.video[0].codec_context.name == "vp9"
    assert len(video_frames(webm.path)) == 6


def test_frames_range_starts_at_zero_with_the_sound_of_those_frames(tmp_path, tiny_model):
    source = make_clip(tmp_path / "clip.mkv")
    result = upscale_video(source, tmp_path / "part.mkv", tiny_model, codec="ffv1", frames=(5, 15))
    before, after = video_frames(source), video_frames(result.path)
    assert result.frames == len(after) == 10
    start = before[5][0]
    assert [t for t, _ in after] == pytest.approx([t - start for t, _ in before[5:15]])
    end = before[15][0]
    wanted = [(t - start, data) for t, data in audio_packets(source) if start <= t < end]
    assert [data for _, data in audio_packets(result.path)] == [data for _, data in wanted]
    assert [t for t, _ in audio_packets(result.path)] == pytest.approx([t for t, _ in wanted], abs=1e-3)
    beyond = upscale_video(source, tmp_path / "rest.mkv", tiny_model, codec="ffv1", frames=(25, 1000))
    assert beyond.frames == 5  # an END past the last frame is the end, not a truncation


def test_a_killed_run_resumes_from_its_finished_segments(tmp_path, tiny_model):
    from mma.engine import Engine
    from mma.video import upscale_video_with

    source = make_clip(tmp_path / "clip.mkv")
    target = tmp_path / "out.mkv"
    engine = Engine(tiny_model, device="cpu", dtype="fp32", threads=1, batch=3)

    def kill(done: int, total: int) -> None:
        if done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale_video_with(engine, source, target, codec="ffv1", segment_frames=8, progress=kill)
    parts = work_folder(target)
    assert not target.exists()
    assert sorted(p.name for p in parts.iterdir()) == ["00000.nut", "00001.nut", "manifest.json"]
    seen: list[int] = []
    resumed = upscale_video_with(
        engine,
        source,
        target,
        codec="ffv1",
        segment_frames=8,
        skip_existing=True,
        progress=lambda d, t: seen.append(t),
    )
    assert (resumed.frames, resumed.upscaled, len(seen)) == (30, 14, 14)
    assert not parts.exists()
    fresh = upscale_video_with(engine, source, tmp_path / "fresh.mkv", codec="ffv1", segment_frames=8)
    assert fresh.upscaled == 30
    assert [(t, f.tobytes()) for t, f in video_frames(target)] == [
        (t, f.tobytes()) for t, f in video_frames(fresh.path)
    ]
    assert audio_packets(target) == audio_packets(source)


def test_segments_of_another_job_are_not_reused(tmp_path, tiny_model):
    from mma.engine import Engine
    from mma.video import upscale_video_with

    source = make_clip(tmp_path / "clip.mkv", 12, audio=False)
    target = tmp_path / "out.mkv"
    engine = Engine(tiny_model, device="cpu", dtype="fp32", threads=1)

    def kill(done: int, total: int) -> None:
        if done == 9:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upscale_video_with(engine, source, target, codec="ffv1", segment_frames=4, progress=kill)
    result = upscale_video_with(engine, source, target, codec="libx264", segment_frames=4, skip_existing=True)
    assert result.upscaled == 12  # another codec: the ffv1 segments are thrown away
    assert [t for t, _ in video_frames(target)] == [t for t, _ in video_frames(source)]


def test_h264_segments_with_reordered_frames_join_at_the_source_timestamps(tmp_path, tiny_model):
    from mma.engine import Engine
    from mma.video import upscale_video_with

    source = make_clip(tmp_path / "clip.mp4", 36, codec="libx264", pix_fmt="yuv420p")
    engine = Engine(tiny_model, device="cpu", dtype="fp32", threads=1)
    result = upscale_video_with(engine, source, tmp_path / "out.mp4", segment_frames=12)
    with av.open(str(result.path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size]
    assert any(p.dts != p.pts for p in packets)  # B-frames: the decoding times were rebuilt
    assert [t for t, _ in video_frames(result.path)] == [t for t, _ in video_frames(source)]
    assert audio_packets(result.path) == audio_packets(source)


def test_decode_times_rise_and_never_pass_their_presentation_time():
    from mma.video.segments import decode_times

    rng = np.random.default_rng(0)
    for _ in range(200):
        presented = np.cumsum(rng.integers(1, 5, size=rng.integers(1, 30))).tolist()
        order = list(presented)
        for i in range(0, len(order) - 2, 3):  # B-frame style reordering: an anchor before two earlier frames
            if rng.random() < 0.7:
                order[i : i + 3] = [order[i + 2], order[i], order[i + 1]]
        times = decode_times(order)
        assert all(a < b for a, b in itertools.pairwise(times))
        assert all(dts <= pts for dts, pts in zip(times, order))


def test_existing_output_is_kept_or_refused(tmp_path, tiny_model):
    source = make_clip(tmp_path / "clip.mkv", 4, audio=False)
    target = tmp_path / "out.mkv"
    target.write_bytes(b"earlier")
    with pytest.raises(OutputError, match="exists"):
        upscale_video(source, target, tiny_model)
    assert upscale_video(source, target, tiny_model, skip_existing=True).skipped
    assert target.read_bytes() == b"earlier"
    assert upscale_video(source, target, tiny_model, overwrite=True).frames == 4


def no_partial_files(folder: Path, *kept: str) -> bool:
    return sorted(p.name for p in folder.iterdir()) == sorted(kept)


def test_not_a_video_is_one_line(tmp_path, tiny_model):
    (tmp_path / "notes.mp4").write_text("not a video at all")
    with pytest.raises(VideoReadError, match=r"notes.mp4: not a video \(") as caught:
        upscale_video(tmp_path / "notes.mp4", tmp_path / "out.mp4", tiny_model)
    assert "\n" not in str(caught.value)
    assert no_partial_files(tmp_path, "notes.mp4", "tiny_x2.safetensors")


def test_no_video_stream_is_one_line(tmp_path, tiny_model):
    container = av.open(str(tmp_path / "sound.mka"), "w")
    stream = container.add_stream("flac", rate=8000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts = 8000, 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    container.close()
    with pytest.raises(VideoReadError, match="no video stream \\(holds audio\\)"):
        upscale_video(tmp_path / "sound.mka", tmp_path / "out.mkv", tiny_model)
    assert no_partial_files(tmp_path, "sound.mka", "tiny_x2.safetensors")


def test_unknown_codec_is_one_line(tmp_path, tiny_model):
    source = make_clip(tmp_path / "clip.mkv", 3, audio=False)
    with pytest.raises(ConfigError, match="--codec nonsense: no such video encoder"):
        upscale_video(source, tmp_path / "out.mkv", tiny_model, codec="nonsense")
    with pytest.raises(ConfigError, match="--codec aac: aac is not a video encoder"):
        upscale_video(source, tmp_path / "out.mkv", tiny_model, codec="aac")
    with pytest.raises(ConfigError, match="--crf 80: libx264 takes 0 to 51"):
        upscale_video(source, tmp_path / "out.mkv", tiny_model, crf=80)
    assert no_partial_files(tmp_path, "clip.mkv", "tiny_x2.safetensors")


def test_a_source_codec_this_pyav_cannot_decode_is_one_line(tmp_path, tiny_model):
    """A Matroska file whose video codec id FFmpeg does not know (the same bytes under another id)."""
    made = make_clip(tmp_path / "made.mkv", 3, audio=False)
    source = tmp_path / "clip.mkv"
    data = made.read_bytes()
    assert data.count(b"V_FFV1") == 1
    source.write_bytes(data.replace(b"V_FFV1", b"V_QQQQ"))
    made.unlink()
    with pytest.raises(VideoReadError, match=r"clip.mkv: video codec .* cannot be decoded"):
        upscale_video(source, tmp_path / "out.mkv", tiny_model)
    assert no_partial_files(tmp_path, "clip.mkv", "tiny_x2.safetensors")


def test_a_container_that_cannot_hold_the_streams_is_refused_before_any_work(tmp_path, tiny_model):
    source = make_clip(tmp_path / "clip.mkv", 3)  # AAC sound, which WebM cannot hold
    with pytest.raises(
        VideoOutputError, match=r"out.webm: a .webm file cannot hold the video h264, audio aac"
    ):
        upscale_video(source, tmp_path / "out.webm", tiny_model)
    with pytest.raises(VideoOutputError, match="unknown video container"):
        upscale_video(source, tmp_path / "out.xyz", tiny_model)
    assert no_partial_files(tmp_path, "clip.mkv", "tiny_x2.safetensors")


def test_a_truncated_video_is_upscaled_as_far_as_it_decodes_then_says_where_it_stopped(tmp_path, tiny_model):
    whole = make_clip(
        tmp_path / "whole.mp4", 40, codec="libx264", pix_fmt="yuv420p", options={"movflags": "faststart"}
    )
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    target = tmp_path / "out.mp4"
    with pytest.raises(
        VideoTruncatedError, match=r"cut.mp4: truncated: decoding stopped after frame \d+ .* of the 40"
    ) as caught:
        upscale_video(cut, target, tiny_model)
    frames = len(video_frames(target))
    assert 0 < frames < 40
    assert f"the {frames} frames before it are upscaled in {target}" in str(caught.value)
    assert no_partial_files(tmp_path, "whole.mp4", "cut.mp4", "out.mp4", "tiny_x2.safetensors")


def test_a_truncated_matroska_file_is_found_by_its_duration(tmp_path, tiny_model):
    whole = make_clip(tmp_path / "whole.mkv", 40)  # Matroska has no frame count; its DURATION tag says 2.12 s
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pytest.raises(
        VideoTruncatedError, match=r"stopped after frame \d+ \([\d.]+ s\) of the 2.12 s its header"
    ):
        upscale_video(cut, tmp_path / "out.mkv", tiny_model, codec="ffv1")
    assert 0 < len(video_frames(tmp_path / "out.mkv")) < 40
    assert upscale_video(whole, tmp_path / "all.mkv", tiny_model, codec="ffv1").frames == 40  # not truncated


def test_missing_pyav_names_the_extra(monkeypatch):
    import sys

    from mma.video.backend import require_av

    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(VideoUnavailableError, match=r'pip install "mma-sr\[video\]"'):
        require_av()


@pytest.fixture
def cli(tiny_weights):
    from typer.testing import CliRunner

    from mma.cli.app import app

    def invoke(*args: str | Path):
        options = ["-m", str(tiny_weights), "--device", "cpu", "--dtype", "fp32", "--threads", "1"]
        return CliRunner().invoke(app, ["upscale", *map(str, args), *options])

    return invoke


def test_cli_upscales_a_video_and_an_image_in_one_folder_and_leaves_its_results_alone(tmp_path, cli):
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "clip.mkv", 6)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "still.png")
    result = cli(folder, "--codec", "ffv1")
    assert result.exit_code == 0, result.output
    assert "clip.mkv -> " in result.output and "clip_x2.mkv: 6 frames" in result.output
    assert "2 done, 0 skipped, 0 failed" in result.output
    assert len(video_frames(folder / "clip_x2.mkv")) == 6 and (folder / "still_x2.png").exists()
    again = cli(folder, "--skip-existing")
    assert "0 done, 2 skipped, 0 failed" in again.output  # the results themselves are not inputs


def test_cli_output_file_frames_and_bad_videos(tmp_path, cli):
    source = make_clip(tmp_path / "clip.mp4", 10, codec="libx264", pix_fmt="yuv420p")
    result = cli(source, "-o", tmp_path / "piece.mkv", "--frames", "2:6", "--crf", "30")
    assert result.exit_code == 0, result.output
    assert len(video_frames(tmp_path / "piece.mkv")) == 4
    (tmp_path / "broken.mp4").write_bytes(b"nothing here")
    bad = cli(tmp_path / "broken.mp4", source, "-o", tmp_path / "out", "--codec", "ffv1")
    assert bad.exit_code == 1
    errors = [line for line in bad.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4: not a video" in errors[0]
    assert "1 done, 0 skipped, 1 failed" in bad.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip_x2.mp4"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "5"], "--frames 5: use START:END"),
        (["--frames", "6:2"], "--frames 6:2: END must be after START"),
        (["--codec", "nonsense"], "--codec nonsense: no such video encoder"),
        (["-o", "out.webm"], "cannot hold the video h264, audio aac stream"),
    ],
)
def test_cli_bad_video_options_are_one_line(tmp_path, cli, args, message):
    source = make_clip(tmp_path / "clip.mkv", 3)
    result = cli(source, *[str(tmp_path / a) if a.startswith("out.") else a for a in args])
    assert result.exit_code == 1
    assert message in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_frames_per_forward_stacks_whole_frames_and_tiles_large_ones(monkeypatch, tiny_model):
    from mma import tiling
    from mma.engine import Engine
    from mma.video import frames as frames_module

    whole = Engine(tiny_model, device="cpu", tile=None, batch=5)
    assert frames_module.frames_per_forward(whole, 480, 854) == 5
    assert frames_module.frames_per_forward(Engine(tiny_model, device="cpu", tile=64), 48, 80) == 0
    automatic = Engine(tiny_model, device="cpu")  # tile and batch from free memory, injected here
    per_pixel = tiny_model.bytes_per_pixel
    budget_share = 1 / tiling.MEMORY_SHARE  # the engine's budget is this share of free memory
    monkeypatch.setattr(tiling, "available_memory", lambda device: budget_share * 6 * per_pixel * 100 * 100)
    assert frames_module.frames_per_forward(automatic, 100, 100) == 6
    monkeypatch.setattr(tiling, "available_memory", lambda device: per_pixel * 100 * 100)
    assert frames_module.frames_per_forward(automatic, 1000, 1000) == 0


def test_frame_iterator_equals_upscale_of_each_frame_in_any_grouping(tmp_path, tiny_model):
    from PIL import Image

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, size=(HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(7)]
    single = [mma.upscale(f, model=tiny_model, device="cpu", dtype="fp32", threads=1) for f in frames]
    for batch in (1, 3, 16):
        results = list(
            mma.upscale_frames(iter(frames), model=tiny_model, device="cpu", dtype="fp32", batch=batch)
        )
        assert len(results) == 7
        for got, expected in zip(results, single):
            assert got.dtype == np.uint8 and np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    tiled = list(mma.upscale_frames(frames[:2], model=tiny_model, device="cpu", dtype="fp32", tile=16))
    assert [t.shape for t in tiled] == [(HEIGHT * 2, WIDTH * 2, 3)] * 2
    pictures = list(mma.upscale_frames([Image.fromarray(frames[0]), frames[1][..., 0]], model=tiny_model))
    assert isinstance(pictures[0], Image.Image) and pictures[0].size == (WIDTH * 2, HEIGHT * 2)
    assert pictures[1].shape == (HEIGHT * 2, WIDTH * 2)  # grey stays grey
    with pytest.raises(ConfigError, match="cannot upscale a str frame"):
        list(mma.upscale_frames(["frame.png"], model=tiny_model))


def test_subtitles_are_copied_and_a_deep_source_stays_deep(tmp_path, tiny_model):
    clip = make_clip(tmp_path / "clip.mkv", 12, codec="ffv1", pix_fmt="yuv420p10le")
    (tmp_path / "words.srt").write_text(
        "1\n00:00:00,100 --> 00:00:00,300\nHello\n\n2\n00:00:00,400 --> 00:00:00,500\nAgain\n"
    )
    source = tmp_path / "with_words.mkv"
    srt = tmp_path / "words.srt"
    with av.open(str(clip)) as video, av.open(str(srt)) as words, av.open(str(source), "w") as out:
        streams = {s: out.add_stream_from_template(s) for s in (*video.streams, *words.streams)}
        for container in (video, words):
            for packet in container.demux():
                if packet.size:
                    packet.stream = streams[packet.stream]
                    out.mux(packet)
    result = upscale_video(source, tmp_path / "out.mkv", tiny_model, codec="h265")
    with av.open(str(result.path)) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
        assert [s.type for s in container.streams] == ["video", "audio", "subtitle"]
        texts = [bytes(p) for p in container.demux(container.streams.subtitles[0]) if p.size]
    assert texts == [b"Hello", b"Again"]


def test_pixel_format_follows_the_source_where_the_encoder_allows():
    from mma.video.formats import encoder_settings

    assert encoder_settings(None, None, "yuv420p10le").pix_fmt == "yuv420p10le"
    assert encoder_settings(None, None, "bgr0").pix_fmt == "yuv420p"  # x264 has no RGB: 4:2:0
    assert encoder_settings("ffv1", None, "bgr0").pix_fmt == "bgr0"
    assert encoder_settings(None, None, "yuv420p", (99, 75)).pix_fmt == "yuv444p"  # odd x3 sizes
    assert encoder_settings(None, None, "yuv420p", (100, 76)).pix_fmt == "yuv420p"
    assert encoder_settings("h265", 28, "yuv420p").options == (("crf", "28"),)
    with pytest.raises(ConfigError, match="ffv1 has no CRF"):
        encoder_settings("ffv1", 20, "yuv420p")


@pytest.mark.slow  # a second Python process (about 30 s on a loaded 2-core machine)
def test_a_process_killed_with_sigkill_resumes_without_redoing_finished_segments(tmp_path, tiny_weights):
    import os
    import signal
    import subprocess
    import sys
    import time

    from mma.engine import Engine
    from mma.video import upscale_video_with

    source = make_clip(tmp_path / "clip.mkv")
    target = tmp_path / "out.mkv"
    job = (
        "import sys, time; from mma.engine import Engine; from mma.video import upscale_video_with\n"
        f"engine = Engine({str(tiny_weights)!r}, device='cpu', dtype='fp32', threads=1, batch=1)\n"
        f"upscale_video_with(engine, {str(source)!r}, {str(target)!r}, codec='ffv1', segment_frames=8,\n"
        "                   progress=lambda done, total: time.sleep(0.1))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(mma.__file__).parents[1]), *sys.path])}
    process = subprocess.Popen([sys.executable, "-c", job], env=env)
    parts = work_folder(target)
    deadline = time.monotonic() + 120
    while not (parts / "00001.nut").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (parts / "00001.nut").exists() and not target.exists()
    finished = len(list(parts.glob("0*.nut")))
    engine = Engine(tiny_weights, device="cpu", dtype="fp32", threads=1)
    result = upscale_video_with(engine, source, target, codec="ffv1", segment_frames=8, skip_existing=True)
    assert (result.frames, result.upscaled) == (30, 30 - 8 * finished)
    assert [t for t, _ in video_frames(target)] == [t for t, _ in video_frames(source)]
    assert not parts.exists()


def test_cli_without_pyav_names_the_extra_and_images_still_work(tmp_path, cli, monkeypatch):
    import sys

    from PIL import Image

    clip = make_clip(tmp_path / "clip.mkv", 2, audio=False)
    Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(tmp_path / "still.png")
    monkeypatch.setitem(sys.modules, "av", None)
    result = cli(clip, tmp_path / "still.png")
    assert result.exit_code == 1
    assert (
        f'error: {clip}: video needs PyAV, which is not installed: pip install "mma-sr[video]"'
        in result.output
    )
    assert "1 done, 0 skipped, 1 failed" in result.output and (tmp_path / "still_x2.png").exists()
