import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pcl_edge.data import DataError, build_stream, load_pool, parse_task_spec
from pcl_edge.data.pool import Pool
from pcl_edge.data.stream import stratified_split, stream_from_pool

NAMES = tuple("abcdef")


def test_split_digits_default_stream():
    s = build_stream("digits", seed=0)
    assert len(s) == 5 and [t.classes for t in s.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert "carved" in s.test_split
    for t in s.tasks:
        assert t.spec.shape == (1, 8, 8) and t.train.x.dtype == np.uint8
        assert set(np.unique(t.train.y)) == {0, 1} and set(np.unique(t.test.y)) == {0, 1}
        assert len(t.val) > 0 and len(t.test) > 0


def _unique_pool(n=200, classes=4):
    """Every image carries its own index in its pixels, so splits can be checked for overlap."""
    idx = np.arange(n)
    x = np.stack([idx // 256, idx % 256, np.zeros(n, int), np.zeros(n, int)], 1).astype(np.uint8).reshape(n, 2, 2, 1)
    return Pool(x_train=x, y_train=idx % classes, class_names=tuple("abcd"[:classes]))


def _ids(split):
    return {int(a) * 256 + int(b) for a, b in split.x.reshape(len(split), -1)[:, :2]}


def test_train_val_test_are_disjoint_cover_the_pool_and_are_seeded():
    pool = _unique_pool()
    a = stream_from_pool(pool, "toy", "2x2", seed=0)
    b = stream_from_pool(pool, "toy", "2x2", seed=0)
    c = stream_from_pool(pool, "toy", "2x2", seed=1)
    seen = set()
    for t in a.tasks:
        tr, va, te = _ids(t.train), _ids(t.val), _ids(t.test)
        assert not (tr & va) and not (tr & te) and not (va & te)
        seen |= tr | va | te
    assert seen == set(range(200))
    assert [_ids(t.test) for t in a.tasks] == [_ids(t.test) for t in b.tasks]
    assert [_ids(t.test) for t in a.tasks] != [_ids(t.test) for t in c.tasks]


def test_stratified_split_holds_out_every_class():
    y = np.repeat(np.arange(3), [10, 20, 5])
    keep, held = stratified_split(y, 0.2, np.random.default_rng(0))
    assert not set(keep) & set(held) and len(keep) + len(held) == len(y)
    assert [int((y[held] == c).sum()) for c in range(3)] == [2, 4, 1]


def test_test_split_does_not_move_with_the_task_spec():
    a = build_stream("digits", "5x2", seed=3)
    b = build_stream("digits", "0,1/4,5", seed=3)
    assert np.array_equal(a.tasks[0].test.x, b.tasks[0].test.x)
    assert np.array_equal(a.tasks[2].test.x, b.tasks[1].test.x)


def test_default_spec_needs_five_equal_tasks():
    assert parse_task_spec(None, tuple("abcdefghij")) == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    with pytest.raises(DataError, match="5 equal tasks"):
        parse_task_spec(None, NAMES)


@pytest.mark.parametrize("spec,expected", [
    ("3x2", [(0, 1), (2, 3), (4, 5)]),
    ("2x3", [(0, 1, 2), (3, 4, 5)]),
    ("a,b/f,c", [(0, 1), (5, 2)]),
    ("0,1/2,3", [(0, 1), (2, 3)]),
])
def test_task_specs(spec, expected):
    assert parse_task_spec(spec, NAMES) == expected


@pytest.mark.parametrize("spec,match", [("a,z", "lacks"), ("4x2", "needs 8 classes"), ("a,b/b,c", "two tasks"),
                                        ("a", ">= 2 distinct"), ("9,1", "lacks")])
def test_bad_task_specs(spec, match):
    with pytest.raises(DataError, match=match):
        parse_task_spec(spec, NAMES)


def _jpeg(color, size=8):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "JPEG")
    return buf.getvalue()


def _make_folder(root, with_test=False):
    for split in ["train"] + (["test"] if with_test else []):
        for c, color in zip(("cat", "dog", "eel", "fox"), ("red", "green", "blue", "white")):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(6):
                (d / f"{i}.jpg").write_bytes(_jpeg(color))


def test_imagefolder_directory_and_cache(tmp_path, cache_dir):
    _make_folder(tmp_path / "ds")
    pool = load_pool(f"imagefolder:{tmp_path / 'ds'}")
    assert pool.x_train.shape == (24, 8, 8, 3) and pool.class_names == ("cat", "dog", "eel", "fox")
    assert not pool.has_test
    entries = [p for p in cache_dir.glob("imagefolder-*") if p.is_dir()]
    assert len(entries) == 1 and sorted(f.name for f in entries[0].iterdir()) == ["classes.json", "complete.json",
                                                                                    "x_train.npy", "y_train.npy"]
    assert not list(cache_dir.glob(".*"))  # no staging directory or spill file left behind
    again = load_pool(f"imagefolder:{tmp_path / 'ds'}")  # from the cache, memory-mapped
    assert isinstance(again.x_train, np.memmap) and not again.x_train.flags.writeable
    assert np.array_equal(again.x_train, pool.x_train) and again.class_names == pool.class_names
    s = build_stream(f"imagefolder:{tmp_path / 'ds'}", "2x2")
    assert s.tasks[1].class_names == ("eel", "fox")


def test_imagefolder_uses_its_own_test_split_and_reads_tarballs(tmp_path, cache_dir):
    _make_folder(tmp_path / "ds", with_test=True)
    archive = tmp_path / "ds.tar.xz"
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    s = build_stream(f"imagefolder:{archive}", "2x2")
    assert s.test_split == "the source's own test split"
    assert len(s.tasks[0].test) == 12


def test_corrupt_image_is_named(tmp_path, cache_dir):
    _make_folder(tmp_path / "ds")
    (tmp_path / "ds" / "train" / "dog" / "3.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"corrupt image train/dog/3.jpg"):
        load_pool(f"imagefolder:{tmp_path / 'ds'}")


@pytest.mark.parametrize("source,match", [("imagefolder:/nonexistent/x", "does not exist"),
                                          ("imagefolder", "needs a path"), ("cifar10:/nonexistent", "missing"),
                                          ("mnist:/nonexistent", "lacks"), ("digits:/x", "takes no path")])
def test_bad_sources(source, match):
    with pytest.raises(DataError, match=match):
        load_pool(source)


def test_unknown_source_suggests():
    with pytest.raises(KeyError, match="did you mean 'digits'|Did you mean 'digits'"):
        load_pool("digit")


def test_cifar10_pickles(tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        with open(tmp_path / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
                         b"labels": list(np.arange(20) % 10)}, fh)
    with open(tmp_path / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    pool = load_pool(f"cifar10:{tmp_path}")
    assert pool.x_train.shape == (100, 32, 32, 3) and pool.x_test.shape == (20, 32, 32, 3)
    with open(tmp_path / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh)[b"data"][0]
    assert np.array_equal(pool.x_train[0, :, :, 0].ravel(), raw[:1024])  # red plane first, row-major
    assert pool.class_names[3] == "c3"


def _idx(path, arr):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def test_mnist_idx(tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    _idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 255, (30, 28, 28)))
    _idx(tmp_path / "train-labels-idx1-ubyte", np.arange(30) % 10)
    _idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28)))
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(10))
    pool = load_pool(f"mnist:{tmp_path}")
    assert pool.x_train.shape == (30, 28, 28, 1) and pool.y_test.tolist() == list(range(10))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x0a\x01")
    with pytest.raises(DataError, match="truncated"):
        load_pool(f"mnist:{tmp_path}")


def test_task_with_no_training_images_is_an_error():
    x = np.zeros((8, 4, 4, 1), np.uint8)
    pool = Pool(x_train=x, y_train=np.array([0, 0, 1, 1, 0, 0, 1, 1]), class_names=("a", "b", "c"))
    with pytest.raises(DataError, match="lacks|no training images"):
        stream_from_pool(pool, "toy", "a,c")


def _noisy_folder(root, n_per_class=60, size=32, classes=("a", "b", "c", "d", "e", "f")):
    """Random-pixel PNGs (lossless, so every decode is comparable), a few JPEGs among them."""
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / "train" / c
        d.mkdir(parents=True)
        for i in range(n_per_class):
            im = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
            im.save(d / (f"{i}.jpg" if i % 7 == 0 else f"{i}.png"))


def test_a_stream_over_its_ram_budget_keeps_every_task_mapped_and_equal(tmp_path, cache_dir, monkeypatch):
    """issue 23 item 7: a pool that does not fit stays on disk; its tasks' splits are mapped from the cache and hold
    exactly what the in-RAM stream holds."""
    _noisy_folder(tmp_path / "ds", n_per_class=20, size=16)
    source = f"imagefolder:{tmp_path / 'ds'}"
    in_ram = build_stream(source, "3x2", seed=3)
    monkeypatch.setenv("PCL_EDGE_IN_RAM_MB", "0")
    on_disk = build_stream(source, "3x2", seed=3)
    for a, b in zip(in_ram.tasks, on_disk.tasks, strict=True):
        assert a.spec == b.spec
        for part in ("train", "val", "test"):
            sa, sb = getattr(a, part), getattr(b, part)
            assert type(sa.x) is np.ndarray and isinstance(sb.x, np.memmap)
            assert Path(sb.x.filename).parent.name == "splits" and not sb.x.flags.writeable
            assert np.array_equal(sa.x, sb.x) and np.array_equal(sa.y, sb.y)
    again = build_stream(source, "3x2", seed=3)  # the mapped splits are reused, not written twice
    assert again.tasks[2].test.x.filename == on_disk.tasks[2].test.x.filename
    assert pickle.loads(pickle.dumps(on_disk.tasks[0])).train.x.tolist() == in_ram.tasks[0].train.x.tolist()


def test_decoding_and_cutting_a_folder_never_holds_it_all_in_ram(tmp_path, cache_dir, monkeypatch):
    """Measured with tracemalloc (numpy reports its buffers to it): decoding 360 images and cutting a 3-task stream
    from them peaks far below the images' size, so a folder larger than RAM decodes and streams too."""
    import tracemalloc

    from pcl_edge.data import cache

    _noisy_folder(tmp_path / "ds", n_per_class=60, size=48)
    total = 6 * 60 * 48 * 48 * 3
    monkeypatch.setattr(cache, "CHUNK_BYTES", 48 * 48 * 3 * 8)
    monkeypatch.setenv("PCL_EDGE_IN_RAM_MB", "0")
    _noisy_folder(tmp_path / "warm", n_per_class=3, size=8)  # every lazy import done before measuring
    build_stream(f"imagefolder:{tmp_path / 'warm'}", "3x2")
    tracemalloc.start()
    try:
        pool = load_pool(f"imagefolder:{tmp_path / 'ds'}")
        _, decode_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        stream = build_stream(f"imagefolder:{tmp_path / 'ds'}", "3x2")
        _, stream_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pool.x_train.shape == (360, 48, 48, 3) and sum(len(t.train) + len(t.val) + len(t.test)
                                                           for t in stream.tasks) == 360
    assert decode_peak < total / 4, (decode_peak, total)
    assert stream_peak < total / 4, (stream_peak, total)


def test_an_old_single_file_cache_is_converted_and_a_damaged_entry_rebuilt(tmp_path, cache_dir, caplog):
    from pcl_edge.data import cache

    _make_folder(tmp_path / "ds")
    source = f"imagefolder:{tmp_path / 'ds'}"
    pool = load_pool(source)
    (entry,) = [p for p in cache_dir.iterdir() if p.is_dir()]
    x, y = np.array(pool.x_train), pool.y_train
    cache.shutil.rmtree(entry)
    np.savez(entry.with_name(entry.name + ".npz"), x_train=x, y_train=y, class_names=np.asarray(pool.class_names))
    converted = load_pool(source)
    assert isinstance(converted.x_train, np.memmap) and np.array_equal(converted.x_train, x)
    assert entry.is_dir() and not entry.with_name(entry.name + ".npz").exists()
    with open(entry / "x_train.npy", "r+b") as fh:  # cut short: the mapping no longer matches its header
        fh.truncate(200)
    rebuilt = load_pool(source)
    assert np.array_equal(rebuilt.x_train, x) and "ignoring unreadable cache" in caplog.text


def test_a_folder_of_mixed_sizes_names_two_of_its_images(tmp_path, cache_dir):
    for i, (h, w) in enumerate([(8, 8), (8, 8), (12, 10)]):
        d = tmp_path / "ds" / "train" / "ab"[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), "red").save(d / f"{i}.png")
    with pytest.raises(DataError, match=r"differ in size \(train/a/0.png: 8x8, train/a/2.png: 12x10\).*--input-size"):
        load_pool(f"imagefolder:{tmp_path / 'ds'}")
    assert not [p for p in cache_dir.iterdir()] if cache_dir.exists() else True  # nothing half-built is kept
    pool = load_pool(f"imagefolder:{tmp_path / 'ds'}", size=(6, 6))
    assert pool.x_train.shape == (3, 6, 6, 3)


def test_grayscale_images_among_color_ones_become_rgb_and_an_all_gray_folder_stays_gray(tmp_path, cache_dir):
    """As torchvision's loader (``convert("RGB")``) does for a mixed folder; a folder of grayscale images only keeps
    its one channel. Modes with alpha or a palette are converted to RGB as they are decoded."""
    for i, mode in enumerate(["L", "RGB", "P", "L", "RGBA", "LA"]):
        d = tmp_path / "mixed" / "train" / "ab"[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        Image.new(mode, (4, 4), 90 if mode in ("L", "LA", "P") else (90, 90, 90, 255)[: len(mode)]).save(
            d / f"{i}.png")
    pool = load_pool(f"imagefolder:{tmp_path / 'mixed'}")
    assert pool.x_train.shape == (6, 4, 4, 3)
    first_gray = np.asarray(Image.open(tmp_path / "mixed" / "train" / "a" / "0.png").convert("RGB"))
    assert np.array_equal(pool.x_train[0], first_gray)  # train/a/0.png: replicated exactly as PIL converts it
    for i in range(3):
        d = tmp_path / "gray" / "train" / "ab"[i % 2]
        d.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), 40 * i).save(d / f"{i}.png")
    assert load_pool(f"imagefolder:{tmp_path / 'gray'}").x_train.shape == (3, 4, 4, 1)


def test_an_entry_another_process_completed_is_kept_and_an_incomplete_one_rebuilt(tmp_path, cache_dir, caplog):
    import os
    import time

    from pcl_edge.data import cache

    pool = Pool(x_train=np.zeros((4, 2, 2, 1), np.uint8), y_train=np.array([0, 1, 0, 1]), class_names=("a", "b"))
    first = cache.store("k", "sig", pool)
    reader = first.x_train  # a reader of the entry, mapped
    again = cache.store("k", "sig", pool)  # a second writer of the same key: the entry it finds complete stays
    assert again.x_train.filename == reader.filename and os.path.samefile(again.x_train.filename, reader.filename)
    entry = cache.entry_path("k", "sig")
    (entry / "y_train.npy").unlink()  # power cut, disk trouble: a file of the entry is gone
    assert cache.cached("k", "sig") is None and "incomplete cache entry" in caplog.text
    assert np.array_equal(cache.store("k", "sig", pool).y_train, pool.y_train)
    stale = entry.with_name(f".{entry.name}.abc")  # left by a process killed while decoding, long ago
    stale.mkdir()
    os.utime(stale, (time.time() - 2 * cache.STALE_STAGING_S,) * 2)
    fresh = entry.with_name(f".{entry.name}.def")  # another process decoding right now
    fresh.mkdir()
    cache.store("k", "sig2", pool)
    cache.store("k", "sig", pool)
    assert not stale.exists() and fresh.exists()


def test_grayscale_in_any_mode_keeps_a_gray_folder_gray(tmp_path, cache_dir):
    """Bilevel, gray with alpha, 16-bit and gray-palette images are grayscale: one of them among L images does not
    turn the folder RGB. 16-bit values are scaled to 8 bits, not clipped."""
    d = tmp_path / "ds" / "train"
    for c in "ab":
        (d / c).mkdir(parents=True)
    Image.new("L", (4, 4), 10).save(d / "a" / "0.png")
    Image.new("1", (4, 4), 1).save(d / "a" / "1.png")
    Image.new("LA", (4, 4), (20, 255)).save(d / "a" / "2.png")
    Image.fromarray(np.full((4, 4), 51400, np.uint16)).save(d / "b" / "0.png")  # 16-bit: 51400 >> 8 = 200
    Image.new("L", (4, 4), 30).convert("P").save(d / "b" / "1.png")
    pool = load_pool(f"imagefolder:{tmp_path / 'ds'}")
    assert pool.x_train.shape == (5, 4, 4, 1)
    assert [int(v) for v in pool.x_train[:, 0, 0, 0]] == [10, 255, 20, 200, 30]
