"""Geometry: how decoded frames become upright output frames (scale, then turn as the source says)."""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from fractions import Fraction

import av.filter
from av.video.reformatter import Interpolation

# The CLI's scale filter default; bilinear is faster but visibly softer when halving.
INTERPOLATION = Interpolation.BICUBIC


@dataclass(frozen=True)
class Geometry:
    """How decoded frames become output frames: scale to (scale_w, scale_h), then turn."""

    width: int  # output, upright
    height: int
    scale_width: int  # what swscale produces, before the turn
    scale_height: int
    turn: tuple[tuple[str, str | None], ...]  # filters, e.g. (("transpose", "clock"),)


def plan_geometry(frame, video, height: int) -> Geometry:
    """Output size for a rung (the short side), upright, even, keeping the display aspect."""
    turn, swap = _turn(frame)
    width_d, height_d = display_size(frame, video)
    if width_d >= height_d:
        out_w, out_h = _even(width_d * height / height_d), height
    else:
        out_w, out_h = height, _even(height_d * height / width_d)
    scale_w, scale_h = (out_h, out_w) if swap else (out_w, out_h)
    return Geometry(out_w, out_h, scale_w, scale_h, turn)


def display_size(frame, video) -> tuple[float, float]:
    """Width and height as shown: pixel aspect applied, turned upright."""
    aspect = video.sample_aspect_ratio or video.codec_context.sample_aspect_ratio
    width = frame.width * float(aspect) if aspect else float(frame.width)
    height = float(frame.height)
    _, swap = _turn(frame)
    return (height, width) if swap else (width, height)


def _turn(frame) -> tuple[tuple[tuple[str, str | None], ...], bool]:
    """The filters that make a frame upright, and whether they swap width and height.

    Mirrors the ffmpeg CLI's autorotate (fftools' display-matrix handling),
    flips included, so a rendition looks as the source plays everywhere else.
    """
    matrix = _display_matrix(frame)
    if matrix is None:
        return (), False
    theta = -round(frame.rotation)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return (("transpose", "cclock_flip" if matrix[3] > 0 else "clock"),), True
    if abs(theta - 270) < 1:
        return (("transpose", "clock_flip" if matrix[3] < 0 else "cclock"),), True
    if abs(theta - 180) < 1:
        return tuple(f for f, flip in ((("hflip", None), matrix[0] < 0), (("vflip", None), matrix[4] < 0))
                     if flip), False
    if abs(theta) < 1 and matrix[4] < 0:
        return (("vflip", None),), False
    return (), False  # other angles are left as they are: the CLI pads those with black


def _display_matrix(frame) -> tuple[int, ...] | None:
    for data in frame.side_data:
        if data.type.name == "DISPLAYMATRIX":
            raw = bytes(data)
            return struct.unpack("=9i", raw[:36]) if len(raw) >= 36 else None
    return None


class Turner:
    """Applies a geometry's turn (transpose and flip filters) to scaled frames, one in, one out."""

    def __init__(self, geometry: Geometry) -> None:
        self.filters = geometry.turn
        self.graph = None

    def apply(self, frame):
        if not self.filters:
            return frame
        if self.graph is None:  # built from the first frame: its size, format and time base
            self.graph = av.filter.Graph()
            node = self.graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                         time_base=frame.time_base or Fraction(1, 25))
            for name, argument in self.filters:
                following = self.graph.add(name, argument) if argument else self.graph.add(name)
                node.link_to(following)
                node = following
            node.link_to(self.graph.add("buffersink"))
            self.graph.configure()
        self.graph.push(frame)
        return self.graph.pull()


def _even(value: float) -> int:
    return max(2, 2 * round(value / 2))
