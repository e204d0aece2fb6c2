"""Sequence models: character-level RNN/LSTM/GRU language models and a GRU
encoder-decoder with attention, plus the character vocabulary they share.

Token tensors are int64 ``(B, T)`` (batch first); logits come back ``(B, T, V)``.
Parameter names are the attributes below (``embed``, ``rnn.weight_ih_l0``,
``head``, ...), so the same modules written in PyTorch load the state_dict.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..autograd import Tensor, cat, no_grad
from ..nn import functional as F

__all__ = ["CharVocab", "CharLM", "Seq2Seq"]


class CharVocab:
    """The characters of a text, sorted: ``encode(str) -> int64 array``, ``decode(ints) -> str``."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text:
            raise ValueError("CharVocab: text must be a non-empty str")
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        missing = sorted(set(text) - set(self.index))
        if missing:
            raise ValueError(f"CharVocab.encode: characters not in the vocabulary: {''.join(missing)!r}")
        return np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def _tokens(name, x, vocab_size):
    """``x`` as an int64 array (B, T) of ids in [0, vocab_size)."""
    a = x.data if isinstance(x, Tensor) else np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer token ids, got dtype {a.dtype}")
    if a.ndim != 2:
        raise ValueError(f"{name}: expected token ids of shape (batch, time), got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= vocab_size):
        raise ValueError(f"{name}: token ids must lie in [0, {vocab_size}), got [{a.min()}, {a.max()}]")
    return a.astype(np.int64, copy=False)


_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class CharLM(nn.Module):
    """A character-level language model: ``embed -> rnn (RNN, LSTM or GRU) -> head``.

    ``forward(ids (B, T), state=None) -> (logits (B, T, V), state)``; ``state`` is the
    recurrent layer's (h, or (h, c) for the LSTM), to carry across truncated
    back-propagation windows (detach it between windows). ``generate`` samples text.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden_size: int = 128, num_layers: int = 1,
                 cell: str = "lstm", dropout: float = 0.0):
        super().__init__()
        if cell not in _CELLS:
            raise ValueError(f"CharLM: cell must be one of {sorted(_CELLS)}, got {cell!r}")
        self.vocab_size, self.cell = int(vocab_size), cell
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.rnn = _CELLS[cell](embed_dim, hidden_size, num_layers, batch_first=True,
                                dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids, state=None):
        ids = _tokens("CharLM", ids, self.vocab_size)
        out, state = self.rnn(self.embed(ids), state)
        return self.head(out), state

    def loss(self, ids, targets, state=None):
        """Mean cross-entropy of predicting ``targets`` (B, T) from ``ids`` (B, T); (loss, state)."""
        logits, state = self(ids, state)
        t = _tokens("CharLM.loss targets", targets, self.vocab_size)
        return F.cross_entropy(logits.reshape(-1, self.vocab_size), t.reshape(-1)), state

    def generate(self, prefix_ids, n: int, temperature: float = 1.0, rng=None) -> np.ndarray:
        """``n`` ids sampled after ``prefix_ids`` (1-D), one at a time (greedy at temperature 0)."""
        rng = rng if rng is not None else np.random.default_rng()
        ids = np.asarray(prefix_ids, dtype=np.int64).reshape(1, -1)
        if ids.size == 0:
            raise ValueError("CharLM.generate: prefix_ids must hold at least one id")
        was = self.training
        self.eval()
        out = []
        with no_grad():
            logits, state = self(ids)
            for _ in range(int(n)):
                nxt = _sample(logits.data[0, -1], temperature, rng)
                out.append(nxt)
                logits, state = self(np.array([[nxt]], dtype=np.int64), state)
        self.train(was)
        return np.array(out, dtype=np.int64)


def _sample(logits: np.ndarray, temperature: float, rng) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


class Seq2Seq(nn.Module):
    """A GRU encoder-decoder with Luong ("general") attention, for toy tasks such as
    reversing or sorting a sequence.

    Encoder: ``enc_embed -> encoder`` (GRU) over the source. Decoder, one step at a
    time: ``dec_embed(previous token)`` and the previous attentional state enter
    ``decoder`` (a GRUCell); ``attn`` scores every encoder output against the new
    hidden state (``enc_out @ attn(h)``), softmax over the source gives the
    weights, their average of the encoder outputs the context; ``combine`` +
    tanh of [h, context] is the attentional state, ``head`` its logits.

    ``forward(src (B, S), tgt_in (B, T))`` -> logits (B, T, V) with teacher forcing
    (``tgt_in`` = ``bos`` then the target shifted right); ``greedy(src, steps)`` decodes.
    """

    def __init__(self, vocab_size: int, embed_dim: int = 32, hidden_size: int = 64, bos: int = 0):
        super().__init__()
        self.vocab_size, self.hidden_size, self.bos = int(vocab_size), int(hidden_size), int(bos)
        if not 0 <= self.bos < self.vocab_size:
            raise ValueError(f"Seq2Seq: bos must be a token id in [0, {vocab_size}), got {bos}")
        self.enc_embed = nn.Embedding(vocab_size, embed_dim)
        self.encoder = nn.GRU(embed_dim, hidden_size, batch_first=True)
        self.dec_embed = nn.Embedding(vocab_size, embed_dim)
        self.decoder = nn.GRUCell(embed_dim + hidden_size, hidden_size)
        self.attn = nn.Linear(hidden_size, hidden_size, bias=False)
        self.combine = nn.Linear(2 * hidden_size, hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size)

    def encode(self, src):
        src = _tokens("Seq2Seq src", src, self.vocab_size)
        out, h = self.encoder(self.enc_embed(src))
        return out, h[0]

    def step(self, token_emb, h, feed, enc_out):
        """One decoder step: (logits (B, V), new h, attentional state, attention weights (B, S))."""
        h = self.decoder(cat([token_emb, feed], dim=1), h)
        scores = (enc_out @ self.attn(h).unsqueeze(2)).squeeze(2)          # (B, S)
        weights = F.softmax(scores, dim=1)
        context = (weights.unsqueeze(1) @ enc_out).squeeze(1)              # (B, H)
        state = F.tanh(self.combine(cat([h, context], dim=1)))
        return self.head(state), h, state, weights

    def forward(self, src, tgt_in):
        tgt_in = _tokens("Seq2Seq tgt_in", tgt_in, self.vocab_size)
        enc_out, h = self.encode(src)
        emb = self.dec_embed(tgt_in)                                       # (B, T, E)
        feed = Tensor(np.zeros((h.shape[0], self.hidden_size), dtype=h.dtype))
        logits = []
        for t in range(tgt_in.shape[1]):
            lg, h, feed, _ = self.step(emb[:, t], h, feed, enc_out)
            logits.append(lg.unsqueeze(1))
        return cat(logits, dim=1)

    def greedy(self, src, steps: int):
        """Decode ``steps`` tokens greedily: (ids (B, steps), attention (B, steps, S))."""
        was = self.training
        self.eval()
        with no_grad():
            enc_out, h = self.encode(src)
            B = h.shape[0]
            tok = np.full(B, self.bos, dtype=np.int64)
            feed = Tensor(np.zeros((B, self.hidden_size), dtype=h.dtype))
            ids, attn = [], []
            for _ in range(int(steps)):
                lg, h, feed, w = self.step(self.dec_embed(tok), h, feed, enc_out)
                tok = lg.data.argmax(axis=1).astype(np.int64)
                ids.append(tok)
                attn.append(w.data)
        self.train(was)
        return np.stack(ids, axis=1), np.stack(attn, axis=1)


def shifted(targets: np.ndarray, bos: int) -> np.ndarray:
    """The decoder's teacher-forcing input: ``bos`` then ``targets`` without its last token."""
    targets = np.asarray(targets, dtype=np.int64)
    return np.concatenate([np.full((targets.shape[0], 1), bos, dtype=np.int64), targets[:, :-1]], axis=1)


def toy_sequences(task: str, n: int, length: int, vocab_size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(src, target), each (n, length), tokens in [1, vocab_size) (0 is kept for BOS):
    ``task`` "reverse" (target = src backwards) or "sort" (target = src sorted)."""
    if task not in ("reverse", "sort"):
        raise ValueError(f"toy_sequences: task must be 'reverse' or 'sort', got {task!r}")
    if vocab_size < 3:
        raise ValueError(f"toy_sequences: vocab_size must be >= 3 (BOS and two symbols), got {vocab_size}")
    src = rng.integers(1, vocab_size, size=(n, length)).astype(np.int64)
    tgt = src[:, ::-1].copy() if task == "reverse" else np.sort(src, axis=1)
    return src, tgt


__all__ += ["shifted", "toy_sequences"]
