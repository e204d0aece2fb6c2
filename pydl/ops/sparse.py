"""Lookups into a table: ``embedding``.

Semantics follow ``torch.nn.functional.embedding`` (the "sparse functions"
of torch): ``embedding(input, weight, padding_idx)`` gathers rows of
``weight`` (num_embeddings, embedding_dim) at the integer indices ``input``
(any integer dtype, any shape), giving ``input.shape + (embedding_dim,)``.
Indices are checked, once, to lie in [0, num_embeddings).

Only ``weight`` is differentiated; its gradient is dense (torch's
``sparse=False``): the upstream rows summed into the rows they came from
(an index that repeats gets the sum of its rows), the ``padding_idx`` row
left at 0. ``max_norm`` (which renormalizes the table in place) is not
offered.

A gather does no arithmetic: the benchmark reports GB/s over the bytes a
forward must move (the indices, the rows gathered, the output written).
"""
from __future__ import annotations

import numpy as np

from ..registry import BadCase, Case, defop
from . import _checks as ck

# the forward copies; the backward sums the few rows that share an index
TOL = {"float32": (2e-6, 1e-6), "float64": (1e-13, 1e-14)}


def _embedding_shape(a):
    return tuple(a["input"].shape) + (a["weight"].shape[1],)


def _embedding_bytes(a):
    out = int(np.prod(_embedding_shape(a))) * a["weight"].itemsize
    return a["input"].nbytes + 2 * out


def _embedding_cases(rng, dtype):
    def c(shape, num, dim, index_dtype=np.int64, padding_idx=None):
        idx = rng.integers(0, num, shape).astype(index_dtype)
        if padding_idx is not None and idx.size:
            idx.flat[::3] = padding_idx % num   # the padding row is used, and gets no gradient
        w = np.asarray(rng.standard_normal((num, dim)), dtype)
        return Case(f"{'x'.join(map(str, shape)) or 'scalar'}_{num}x{dim}_{np.dtype(index_dtype).name}"
                    + ("" if padding_idx is None else f"_pad{padding_idx}"),
                    dict(input=idx, weight=w, padding_idx=padding_idx))

    return [c((5,), 10, 4), c((3, 7), 6, 3),                            # repeats (21 indices, 6 rows)
            c((2, 3, 4), 5, 8, np.int32), c((4, 6), 300, 5, np.uint8),
            c((3, 5), 9, 2, np.int16, padding_idx=0), c((6,), 7, 3, np.uint64, padding_idx=-1),
            c((2, 9), 4, 6, np.int8, padding_idx=2), c((), 8, 5), c((0,), 5, 3), c((2, 0), 5, 3),
            c((40,), 1, 7)]                                            # one row, every index the same


def _embedding_bad(rng):
    w = rng.standard_normal((5, 3)).astype(np.float32)
    idx = np.array([[0, 4], [2, 1]])
    return [BadCase(i, dict(dict(input=idx, weight=w), **changes), exc, match) for i, changes, exc, match in [
        ("index = num_embeddings", dict(input=np.array([0, 5])), ValueError, "input"),
        ("index < 0", dict(input=np.array([[0, -1]], np.int8)), ValueError, "input"),
        ("float indices", dict(input=idx.astype(np.float32)), TypeError, "input"),
        ("bool indices", dict(input=idx > 1), TypeError, "input"),
        ("index list", dict(input=[0, 1]), TypeError, "input"),
        ("weight 1-D", dict(weight=w[0]), ValueError, "weight"),
        ("weight 3-D", dict(weight=w[None]), ValueError, "weight"),
        ("padding_idx = num_embeddings", dict(padding_idx=5), ValueError, "padding_idx"),
        ("padding_idx < -num_embeddings", dict(padding_idx=-6), ValueError, "padding_idx"),
        ("padding_idx float", dict(padding_idx=1.0), TypeError, "padding_idx"),
    ]]


def _embedding_bench(rng, dtype, quick=False):
    """A language model's token table: GPT-2-like 50k x 512 with a (64, 128) batch of
    tokens (quick), and a PTB-sized 10k x 650 table with (20, 35) tokens."""
    def c(num, dim, shape, tags=()):
        w = rng.standard_normal((num, dim), dtype=np.float32).astype(dtype, copy=False)
        return Case(f"{num}x{dim}_idx{'x'.join(map(str, shape))}",
                    dict(input=rng.integers(0, num, shape), weight=w), tags=tags)

    return [c(50000, 512, (64, 128), ("quick",))] + ([] if quick else [c(10000, 650, (20, 35))])


def _embedding_tol_scale(a):
    """The weight gradient's longest sum over 4 (TOL holds for the few rows per index of the
    conformance cases): a float32 sum of k rows errs in proportion to k, whoever adds them."""
    idx = a["input"]
    return np.bincount(idx.reshape(-1).astype(np.intp)).max() / 4 if idx.size else 1.0


# fd_skip: the padding row's gradient is 0 by definition, not by finite differences (the cases
# without padding_idx get their finite-difference check in tests/test_op_frictions.py)
@defop(family="sparse", differentiable=("weight",), out_shape=_embedding_shape, flops=lambda a: 0,
       bytes=_embedding_bytes, tol=TOL, tol_scale=_embedding_tol_scale, cases=_embedding_cases, bad_cases=_embedding_bad, fd_skip=("weight",),
       torch=lambda torch, F, a: F.embedding(a["input"].long(), a["weight"], padding_idx=a["padding_idx"]),
       bench=_embedding_bench)
def embedding(input, weight, padding_idx=None):
    """Rows of ``weight`` (num_embeddings, embedding_dim) at the indices ``input``
    (any integer dtype and shape, in [0, num_embeddings)): ``input.shape + (embedding_dim,)``.

    ``padding_idx`` (negative counts from the end, normalized to >= 0) names a
    row that gets no gradient. Only ``weight`` is differentiated.
    """
    weight = ck.array("weight", weight, ndim=2, layout="(num_embeddings, embedding_dim)")
    num = weight.shape[0]
    input = ck.indices("input", input, num, f"indices of weight's {num} rows")
    if padding_idx is not None:
        padding_idx = ck.integer("padding_idx", padding_idx, min=-num, max=num - 1) % num
    return dict(input=input, weight=weight, padding_idx=padding_idx)
