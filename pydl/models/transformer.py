"""Transformer models: an encoder classifier and a tiny GPT-style causal decoder.

Both use learned token and position embeddings (``tok_embed``, ``pos_embed``) and
pydl's ``nn.TransformerEncoderLayer`` (``batch_first=True``), so their
state_dict keys are those of the same modules written in PyTorch.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..autograd import no_grad
from ..nn import functional as F
from .sequence import _sample, _tokens

__all__ = ["TransformerClassifier", "GPT"]


class _Embed(nn.Module):
    """Token + learned position embeddings of ids (B, T) -> (B, T, d_model)."""

    def __init__(self, vocab_size, d_model, max_len):
        super().__init__()
        self.vocab_size, self.max_len = int(vocab_size), int(max_len)
        self.tok_embed = nn.Embedding(vocab_size, d_model)
        self.pos_embed = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.tok_embed.weight, 0.0, 0.02)
        nn.init.normal_(self.pos_embed.weight, 0.0, 0.02)

    def embed(self, ids, what):
        ids = _tokens(what, ids, self.vocab_size)
        if ids.shape[1] > self.max_len:
            raise ValueError(f"{what}: sequence length {ids.shape[1]} exceeds max_len {self.max_len}")
        return self.tok_embed(ids) + self.pos_embed(np.arange(ids.shape[1]))


class TransformerClassifier(_Embed):
    """``embeddings -> encoder (num_layers post-norm layers) -> mean over positions -> head``.

    ``forward(ids (B, T)) -> logits (B, num_classes)``. ``dropout`` applies inside the
    encoder layers (0 by default: the fused attention kernel serves the step).
    """

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int | None = None, max_len: int = 128, dropout: float = 0.0):
        super().__init__(vocab_size, d_model, max_len)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward or 4 * d_model, dropout,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids, "TransformerClassifier")).mean(dim=1))


class GPT(_Embed):
    """A tiny GPT: ``embeddings -> blocks (pre-norm, GELU, causal self-attention) -> ln_f -> head``.

    ``forward(ids (B, T)) -> logits (B, T, V)``: position t sees positions <= t only.
    ``generate(prefix_ids, n)`` samples, keeping the last ``max_len`` ids as context.
    """

    def __init__(self, vocab_size: int, d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                 max_len: int = 64, dropout: float = 0.0):
        super().__init__(vocab_size, d_model, max_len)
        self.blocks = nn.ModuleList([
            nn.TransformerEncoderLayer(d_model, nhead, 4 * d_model, dropout, activation="gelu", batch_first=True,
                                       norm_first=True)
            for _ in range(num_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids):
        x = self.embed(ids, "GPT")
        for block in self.blocks:
            x = block(x, is_causal=True)
        return self.head(self.ln_f(x))

    def loss(self, ids, targets):
        """Mean cross-entropy of the next token: ``targets`` (B, T) are ``ids`` shifted left."""
        logits = self(ids)
        t = _tokens("GPT.loss targets", targets, self.vocab_size)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), t.reshape(-1))

    def generate(self, prefix_ids, n: int, temperature: float = 1.0, rng=None) -> np.ndarray:
        """``n`` ids sampled after ``prefix_ids`` (1-D), one at a time (greedy at temperature 0)."""
        rng = rng if rng is not None else np.random.default_rng()
        ids = list(np.asarray(prefix_ids, dtype=np.int64).reshape(-1))
        if not ids:
            raise ValueError("GPT.generate: prefix_ids must hold at least one id")
        was = self.training
        self.eval()
        with no_grad():
            for _ in range(int(n)):
                ctx = np.array([ids[-self.max_len:]], dtype=np.int64)
                ids.append(_sample(self(ctx).data[0, -1], temperature, rng))
        self.train(was)
        return np.array(ids[-int(n):] if n else [], dtype=np.int64)
