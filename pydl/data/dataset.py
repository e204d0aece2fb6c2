"""Data sets: the ``Dataset`` protocol, ``TensorDataset``, ``Subset`` and ``random_split``.

A data set is anything with ``__len__`` and ``__getitem__(i)`` returning one
sample (an array, or a tuple of arrays/numbers). One that also has
``__getitems__(indices)`` returning a whole batch as a tuple of stacked arrays
lets ``DataLoader`` take a batch with one fancy index per array instead of a
Python call per sample (``TensorDataset`` and ``Subset`` do).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ..autograd import Tensor
from .errors import check_generator

__all__ = ["Dataset", "TensorDataset", "Subset", "random_split"]


class Dataset:
    """Base class of map-style data sets: subclasses define ``__getitem__`` and ``__len__``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


def _host(a, name):
    if isinstance(a, Tensor):
        a = a.numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"TensorDataset: {name} must be a NumPy array or a pydl Tensor, got {type(a).__name__}")
    if a.ndim == 0:
        raise ValueError(f"TensorDataset: {name} must have a leading sample axis, got a 0-d array")
    return a


class TensorDataset(Dataset):
    """Samples are the rows of equally long arrays: ``TensorDataset(images, labels)[i]``
    is ``(images[i], labels[i])``. Arrays are kept as given (no copy)."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset: expected at least one array")
        self.arrays = tuple(_host(a, f"array {i}") for i, a in enumerate(arrays))
        n = {len(a) for a in self.arrays}
        if len(n) != 1:
            raise ValueError(f"TensorDataset: the arrays must have the same length (first axis), got "
                             f"{[len(a) for a in self.arrays]}")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.intp)
        return tuple(a[idx] for a in self.arrays)


class Subset(Dataset):
    """The samples ``indices`` of ``dataset``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.intp).reshape(-1)
        n = len(dataset)
        if self.indices.size and (self.indices.min() < -n or self.indices.max() >= n):
            raise IndexError(f"Subset: indices must lie in [-{n}, {n}) for a data set of {n} samples")

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices):
        inner = self.indices[np.asarray(indices, dtype=np.intp)]
        if hasattr(self.dataset, "__getitems__"):
            return self.dataset.__getitems__(inner)
        from .loader import default_collate

        return default_collate([self.dataset[int(i)] for i in inner])


def random_split(dataset, lengths, seed=None):
    """Split ``dataset`` into non-overlapping :class:`Subset` s of the given ``lengths``.

    ``lengths``: sample counts summing to ``len(dataset)``, or fractions summing to 1
    (the remainder of the floors goes to the first subsets, one each, as torch does).
    ``seed``: an int or a ``numpy.random.Generator`` (None: fresh entropy).
    """
    n = len(dataset)
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths must not be empty")
    if any(not isinstance(v, numbers.Real) or isinstance(v, bool) or v < 0 for v in lengths):
        raise ValueError(f"random_split: lengths must be non-negative numbers, got {lengths}")
    if all(isinstance(v, numbers.Integral) for v in lengths):
        counts = [int(v) for v in lengths]
        if sum(counts) != n:
            raise ValueError(f"random_split: lengths {counts} sum to {sum(counts)}, the data set has {n} samples")
    else:
        if not math.isclose(sum(lengths), 1.0, abs_tol=1e-9):
            raise ValueError(f"random_split: fractions must sum to 1, got {lengths} (sum {sum(lengths)})")
        counts = [int(math.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
    perm = check_generator(seed, "random_split: seed").permutation(n)
    out, start = [], 0
    for c in counts:
        out.append(Subset(dataset, perm[start:start + c]))
        start += c
    return out
