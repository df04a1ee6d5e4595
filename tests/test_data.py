import io
import pickle
import tarfile

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
    assert len(list(cache_dir.glob("imagefolder-*.npz"))) == 1
    again = load_pool(f"imagefolder:{tmp_path / 'ds'}")  # from the cache
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
