"""Segments: a long job written in pieces that survive an interruption, joined losslessly at the end.

The upscaled video is encoded in runs of `segment_frames` frames, each a complete file (its first frame a
key frame) renamed into a work folder beside the output only when finished. A resumed job finds the
finished ones by name, checks they were made by the same job (the manifest), and upscales only the rest.
Joining copies the segments' packets, untouched, into the output container, interleaved with the source's
audio and subtitle packets, so nothing is encoded twice.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from mma.fileio import atomic_write
from mma.video.backend import require_av
from mma.video.formats import EncoderSettings
from mma.video.source import SourceInfo

SEGMENT_FRAMES = 120  # about 5 s at 24 fps: little lost to a kill, a key frame per segment costs little
SEGMENT_MUXER = "nut"  # keeps any time base exactly (Matroska would round timestamps to milliseconds)


def work_folder(target: Path) -> Path:
    """The folder beside `target` holding its finished segments until the join."""
    return target.with_name(f".{target.name}.mma-parts")


@dataclass
class Segments:
    """The work folder of one output: which segments exist, and where the next one goes."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, folder: Path, manifest: dict[str, Any], resume: bool) -> Segments:
        """The folder for a job described by `manifest`: kept when resuming the same job, else emptied."""
        recorded = folder / "manifest.json"
        same = False
        if resume and recorded.is_file():
            try:
                same = json.loads(recorded.read_text()) == manifest
            except (OSError, ValueError):
                same = False
        if folder.exists() and not same:
            shutil.rmtree(folder)
        if not same:
            folder.mkdir(parents=True)
            text = json.dumps(manifest, indent=1, sort_keys=True)
            atomic_write(recorded, lambda tmp: tmp.write_text(text))
        return cls(folder, manifest)

    def path(self, number: int) -> Path:
        return self.folder / f"{number:05d}.nut"

    def finished(self, number: int) -> bool:
        return self.path(number).is_file()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class SegmentWriter:
    """Encodes upscaled frames into one segment file; `close()` renames it into place when complete."""

    def __init__(self, path: Path, settings: EncoderSettings, info: SourceInfo, width: int, height: int):
        av = require_av()
        self.path = path
        self.partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        self.container = av.open(str(self.partial), "w", format=SEGMENT_MUXER)
        stream = self.container.add_stream(settings.codec, rate=info.rate or Fraction(25))
        stream.width, stream.height, stream.pix_fmt = width, height, settings.pix_fmt
        stream.time_base = info.time_base
        context = stream.codec_context
        context.time_base = info.time_base
        context.flags |= av.codec.context.Flags.global_header  # headers as extradata: every segment joins
        context.options = dict(settings.options)
        for name, value in info.colour.items():
            setattr(context, name, value)
        self.stream = stream
        self.colour = info.colour
        self.time_base = info.time_base

    def write(self, pixels: np.ndarray, pts: int) -> None:
        av = require_av()
        layout = "rgb48le" if pixels.dtype == np.uint16 else "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=layout)
        frame = frame.reformat(
            format=self.stream.pix_fmt,
            dst_colorspace=self.colour["colorspace"] or None,
            dst_color_range=self.colour["color_range"] or None,
        )
        frame.pts, frame.time_base = pts, self.time_base
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        """Flush the encoder and put the finished segment in place."""
        self.container.mux(self.stream.encode(None))
        self.container.close()
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        try:
            self.container.close()
        finally:
            self.partial.unlink(missing_ok=True)


def join(
    segments: list[tuple[Path, int]],
    source: Any,
    info: SourceInfo,
    target: Path,
    muxer: str,
    span: tuple[float, float | None],
    offset: Fraction,
    software: str | None = None,
) -> Path:
    """Write `target` atomically: the video packets of `segments` (each with the source timestamp of its
    first frame) as they are, the source's audio and subtitle packets whose time lies in `span` (seconds),
    every timestamp moved back by `offset` seconds; `software` as its comment (`made_by_mma` reads it)."""
    return atomic_write(
        target, lambda tmp: _join_into(tmp, segments, source, info, muxer, span, offset, software)
    )


def _join_into(
    tmp: Path,
    segments: list[tuple[Path, int]],
    source: Any,
    info: SourceInfo,
    muxer: str,
    span: tuple[float, float | None],
    offset: Fraction,
    software: str | None,
) -> None:
    av = require_av()
    with av.open(str(segments[0][0])) as first, av.open(str(tmp), "w", format=muxer) as output:
        video = output.add_stream_from_template(first.streams.video[0])
        video.time_base = info.time_base
        if info.rotation:
            video.set_display_rotation(info.rotation)
        copies = {index: output.add_stream_from_template(source.streams[index]) for index in info.copied}
        for index, stream in copies.items():
            stream.metadata.update(source.streams[index].metadata)
            stream.disposition = source.streams[index].disposition
        video.metadata.update({k: v for k, v in source.streams.video[0].metadata.items() if k != "rotate"})
        output.metadata.update(source.metadata)
        if software is not None:  # Matroska spells the tag COMMENT, MP4 comment
            for key in [k for k in output.metadata if k.lower() == "comment"]:
                del output.metadata[key]
            output.metadata["comment"] = software
        streams = [(_video_packets(segments, info.time_base), video)]
        if copies:
            streams.append((_copied_packets(source, list(copies), span), None))
        for _, _, packet, target_stream in heapq.merge(
            *(_tagged(packets, stream, order) for order, (packets, stream) in enumerate(streams)),
            key=lambda item: (item[0], item[1]),
        ):
            stream = target_stream if target_stream is not None else copies[packet.stream.index]
            _shift(packet, offset)
            packet.stream = stream
            output.mux(packet)


def _tagged(packets: Iterator[Any], stream: Any, order: int) -> Iterator[tuple[float, int, Any, Any]]:
    """Packets keyed by their decoding time in seconds, for interleaving across streams."""
    for packet in packets:
        stamp = packet.dts if packet.dts is not None else packet.pts
        yield (float(stamp * packet.time_base) if stamp is not None else 0.0, order, packet, stream)


def _video_packets(segments: list[tuple[Path, int]], time_base: Fraction) -> Iterator[Any]:
    """Every packet of every segment in order, at the source's timestamps: a segment file holds no negative
    timestamp, so its muxer moved all of them up by the encoder's delay, which is taken back here. NUT keeps
    no decoding times for reordered frames; they are made again (`decode_times`), rising across the joins."""
    av = require_av()
    last = None
    for path, first_pts in segments:
        with av.open(str(path)) as container:  # open while its packets are muxed: they refer to its stream
            unit = container.streams.video[0].time_base  # the segment muxer's, not always the source's
            packets = [p for p in container.demux(container.streams.video[0]) if p.size and p.pts is not None]
            shift = min(p.pts for p in packets) - round(first_pts * time_base / unit)
            for packet, dts in zip(packets, decode_times([p.pts - shift for p in packets])):
                packet.pts -= shift
                packet.dts = dts if last is None or dts > last else min(last + 1, packet.pts)
                last = packet.dts
                yield packet


def decode_times(pts: list[int]) -> list[int]:
    """Decoding times for packets in decoding order: each the `delay`-th earlier presentation time, with
    `delay` the least that keeps every decoding time at or before its presentation time; the first
    `delay` packets get times before the first frame, one smallest frame step apart."""
    order = sorted(pts)
    delay = 0
    while any(order[i - delay] > pts[i] for i in range(delay, len(pts))):
        delay += 1
    steps = [b - a for a, b in itertools.pairwise(order) if b > a]
    step = min(steps) if steps else 1
    return [order[i - delay] if i >= delay else order[0] - (delay - i) * step for i in range(len(pts))]


def _copied_packets(source: Any, indices: list[int], span: tuple[float, float | None]) -> Iterator[Any]:
    """The source's audio and subtitle packets whose presentation time lies in `span`."""
    start, stop = span
    for packet in source.demux([source.streams[index] for index in indices]):
        if packet.size == 0 or packet.pts is None:
            continue
        moment = float(packet.pts * packet.time_base)
        if moment < start - 1e-9 or (stop is not None and moment >= stop - 1e-9):
            continue
        yield packet


def _shift(packet: Any, seconds: Fraction) -> None:
    """Move a packet's timestamps back by `seconds` (a clip taken with --frames starts at zero)."""
    if not seconds:
        return
    delta = round(seconds / packet.time_base)
    if packet.pts is not None:
        packet.pts -= delta
    if packet.dts is not None:
        packet.dts -= delta
