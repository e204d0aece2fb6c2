"""Image transforms on NumPy batches, with an explicit generator.

Every transform is called as ``t(x, rng)``: ``x`` a batch of images
``(N, ..., H, W)`` (channels, if any, at axis -3), ``rng`` a
``numpy.random.Generator`` (or an int seed). Random transforms draw only from
``rng``, so the same generator state gives the same batch; ``DataLoader``
passes the epoch's generator. Deterministic ones ignore ``rng``. The input is
never modified in place.
"""
from __future__ import annotations

import numbers

import numpy as np

from .errors import check_generator

__all__ = ["Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "GaussianNoise", "ToFloat"]


def _batch(x, who, min_ndim=3):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{who}: expected a NumPy array batch (N, ..., H, W), got {type(x).__name__}")
    if x.ndim < min_ndim:
        raise ValueError(f"{who}: expected a batch (N, ..., H, W) of at least {min_ndim} dimensions, "
                         f"got shape {x.shape}")
    return x


def _rng(rng, who):
    if rng is None:
        raise TypeError(f"{who}: a random transform needs a generator: call it as t(x, rng) with a "
                        f"numpy.random.Generator or an int seed")
    return check_generator(rng, f"{who}: rng")


def _real(v, who, low=0.0, high=None, low_open=False):
    if not isinstance(v, numbers.Real) or isinstance(v, bool) or not np.isfinite(v) \
            or (v <= low if low_open else v < low) or (high is not None and v > high):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{who} must be a finite number {bound}, got {v!r}")
    return float(v)


class Compose:
    """Apply ``transforms`` in order, each with the same generator."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: every transform must be callable, got {type(t).__name__}")

    def __call__(self, x, rng=None):
        for t in self.transforms:
            x = t(x, rng)
        return x

    def __repr__(self):
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class ToFloat:
    """``x.astype(dtype) * scale``: integer pixels (0..255) to floats in [0, 1] by default."""

    def __init__(self, scale: float = 1 / 255, dtype=np.float32):
        self.scale = _real(scale, "ToFloat: scale", low=0.0, low_open=True)
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise TypeError(f"ToFloat: dtype must be a float dtype, got {self.dtype}")

    def __call__(self, x, rng=None):
        x = _batch(x, "ToFloat", min_ndim=1)
        out = x.astype(self.dtype)
        out *= self.dtype.type(self.scale)
        return out

    def __repr__(self):
        return f"ToFloat(scale={self.scale:g}, dtype={self.dtype})"


class Normalize:
    """``(x - mean) / std`` per channel (axis -3); ``mean``/``std`` a number or one per channel."""

    def __init__(self, mean, std):
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError("Normalize: mean and std must be numbers or 1-d sequences (one per channel)")
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()) or (self.std <= 0).any():
            raise ValueError(f"Normalize: mean must be finite and std positive, got mean={self.mean.tolist()}, "
                             f"std={self.std.tolist()}")

    def __call__(self, x, rng=None):
        x = _batch(x, "Normalize")
        if x.dtype.kind != "f":
            raise TypeError(f"Normalize: expected a float batch (use ToFloat first), got dtype {x.dtype}")
        c = x.shape[-3]
        for name, v in (("mean", self.mean), ("std", self.std)):
            if v.size not in (1, c):
                raise ValueError(f"Normalize: {name} has {v.size} values, the batch has {c} channels "
                                 f"(axis -3 of shape {x.shape})")
        shape = (-1, 1, 1)
        return ((x - self.mean.astype(x.dtype).reshape(shape)) / self.std.astype(x.dtype).reshape(shape)
                ).astype(x.dtype, copy=False)

    def __repr__(self):
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """Pad each image by ``padding`` zeros on every side, then cut a random ``size``
    window (an int for square, or (h, w)) at an offset drawn per image."""

    def __init__(self, size, padding: int = 0):
        size = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
        if len(size) != 2 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1
                                     for s in size):
            raise ValueError(f"RandomCrop: size must be a positive int or a pair of them, got {size!r}")
        if not isinstance(padding, numbers.Integral) or isinstance(padding, bool) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be a non-negative int, got {padding!r}")
        self.size = (int(size[0]), int(size[1]))
        self.padding = int(padding)

    def __call__(self, x, rng=None):
        x = _batch(x, "RandomCrop")
        rng = _rng(rng, "RandomCrop")
        p, (h, w) = self.padding, self.size
        H, W = x.shape[-2] + 2 * p, x.shape[-1] + 2 * p
        if h > H or w > W:
            raise ValueError(f"RandomCrop: size {self.size} is larger than the padded image ({H}, {W})")
        padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(p, p), (p, p)]) if p else x
        n = x.shape[0]
        top = rng.integers(0, H - h + 1, n)
        left = rng.integers(0, W - w + 1, n)
        out = np.empty(x.shape[:-2] + (h, w), dtype=x.dtype)
        for i in range(n):
            out[i] = padded[i, ..., top[i]:top[i] + h, left[i]:left[i] + w]
        return out

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability ``p`` (drawn per image)."""

    def __init__(self, p: float = 0.5):
        self.p = _real(p, "RandomHorizontalFlip: p", 0.0, 1.0)

    def __call__(self, x, rng=None):
        x = _batch(x, "RandomHorizontalFlip")
        rng = _rng(rng, "RandomHorizontalFlip")
        flip = rng.random(x.shape[0]) < self.p
        out = x.copy()
        out[flip] = x[flip][..., ::-1]
        return out

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p:g})"


class GaussianNoise:
    """Add N(0, ``std``^2) noise to every value; ``clip=(lo, hi)`` bounds the result."""

    def __init__(self, std: float = 0.1, clip=None):
        self.std = _real(std, "GaussianNoise: std")
        if clip is not None:
            clip = tuple(float(c) for c in clip)
            if len(clip) != 2 or not clip[0] < clip[1]:
                raise ValueError(f"GaussianNoise: clip must be a pair (lo, hi) with lo < hi, got {clip!r}")
        self.clip = clip

    def __call__(self, x, rng=None):
        x = _batch(x, "GaussianNoise", min_ndim=1)
        if x.dtype.kind != "f":
            raise TypeError(f"GaussianNoise: expected a float batch (use ToFloat first), got dtype {x.dtype}")
        rng = _rng(rng, "GaussianNoise")
        out = x + rng.normal(0.0, self.std, x.shape).astype(x.dtype)
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out

    def __repr__(self):
        return f"GaussianNoise(std={self.std:g}, clip={self.clip})"
