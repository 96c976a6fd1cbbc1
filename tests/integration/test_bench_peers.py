"""benchmarks/bench_peers.py's own parts on tiny images: the pools write every rendition, the
output check refuses a tool that wrote less, and the large set's copies differ only in bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pyvips

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import bench_peers  # noqa: E402

from cluster.cli.samples import scene  # noqa: E402

PRESETS = [["thumb", 150, 150, "cover", 80], ["small", 400, None, "contain", 80]]


@pytest.mark.parametrize("tool", ["pyvips", "pillow"])
def test_a_pool_writes_every_rendition(tool, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for seed in range(2):
        scene(320, 240, seed).jpegsave(str(source / f"scene-{seed}.jpg"), Q=88)
    seconds, peak_mib, stdout = bench_peers.run_tool(tool, source, tmp_path / "out", PRESETS, 1,
                                                     "tcp://127.0.0.1:9", timeout=120)
    assert bench_peers.check_outputs(tool, tmp_path / "out", 2, PRESETS) == 4
    assert '"renditions": 4' in stdout
    thumb = pyvips.Image.new_from_file(str(tmp_path / "out" / "scene-0.thumb.webp"))
    assert (thumb.width, thumb.height) == (150, 150)
    assert peak_mib > 0 and seconds > 0


def test_a_tool_that_wrote_less_fails_the_check(tmp_path):
    (tmp_path / "one.thumb.webp").write_bytes(b"RIFF")
    with pytest.raises(bench_peers.ToolFailed, match="1 renditions for 2 images, expected 4"):
        bench_peers.check_outputs("pyvips", tmp_path, 2, PRESETS)


def test_copies_of_a_photograph_differ_in_bytes_not_pixels(tmp_path):
    photo = tmp_path / "photo.jpg"
    scene(64, 48, 1).jpegsave(str(photo), Q=88)
    copies = bench_peers.make_large([photo], 3, tmp_path / "large")
    blobs = [p.read_bytes() for p in copies]
    assert len(set(blobs)) == 3
    pixels = {bytes(pyvips.Image.new_from_file(str(p)).write_to_memory()) for p in copies}
    assert pixels == {bytes(pyvips.Image.new_from_file(str(photo)).write_to_memory())}
