"""GPU placement and the GPU resampler's arithmetic, without a GPU.

Where a stage runs is decided by pure functions (``cluster.placement``); the
resampler that runs on the GPU with CuPy is the same code run here with NumPy,
so its weights and its output are checked on any machine.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import pyvips

from cluster import placement
from cluster.config import load_settings
from cluster.cli.samples import scene
from pipelines.optimize.metrics import ssim
from pipelines.transform.gpu import (complete_jpeg, lanczos, resample, resample_matrix,
                                     resample_taps)

GPU_WORKER = {"resources": {"GPU": 1}}
CPU_WORKER = {"resources": {}}


# --------------------------------------------------------------------------- placement

def test_resize_asks_for_a_gpu_only_when_some_worker_declares_one():
    assert placement.gpu_resources({"a": CPU_WORKER, "b": GPU_WORKER}) == {"GPU": 1}
    assert placement.gpu_resources({"a": CPU_WORKER, "b": {"resources": {"GPU": 0}}}) is None
    assert placement.gpu_resources({"a": CPU_WORKER, "b": {}}) is None  # no resources at all
    assert placement.gpu_resources({}) is None  # no workers yet: never ask for the impossible
    assert placement.gpu_resources([GPU_WORKER]) == {"GPU": 1}  # the mapping's values also do


def test_gpu_off_keeps_everything_on_the_cpu():
    assert placement.gpu_resources({"b": GPU_WORKER}, "off") is None
    assert placement.image_device("off", 1, None) == "cpu"
    assert placement.video_decoders("off", 1, {"h264_cuvid": True}) == ()


def test_worker_side_device_choice():
    assert placement.image_device("auto", 1, None) == "gpu"
    assert placement.image_device("auto", 0, None) == "cpu"  # no GPU resource on this worker
    assert placement.image_device("auto", 1, "CuPy is not installed") == "cpu"


def test_only_nvdec_decoders_that_opened_are_used():
    found = {"h264_nvenc": True, "h264_cuvid": True, "hevc_cuvid": False, "av1_cuvid": True}
    assert placement.video_decoders("auto", 1, found) == ("av1_cuvid", "h264_cuvid")
    assert placement.video_decoders("auto", 0, found) == ()


def test_outside_a_worker_there_is_no_gpu_resource():
    assert placement.worker_gpus() == 0
    assert placement.image_device_here("auto") == "cpu"
    assert placement.video_decoders_here("auto") == ()


def test_scheduler_reports_worker_resources_where_placement_reads_them():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      resources={"GPU": 1}) as cluster, Client(cluster) as client:
        assert placement.resize_resources(client) == {"GPU": 1}
        assert placement.resize_resources(client, "off") is None
        # A task that asks for the resource runs, and sees it from inside (get_worker).
        future = client.submit(placement.worker_gpus, resources=placement.resize_resources(client))
        assert future.result(timeout=30) == 1
        assert placement.chunk_resources(client, "h264_nvenc") == {"GPU": 1}
        assert placement.chunk_resources(client, "libx264") is None


class ReportingClient:
    """Stands in for a Dask client's view of its workers: the report can change, calls are counted."""

    def __init__(self, workers: dict) -> None:
        self.workers, self.calls = workers, 0

    def scheduler_info(self) -> dict:
        self.calls += 1
        return {"workers": dict(self.workers)}


def test_the_cluster_is_asked_at_most_once_per_interval(monkeypatch):
    client = ReportingClient({"a": CPU_WORKER})
    assert [placement.resize_resources(client) for _ in range(50)] == [None] * 50
    assert client.calls == 1  # one round trip for a whole batch of assets
    client.workers["b"] = GPU_WORKER  # a GPU worker joins
    monkeypatch.setattr(placement, "RESOURCES_TTL_S", 0.0)
    assert placement.resize_resources(client) == {"GPU": 1} and client.calls == 2
    assert placement.resize_resources(client, "off") is None and client.calls == 2


def test_gpu_setting_from_the_environment():
    assert load_settings({}).gpu == "auto"
    assert load_settings({"MEDIAFARM_GPU": "OFF"}).gpu == "off"
    with pytest.raises(ValueError, match="MEDIAFARM_GPU"):
        load_settings({"MEDIAFARM_GPU": "always"})


# --------------------------------------------------------------------------- the resampler

@pytest.mark.parametrize("in_size,out_size", [(6000, 1600), (1000, 999), (7, 3), (64, 1), (5, 5)])
def test_weights_rows_sum_to_one_and_stay_inside_the_image(in_size, out_size):
    first, weights = resample_taps(in_size, out_size)
    taps = first[:, None] + np.arange(weights.shape[1])
    assert np.allclose(weights.sum(axis=1), 1.0)
    assert not weights[(taps < 0) | (taps >= in_size)].any()
    matrix = resample_matrix(in_size, out_size)
    assert matrix.shape == (out_size, in_size) and matrix.dtype == np.float32
    assert np.allclose(matrix.sum(axis=1), 1.0, atol=1e-5)


def test_kernel_widens_with_the_scale_factor():
    # Shrinking by 4 spreads the three lobes over 4x as many input pixels: antialiasing.
    _, by_one = resample_taps(100, 100)
    _, by_four = resample_taps(400, 100)
    assert np.count_nonzero(by_four[50]) >= 4 * np.count_nonzero(by_one[50]) - 4
    assert np.allclose(resample_matrix(9, 9), np.eye(9))  # same size: each pixel is itself
    assert lanczos(np.array([0.0]))[0] == 1.0 and lanczos(np.array([3.0, -3.5]))[:].tolist() == [0, 0]


def test_flat_image_stays_flat():
    flat = np.full((300, 400, 3), 77, dtype=np.uint8)
    out = resample(flat, 123, 45)
    assert out.shape == (45, 123, 3) and out.dtype == np.uint8
    assert np.unique(out).tolist() == [77]


def test_fine_stripes_average_instead_of_aliasing():
    stripes = np.zeros((48, 240, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # the finest pattern there is
    # Shrunk by 3, each output centre lands on one input pixel: an unwidened kernel keeps it alone.
    out = resample(stripes, 80, 16).astype(float)
    assert abs(out.mean() - 127.5) < 2 and out.std() < 4


def test_orientation_of_rows_and_columns_is_kept():
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[:20, :30] = (255, 0, 0)  # red top-left quadrant only
    out = resample(image, 30, 20)
    assert tuple(out[5, 5]) == (255, 0, 0) and tuple(out[15, 25]) == (0, 0, 0)


def test_numpy_run_of_the_gpu_resampler_matches_the_cpu_path():
    """The GPU path's resampler, run with NumPy, against libvips' thumbnail on a photo-like JPEG."""
    data = scene(1200, 800, 2).jpegsave_buffer(Q=90)
    width, height = 400, math.ceil(800 * 400 / 1200)
    cpu = pyvips.Image.thumbnail_buffer(data, width, height=height, size="down").copy_memory()
    full = pyvips.Image.new_from_buffer(data, "", access="random").numpy()
    gpu_way = pyvips.Image.new_from_array(resample(full, cpu.width, cpu.height))
    assert ssim(cpu, gpu_way.copy(interpretation="srgb")) > 0.98
    difference = cpu.numpy().astype(float) - gpu_way.numpy().astype(float)
    assert 10 * math.log10(255 ** 2 / (difference ** 2).mean()) > 38  # PSNR, dB


def test_truncated_jpegs_are_recognised():
    data = scene(200, 100, 1).jpegsave_buffer(Q=90)
    assert complete_jpeg(data)
    assert complete_jpeg(data + b"trailing bytes after the end are harmless")
    assert not complete_jpeg(data[: len(data) // 2])
    assert not complete_jpeg(data[:-2])  # only the end-of-image marker is missing
    assert not complete_jpeg(b"not a jpeg")


def test_a_machine_without_a_gpu_says_why():
    from cluster.worker_plugin import detect_gpus

    reason = placement.no_gpu_reason()
    assert (reason is None) == bool(detect_gpus())
    assert reason is None or reason.startswith("no NVIDIA GPU: nvidia-smi")
    problem = placement.gpu_image_problem()
    assert problem is None or reason is None or problem == reason  # the card is named first
