"""Decode and shrink JPEGs on an NVIDIA GPU: nvImageCodec decodes, CuPy resamples.

The GPU makes only the intermediate that ``resize`` cuts every preset from:
the full-size decode and the big reduction, which are most of the CPU path's
time. The presets themselves, the colour conversion and the encoders stay on
the CPU, so a GPU rendition differs from a CPU one only by the resampler.

Only single-frame, 3-band, 8-bit JPEGs with a complete entropy-coded segment
take this path; anything else, and any image the GPU refuses, goes the CPU way
(``GpuDecodeError``), where libvips decides what is corrupt. CuPy and
nvImageCodec are imported lazily: the module imports, and its pure resampler
runs, on machines without them (the ``gpu`` extra installs them).
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import pyvips

from pipelines import vips  # noqa: F401  (hardens libvips before any load)

# What a rendition records as its path when its intermediate came from here.
GPU_PATH = "gpu:nvimgcodec+cupy"
# Lanczos3, as libvips' thumbnail reduces by default.
LANCZOS_LOBES = 3
_INSTALL = "pip install 'mediafarm[gpu]'"
_local = threading.local()


class GpuDecodeError(Exception):
    """The GPU path does not take this image; the CPU path will."""


@functools.cache
def gpu_decoder_available() -> str | None:
    """None when JPEGs can be decoded and resampled on a GPU here, else the reason why not."""
    try:
        import cupy
    except Exception as exc:  # noqa: BLE001 - ImportError, or a CUDA library that fails to load
        return f"CuPy is not installed or does not load ({exc}): {_INSTALL}"
    try:
        from nvidia import nvimgcodec  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return f"nvImageCodec is not installed or does not load ({exc}): {_INSTALL}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - CUDARuntimeError: no driver, or no device
        return f"no CUDA device: {exc}"
    if count == 0:
        return "no CUDA device: the driver reports none"
    try:
        # Once per process: the kernels (NVRTC) and the matrix product (cuBLAS) really run.
        resample(cupy.zeros((8, 8, 3), dtype=cupy.uint8), 4, 4, cupy)
    except Exception as exc:  # noqa: BLE001 - a CUDA library missing or refusing this card
        return f"CuPy cannot run the resampler here ({type(exc).__name__}: {exc}): {_INSTALL}"
    return None


def gpu_intermediate(data: bytes, width: int, height: int,
                     target_width: int, target_height: int) -> pyvips.Image:
    """The upright JPEG at (target_width, target_height): uchar sRGB, the source's ICC attached.

    ``width`` and ``height`` are the source's upright size, as ``resize`` read it
    from the header. Raises ``GpuDecodeError`` for images this path does not
    take, so that the caller can fall back to the CPU.
    """
    header = pyvips.Image.new_from_buffer(data, "", access="sequential")
    _check_suitable(header, data)
    import cupy

    try:
        decoded = cupy.asarray(_decode(data))
        if decoded.shape != (height, width, 3):
            raise GpuDecodeError(f"the GPU decoded {decoded.shape}, the header says "
                                 f"{(height, width, 3)}")
        pixels = cupy.asnumpy(resample(decoded, target_width, target_height, cupy))
    except (cupy.cuda.memory.OutOfMemoryError, cupy.cuda.runtime.CUDARuntimeError,
            cupy.cuda.driver.CUDADriverError) as exc:
        # A full or failing card costs this image its GPU path, not the asset: libvips takes it.
        raise GpuDecodeError(f"the GPU failed: {type(exc).__name__}: {exc}") from exc
    image = pyvips.Image.new_from_memory(pixels.data, target_width, target_height, 3, "uchar")
    image = image.copy(interpretation="srgb")
    if header.get_typeof("icc-profile-data"):
        # The convert stage turns the source's colours into sRGB with this profile.
        image.set_type(pyvips.GValue.blob_type, "icc-profile-data",
                       bytes(header.get("icc-profile-data")))
    return image.copy_memory()


def _check_suitable(header: pyvips.Image, data: bytes) -> None:
    if header.get("vips-loader") != "jpegload_buffer":
        raise GpuDecodeError("not a JPEG")
    if header.bands != 3 or header.format != "uchar":
        # CMYK, grey and 12-bit JPEGs keep libvips' handling of their colour.
        raise GpuDecodeError(f"{header.bands}-band {header.format} JPEG")
    if not complete_jpeg(data):
        raise GpuDecodeError("the JPEG ends before its image data does")


def complete_jpeg(data: bytes) -> bool:
    """Whether an end-of-image marker follows the last start-of-scan.

    The CPU path refuses truncated files (libvips ``fail_on=truncated``); a GPU
    decoder may fill the missing rows with grey instead, so truncated files go
    to the CPU. Entropy-coded data never holds 0xFFD9 (0xFF bytes are stuffed
    as 0xFF00, ITU T.81 B.1.1.5), so an EOI after the last SOS is the real end.
    """
    last_scan = data.rfind(b"\xff\xda")
    return last_scan >= 0 and data.find(b"\xff\xd9", last_scan + 2) >= 0


def _decode(data: bytes):
    """The upright RGB pixels in device memory, EXIF orientation applied."""
    from nvidia import nvimgcodec

    decoder = getattr(_local, "decoder", None)
    if decoder is None:
        # nvImageCodec's default turns chroma "fancy upsampling" off; libjpeg-turbo, and so
        # libvips, upsamples fancily. Turning it on keeps the two decodes close (nvImageCodec's
        # own tests compare with libjpeg-turbo this way; the option needs CUDA >= 12.1).
        decoder = _local.decoder = nvimgcodec.Decoder(options=":fancy_upsampling=1")
    params = nvimgcodec.DecodeParams(apply_exif_orientation=True,
                                     color_spec=nvimgcodec.ColorSpec.RGB)
    try:
        image = decoder.decode(data, params=params)
    except Exception as exc:  # noqa: BLE001 - nvImageCodec's errors have no common base
        raise GpuDecodeError(f"nvImageCodec could not decode it: {exc}") from exc
    if image is None:  # how nvImageCodec reports a sample it could not decode
        raise GpuDecodeError("nvImageCodec could not decode it")
    return image


# ---------------------------------------------------------------- the resampler (NumPy or CuPy)

def lanczos(x: np.ndarray, lobes: int = LANCZOS_LOBES) -> np.ndarray:
    """The Lanczos window: sinc(x) sinc(x / lobes) inside |x| < lobes, zero outside."""
    return np.where(np.abs(x) < lobes, np.sinc(x) * np.sinc(x / lobes), 0.0)


def resample_taps(in_size: int, out_size: int,
                  lobes: int = LANCZOS_LOBES) -> tuple[np.ndarray, np.ndarray]:
    """Each output pixel's input taps and weights: (first tap index per row, weights).

    Output pixel i covers input [i * s, (i + 1) * s) for s = in_size / out_size
    (pixel centres aligned, as libvips and Pillow do). When shrinking, the kernel
    is stretched by s, so that it averages over every input pixel it covers
    (antialiasing). Taps outside the image are dropped and each row is
    renormalised, so every row sums to 1 and a flat image stays flat.
    """
    if in_size <= 0 or out_size <= 0:
        raise ValueError("sizes must be positive")
    scale = in_size / out_size
    stretch = max(scale, 1.0)
    centres = (np.arange(out_size) + 0.5) * scale - 0.5
    reach = lobes * stretch
    count = int(np.ceil(2 * reach)) + 1
    first = np.floor(centres - reach).astype(np.int64) + 1
    taps = first[:, None] + np.arange(count)[None, :]
    weights = lanczos((taps - centres[:, None]) / stretch, lobes)
    weights[(taps < 0) | (taps >= in_size)] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    return first, weights


def resample_matrix(in_size: int, out_size: int, xp=np, lobes: int = LANCZOS_LOBES):
    """The (out_size, in_size) float32 matrix M such that M @ line resamples a line."""
    first, weights = resample_taps(in_size, out_size, lobes)
    taps = first[:, None] + np.arange(weights.shape[1])[None, :]
    keep = (taps >= 0) & (taps < in_size)
    rows = np.broadcast_to(np.arange(out_size)[:, None], taps.shape)[keep]
    matrix = xp.zeros((out_size, in_size), dtype=xp.float32)
    # In-image taps of one row are distinct, so a plain scatter places every weight once.
    matrix[xp.asarray(rows), xp.asarray(taps[keep])] = xp.asarray(weights[keep], dtype=xp.float32)
    return matrix


def resample(pixels, out_width: int, out_height: int, xp=np):
    """Resize (height, width, bands) uint8 pixels with a separable Lanczos3 filter.

    Two float32 matrix products, rows then columns: dense, so most of each
    product multiplies zeros, but a GPU does that faster than it could gather
    the taps, and NumPy runs the very same code for the tests.
    """
    height, width, bands = pixels.shape
    if (out_width, out_height) == (width, height):
        return pixels
    rows = resample_matrix(height, out_height, xp)
    columns = resample_matrix(width, out_width, xp)
    tall = rows @ pixels.astype(xp.float32).reshape(height, width * bands)
    # Columns next: bring width to the front so that one product does every row and band.
    wide = tall.reshape(out_height, width, bands).transpose(1, 0, 2).reshape(width, -1)
    out = (columns @ wide).reshape(out_width, out_height, bands).transpose(1, 0, 2)
    return xp.ascontiguousarray(xp.clip(xp.rint(out), 0, 255).astype(xp.uint8))
