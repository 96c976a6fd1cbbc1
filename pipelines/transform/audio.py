"""Audio: open the encoder, resample whatever the source does mid-stream, encode and mux."""

from __future__ import annotations

from fractions import Fraction

import av

from pipelines.recipe import VideoPreset
from pipelines.transform.encoder_setup import find_encoder, open_encoder
from pipelines.transform.streams import decode_packet, demux, origin_s


def open_audio_stream(output, preset: VideoPreset, source, codec_name: str | None = None):
    """Add and open the audio encoder; return it with a resampler to its format, layout and rate."""
    codec = find_encoder(codec_name or preset.audio_codec, "audio")
    rates = codec.audio_rates or ()
    # Opus only speaks 48 kHz (and fractions); other encoders keep the source's rate when they can.
    rate = source.sample_rate if not rates or source.sample_rate in rates else 48000
    layout = "mono" if source.channels == 1 else "stereo"  # web renditions: more is downmixed
    audio_format = codec.audio_formats[0].name if codec.audio_formats else "fltp"
    stream = output.add_stream(codec.name, rate=rate)
    context = stream.codec_context
    context.layout, context.format, context.bit_rate = layout, audio_format, preset.audio_bit_rate
    context.time_base = Fraction(1, rate)
    open_encoder(context, codec.name)
    return stream, AudioConverter(audio_format, layout, rate, context.frame_size or None)


class AudioConverter:
    """Resample to the encoder's format, layout, rate and frame size, whatever the source does mid-stream.

    PyAV's AudioResampler is bound to the first frame it sees and raises on any
    other ("Frame does not match AudioResampler setup"), and a FLAC or two MP3s
    joined end to end can change rate or channels part-way. Frames unlike the
    first are brought to its format, layout and rate by a bridge resampler of
    their own, made again at each change, so the encoder's resampler (its frame
    size and its timestamps) carries on as if nothing had changed.

    Where such a join overlaps (the second part's first samples timed before
    the first part's last ones end) a frame starts where the one before it
    ended, as the ffmpeg CLI's muxer does: a muxer refuses time going back.
    """

    def __init__(self, audio_format: str, layout: str, rate: int, frame_size: int | None) -> None:
        self.main = av.AudioResampler(format=audio_format, layout=layout, rate=rate, frame_size=frame_size)
        self.first: tuple | None = None  # the first frame's (format, layout, rate)
        self.time_base = None  # and its time base, which the main resampler reads timestamps in
        self.bridge, self.bridged = None, None
        self.next_pts = None  # where the last frame out ended

    def resample(self, frame) -> list:
        """The frames ready for the encoder; ``None`` flushes, at the end."""
        return self._in_order(self._convert(frame))

    def _convert(self, frame) -> list:
        if frame is None:
            return self._close_bridge() + self.main.resample(None)
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self.first is None:
            self.first, self.time_base = shape, frame.time_base
        if shape == self.first:
            return self._close_bridge() + self.main.resample(frame)
        out = []
        if shape != self.bridged:
            out = self._close_bridge()
            audio_format, layout, rate = self.first
            self.bridge, self.bridged = av.AudioResampler(format=audio_format, layout=layout, rate=rate), shape
        return out + self._into_main(self.bridge.resample(frame))

    def _in_order(self, frames: list) -> list:
        for piece in frames:
            if piece.pts is None or not piece.time_base:
                continue
            if self.next_pts is not None and piece.pts < self.next_pts:
                piece.pts = self.next_pts
            self.next_pts = piece.pts + round(Fraction(piece.samples, piece.sample_rate) / piece.time_base)
        return frames

    def _close_bridge(self) -> list:
        if self.bridge is None:
            return []
        rest, self.bridge, self.bridged = self.bridge.resample(None), None, None
        return self._into_main(rest)

    def _into_main(self, frames) -> list:
        out = []
        for piece in frames:
            if piece.pts is not None and self.time_base and piece.time_base != self.time_base:
                piece.pts = round(piece.pts * piece.time_base / self.time_base)
            piece.time_base = self.time_base
            out += self.main.resample(piece)
        return out


def encode_audio(container, output, audio_in, aout, converter: AudioConverter) -> None:
    """Decode the source's audio, convert it, encode and mux it, flushing at the end.

    An audio rendition is its samples in order, timed by their count from zero:
    a source's timestamps can jump (see the probe's ``_Span``) where its samples do not.
    """
    origin = origin_s(container)

    def converted():
        for packet in demux(container, (audio_in,), origin):
            for frame in decode_packet(packet, origin):
                yield from converter.resample(frame)
        yield from converter.resample(None)

    written, time_base = 0, Fraction(1, aout.codec_context.sample_rate)
    for piece in converted():
        piece.pts, piece.time_base = written, time_base
        written += piece.samples
        output.mux(aout.encode(piece))
    output.mux(aout.encode(None))


def flush_audio(output, aout, converter: AudioConverter) -> None:
    for piece in converter.resample(None):
        output.mux(aout.encode(piece))
    output.mux(aout.encode(None))


def audio_settings(aout, preset: VideoPreset) -> dict:
    context = aout.codec_context
    return {"audio_codec": context.name, "audio_bit_rate": preset.audio_bit_rate,
            "sample_rate": context.sample_rate, "channels": context.channels}
