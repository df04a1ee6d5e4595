"""``train/<class>/*.jpg`` (optionally ``test/<class>/...``), as a directory or as a .tar / .tar.xz archive of
that directory (the layout of the CIFAR-10 JPEG tarball: read in place, no unpacking needed)."""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from ..cache import cached, entry_path, file_signature, gather, staging, write_array, write_classes
from ..pool import Pool
from . import SOURCES, DataError

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm"}


@SOURCES.register("imagefolder")
def load_imagefolder_pool(path: str | None, size: tuple[int, int] | None = None) -> Pool:
    """``size`` (H, W): every image resized to it as it is decoded (images of any size); without it all images must
    share one size."""
    if not path:
        raise DataError("imagefolder needs a path: --data imagefolder:/path/to/root (holding train/<class>/...)")
    root = Path(path).expanduser().resolve()
    if not root.exists():
        raise DataError(f"imagefolder path {root} does not exist")
    if root.is_file():
        signature = file_signature([root])
        members = lambda: _tar_members(root)  # noqa: E731
    else:
        files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        if not (root / "train").is_dir():
            raise DataError(f"{root} has no train/ directory; expected train/<class>/*.jpg")
        signature = file_signature(files)
        folders = [PurePosixPath(p.relative_to(root).as_posix()) for p in root.glob("*/*") if p.is_dir()]
        members = lambda: _dir_members(root, files, folders)  # noqa: E731
    if size is not None:  # images already of that size decode the same with or without it: reuse that cache
        pool = cached("imagefolder", signature)
        if pool is not None and tuple(pool.x_train.shape[1:3]) == tuple(size):
            return pool
        signature += f"-{size[0]}x{size[1]}"
    pool = cached("imagefolder", signature)
    if pool is None:
        with staging("imagefolder", signature) as tmp:
            _decode(members(), str(root), tmp, size)
        pool = cached("imagefolder", signature)
        if pool is None:
            raise DataError(f"the decoded cache of {root} cannot be read back from "
                            f"{entry_path('imagefolder', signature)}")
    return pool


def _dir_members(root: Path, files: list[Path], folders: list[PurePosixPath]
                 ) -> Iterator[tuple[PurePosixPath, bytes | None]]:
    """(path, bytes) of every image, and (path, None) of every class folder (an empty one must be seen)."""
    for d in sorted(folders):
        yield d, None
    for p in sorted(files):
        yield PurePosixPath(p.relative_to(root).as_posix()), p.read_bytes()


def _tar_members(archive: Path) -> Iterator[tuple[PurePosixPath, bytes | None]]:
    try:
        with tarfile.open(archive) as tar:
            for m in tar:
                name = PurePosixPath(m.name)
                if m.isdir():
                    yield name, None
                elif m.isfile() and name.suffix.lower() in IMAGE_SUFFIXES:
                    yield name, tar.extractfile(m).read()
                tar.members = []  # TarFile keeps every header it read: 50,000 of them hold ~80 MB
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"cannot read archive {archive}: {exc}") from exc


def _pixels(im) -> np.ndarray:
    """uint8 HxW (grayscale) or HxWx3: grayscale modes stay grayscale (bilevel, with alpha, 16- and 32-bit scaled
    to 8 bits; a palette of grays), every other mode becomes RGB."""
    if im.mode in ("L", "RGB"):
        return np.asarray(im)
    if im.mode in ("1", "LA", "La"):
        return np.asarray(im.convert("L"))
    if im.mode.startswith("I;16"):
        return (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
    if im.mode in ("I", "F"):
        a = np.asarray(im, np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        return np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if im.mode == "P":
        rgb = np.asarray(im.convert("RGB"))
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return rgb[..., 0].copy()
        return rgb
    return np.asarray(im.convert("RGB"))


class _Spill:
    """The decoded images of one split appended to a raw file as they come (one image in RAM at a time), with the
    class and the channel count of each."""

    def __init__(self, path: Path) -> None:
        self.path, self.fh = path, open(path, "wb")  # noqa: SIM115 - closed by write()/_decode
        self.classes: list[str] = []
        self.channels: list[int] = []

    def add(self, arr: np.ndarray, cls: str) -> None:
        self.fh.write(np.ascontiguousarray(arr, np.uint8).tobytes())
        self.classes.append(cls)
        self.channels.append(arr.shape[2])

    def write(self, out: Path, shape: tuple[int, int, int], class_names: tuple[str, ...]) -> np.ndarray:
        """``out`` (.npy) holding the images ordered by class, in arrival order within a class, each with
        ``shape``'s channels (a grayscale image among color ones is replicated to RGB, as PIL's ``convert("RGB")``
        and torchvision's loader do); the labels."""
        self.fh.close()
        index = {c: i for i, c in enumerate(class_names)}
        y = np.asarray([index[c] for c in self.classes], np.int64)
        order = np.argsort(y, kind="stable")
        h, w, c = shape
        channels = np.asarray(self.channels, np.int64)
        if (channels == c).all():
            raw = np.memmap(self.path, np.uint8, "r", shape=(len(y), h, w, c))
            write_array(out, (len(y), h, w, c), np.uint8, lambda dst: gather(dst, raw, order))
        else:
            raw = np.memmap(self.path, np.uint8, "r")
            offsets = np.concatenate([[0], np.cumsum(channels * h * w)])

            def fill(dst: np.ndarray) -> None:
                for j, i in enumerate(order):
                    img = raw[offsets[i]: offsets[i + 1]].reshape(h, w, channels[i])
                    dst[j] = img if channels[i] == c else np.repeat(img, c, axis=2)

            write_array(out, (len(y), h, w, c), np.uint8, fill)
        self.path.unlink()
        return y[order]


def _decode(members: Iterator[tuple[PurePosixPath, bytes | None]], where: str, out: Path,
            size: tuple[int, int] | None = None) -> None:
    """Decode every image into the cache entry being built in ``out``, streaming: nothing but the image at hand is
    held in RAM, so a folder larger than memory decodes too."""
    from PIL import Image, UnidentifiedImageError

    from ..._progress import progress
    from ..pool import resize_image

    spills = {split: _Spill(out / f"{split}.raw") for split in ("train", "test")}
    folders: dict[str, set[str]] = {"train": set(), "test": set()}
    first: tuple[PurePosixPath, tuple[int, ...]] | None = None
    try:
        for name, blob in progress(members, desc="decoding images", unit="img"):
            parts = name.parts
            # accept an optional leading directory (e.g. cifar10/train/cat/1.jpg)
            idx = next((i for i, p in enumerate(parts) if p in ("train", "test")), None)
            if blob is None:  # a folder: train/<class> must hold images
                if idx is not None and len(parts) - idx == 2:
                    folders[parts[idx]].add(parts[idx + 1])
                continue
            if idx is None or len(parts) - idx != 3:
                continue
            split, cls = parts[idx], parts[idx + 1]
            try:
                with Image.open(io.BytesIO(blob)) as im:
                    arr = _pixels(im)
            except UnidentifiedImageError:
                raise DataError(f"corrupt image {name} in {where}: not a readable image; remove or replace it") \
                    from None
            except (OSError, SyntaxError) as exc:
                raise DataError(f"corrupt image {name} in {where}: {exc}; remove or replace it") from None
            if arr.ndim == 2:
                arr = arr[..., None]
            if size is not None:
                arr = resize_image(arr, size)
            if first is None:
                first = (name, arr.shape)
            elif arr.shape[:2] != first[1][:2]:
                _mismatch(where, first, (name, arr.shape))
            spills[split].add(arr, cls)
        for split in ("train", "test"):
            empty = sorted(folders[split] - set(spills[split].classes))
            if empty:
                raise DataError(f"{split}/{empty[0]}/ in {where} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                                "add images or remove the folder")
        if not spills["train"].classes:
            raise DataError(f"no images found under train/<class>/ in {where}")
        class_names = tuple(sorted(set(spills["train"].classes)))
        unknown = set(spills["test"].classes) - set(class_names)
        if unknown:
            raise DataError(f"test/ has classes absent from train/: {sorted(unknown)} in {where}")
        counts = {split: len(spills[split].classes) for split in spills}
        gray = sum(ch == 1 for spill in spills.values() for ch in spill.channels)
        shape = (*first[1][:2], 1 if gray == sum(counts.values()) else 3)
        if shape[2] == 3 and gray:
            log.info("%d grayscale images among color ones in %s: replicated to RGB", gray, where)
        for split in ("train", "test"):
            if counts[split]:
                np.save(out / f"y_{split}.npy", spills[split].write(out / f"x_{split}.npy", shape, class_names))
        write_classes(out, class_names)
    finally:
        for spill in spills.values():
            spill.fh.close()
            spill.path.unlink(missing_ok=True)
    log.info("decoded %d train and %d test images in %d classes from %s", counts["train"], counts["test"],
             len(class_names), where)


def _mismatch(where: str, a: tuple[PurePosixPath, tuple[int, ...]], b: tuple[PurePosixPath, tuple[int, ...]]):
    (na, sa), (nb, sb) = a, b
    raise DataError(f"images in {where} differ in size ({na}: {sa[0]}x{sa[1]}, {nb}: {sb[0]}x{sb[1]}): pass "
                    "--input-size HxW (or input_size in the config) to resize them to one")
