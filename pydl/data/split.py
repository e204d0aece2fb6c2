"""Train/test splits and k folds, stratified by class, from scikit-learn's
``model_selection`` (``StratifiedShuffleSplit``, ``StratifiedKFold``, ``KFold``).

Each function returns index arrays into the samples; ``seed`` (an int) makes a
split repeat.
"""
from __future__ import annotations

import numbers

import numpy as np

from .errors import check_positive_int

__all__ = ["stratified_split", "train_test_split", "stratified_kfold"]


def _labels(y, who):
    y = np.asarray(y.numpy() if hasattr(y, "numpy") and not isinstance(y, np.ndarray) else y)
    if y.ndim != 1:
        raise ValueError(f"{who}: labels must be 1-d (one class per sample), got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{who}: no samples to split")
    return y


def _seed(seed, who):
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise TypeError(f"{who}: seed must be a non-negative int, got {seed!r}")
    return int(seed)


def _test_count(n, test_size, who):
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        k = int(test_size)
    elif isinstance(test_size, numbers.Real) and not isinstance(test_size, bool) and 0.0 < test_size < 1.0:
        k = int(np.ceil(test_size * n))
    else:
        raise ValueError(f"{who}: test_size must be a fraction in (0, 1) or a sample count, got {test_size!r}")
    if not 0 < k < n:
        raise ValueError(f"{who}: test_size {test_size!r} leaves {n - k} of {n} samples for training; "
                         f"both parts must be non-empty")
    return k


def stratified_split(y, test_size=0.2, seed: int = 0, stratify: bool = True):
    """``(train_idx, test_idx)``: a random split of ``len(y)`` samples, each class in the
    same proportion in both parts when ``stratify`` (every class needs >= 2 samples).
    ``test_size``: a fraction or a count. Indices come sorted."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    who = "stratified_split"
    y = _labels(y, who)
    k = _test_count(len(y), test_size, who)
    seed = _seed(seed, who)
    if stratify:
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < 2:
            raise ValueError(f"{who}: class {classes[counts.argmin()]!r} has {counts.min()} sample; a stratified "
                             f"split needs at least 2 of every class (or stratify=False)")
        if k < len(classes) or len(y) - k < len(classes):
            raise ValueError(f"{who}: test_size {test_size!r} gives {k} test and {len(y) - k} train samples, "
                             f"fewer than the {len(classes)} classes; a stratified split needs one of each")
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=k, random_state=seed)
    else:
        splitter = ShuffleSplit(n_splits=1, test_size=k, random_state=seed)
    train, test = next(splitter.split(np.zeros(len(y)), y))
    return np.sort(train), np.sort(test)


def train_test_split(x, y, test_size=0.2, seed: int = 0, stratify: bool = True):
    """``(x_train, x_test, y_train, y_test)`` from :func:`stratified_split` (rows of ``x`` and ``y``)."""
    x = np.asarray(x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else x)
    y = _labels(y, "train_test_split")
    if len(x) != len(y):
        raise ValueError(f"train_test_split: x has {len(x)} samples, y has {len(y)}")
    tr, te = stratified_split(y, test_size, seed, stratify)
    return x[tr], x[te], y[tr], y[te]


def stratified_kfold(y, k: int = 5, seed: int = 0, stratify: bool = True):
    """``k`` folds as a list of ``(train_idx, val_idx)``: every sample is in exactly one
    validation part; with ``stratify`` each part keeps the class proportions (every
    class needs >= ``k`` samples). Samples are shuffled from ``seed`` first."""
    from sklearn.model_selection import KFold, StratifiedKFold

    who = "stratified_kfold"
    y = _labels(y, who)
    k = check_positive_int(k, f"{who}: k")
    if k < 2 or k > len(y):
        raise ValueError(f"{who}: k must be between 2 and the number of samples ({len(y)}), got {k}")
    seed = _seed(seed, who)
    if stratify:
        classes, counts = np.unique(y, return_counts=True)
        if counts.min() < k:
            raise ValueError(f"{who}: class {classes[counts.argmin()]!r} has {counts.min()} samples, fewer than "
                             f"k={k} folds (or stratify=False)")
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, va) for tr, va in splitter.split(np.zeros(len(y)), y)]
