"""Embedding: torch 2.13's, on pydl's ``embedding`` op (dense gradients)."""
from __future__ import annotations

from ..autograd import Tensor, no_grad
from . import functional as F
from . import init
from ._factory import empty_param, integer, place
from .module import Module
from .parameter import Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    """A table ``weight`` (num_embeddings, embedding_dim), initialised N(0, 1) with the
    ``padding_idx`` row zeroed; ``forward(indices)`` gathers its rows
    (``indices.shape + (embedding_dim,)``, any integer dtype). The padding row
    gets no gradient.

    Not offered (NotImplementedError): ``max_norm`` (torch renormalizes the rows
    in place), ``scale_grad_by_freq`` and ``sparse`` gradients.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False,
                 _weight=None, _freeze: bool = False, device=None, dtype=None):
        super().__init__()
        self.num_embeddings = integer("num_embeddings", num_embeddings, 0)
        self.embedding_dim = integer("embedding_dim", embedding_dim, 0)
        if padding_idx is not None:
            padding_idx = integer("padding_idx", padding_idx)
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"Padding_idx must be within num_embeddings: padding_idx={padding_idx}, "
                                 f"num_embeddings={self.num_embeddings}")
            padding_idx %= self.num_embeddings
        if max_norm is not None:
            raise NotImplementedError("Embedding(max_norm=...) is not supported by pydl (torch renormalizes "
                                      "the looked-up rows in place); pass max_norm=None")
        if scale_grad_by_freq:
            raise NotImplementedError("Embedding(scale_grad_by_freq=True) is not supported by pydl")
        if sparse:
            raise NotImplementedError("Embedding(sparse=True) is not supported by pydl: its gradients are dense")
        self.padding_idx = padding_idx
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = empty_param((self.num_embeddings, self.embedding_dim), dtype)
            self.weight.requires_grad = not _freeze
            self.reset_parameters()
        else:
            data = _weight.data if isinstance(_weight, Tensor) else _weight
            if tuple(data.shape) != (self.num_embeddings, self.embedding_dim):
                raise ValueError(f"Shape of weight does not match num_embeddings and embedding_dim: "
                                 f"expected {(self.num_embeddings, self.embedding_dim)}, got {tuple(data.shape)}")
            self.weight = Parameter(data, requires_grad=not _freeze)
        place(self, device)

    def reset_parameters(self):
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self):
        if self.padding_idx is not None:
            with no_grad():
                self.weight[self.padding_idx] = 0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        if self.norm_type != 2:
            s += f", norm_type={self.norm_type}"
        return s

    @classmethod
    def from_pretrained(cls, embeddings, freeze: bool = True, padding_idx=None, max_norm=None,
                        norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False):
        """An Embedding over ``embeddings`` (a 2-D Tensor or array, used without a copy);
        ``freeze`` stops its gradient."""
        data = embeddings.data if isinstance(embeddings, Tensor) else embeddings
        if data.ndim != 2:
            raise ValueError(f"Embeddings parameter is expected to be 2-dimensional, got shape {tuple(data.shape)}")
        rows, cols = data.shape
        return cls(rows, cols, padding_idx, max_norm, norm_type, scale_grad_by_freq, sparse,
                   _weight=data, _freeze=freeze)
