"""``train/<class>/*.jpg`` (optionally ``test/<class>/...``), as a directory or as a .tar / .tar.xz archive of
that directory (the layout of the CIFAR-10 JPEG tarball: read in place, no unpacking needed)."""

from __future__ import annotations

import io
import logging
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from ..cache import cached, cached_pool, file_signature
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
    return cached_pool("imagefolder", signature, lambda: _decode(members(), str(root), size))


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
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"cannot read archive {archive}: {exc}") from exc


def _decode(members: Iterator[tuple[PurePosixPath, bytes | None]], where: str,
            size: tuple[int, int] | None = None) -> Pool:
    from PIL import Image, UnidentifiedImageError

    from ..._progress import progress
    from ..pool import resize_image

    images: dict[str, dict[str, list[np.ndarray]]] = {"train": {}, "test": {}}
    folders: dict[str, set[str]] = {"train": set(), "test": set()}
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
                arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
        except UnidentifiedImageError:
            raise DataError(f"corrupt image {name} in {where}: not a readable image; remove or replace it") from None
        except (OSError, SyntaxError) as exc:
            raise DataError(f"corrupt image {name} in {where}: {exc}; remove or replace it") from None
        if arr.ndim == 2:
            arr = arr[..., None]
        images[split].setdefault(cls, []).append(arr if size is None else resize_image(arr, size))
    for split in ("train", "test"):
        empty = sorted(folders[split] - set(images[split]))
        if empty:
            raise DataError(f"{split}/{empty[0]}/ in {where} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                            "add images or remove the folder")
    if not images["train"]:
        raise DataError(f"no images found under train/<class>/ in {where}")
    class_names = tuple(sorted(images["train"]))
    x_train, y_train = _stack(images["train"], class_names, where)
    x_test = y_test = None
    if images["test"]:
        unknown = set(images["test"]) - set(class_names)
        if unknown:
            raise DataError(f"test/ has classes absent from train/: {sorted(unknown)} in {where}")
        x_test, y_test = _stack(images["test"], class_names, where)
    log.info("decoded %d train and %d test images in %d classes from %s",
             len(y_train), 0 if y_test is None else len(y_test), len(class_names), where)
    return Pool(x_train=x_train, y_train=y_train, class_names=class_names, x_test=x_test, y_test=y_test)


def _stack(per_class: dict[str, list[np.ndarray]], class_names: tuple[str, ...], where: str):
    xs, ys = [], []
    for label, cls in enumerate(class_names):
        for arr in per_class.get(cls, []):
            xs.append(arr)
            ys.append(label)
    shapes = {a.shape for a in xs}
    if len({s[:2] for s in shapes}) > 1:
        raise DataError(f"images in {where} differ in size {sorted(shapes)[:4]}: pass --input-size HxW (or "
                        "input_size in the config) to resize them to one")
    if len(shapes) != 1:
        raise DataError(f"images in {where} mix grayscale and color {sorted(shapes)[:4]}; convert them to one mode")
    return np.stack(xs).astype(np.uint8), np.asarray(ys, np.int64)
