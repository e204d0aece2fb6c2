"""Every bad-input probe pydl runs, enumerated in one place (issue 14, item 4).

A probe is one bad call of one op on one CPU backend that must raise a documented
exception (``TypeError``, ``ValueError`` or ``MemoryError``) whose message names the
op and the argument, before any kernel runs. Three sources:

- ``spec``: each op spec's ``bad_cases`` (pydl/ops/*.py);
- ``generic``: the bad inputs tests/test_conformance.py gives every op (wrong dtype,
  a list, float16, big-endian, mixed float dtypes);
- ``hostile``: :func:`hostile` here: absurd hyper-parameters (stride 2**40, kernel 0,
  negative padding, dilation 0, groups not dividing the channels, num_heads 0), NaN,
  inf, bool, str, floats and 0-d arrays where ints are expected, and outputs or inputs
  whose size exceeds any machine's memory or int64 (zero-stride broadcast views of a
  few bytes, so nothing large is ever allocated).

``python tests/probes.py`` runs them all and prints ``N probes, F failures`` (the
figure issue 14 asks for); tests/test_hostile.py runs the hostile ones under pytest
(the spec and generic ones run in tests/test_conformance.py).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pydl import backends, registry

BIG = 2 ** 40          # a hyper-parameter no input can need


@dataclass
class Probe:
    id: str
    op: str
    make: Callable[[], dict]   # the keyword arguments (made lazily: some are views of huge shapes)
    exc: type
    match: str                 # text the message must contain: the argument's name
    source: str = "hostile"


def _f(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape).astype(dtype) + 0.5


def _wide(shape, dtype=np.float32):
    """A read-only zero-stride view of ``shape`` over a single element: any size, no memory."""
    return np.broadcast_to(np.ones((), dtype), shape)


#: where an int is expected: what must be refused, and how
NOT_INTS = [
    ("nan", float("nan"), TypeError), ("inf", float("inf"), TypeError), ("float", 2.0, TypeError),
    ("bool", True, TypeError), ("str", "2", TypeError), ("0-d array", np.array(2), TypeError),
    ("None", None, TypeError), ("complex", 2j, TypeError),
]


def _window_probes(op, base, names=("kernel_size", "stride", "padding", "dilation"), extra=()):
    """Hostile values for int-pair hyper-parameters of ``op`` (``base()`` -> good args)."""
    out = []
    for name in names:
        for label, v, exc in NOT_INTS:
            if name == "stride" and op in ("max_pool2d", "avg_pool2d") and v is None:
                continue  # stride=None is the pools' default (the kernel size)
            if name == "padding" and op == "conv2d" and isinstance(v, str):
                exc = ValueError  # a str is one of conv2d's forms ("same", "valid"): a bad value
            out.append(Probe(f"{name} {label}", op, lambda n=name, v=v: dict(base(), **{n: v}), exc, name))
        out.append(Probe(f"{name} 2**40", op, lambda n=name: dict(base(), **{n: BIG}), ValueError, name))
        out.append(Probe(f"{name} (1, 2**63)", op, lambda n=name: dict(base(), **{n: (1, 2 ** 63)}), ValueError, name))
        out.append(Probe(f"{name} -2**40", op, lambda n=name: dict(base(), **{n: -BIG}), ValueError, name))
        out.append(Probe(f"{name} (1, nan)", op, lambda n=name: dict(base(), **{n: (1, float("nan"))}), TypeError, name))
        if not (name == "stride" and op in ("max_pool2d", "avg_pool2d")):  # stride=() is torch's default too
            out.append(Probe(f"{name} empty", op, lambda n=name: dict(base(), **{n: ()}), TypeError, name))
    return out + list(extra)


def hostile() -> list[Probe]:
    """The hostile probes (each runs on every CPU backend implementing the op)."""
    P = Probe
    x4, w4 = _f(2, 4, 6, 6), _f(3, 4, 3, 3)
    conv = lambda: dict(x=x4, weight=w4, bias=_f(3))  # noqa: E731
    probes = _window_probes("conv2d", conv, ("stride", "padding", "dilation"), [
        P("groups 2**40", "conv2d", lambda: dict(conv(), groups=BIG), ValueError, "groups"),
        P("groups -1", "conv2d", lambda: dict(conv(), groups=-1), ValueError, "groups"),
        P("groups 3 (C=4)", "conv2d", lambda: dict(conv(), weight=_f(3, 1, 3, 3), groups=3), ValueError, "groups"),
        P("groups nan", "conv2d", lambda: dict(conv(), groups=float("nan")), TypeError, "groups"),
        P("groups True", "conv2d", lambda: dict(conv(), groups=True), TypeError, "groups"),
        P("groups 0-d array", "conv2d", lambda: dict(conv(), groups=np.array(1)), TypeError, "groups"),
        P("kernel 0", "conv2d", lambda: dict(conv(), weight=_f(3, 4, 0, 3)), ValueError, "weight"),
        P("K 0", "conv2d", lambda: dict(x=x4, weight=_f(0, 4, 3, 3)), ValueError, "weight"),
        P("weight 5-D", "conv2d", lambda: dict(conv(), weight=_f(3, 4, 3, 3, 1)), ValueError, "weight"),
        P("bias 0-d", "conv2d", lambda: dict(conv(), bias=np.float32(1)), TypeError, "bias"),
        P("bias int", "conv2d", lambda: dict(conv(), bias=np.ones(3, np.int64)), TypeError, "bias"),
        P("padding 'full'", "conv2d", lambda: dict(conv(), padding="FULL"), ValueError, "padding"),
        P("padding 2**20: output beyond memory", "conv2d", lambda: dict(conv(), padding=2 ** 20),
          MemoryError, "padding"),
        P("padding 2**30: output beyond int64", "conv2d", lambda: dict(conv(), padding=2 ** 30),
          ValueError, "padding"),
        P("x broadcast beyond memory", "conv2d",
          lambda: dict(x=_wide((2 ** 20, 4, 2 ** 10, 2 ** 10)), weight=w4), MemoryError, "x"),
        P("K beyond memory", "conv2d",
          lambda: dict(x=_wide((64, 1, 2 ** 12, 2 ** 12)), weight=_wide((2 ** 14, 1, 1, 1))),
          MemoryError, "x"),
    ])
    im = lambda: dict(x=x4, kernel_size=2)  # noqa: E731
    probes += _window_probes("im2col", im, extra=[
        P("padding 2**20: columns beyond memory", "im2col", lambda: dict(im(), padding=2 ** 20),
          MemoryError, "padding"),
        P("kernel (1, 2**40)", "im2col", lambda: dict(x=x4, kernel_size=(1, BIG)), ValueError, "kernel_size"),
    ])
    cols = _f(2, 16, 25)
    c2i = lambda: dict(cols=cols, output_size=(6, 6), kernel_size=2)  # noqa: E731
    probes += _window_probes("col2im", c2i, ("kernel_size", "stride", "padding", "dilation", "output_size"), [
        P("output_size (2**40, 2**40)", "col2im",
          lambda: dict(cols=cols, output_size=(BIG, BIG), kernel_size=2), ValueError, "output_size"),
    ])
    for op in ("max_pool2d", "avg_pool2d"):
        pool = lambda: dict(x=x4, kernel_size=2)  # noqa: E731
        names = ("kernel_size", "stride", "padding") + (("dilation",) if op == "max_pool2d" else ())
        probes += _window_probes(op, pool, names, [
            P("ceil_mode 'yes'", op, lambda: dict(pool(), ceil_mode="yes"), TypeError, "ceil_mode"),
            P("ceil_mode 1", op, lambda: dict(pool(), ceil_mode=1), TypeError, "ceil_mode"),
            P("x broadcast beyond memory", op, lambda: dict(x=_wide((2 ** 30, 4, 64, 64)), kernel_size=2),
              MemoryError, "x"),
        ])
    probes += [
        P("return_indices 1", "max_pool2d", lambda: dict(x=x4, kernel_size=2, return_indices=1), TypeError,
          "return_indices"),
        P("divisor_override 0", "avg_pool2d", lambda: dict(x=x4, kernel_size=2, divisor_override=0),
          ValueError, "divisor_override"),
        P("divisor_override 2**40", "avg_pool2d", lambda: dict(x=x4, kernel_size=2, divisor_override=BIG),
          ValueError, "divisor_override"),
        P("divisor_override 1.5", "avg_pool2d", lambda: dict(x=x4, kernel_size=2, divisor_override=1.5),
          TypeError, "divisor_override"),
        P("count_include_pad None", "avg_pool2d", lambda: dict(x=x4, kernel_size=2, count_include_pad=None),
          TypeError, "count_include_pad"),
    ]
    probes += [
        P(f"output_size {label}", "adaptive_avg_pool2d", lambda v=v: dict(x=x4, output_size=v), exc, "output_size")
        for label, v, exc in NOT_INTS if v is not None
    ] + [
        P("output_size -1", "adaptive_avg_pool2d", lambda: dict(x=x4, output_size=-1), ValueError, "output_size"),
        P("output_size (2**20, 2**20): beyond memory", "adaptive_avg_pool2d",
          lambda: dict(x=x4, output_size=(2 ** 20, 2 ** 20)), MemoryError, "output_size"),
        P("output_size 2**40", "adaptive_avg_pool2d", lambda: dict(x=x4, output_size=BIG), ValueError,
          "output_size"),
        P("output_size triple", "adaptive_avg_pool2d", lambda: dict(x=x4, output_size=(2, 2, 2)), TypeError,
          "output_size"),
    ]
    # gemm: products of broadcast (zero-stride) operands whose result no machine holds
    a, b = _f(4, 5), _f(5, 3)
    probes += [
        P("output beyond memory", "matmul", lambda: dict(a=_wide((2 ** 20, 1)), b=_wide((1, 2 ** 20))),
          MemoryError, "a"),
        P("batch beyond memory", "matmul", lambda: dict(a=_wide((2 ** 40, 2, 2)), b=_wide((2 ** 40, 2, 2))),
          MemoryError, "a"),
        P("broadcast batches beyond memory", "matmul",
          lambda: dict(a=_wide((2 ** 20, 1, 2, 2)), b=_wide((1, 2 ** 20, 2, 2))), MemoryError, "a"),
        P("a 0-d", "matmul", lambda: dict(a=np.float32(1), b=b), TypeError, "a"),
        P("b python float", "matmul", lambda: dict(a=a, b=1.0), TypeError, "b"),
        P("b bool", "matmul", lambda: dict(a=a, b=b.astype(bool)), TypeError, "b"),
        P("b object", "matmul", lambda: dict(a=a, b=b.astype(object)), TypeError, "b"),
        P("b complex", "matmul", lambda: dict(a=a, b=b.astype(np.complex64)), TypeError, "b"),
        P("output beyond memory", "linear", lambda: dict(x=_wide((2 ** 20, 1)), weight=_wide((2 ** 20, 1))),
          MemoryError, "x"),
        P("activation None-string", "linear", lambda: dict(x=a, weight=_f(3, 5), activation="None"),
          ValueError, "activation"),
        P("activation bool", "linear", lambda: dict(x=a, weight=_f(3, 5), activation=True), TypeError,
          "activation"),
        P("hidden size mismatch", "linear", lambda: dict(x=a, weight=_f(3, 4)), ValueError, "weight"),
    ]
    # elementwise
    x2 = _f(3, 4)
    for op in ("relu", "leaky_relu", "elu", "gelu", "sigmoid", "tanh", "softmax", "log_softmax"):
        probes += [
            P("x broadcast beyond memory", op, lambda: dict(x=_wide((2 ** 40,))), MemoryError, "x"),
            P("x int8", op, lambda: dict(x=x2.astype(np.int8)), TypeError, "x"),
            P("x bool", op, lambda: dict(x=x2 > 0), TypeError, "x"),
            P("x python float", op, lambda: dict(x=1.5), TypeError, "x"),
        ]
    for op in ("relu", "leaky_relu", "elu"):
        probes += [
            P("inplace True", op, lambda: dict(x=x2, inplace=True), ValueError, "inplace"),
            P("inplace 1", op, lambda: dict(x=x2, inplace=1), TypeError, "inplace"),
        ]
    for op, name in (("leaky_relu", "negative_slope"), ("elu", "alpha")):
        probes += [
            P(f"{name} nan", op, lambda n=name: dict(x=x2, **{n: float("nan")}), ValueError, name),
            P(f"{name} str", op, lambda n=name: dict(x=x2, **{n: "0.1"}), TypeError, name),
            P(f"{name} bool", op, lambda n=name: dict(x=x2, **{n: True}), TypeError, name),
            P(f"{name} array", op, lambda n=name: dict(x=x2, **{n: np.ones(2)}), TypeError, name),
        ]
    probes += [P("approximate 1", "gelu", lambda: dict(x=x2, approximate=1), TypeError, "approximate"),
               P("approximate 'fast'", "gelu", lambda: dict(x=x2, approximate="fast"), ValueError, "approximate")]
    for op in ("softmax", "log_softmax"):
        probes += [
            P("dim 2**40", op, lambda: dict(x=x2, dim=BIG), ValueError, "dim"),
            P("dim -3", op, lambda: dict(x=x2, dim=-3), ValueError, "dim"),
            P("dim 1.0", op, lambda: dict(x=x2, dim=1.0), TypeError, "dim"),
            P("dim True", op, lambda: dict(x=x2, dim=True), TypeError, "dim"),
            P("dim nan", op, lambda: dict(x=x2, dim=float("nan")), TypeError, "dim"),
            P("dim 0-d array", op, lambda: dict(x=x2, dim=np.array(1)), TypeError, "dim"),
            P("dim None", op, lambda: dict(x=x2, dim=None), TypeError, "dim"),
            P("dtype int32", op, lambda: dict(x=x2, dtype=np.int32), TypeError, "dtype"),
            P("dtype 'half'", op, lambda: dict(x=x2, dtype="float16"), TypeError, "dtype"),
            P("dtype bogus", op, lambda: dict(x=x2, dtype="no-such-dtype"), TypeError, "dtype"),
        ]
    # rnn: hidden sizes that disagree, states of the wrong batch, hyper-parameters of the wrong kind
    T, B, I, H = 3, 2, 4, 5
    for op, G, states in (("rnn_cell", 1, ("h",)), ("lstm_cell", 4, ("h", "c")), ("gru_cell", 3, ("h",)),
                          ("rnn", 1, ("h0",)), ("lstm", 4, ("h0", "c0")), ("gru", 3, ("h0",))):
        seq = not op.endswith("_cell")

        def good(G=G, states=states, seq=seq):
            return dict(x=_f(T, B, I) if seq else _f(B, I), w_ih=_f(G * H, I), w_hh=_f(G * H, H),
                        b_ih=_f(G * H), b_hh=_f(G * H), **{k: _f(B, H) for k in states})

        probes += [
            P("hidden size mismatch", op, lambda g=good, G=G: dict(g(), w_hh=_f(G * (H + 1), H + 1)),
              ValueError, "w_ih"),
            P("w_hh not square", op, lambda g=good, G=G: dict(g(), w_hh=_f(G * H, H - 1)), ValueError, "w_hh"),
            P(f"{states[0]} batch mismatch", op, lambda g=good, s=states[0]: dict(g(), **{s: _f(B + 1, H)}),
              ValueError, states[0]),
            P("w_ih int", op, lambda g=good: dict(g(), w_ih=g()["w_ih"].astype(np.int32)), TypeError, "w_ih"),
            P("x broadcast beyond memory", op, lambda g=good, seq=seq, states=states: dict(
                g(), x=_wide((2 ** 40, B, I) if seq else (2 ** 40, I)), **{k: None for k in states}),
              MemoryError, "x"),
            P("outputs beyond memory", op, lambda g=good, seq=seq, states=states, G=G: dict(
                x=_wide((2 ** 24, 64, 1) if seq else (2 ** 30, 1)), w_ih=_wide((G * 2 ** 10, 1)),
                w_hh=_wide((G * 2 ** 10, 2 ** 10)), **{k: None for k in states}), MemoryError, "w_hh"),
        ]
        if op in ("rnn", "rnn_cell"):
            probes += [P("nonlinearity 'sigmoid'", op, lambda g=good: dict(g(), nonlinearity="sigmoid"),
                         ValueError, "nonlinearity"),
                       P("nonlinearity 0", op, lambda g=good: dict(g(), nonlinearity=0), TypeError,
                         "nonlinearity")]
    # cross_entropy (numba kernel): hostile targets and hyper-parameters
    logits, tgt = _f(4, 5), np.array([0, 1, 4, 2])
    ce = lambda: dict(input=logits, target=tgt)  # noqa: E731
    probes += [
        P("target 2**40", "cross_entropy", lambda: dict(ce(), target=np.array([0, 1, BIG, 2])), ValueError, "target"),
        P("target -5", "cross_entropy", lambda: dict(ce(), target=np.array([0, 1, -5, 2])), ValueError, "target"),
        P("target float list", "cross_entropy", lambda: dict(ce(), target=[0.0, 1.0, 2.0, 3.0]), TypeError,
          "target"),
        P("target bool", "cross_entropy", lambda: dict(ce(), target=tgt > 1), TypeError, "target"),
        P("ignore_index nan", "cross_entropy", lambda: dict(ce(), ignore_index=float("nan")), TypeError,
          "ignore_index"),
        P("ignore_index 2**70", "cross_entropy", lambda: dict(ce(), ignore_index=2 ** 70), ValueError,
          "ignore_index"),
        P("label_smoothing nan", "cross_entropy", lambda: dict(ce(), label_smoothing=float("nan")), ValueError,
          "label_smoothing"),
        P("label_smoothing 2", "cross_entropy", lambda: dict(ce(), label_smoothing=2.0), ValueError,
          "label_smoothing"),
        P("reduction None", "cross_entropy", lambda: dict(ce(), reduction=None), TypeError, "reduction"),
        P("weight wrong length", "cross_entropy", lambda: dict(ce(), weight=_f(4)), ValueError, "weight"),
    ]
    # attention (num_heads, head sizes)
    E, L = 8, 3
    mha = lambda: dict(query=_f(2, L, E), key=_f(2, L, E), value=_f(2, L, E), num_heads=2,  # noqa: E731
                       in_proj_weight=_f(3 * E, E), out_proj_weight=_f(E, E))
    probes += [
        P(f"num_heads {label}", "multi_head_attention", lambda v=v: dict(mha(), num_heads=v), exc, "num_heads")
        for label, v, exc in NOT_INTS
    ] + [
        P("num_heads 0", "multi_head_attention", lambda: dict(mha(), num_heads=0), ValueError, "num_heads"),
        P("num_heads 3 (E=8)", "multi_head_attention", lambda: dict(mha(), num_heads=3), ValueError, "num_heads"),
        P("num_heads 2**40", "multi_head_attention", lambda: dict(mha(), num_heads=BIG), ValueError, "num_heads"),
        P("num_heads -2", "multi_head_attention", lambda: dict(mha(), num_heads=-2), ValueError, "num_heads"),
        P("hidden size mismatch", "multi_head_attention", lambda: dict(mha(), out_proj_weight=_f(E + 1, E + 1)),
          ValueError, "out_proj_weight"),
    ]
    q = _f(2, 2, L, 4)
    sdpa = lambda: dict(q=q, k=q, v=q)  # noqa: E731
    probes += [
        P("scale nan", "scaled_dot_product_attention", lambda: dict(sdpa(), scale=float("nan")), ValueError, "scale"),
        P("scale str", "scaled_dot_product_attention", lambda: dict(sdpa(), scale="1"), TypeError, "scale"),
        P("dropout_p 2", "scaled_dot_product_attention", lambda: dict(sdpa(), dropout_p=2.0), ValueError,
          "dropout_p"),
        P("is_causal 1", "scaled_dot_product_attention", lambda: dict(sdpa(), is_causal=1), TypeError, "is_causal"),
        P("q broadcast beyond memory", "scaled_dot_product_attention",
          lambda: dict(q=_wide((1, 1, 2 ** 40, 4)), k=q, v=q), MemoryError, "q"),
    ]
    # norms: hyper-parameters out of range or of the wrong kind, inputs beyond memory
    xn = _f(2, 4, 3, 3)
    c4 = lambda: dict(weight=_f(4), bias=_f(4))  # noqa: E731
    probes += [
        P("normalized_shape 2**40", "layer_norm", lambda: dict(x=xn, normalized_shape=(BIG,)), ValueError,
          "normalized_shape"),
        P("normalized_shape 2.0", "layer_norm", lambda: dict(x=xn, normalized_shape=(2.0,)), TypeError,
          "normalized_shape"),
        P("eps nan", "layer_norm", lambda: dict(x=xn, normalized_shape=(3,), eps=float("nan")), ValueError, "eps"),
        P("x beyond memory", "layer_norm", lambda: dict(x=_wide((2 ** 40, 3)), normalized_shape=(3,)),
          MemoryError, "x"),
        P("num_groups 0", "group_norm", lambda: dict(x=xn, num_groups=0, **c4()), ValueError, "num_groups"),
        P("num_groups 2**40", "group_norm", lambda: dict(x=xn, num_groups=BIG, **c4()), ValueError, "num_groups"),
        P("num_groups 3 (C=4)", "group_norm", lambda: dict(x=xn, num_groups=3, **c4()), ValueError, "num_groups"),
        P("num_groups 2.0", "group_norm", lambda: dict(x=xn, num_groups=2.0, **c4()), TypeError, "num_groups"),
        P("momentum nan", "batch_norm", lambda: dict(x=xn, running_mean=np.zeros(4, np.float32),
                                                      running_var=np.ones(4, np.float32), training=True,
                                                      momentum=float("nan")), ValueError, "momentum"),
        P("training 'yes'", "batch_norm", lambda: dict(x=xn, running_mean=np.zeros(4, np.float32),
                                                        running_var=np.ones(4, np.float32), training="yes"),
          TypeError, "training"),
        P("running_mean wrong length", "batch_norm", lambda: dict(x=xn, running_mean=np.zeros(5, np.float32),
                                                                   running_var=np.ones(5, np.float32)),
          ValueError, "running_mean"),
        P("x beyond memory", "batch_norm", lambda: dict(x=_wide((2 ** 30, 4, 2 ** 10)), training=True),
          MemoryError, "x"),
        P("eps str", "instance_norm", lambda: dict(x=xn, eps="1e-5"), TypeError, "eps"),
        P("use_input_stats 1", "instance_norm", lambda: dict(x=xn, use_input_stats=1), TypeError,
          "use_input_stats"),
        P("weight wrong length", "instance_norm", lambda: dict(x=xn, weight=_f(5), bias=_f(5)), ValueError,
          "weight"),
        P("size 0", "local_response_norm", lambda: dict(x=xn, size=0), ValueError, "size"),
        P("size 2**40", "local_response_norm", lambda: dict(x=xn, size=BIG), ValueError, "size"),
        P("size 2.0", "local_response_norm", lambda: dict(x=xn, size=2.0), TypeError, "size"),
        P("beta nan", "local_response_norm", lambda: dict(x=xn, size=3, beta=float("nan")), ValueError, "beta"),
    ]
    # losses: mismatched targets, reductions, hyper-parameters, inputs beyond memory
    a, t = _f(4, 5), _f(4, 5, seed=1)
    p01 = lambda: np.clip(_f(4, 5) * 0.3, 0.01, 0.99)  # noqa: E731
    for op in ("mse_loss", "l1_loss", "kl_div", "binary_cross_entropy", "binary_cross_entropy_with_logits"):
        good = (lambda: dict(input=p01(), target=p01())) if op == "binary_cross_entropy" else (
            lambda: dict(input=a, target=t))
        probes += [
            P("reduction 'avg'", op, lambda g=good: dict(g(), reduction="avg"), ValueError, "reduction"),
            P("reduction 1", op, lambda g=good: dict(g(), reduction=1), TypeError, "reduction"),
            P("target shape mismatch", op, lambda g=good: dict(g(), target=_f(4, 6)), ValueError, "target"),
            P("target int", op, lambda g=good: dict(g(), target=np.ones((4, 5), np.int32)), TypeError, "target"),
            P("input beyond memory", op, lambda: dict(input=_wide((2 ** 40, 5)), target=_wide((2 ** 40, 5))),
              MemoryError, "input"),
        ]
    probes += [
        P("var negative", "gaussian_nll_loss", lambda: dict(input=a, target=t, var=-np.ones((4, 5), np.float32)),
          ValueError, "var"),
        P("eps nan", "gaussian_nll_loss", lambda: dict(input=a, target=t, var=np.ones((4, 5), np.float32),
                                                        eps=float("nan")), ValueError, "eps"),
        P("full 'no'", "gaussian_nll_loss", lambda: dict(input=a, target=t, var=np.ones((4, 5), np.float32),
                                                          full="no"), TypeError, "full"),
        P("target 2**40", "nll_loss", lambda: dict(input=a, target=np.array([0, 1, BIG, 2])), ValueError, "target"),
        P("ignore_index 2**70", "nll_loss", lambda: dict(input=a, target=np.array([0, 1, 2, 3]),
                                                          ignore_index=2 ** 70), ValueError, "ignore_index"),
        P("weight wrong length", "nll_loss", lambda: dict(input=a, target=np.array([0, 1, 2, 3]), weight=_f(4)),
          ValueError, "weight"),
        P("log_target 'yes'", "kl_div", lambda: dict(input=a, target=t, log_target="yes"), TypeError, "log_target"),
        P("pos_weight wrong length", "binary_cross_entropy_with_logits",
          lambda: dict(input=a, target=p01(), pos_weight=_f(6)), ValueError, "pos_weight"),
        P("input outside [0, 1]", "binary_cross_entropy", lambda: dict(input=a * 4, target=p01()), ValueError,
          "input"),
    ]
    # dropout: probability, seed, mask
    xd = _f(4, 5)
    probes += [
        P("p 1.5", "dropout", lambda: dict(x=xd, p=1.5, seed=1), ValueError, "p"),
        P("p nan", "dropout", lambda: dict(x=xd, p=float("nan"), seed=1), ValueError, "p"),
        P("seed -1", "dropout", lambda: dict(x=xd, p=0.5, seed=-1), ValueError, "seed"),
        P("seed 2**70", "dropout", lambda: dict(x=xd, p=0.5, seed=2 ** 70), ValueError, "seed"),
        P("seed 1.0", "dropout", lambda: dict(x=xd, p=0.5, seed=1.0), TypeError, "seed"),
        P("mask wrong shape", "dropout", lambda: dict(x=xd, p=0.5, mask=np.ones((4, 6), bool)), ValueError, "mask"),
        P("x beyond memory", "dropout", lambda: dict(x=_wide((2 ** 40, 5)), p=0.5, seed=1), MemoryError, "x"),
    ]
    # embedding: indices outside the table (however wide their dtype), tables beyond memory
    we, ie = _f(6, 4), np.array([[0, 5], [3, 1]])
    probes += [
        P("index 2**40", "embedding", lambda: dict(input=np.array([0, BIG]), weight=we), ValueError, "input"),
        P("index 2**63 uint64", "embedding", lambda: dict(input=np.array([1, 2 ** 63], np.uint64), weight=we),
          ValueError, "input"),
        P("index -128 int8", "embedding", lambda: dict(input=np.array([-128, 0], np.int8), weight=we), ValueError,
          "input"),
        P("index = num_embeddings", "embedding", lambda: dict(input=ie + 1, weight=we), ValueError, "input"),
        P("indices float64", "embedding", lambda: dict(input=ie.astype(np.float64), weight=we), TypeError, "input"),
        P("padding_idx 2**70", "embedding", lambda: dict(input=ie, weight=we, padding_idx=2 ** 70), ValueError,
          "padding_idx"),
        P("weight beyond memory", "embedding", lambda: dict(input=ie, weight=_wide((2 ** 40, 4))), MemoryError,
          "weight"),
    ]
    return probes


def cpu_backends(op: str) -> list[str]:
    backends.load()
    return [b for b in registry.CPU_ORDER if b in registry.IMPLS.get(op, {})]


def enumerate_probes(sources=("spec", "generic", "hostile")):
    """(probe, backend) for every probe of ``sources`` on every CPU backend implementing its op."""
    backends.load()
    out = []
    if "spec" in sources or "generic" in sources:
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        from test_conformance import _generic_bad, _rng
    for name, spec in sorted(registry.SPECS.items()):
        found = []
        if "spec" in sources and spec.bad_cases:
            found += [Probe(b.id, name, (lambda a=b.args: a), b.exc, b.match, "spec")
                      for b in spec.bad_cases(_rng("bad", name))]
        if "generic" in sources:
            found += [Probe(i, name, (lambda a=a: a), e, m, "generic") for i, a, e, m in _generic_bad(spec, _rng("bad", name))]
        for p in found:
            out += [(p, b) for b in cpu_backends(name)]
    if "hostile" in sources:
        for p in hostile():
            out += [(p, b) for b in cpu_backends(p.op)]
    return out


def check(probe: Probe, backend: str, backward: bool = False) -> str | None:
    """None if the probe raises as documented on ``backend`` (and its normalizer alone
    raises the same: before any kernel); else what went wrong."""
    spec = registry.SPECS[probe.op]
    args = probe.make()
    try:
        if backward:
            spec.backward(np.zeros(1, np.float32), **args, backend=backend)
        else:
            spec.forward(**args, backend=backend)
    except probe.exc as e:
        msg = str(e)
        if not msg.startswith(f"pydl.ops.{probe.op}: "):
            return f"message does not start with the op's name: {msg!r}"
        if not re.search(re.escape(probe.match), msg):
            return f"message does not name {probe.match!r}: {msg!r}"
        try:
            spec.bind((), args)
        except probe.exc:
            return None
        return "raised by the backend, not by the spec's normalizer (before any kernel)"
    except Exception as e:  # noqa: BLE001 - any other exception is a failure to report
        return f"raised {type(e).__name__} (expected {probe.exc.__name__}): {e}"
    return f"no error (expected {probe.exc.__name__} naming {probe.match!r})"


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", default="spec,generic,hostile")
    ap.add_argument("--backward", action="store_true", help="also run each probe through op_backward")
    ap.add_argument("-v", "--verbose", action="store_true")
    opts = ap.parse_args(argv)
    pairs = enumerate_probes(tuple(opts.sources.split(",")))
    fails, n, per = [], 0, {}
    for p, b in pairs:
        for bw in (False, True) if opts.backward else (False,):
            n += 1
            per[p.source] = per.get(p.source, 0) + 1
            why = check(p, b, bw)
            if why:
                fails.append(f"{p.op}[{p.id}] on {b}{' (backward)' if bw else ''}: {why}")
    for f in fails if opts.verbose or len(fails) < 60 else fails[:60]:
        print("FAIL", f)
    print(f"{n} probes ({', '.join(f'{k} {v}' for k, v in per.items())}), "
          f"{len(registry.SPECS)} ops, {len(fails)} failures")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
