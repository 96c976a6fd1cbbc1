"""Decompression bombs: animations that are a few KB on disk and gigabytes decoded.

Security as tests (pyvips' test_block.py): each hostile file is made here with a
real encoder, then run through the stages a worker runs (validate, resize,
convert, compress), in a fresh process whose peak resident memory is read from
the kernel. Every file must end terminal (rejected ``over_limit``, or ready with
every frame) and the peak must stay within the decode budget. An address-space
limit keeps a regression from taking the machine down with it.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pyvips
from PIL import Image, ImageDraw

from pipelines.outcome import Rejected
from pipelines.recipe import DEFAULT_RECIPE, Preset
from pipelines.transform.resize import decode_bytes, resize
from pipelines.upload.validate import Limits, check_decode_bytes

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SIDE = 1000
BUDGET = Limits().max_decode_bytes
# The child's address space: past the budget with room for libraries and thread arenas,
# far below what the machine has, so a bomb that gets through fails here, not the host.
ADDRESS_SPACE = 6 * 1024 ** 3


def _frames(count: int) -> list[tuple[int, int]]:
    # A dot that moves: every frame differs, and each compresses to a few bytes.
    return [((i * 7) % SIDE, (i * 13) % SIDE) for i in range(count)]


def bomb_gif(count: int) -> bytes:
    frames = []
    for x, y in _frames(count):
        frame = Image.new("P", (SIDE, SIDE), 0)
        frame.putpalette([0, 0, 0, 255, 255, 255])
        ImageDraw.Draw(frame).rectangle([x, y, x + 1, y + 1], fill=1)
        frames.append(frame)
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return out.getvalue()


def bomb_webp(count: int) -> bytes:
    black = pyvips.Image.black(SIDE, SIDE, bands=3).copy(interpretation="srgb").cast("uchar")
    strip = pyvips.Image.arrayjoin([black.draw_rect([255, 255, 255], x, y, 2, 2)
                                    for x, y in _frames(count)], across=1).copy()
    strip.set_type(pyvips.GValue.gint_type, "page-height", SIDE)
    strip.set_type(pyvips.GValue.array_int_type, "delay", [40] * count)
    return strip.webpsave_buffer(effort=0, lossless=True)


def _child(path: str) -> None:
    """Run in a fresh interpreter: the worker's stages on one file, and the memory they took."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    from pipelines.optimize.compress import compress
    from pipelines.transform.convert import to_srgb
    from pipelines.upload.validate import validate

    presets = {p.name: p for p in DEFAULT_RECIPE.presets}
    data = Path(path).read_bytes()
    resize(bomb_gif(2), DEFAULT_RECIPE.presets)  # libvips' threads and caches, before measuring
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
    result = {}
    try:
        validated = validate(data)
        # A Dask worker holds each stage's input until the next stage has finished.
        rasters = resize(data, DEFAULT_RECIPE.presets)
        converted = [to_srgb(r) for r in rasters]
        encoded = [compress(r, presets[r.preset]) for r in converted]
        result["status"] = "ready"
        result["frames"] = validated.frames
        result["renditions"] = {
            e.preset: [e.width, e.height, _pages(e.data), e.format] for e in encoded}
    except Rejected as exc:
        result.update(status="rejected", reason=exc.reason, message=exc.message,
                      retryable=exc.retryable)
    result["peak_bytes"] = _status("VmHWM") - before
    result["counted_bytes"] = decode_bytes(data, DEFAULT_RECIPE.presets)
    print(json.dumps(result))


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def _pages(data: bytes) -> int:
    image = pyvips.Image.new_from_buffer(data, "")
    return image.get("n-pages") if image.get_typeof("n-pages") else 1


def run_stages(path: Path) -> dict:
    code = f"from tests.unit.test_image_bombs import _child; _child({str(path)!r})"
    path_list = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path_list)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (
        f"the stages' process died ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


BOMBS = {
    "gif-100-frames": lambda: bomb_gif(100),
    "gif-250-frames": lambda: bomb_gif(250),
    "webp-100-frames": lambda: bomb_webp(100),
    "gif-at-the-frame-limit": lambda: bomb_gif(Limits().max_frames),
}


@pytest.mark.parametrize("name", BOMBS)
def test_animation_bomb_ends_terminal_within_the_decode_budget(name, tmp_path):
    data = BOMBS[name]()
    assert len(data) < 100_000  # a few KB on disk: that is the attack
    path = tmp_path / name
    path.write_bytes(data)
    result = run_stages(path)
    assert result["peak_bytes"] <= BUDGET, (
        f"{name} took the worker {result['peak_bytes'] / 2**20:.0f} MiB past its resting "
        f"size; the budget is {BUDGET / 2**20:.0f} MiB")
    # What the header check counted is what the stages really held, or more.
    assert result["peak_bytes"] <= result["counted_bytes"]
    if result["status"] == "rejected":
        assert result["reason"] == "over_limit" and result["retryable"] is False
        assert "bytes" in result["message"] and str(BUDGET) in result["message"]
    else:
        frames = result["frames"]
        renditions = result["renditions"]
        assert sorted(renditions) == sorted(p.name for p in DEFAULT_RECIPE.presets)
        assert all(pages == frames and fmt == "webp" for _, _, pages, fmt in renditions.values())
        assert renditions["thumb"][:2] == [150, 150] and renditions["large"][:2] == [SIDE, SIDE]


@pytest.mark.parametrize("name", ["gif-250-frames", "gif-at-the-frame-limit"])
def test_over_budget_is_rejected_from_the_header_before_decoding(name):
    data = BOMBS[name]()
    with pytest.raises(Rejected) as caught:
        resize(data, DEFAULT_RECIPE.presets)
    assert caught.value.reason == "over_limit" and not caught.value.retryable
    frames = int(name.split("-")[1]) if name != "gif-at-the-frame-limit" else Limits().max_frames
    assert f"{frames} frames of {SIDE}x{SIDE}" in caught.value.message


def test_the_budget_is_a_setting():
    data = bomb_gif(20)
    small = Limits(max_decode_bytes=50 * 1024 ** 2)
    with pytest.raises(Rejected) as caught:
        resize(data, DEFAULT_RECIPE.presets, limits=small)
    assert caught.value.reason == "over_limit"
    assert [r.frames for r in resize(data, DEFAULT_RECIPE.presets)] == [20] * 4


def test_a_recipe_that_upscales_animations_is_counted_too():
    # fill stretches to its box: a tiny animation can ask for huge rasters.
    tiny = pyvips.Image.arrayjoin([pyvips.Image.black(8, 8, bands=3) + i for i in range(50)],
                                  across=1).cast("uchar").gifsave_buffer(page_height=8)
    with pytest.raises(Rejected) as caught:
        resize(tiny, (Preset("poster", 8000, 8000, fit="fill"),))
    assert caught.value.reason == "over_limit"


def test_check_decode_bytes_counts_every_frame_kept_and_what_is_held_once():
    limits = Limits(max_decode_bytes=1200)
    # 4 bytes a pixel x (2 frames kept at 10x10 + one 10x10 frame being decoded) = 1200
    assert check_decode_bytes(2, 10, 10, 4, [(10, 10)], [(10, 10)], limits) == 1200
    with pytest.raises(Rejected) as caught:
        check_decode_bytes(3, 10, 10, 4, [(10, 10)], [(10, 10)], limits)
    assert caught.value.reason == "over_limit" and not caught.value.retryable
    assert caught.value.message.startswith("3 frames of 10x10 would hold 1600 bytes")
    assert caught.value.message.endswith("the budget is 1200")


def test_the_budget_comes_from_the_environment():
    from cluster.config import load_settings

    settings = load_settings({"MEDIAFARM_MAX_DECODE_BYTES": str(64 * 1024 ** 2)})
    assert settings.limits.max_decode_bytes == 64 * 1024 ** 2
