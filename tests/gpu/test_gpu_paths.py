"""The GPU paths: JPEG decode and resize with nvImageCodec and CuPy, NVDEC and NVENC video.

Tests that need an NVIDIA GPU skip with the reason when there is none (no
nvidia-smi, the gpu extra missing, no CUDA device, an engine that does not
open); nothing stands in for a GPU. The rest run everywhere: the path each
rendition records, the CPU fallbacks, and the clear failure when a recipe
names an NVENC encoder the worker lacks.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import pyvips

from cluster.placement import gpu_image_problem, no_gpu_reason
from cluster.cli.samples import scene
from cluster.worker_plugin import detect_hardware_codecs
from pipelines.optimize.compress import compress
from pipelines.optimize.metrics import ssim
from pipelines.outcome import Failed, Rejected
from pipelines.recipe import Preset, VideoPreset
from pipelines.transform import gpu
from pipelines.transform.convert import to_srgb
from pipelines.transform.resize import resize
from pipelines.transform.encode_loop import encode_video
from pipelines.transform.encoder_setup import open_video_stream, video_settings
from pipelines.transform.video import transcode
from pipelines.upload.media_probe import probe_media
from tests.unit.test_image_renditions import (BLUE, GREEN, RED, WHITE, assert_colours,
                                              stored_with_orientation, upright)

PRESETS = (Preset("thumb", 150, 150, fit="cover"), Preset("small", 400), Preset("medium", 800))
FPS = 24


def require_gpu() -> None:
    """Skip unless JPEGs can be decoded and resampled on an NVIDIA GPU here."""
    problem = gpu_image_problem()
    if problem:
        pytest.skip(problem)


def require_codec(name: str) -> None:
    problem = no_gpu_reason()
    if problem:
        pytest.skip(problem)
    if not detect_hardware_codecs().get(name):
        pytest.skip(f"{name} does not open on this GPU (data-centre cards such as the H100 "
                    "have NVDEC but no NVENC)")


def photo(width: int = 2400, height: int = 1600, seed: int = 1) -> bytes:
    return scene(width, height, seed).jpegsave_buffer(Q=90)


def render(data: bytes, preset: Preset, device: str):
    raster = to_srgb(resize(data, (preset,), device=device)[0])
    return compress(raster, preset), raster


def psnr(a: pyvips.Image, b: pyvips.Image) -> float:
    difference = a.numpy().astype(float) - b.numpy().astype(float)
    return 10 * math.log10(255 ** 2 / max((difference ** 2).mean(), 1e-9))


def h264_clip(path: Path, frames: int = 48, size: tuple[int, int] = (320, 240)) -> Path:
    """A moving gradient in H.264/MP4, made with PyAV's own libx264."""
    width, height = size
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    with av.open(str(path), "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            rgb = np.stack([(x + 4 * index) % 256 + 0 * y, (y + 2 * index) % 256 + 0 * x,
                            (x + y + index) % 256], axis=-1).astype(np.uint8)
            output.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        output.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return h264_clip(tmp_path_factory.mktemp("gpu-video") / "clip.mp4")


# =========================================================================== everywhere

def test_image_renditions_record_the_path_that_made_them():
    encoded, raster = render(photo(600, 400), Preset("small", 400), "cpu")
    assert raster.path == "cpu" and encoded.settings["path"] == "cpu"
    assert encoded.settings["effort"] == 2  # the encoder's own settings are still there
    # The path travels from resize through convert into the rendition's encoder settings.
    made_on_gpu = dataclasses.replace(resize(photo(600, 400), (Preset("small", 400),))[0],
                                      path=gpu.GPU_PATH)
    assert compress(to_srgb(made_on_gpu), Preset("small", 400)).settings["path"] == gpu.GPU_PATH


def test_images_the_gpu_does_not_take_go_the_cpu_way():
    png = scene(300, 200, 1).pngsave_buffer()
    cmyk = scene(300, 200, 2).colourspace("cmyk").jpegsave_buffer(Q=90)
    grey = scene(300, 200, 3).colourspace("b-w").jpegsave_buffer(Q=90)
    gif = pyvips.Image.arrayjoin([scene(60, 40, i) for i in range(3)], across=1).copy()
    gif.set_type(pyvips.GValue.gint_type, "page-height", 40)
    for data in (png, cmyk, grey, gif.gifsave_buffer()):
        for raster in resize(data, PRESETS, device="gpu"):
            assert raster.path == "cpu"
    truncated = photo(600, 400)
    with pytest.raises(Rejected) as caught:
        resize(truncated[: len(truncated) // 2], PRESETS, device="gpu")
    assert caught.value.reason == "corrupt"  # never decoded as grey by a GPU decoder


def test_without_a_gpu_asking_for_one_is_the_cpu_path_byte_for_byte():
    if gpu.gpu_decoder_available() is None:
        pytest.skip("this machine decodes JPEGs on a GPU: the fallback cannot be seen here")
    data = photo()
    by_cpu, asked_gpu = resize(data, PRESETS), resize(data, PRESETS, device="gpu")
    assert [r.pixels for r in asked_gpu] == [r.pixels for r in by_cpu]
    assert {r.path for r in asked_gpu} == {"cpu"}
    with pytest.raises(ValueError, match="device"):
        resize(data, PRESETS, device="cuda")


def test_the_decoder_reports_why_it_is_unavailable():
    problem = gpu.gpu_decoder_available()
    assert problem is None or any(word in problem for word in ("CuPy", "nvImageCodec", "CUDA"))


def test_nvenc_presets_name_nvenc_speeds_and_constant_quality():
    with pytest.raises(ValueError, match="p1"):
        VideoPreset("gpu", codec="h264_nvenc")  # x264's default speed means nothing to NVENC
    preset = VideoPreset("gpu", codec="h264_nvenc", speed="p4", crf=24, hls=True)
    options, settings = video_settings(preset, 25.0)
    assert options == {"preset": "p4", "no-scenecut": "1", "rc": "vbr", "cq": "24", "b": "0"}
    assert settings["codec"] == "h264_nvenc"
    VideoPreset("gpu-av1", codec="av1_nvenc", speed="p7", container="webm", audio_codec="libopus")


def test_nvenc_requested_but_absent_is_a_clear_failure(clip, tmp_path):
    if detect_hardware_codecs().get("h264_nvenc"):
        pytest.skip("h264_nvenc opens here: its absence cannot be shown on this machine")
    preset = VideoPreset("gpu", codec="h264_nvenc", speed="p4", heights=(240,))
    with av.open(str(tmp_path / "x.mp4"), "w") as output, pytest.raises(Failed) as caught:
        open_video_stream(output, preset, 320, 240, Fraction(1, FPS), FPS)
    assert caught.value.reason == "encoder_unavailable" and not caught.value.retryable
    assert "h264_nvenc" in caught.value.message
    with pytest.raises(Failed) as caught:  # the whole rendition: no libx264 in its place
        transcode(str(clip), str(tmp_path), preset, 240, probe_media(clip.read_bytes()))
    assert caught.value.reason == "encoder_unavailable"
    assert not list(tmp_path.glob("gpu-*"))


def test_video_renditions_record_their_decoder(clip, tmp_path):
    info = probe_media(clip.read_bytes())
    preset = VideoPreset("h264", heights=(240,), speed="ultrafast", audio_codec=None)
    output = encode_video(str(clip), str(tmp_path / "cpu.mp4"), preset, 240, info, rung="240p",
                          audio=False)
    assert output.settings["decoder"] == "h264" and "decoder_fallback" not in output.settings
    if detect_hardware_codecs().get("h264_cuvid"):
        return  # NVDEC opens here: test_nvdec_decodes_what_software_decodes covers it
    allowed = encode_video(str(clip), str(tmp_path / "nvdec.mp4"), preset, 240, info,
                           rung="240p", audio=False, decoders=("h264_cuvid",))
    # Allowed but not openable here: software decode, and the record says why.
    assert allowed.settings["decoder"] == "h264"
    assert allowed.settings["decoder_fallback"].startswith("h264_cuvid did not open")
    assert allowed.settings["frames"] == output.settings["frames"] == 48


# =========================================================================== on a GPU

def test_gpu_intermediate_matches_the_cpu_path():
    require_gpu()
    data = photo(3000, 2000)
    size = (1600, math.ceil(2000 * 1600 / 3000))
    on_gpu = gpu.gpu_intermediate(data, 3000, 2000, *size)
    on_cpu = pyvips.Image.thumbnail_buffer(data, size[0], height=size[1], size="down").copy_memory()
    assert (on_gpu.width, on_gpu.height, on_gpu.bands, on_gpu.format) == (*size, 3, "uchar")
    assert ssim(on_cpu, on_gpu) > 0.97
    assert psnr(on_cpu, on_gpu) > 35


def test_gpu_renditions_match_cpu_renditions_and_record_their_path():
    require_gpu()
    data = photo()
    for preset in PRESETS:
        (gpu_encoded, gpu_raster), (cpu_encoded, cpu_raster) = (render(data, preset, "gpu"),
                                                                render(data, preset, "cpu"))
        assert gpu_raster.path == gpu.GPU_PATH and gpu_encoded.settings["path"] == gpu.GPU_PATH
        assert cpu_encoded.settings["path"] == "cpu"
        assert (gpu_raster.width, gpu_raster.height) == (cpu_raster.width, cpu_raster.height)
        assert ssim(cpu_raster.to_image(), gpu_raster.to_image()) > 0.97


@pytest.mark.parametrize("orientation", range(1, 9))
def test_gpu_applies_exif_orientation(orientation):
    require_gpu()
    data = stored_with_orientation(orientation).jpegsave_buffer(Q=95)
    [raster] = resize(data, (Preset("upright", 150, format="png"),), device="gpu")
    assert raster.path == gpu.GPU_PATH
    assert (raster.width, raster.height) == (150, 100)
    assert_colours(raster.to_image(), (RED, GREEN, BLUE, WHITE), tolerance=40)


def test_gpu_keeps_the_icc_profile_for_the_convert_stage():
    require_gpu()
    u = upright()
    p3 = u.icc_transform("p3")  # Display P3 numbers, the profile embedded
    data = p3.jpegsave_buffer(Q=95)
    preset = Preset("wide", 150, format="png")
    [raster] = resize(data, (preset,), device="gpu")
    assert raster.path == gpu.GPU_PATH
    assert raster.icc == bytes(pyvips.Image.new_from_buffer(data, "").get("icc-profile-data"))
    # Converted with that profile, the colours are sRGB's again, as on the CPU path.
    assert_colours(to_srgb(raster).to_image(), (RED, GREEN, BLUE, WHITE), tolerance=40)


def test_nvdec_decodes_what_software_decodes(clip, tmp_path):
    require_codec("h264_cuvid")
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        software = [f.to_ndarray(format="yuv420p") for f in container.decode(stream)]
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        nvdec = av.CodecContext.create("h264_cuvid", "r")
        nvdec.extradata = stream.codec_context.extradata
        hardware = [f.to_ndarray(format="yuv420p")
                    for packet in container.demux(stream) for f in nvdec.decode(packet)]
    assert len(hardware) == len(software) == 48
    assert all(np.array_equal(h, s) for h, s in zip(hardware, software))  # decoding is bit-exact

    info = probe_media(clip.read_bytes())
    preset = VideoPreset("h264", heights=(240,), speed="ultrafast", audio_codec=None)
    by_gpu = encode_video(str(clip), str(tmp_path / "nvdec.mp4"), preset, 240, info, rung="240p",
                          audio=False, decoders=("h264_cuvid",))
    by_cpu = encode_video(str(clip), str(tmp_path / "cpu.mp4"), preset, 240, info, rung="240p",
                          audio=False)
    assert by_gpu.settings["decoder"] == "h264_cuvid"
    assert by_gpu.settings["frames"] == by_cpu.settings["frames"] == 48
    assert by_gpu.duration_s == pytest.approx(by_cpu.duration_s, abs=1 / FPS)


def test_nvenc_encodes_where_the_card_has_it(clip, tmp_path):
    require_codec("h264_nvenc")
    preset = VideoPreset("gpu", codec="h264_nvenc", speed="p4", heights=(240,), audio_codec=None)
    output = transcode(str(clip), str(tmp_path), preset, 240, probe_media(clip.read_bytes()))
    assert output.encoder == "h264_nvenc" and output.video_codec == "h264"
    assert output.settings["frames"] == 48
