"""Dropout: torch 2.13's, on pydl's ``dropout`` op."""
from __future__ import annotations

import numbers

import numpy as np

from . import functional as F
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    """In training, zero each element with probability ``p`` and scale the rest by
    1/(1-p); in eval mode, the identity.

    Each call draws the mask's seed from ``generator`` (a ``numpy.random.Generator``,
    pydl's addition so that one layer can be seeded on its own) or, by default,
    pydl's generator (``pydl.manual_seed``). ``inplace`` is accepted and ignored.
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, generator=None):
        super().__init__()
        if not isinstance(p, numbers.Real) or isinstance(p, bool):
            raise TypeError(f"dropout probability must be a float, got {type(p).__name__} {p!r}")
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        if generator is not None and not isinstance(generator, np.random.Generator):
            raise TypeError(f"generator must be a numpy.random.Generator or None, got {type(generator).__name__}")
        self.p = p
        self.inplace = inplace
        self.generator = generator

    def forward(self, input):
        return F.dropout(input, self.p, self.training, self.inplace, generator=self.generator)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"
