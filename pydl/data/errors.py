"""The data layer's error type and argument checks shared by its modules."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["DataError", "check_generator", "check_positive_int"]


class DataError(ValueError):
    """A data file that cannot be read as what it should be (corrupt, truncated, of another
    kind); the message names the file and what is wrong with it."""


def check_generator(seed, who: str) -> np.random.Generator:
    """``seed`` (None, an int or a Generator) as a Generator; a Generator is used as is."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0:
        return np.random.default_rng(int(seed))
    raise TypeError(f"{who} must be a non-negative int, a numpy.random.Generator or None, got {seed!r}")


def check_positive_int(v, who: str) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{who} must be a positive int, got {v!r}")
    return int(v)
