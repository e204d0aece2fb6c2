"""``DataLoader``: batches of a data set, shuffled reproducibly, as ``pydl.Tensor`` s.

Epoch ``e`` of a loader seeded with ``s`` draws its order (and the random
transforms' numbers) from ``numpy.random.default_rng([s, e])``: every epoch is
shuffled differently, the same seed repeats the same epochs, and
``set_epoch(e)`` replays epoch ``e`` on its own (what a resumed run needs).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor
from .errors import check_positive_int

__all__ = ["DataLoader", "default_collate"]


def default_collate(samples):
    """Stack a list of samples into a batch: arrays and numbers are stacked along a new
    first axis; a sample that is a tuple/list is collated field by field (a tuple back)."""
    if not samples:
        raise ValueError("default_collate: no samples to collate")
    first = samples[0]
    if isinstance(first, (tuple, list)):
        if any(not isinstance(s, (tuple, list)) or len(s) != len(first) for s in samples):
            raise ValueError(f"default_collate: every sample must have {len(first)} fields like the first")
        return tuple(default_collate([s[i] for s in samples]) for i in range(len(first)))
    if isinstance(first, Tensor):
        samples = [s.numpy() if isinstance(s, Tensor) else s for s in samples]
    try:
        return np.stack([np.asarray(s) for s in samples])
    except ValueError as e:
        shapes = sorted({np.shape(s) for s in samples})
        raise ValueError(f"default_collate: samples of different shapes cannot be stacked: {shapes[:4]}") from e


def _base_seed(seed) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy % (1 << 63))
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(1 << 63))
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0:
        return int(seed)
    raise TypeError(f"DataLoader: seed must be a non-negative int, a numpy.random.Generator or None, got {seed!r}")


class DataLoader:
    """Iterate over ``dataset`` in batches.

    - ``batch_size``: samples per batch; ``drop_last`` drops a last, smaller batch.
    - ``shuffle``: a new order every epoch, drawn from ``seed`` (an int, a
      ``numpy.random.Generator`` -- one number is drawn from it here -- or None for
      fresh entropy). ``set_epoch(e)`` picks the epoch the next iteration runs.
    - ``collate_fn(list of samples) -> batch`` (default :func:`default_collate`:
      stacks NumPy samples). Without one, a data set with ``__getitems__`` hands
      over whole batches.
    - ``transform(x, rng)``: applied to each batch's inputs (the first field), a
      NumPy array, with the epoch's generator (see ``pydl.data.transforms``).
    - ``to_tensor``: yield ``pydl.Tensor`` s (default) or the NumPy arrays.

    A batch is a tuple (inputs, targets, ...) when samples are tuples, else one value.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, seed=None, drop_last: bool = False,
                 collate_fn=None, transform=None, to_tensor: bool = True):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset must define __len__ and __getitem__, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = check_positive_int(batch_size, "DataLoader: batch_size")
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {type(transform).__name__}")
        self.collate_fn = collate_fn
        self.transform = transform
        self.to_tensor = bool(to_tensor)
        self.seed = _base_seed(seed)
        self.epoch = 0

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """The next iteration runs epoch ``epoch`` (its order and transform draws)."""
        if not isinstance(epoch, numbers.Integral) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        n = len(self.dataset)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, n), self.batch_size):
            yield self._batch(order[start:start + self.batch_size], rng)

    def _batch(self, idx, rng):
        if self.collate_fn is None and hasattr(self.dataset, "__getitems__"):
            batch = self.dataset.__getitems__(idx)
        else:
            batch = (self.collate_fn or default_collate)([self.dataset[int(i)] for i in idx])
        single = not isinstance(batch, tuple)
        fields = [batch] if single else list(batch)
        if self.transform is not None:
            fields[0] = self.transform(fields[0], rng)
        if self.to_tensor:
            fields = [f if isinstance(f, Tensor) else Tensor(np.asarray(f)) for f in fields]
        return fields[0] if single else tuple(fields)

    def __repr__(self):
        return (f"DataLoader({type(self.dataset).__name__} of {len(self.dataset)}, batch_size={self.batch_size}, "
                f"shuffle={self.shuffle}, drop_last={self.drop_last})")
