"""INT8 entropy calibration on the device, from images the user supplies at build time (``--calib-dir``).

Calibration images are NOT kept in bundles by default: a bundle that carried samples of every task would be a form
of rehearsal data. The cache of scales is keyed by (model sha256, calibration data sha256), so the same model and
the same images never calibrate twice."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..preprocess import normalize
from . import _trt_compat as compat

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".npy"}


class CalibrationError(ValueError):
    pass


def calibration_files(calib_dir: str | Path | None) -> list[Path]:
    if calib_dir is None:
        raise CalibrationError("int8 needs calibration images: pass --calib-dir DIR (images or .npy of the task)")
    files = sorted(p for p in Path(calib_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"{calib_dir} holds no images (.jpg/.png/.npy) to calibrate with")
    return files


def data_hash(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def load_images(files: list[Path], task: dict) -> np.ndarray:
    """Images -> normalised float32 NCHW with the manifest's input spec (uint8 HWC in, as the runtime does)."""
    c, h, w = task["input"]["shape"]
    out = []
    for f in files:
        if f.suffix == ".npy":
            arr = np.load(f, allow_pickle=False)
        else:
            try:
                from PIL import Image
            except ImportError:
                raise ImportError("Pillow is not installed: pip install 'pcl-edge[calib]' (it reads JPEG/PNG "
                                  "calibration images on the device; .npy needs nothing)") from None
            with Image.open(f) as im:
                arr = np.asarray(im.convert("L" if c == 1 else "RGB"))
        arr = arr.reshape(*arr.shape[:2], -1) if arr.ndim in (2, 3) else arr
        if arr.shape != (h, w, c):
            raise CalibrationError(f"{f}: shape {arr.shape}, the task's input is {h}x{w}x{c} (HWC)")
        out.append(arr)
    return _normalize(np.stack(out), task)


class CudaBuffer:
    """One device buffer (cuda-python, no torch on the device)."""

    def __init__(self, nbytes: int) -> None:
        from .._cuda import Cuda

        self.cuda = Cuda()
        self.ptr = self.cuda.malloc(nbytes)

    def upload(self, host: np.ndarray) -> int:
        self.cuda.upload(self.ptr, host)
        return self.ptr

    def free(self) -> None:
        self.cuda.free(self.ptr)


def batches(images: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for i in range(0, len(images) - batch_size + 1, batch_size):  # TensorRT wants full batches
        yield np.ascontiguousarray(images[i: i + batch_size])


def _normalize(images: np.ndarray, task: dict) -> np.ndarray:
    return normalize(images, task["input"]["mean"], task["input"]["std"])


def make_calibrator(trt, task: dict, calib_dir, cache_dir: Path, batch_size: int = 8, buffer_factory=None,
                    bundle_root: Path | None = None):
    """From the user's ``calib_dir``; else from samples stored in the bundle (only if its exporter opted in)."""
    if calib_dir is None and task.get("calibration") and bundle_root is not None:
        images = _normalize(np.load(bundle_root / task["calibration"]["file"], allow_pickle=False), task)
        digest = task["calibration"]["sha256"]
    else:
        files = calibration_files(calib_dir)
        images, digest = load_images(files, task), data_hash(files)
    batch_size = min(batch_size, len(images))
    cache_path = Path(cache_dir) / f"calib-{task['sha256'][:16]}-{digest[:16]}.cache"
    base = compat.entropy_calibrator_base(trt)
    buffer_factory = buffer_factory or CudaBuffer

    class EntropyCalibrator(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._batches = batches(images, batch_size)
            self._buffer = buffer_factory(batch_size * int(np.prod(images.shape[1:])) * 4)

        def get_batch_size(self) -> int:
            return batch_size

        def get_batch(self, names):  # noqa: ARG002 - one input per model
            batch = next(self._batches, None)
            return None if batch is None else [self._buffer.upload(batch)]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.exists() else None

        def write_calibration_cache(self, cache) -> None:
            cache_path.write_bytes(bytes(cache))

    log.info("int8 calibration for task %s: %d images, cache %s", task["id"], len(images), cache_path.name)
    return EntropyCalibrator()
