"""Test media made by real encoders (the ffmpeg CLI, Mutagen's ID3 writer): music with covers and
tags, malformed ID3 frames, odd FLACs, a phone's HEVC MOV.

FLAC frames are rewritten here rather than committed as binaries: the cases that
broke the farm (a rate change mid-stream, an old encoder's sample-numbered frames)
are a few header fields away from what ffmpeg's encoder writes.
"""

from __future__ import annotations

import base64
import random
import struct
import subprocess
from pathlib import Path

import av
from mutagen.id3 import ID3, PRIV, TALB, TCON, TIT2, TPE1, TRCK, Encoding

from tests.corpus.generate import png_bomb

# name: (cover file, its size) for the music files with a cover made by music_library.
COVERS = {"cover.flac": ("cover.jpg", (600, 400)), "cover.mp3": ("cover.jpg", (600, 400)),
          "cover.m4a": ("cover.png", (480, 360)), "cover.opus": ("cover.jpg", (600, 400))}


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def ffprobe(path: Path, *entries: str) -> str:
    """One ffprobe value, e.g. ffprobe(p, "-show_entries", "format=duration")."""
    return subprocess.run(["ffprobe", "-v", "error", *entries, "-of", "default=nw=1:nk=1", str(path)],
                          check=True, capture_output=True, text=True).stdout.strip()


def tone(path: Path, seconds: float, rate: int = 44100, channels: int = 1, *codec: str) -> Path:
    ffmpeg("-f", "lavfi", "-t", str(seconds), "-i", f"sine=frequency=440:sample_rate={rate}",
           "-ac", str(channels), *(codec or ("-c:a", "flac")), str(path))
    return path


def with_cover(audio: Path, cover: Path, out: Path, *codec: str) -> Path:
    """``audio`` with ``cover`` attached as its picture (FLAC PICTURE, ID3 APIC or MP4 covr)."""
    ffmpeg("-i", str(audio), "-i", str(cover), "-map", "0", "-map", "1", *(codec or ("-c:a", "copy")),
           "-c:v", "copy", "-disposition:v", "attached_pic", str(out))
    return out


def with_ogg_picture(audio: Path, cover: Path, size: tuple[int, int], out: Path) -> Path:
    """``audio`` as Opus in Ogg with ``cover`` as a METADATA_BLOCK_PICTURE comment, as taggers write it.

    ffmpeg 5.1's Ogg muxer takes no picture stream, but it writes the comment as given.
    """
    data, mime = cover.read_bytes(), b"image/jpeg"
    block = struct.pack(">II", 3, len(mime)) + mime + struct.pack(">IIIIII", 0, *size, 24, 0, len(data)) + data
    ffmpeg("-i", str(audio), "-c:a", "libopus", "-metadata",
           f"METADATA_BLOCK_PICTURE={base64.b64encode(block).decode()}", str(out))
    return out


# Tags as ffmpeg's muxers write them (ID3, MP4 atoms, Vorbis comments, RIFF INFO).
TAGS = {"artist": "Ünïcode Artist 写真", "album": "The Album", "title": "A Title",
        "track": "3/12", "date": "2021-05-04", "genre": "Jazz"}


def tagged(path: Path, *codec: str, seconds: float = 1.5, tags: dict = TAGS) -> Path:
    """A sine tone encoded with ``codec``, its tags written by ffmpeg's own muxer."""
    metadata = [arg for key, value in tags.items() for arg in ("-metadata", f"{key}={value}")]
    ffmpeg("-f", "lavfi", "-t", str(seconds), "-i", "sine=frequency=440:sample_rate=44100",
           "-ac", "2", *codec, *metadata, str(path))
    return path


def malformed_mp3_file(path: Path) -> Path:
    """An MP3 whose ID3 tag Mutagen wrote with a 200,000-character title, NULs and controls in
    the artist, 3,000 random bytes as a Latin-1 genre, a track that is no number, an album in
    UTF-16 holding a lone surrogate, and a 4 MB private frame of random bytes."""
    tagged(path, "-c:a", "libmp3lame", tags={"title": "x"})
    junk = random.Random(7)
    tags = ID3(path)
    tags.add(TIT2(encoding=Encoding.UTF8, text="t" * 200_000))
    tags.add(TPE1(encoding=Encoding.UTF8, text="\x01\x02Bad\x7f Artist\x00second"))
    tags.add(TCON(encoding=Encoding.LATIN1, text=junk.randbytes(3000).decode("latin-1")))
    tags.add(TRCK(encoding=Encoding.UTF8, text="side B"))
    tags.add(TALB(encoding=Encoding.UTF16, text="Album"))
    tags.add(PRIV(owner="junk", data=junk.randbytes(4_000_000)))
    tags.save(path)
    # The album's text, re-encoded by hand as UTF-16 with a lone high surrogate in it.
    data = path.read_bytes()
    album = "Album".encode("utf-16-le")
    assert data.count(album) == 1
    path.write_bytes(data.replace(album, b"A\x00\x00\xd8" + album[4:]))
    return path


def music_library(root: Path) -> Path:
    """Write the music cases into ``root``: covers good and hostile, changing rates, an old FLAC."""
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=600x400:rate=1", "-frames:v", "1", str(root / "cover.jpg"))
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=480x360:rate=1", "-frames:v", "1", str(root / "cover.png"))
    wav = tone(root / "tone.wav", 3.0, 44100, 2, "-c:a", "pcm_s16le")
    with_cover(wav, root / "cover.jpg", root / "cover.flac", "-c:a", "flac")
    with_cover(wav, root / "cover.jpg", root / "cover.mp3", "-c:a", "libmp3lame")
    with_cover(wav, root / "cover.png", root / "cover.m4a", "-c:a", "aac")
    with_ogg_picture(wav, root / "cover.jpg", (600, 400), root / "cover.opus")
    # A cover that claims 12000x12000 (over Limits.max_pixels, within FFmpeg's own size check):
    # half a gigabyte decoded, from a hundred bytes.
    (root / "bomb.png").write_bytes(png_bomb(12000, 12000))
    with_cover(wav, root / "bomb.png", root / "bomb-cover.flac", "-c:a", "flac")
    # Covers whose bytes after the magic number are noise, the same length, so that each
    # container's own framing (ID3 frame sizes, FLAC block lengths, MP4 atoms) stays right.
    for name in ("cover.flac", "cover.mp3", "cover.m4a"):
        data, good = (root / name).read_bytes(), (root / COVERS[name][0]).read_bytes()
        assert data.count(good) == 1
        noise = good[:8] + random.Random(3).randbytes(len(good) - 8)
        (root / f"corrupt-{name}").write_bytes(data.replace(good, noise))
    rate_change_flac(root)
    # Two MP3s joined end to end (as `cat` does): 44.1 kHz mono, then 48 kHz stereo.
    for name, rate, channels in (("part-1.mp3", 44100, 1), ("part-2.mp3", 48000, 2)):
        tone(root / name, 2.0, rate, channels, "-c:a", "libmp3lame", "-write_xing", "0", "-id3v2_version", "0")
    (root / "joined.mp3").write_bytes((root / "part-1.mp3").read_bytes() + (root / "part-2.mp3").read_bytes())
    sample_numbered_flac(root)
    return root


def phone_video(folder: Path, seconds: float = 2.0) -> Path:
    """A MOV as an iPhone writes it: HEVC Main 10 tagged hvc1, HLG BT.2020, AAC, a timecode track,
    stored 640x360 landscape and turned upright (to 360x640) by its display matrix."""
    ffmpeg("-f", "lavfi", "-t", str(seconds), "-i", "testsrc2=size=640x360:rate=25", "-f", "lavfi",
           "-t", str(seconds), "-i", "sine=sample_rate=48000", "-c:v", "libx265", "-preset", "ultrafast",
           "-x265-params", "log-level=error", "-tag:v", "hvc1", "-pix_fmt", "yuv420p10le",
           "-color_primaries", "bt2020", "-color_trc", "arib-std-b67", "-colorspace", "bt2020nc",
           "-c:a", "aac", "-ac", "2", "-timecode", "01:02:03:04", str(folder / "landscape.mov"))
    # Debian's ffmpeg 5.1 turns the legacy rotate tag into a display matrix on a stream copy.
    ffmpeg("-i", str(folder / "landscape.mov"), "-map", "0", "-c", "copy", "-tag:v", "hvc1",
           "-metadata:s:v:0", "rotate=90", str(folder / "iphone.mov"))
    return folder / "iphone.mov"


def joined_broadcast(folder: Path) -> Path:
    """Two MPEG-TS recordings joined end to end (as `cat` does), the clock running on: video
    throughout, AAC at 44.1 kHz mono for 2 s, then at 48 kHz stereo for 2 s."""
    parts = []
    for index, (rate, channels) in enumerate(((44100, 1), (48000, 2))):
        parts.append(folder / f"broadcast-{index}.ts")
        ffmpeg("-f", "lavfi", "-t", "2", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-t", "2",
               "-i", f"sine=sample_rate={rate}", "-ac", str(channels), "-c:v", "libx264", "-preset", "ultrafast",
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-output_ts_offset", str(2 * index), str(parts[-1]))
    path = folder / "joined.ts"
    path.write_bytes(b"".join(part.read_bytes() for part in parts))
    return path


# ---------------------------------------------------------------- FLAC frames

def flac_frames(path: Path) -> tuple[bytes, list[bytes]]:
    """(everything before the first frame: "fLaC" and the metadata blocks, [each frame's bytes])."""
    data = path.read_bytes()
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(audio=0) if p.size]
    return data[:packets[0][0]], [data[pos:pos + size] for pos, size in packets]


def renumber(frame: bytes, number: int, variable: bool) -> bytes:
    """The frame with its coded number replaced and both CRCs recomputed.

    ``variable`` sets the blocking-strategy bit (the number is then a sample
    number); clear, the number is read as a frame number, whatever it holds.
    """
    old = _utf8_length(frame[4])
    rest = 4 + old
    end = rest + {6: 1, 7: 2}.get(frame[2] >> 4, 0) + {12: 1, 13: 2, 14: 2}.get(frame[2] & 15, 0)
    first = bytes([frame[0], (frame[1] & 0xFE) | int(variable), frame[2], frame[3]])
    header = first + _utf8(number) + frame[rest:end]
    body = header + bytes([_crc8(header)]) + frame[end + 1:-2]
    return body + struct.pack(">H", _crc16(body))


def streaminfo(head: bytes, *, min_block: int, max_block: int, total_samples: int) -> bytes:
    """``head`` with STREAMINFO's block sizes and total sample count replaced."""
    assert head[:4] == b"fLaC" and head[4] & 0x7F == 0  # STREAMINFO is always the first block
    info = bytearray(head[8:42])
    info[0:4] = struct.pack(">HH", min_block, max_block)
    packed = int.from_bytes(info[10:18], "big")
    packed = (packed & ~((1 << 36) - 1)) | total_samples
    info[10:18] = packed.to_bytes(8, "big")
    return head[:8] + bytes(info) + head[42:]


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    return next(n for n in range(2, 8) if not lead & (0x80 >> n))


def _utf8(value: int) -> bytes:
    """FLAC's UTF-8-like coding of a frame or sample number (up to 36 bits)."""
    if value < 0x80:
        return bytes([value])
    for length in range(2, 8):
        if value < 1 << (5 * length + 1):
            out = [0x80 | (value >> (6 * i) & 0x3F) for i in range(length - 1)][::-1]
            lead = (0xFF00 >> length) & 0xFF | value >> (6 * (length - 1))
            return bytes([lead, *out])
    raise ValueError(value)


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def rate_change_flac(folder: Path) -> Path:
    """2 s of 44.1 kHz, then 2 s of 48 kHz, in one FLAC stream.

    The second encode's frames follow the first's with their frame numbers
    continued, as one encoder whose input changed would write them; each frame
    header states its own rate. (Both are mono: FFmpeg's FLAC parser splits
    frames wrongly where the channel count changes, so the MP3 case has that.)
    """
    first = tone(folder / "rate-a.flac", 2.0, 44100, 1)
    second = tone(folder / "rate-b.flac", 2.0, 48000, 1)
    head, frames = flac_frames(first)
    _, more = flac_frames(second)
    frames += [renumber(f, len(frames) + i, variable=False) for i, f in enumerate(more)]
    path = folder / "rate-change.flac"
    path.write_bytes(streaminfo(head, min_block=4608, max_block=4608, total_samples=0) + b"".join(frames))
    return path


def sample_numbered_flac(folder: Path, seconds: float = 25.7) -> Path:
    """A variable-blocksize FLAC as encoders before FLAC 1.2 wrote it.

    Blocks of 4608 and 1152 samples alternate; every frame carries its first
    sample's number, and the blocking-strategy bit, then reserved, is clear.
    Readers that go by that bit take the sample number for a frame number and
    multiply it by the block size: timestamps hours out, while STREAMINFO's
    sample count gives the true length.
    """
    pieces = []
    for index, block in enumerate((4608, 1152)):
        pieces.append(tone(folder / f"blocks-{block}.flac", seconds, 44100, 1, "-c:a", "flac",
                           "-frame_size", str(block)))
    head, long_blocks = flac_frames(pieces[0])
    _, short_blocks = flac_frames(pieces[1])
    # Alternate one long block and four short ones (the same 4608 samples): the encodes are of
    # the same tone, so taking the frames covering each span in turn keeps the signal continuous.
    frames, sample, total = [], 0, round(seconds * 44100)
    for index in range(len(long_blocks)):
        if index % 2 == 0:
            chosen = [long_blocks[index]]
        else:
            chosen = short_blocks[4 * index:4 * index + 4]
        for frame in chosen:
            frames.append(renumber(frame, sample, variable=False))
            sample += _block_size(frame)
    path = folder / "sample-numbered.flac"
    path.write_bytes(streaminfo(head, min_block=1152, max_block=4608, total_samples=total) + b"".join(frames))
    assert sample == total
    return path


def _block_size(frame: bytes) -> int:
    code = frame[2] >> 4
    at = 4 + _utf8_length(frame[4])
    if code == 6:
        return frame[at] + 1
    if code == 7:
        return int.from_bytes(frame[at:at + 2], "big") + 1
    return {1: 192, 2: 576, 3: 1152, 4: 2304, 5: 4608}.get(code) or 256 << (code - 8)
