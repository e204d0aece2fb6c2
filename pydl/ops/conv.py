"""2-D convolution and its data movement: ``im2col``, ``col2im``, ``conv2d``.

Semantics and layouts follow ``torch.nn.functional`` (``unfold``, ``fold``,
``conv2d``): NCHW inputs, conv weight (K, C/groups, R, S), cross-correlation
(no kernel flip). conv2d also takes an unbatched (C, H, W) input (the batch dimension
added as a view); im2col/col2im take batched inputs only.

Geometry, per spatial dimension: a kernel of size R with dilation d spans
d*(R-1)+1 input positions; with stride s and zero padding p on both sides the
output has (H + 2p - d*(R-1) - 1) // s + 1 positions, which must be >= 1.

Column layout (as ``F.unfold``): ``cols[n, (c*R + r)*S + s, oh*OW + ow] =
x_padded[n, c, oh*sh + r*dh, ow*sw + s*dw]``. ``col2im`` is its adjoint: it
sums every column entry back to its input position (overlaps add up).

An output element of ``conv2d`` accumulates (C/groups)*R*S products (at most
72 in the cases); the weight gradient accumulates N*OH*OW (at most 162): the
float32 tolerances are ``gemm``'s, about 8x the worst error the float32
reference makes on the cases.

``conv2d_backward`` returns (dx, dW, db). Through the registry
(``OpSpec.call_backward(..., needs=(need_dx, need_dW, need_db))``, what
autograd uses) every backend skips the gradients nobody wants and returns
None for them: without dx (a network's first layer) the backward is about
half the work (no W^T GEMM and col2im, nor transposed convolution).
"""
from __future__ import annotations

import numpy as np

from .. import _array
from ..registry import BadCase, Case, Viewed, defop
from . import _checks as ck

TOL = {"float32": (2e-5, 2e-5), "float64": (1e-12, 1e-12)}
# im2col only copies: exact. col2im adds at most ceil(R/s)*ceil(S/s) entries
# (9 in the cases) per element: a few ulps of the partial sums.
EXACT = {"float32": (0.0, 0.0), "float64": (0.0, 0.0)}
SUM_TOL = {"float32": (1e-5, 5e-6), "float64": (1e-12, 1e-12)}

NCHW = "(N, C, H, W)"


# -- shared geometry (pool.py uses these too) ------------------------------------------

def out_size(size, kernel, stride, padding, dilation, ceil_mode=False):
    """Output positions along one dimension (torch's rule, ceil_mode included:
    a last window that would start in the right padding is dropped)."""
    span = dilation * (kernel - 1) + 1
    num = size + 2 * padding - span
    if ceil_mode:
        out = -(-num // stride) + 1
        if (out - 1) * stride >= size + padding:
            out -= 1
        return out
    return num // stride + 1


def window_args(kernel_size, stride, padding, dilation):
    """Normalize the four window hyper-parameters to int pairs."""
    return dict(kernel_size=ck.int_tuple("kernel_size", kernel_size, 2, min=1),
                stride=ck.int_tuple("stride", stride, 2, min=1),
                padding=ck.int_tuple("padding", padding, 2, min=0),
                dilation=ck.int_tuple("dilation", dilation, 2, min=1))


def nchw(name, x):
    """A 4-D float array (N, C, H, W) with C, H, W >= 1 (N may be 0)."""
    x = ck.array(name, x, ndim=4, layout=NCHW + " (unbatched 3-D inputs are not accepted)")
    if 0 in x.shape[1:]:
        raise ValueError(f"{name}: expected C, H, W >= 1 in {NCHW}, got shape {tuple(x.shape)}")
    return x


def output_hw(name, hw, kernel_size, stride, padding, dilation, ceil_mode=False):
    """(OH, OW), or ValueError naming ``name`` if the dilated kernel does not fit."""
    if len(hw) == 2:  # two calls, no generator (a conv call runs this 3 times)
        out = (out_size(hw[0], kernel_size[0], stride[0], padding[0], dilation[0], ceil_mode),
               out_size(hw[1], kernel_size[1], stride[1], padding[1], dilation[1], ceil_mode))
    else:
        out = tuple(out_size(n, k, s, p, d, ceil_mode)
                    for n, k, s, p, d in zip(hw, kernel_size, stride, padding, dilation))
    if min(out) < 1:
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation))
        padded = tuple(n + 2 * p for n, p in zip(hw, padding))
        raise ValueError(
            f"{name}: the kernel {tuple(kernel_size)} with dilation {tuple(dilation)} spans {span}, "
            f"larger than the padded input {padded} (input {tuple(hw)}, padding {tuple(padding)}): "
            f"output size would be {out}"
        )
    return out


_SHORT = dict(kernel_size="k", stride="s", padding="p", dilation="d", groups="g", weight="w",
              ceil_mode="ceil", count_include_pad="cip", divisor_override="div", output_size="o")


def case_id(shape, **hp):
    """A readable case id: '2x3x7x6_k3_s2x1_p1'."""
    fmt = lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v)  # noqa: E731
    return fmt(tuple(shape)) + "".join(f"_{_SHORT.get(k, k)}{fmt(v)}" for k, v in hp.items())


# -- im2col --------------------------------------------------------------------------

def _cols_shape(x_shape, kernel_size, stride=1, padding=0, dilation=1):
    hp = window_args(kernel_size, stride, padding, dilation)
    oh, ow = output_hw("kernel_size", x_shape[2:], **hp)
    r, s = hp["kernel_size"]
    return (x_shape[0], x_shape[1] * r * s, oh * ow)


def _im2col_shape(a):
    return _cols_shape(a["x"].shape, a["kernel_size"], a["stride"], a["padding"], a["dilation"])


#: (x shape, hyper-parameters) shared by the im2col and col2im cases
GEOMETRIES = [
    ((2, 3, 7, 6), dict(kernel_size=3)),
    ((1, 2, 5, 5), dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 2))),
    ((2, 1, 9, 8), dict(kernel_size=3, stride=2, padding=1, dilation=2)),
    ((1, 4, 4, 5), dict(kernel_size=1)),
    ((1, 1, 3, 3), dict(kernel_size=3)),                    # one window
    ((3, 2, 6, 7), dict(kernel_size=(3, 1), stride=3, dilation=(1, 2))),
    ((0, 2, 5, 5), dict(kernel_size=2)),                    # empty batch
]


def _im2col_cases(rng, dtype):
    return [Case(case_id(xs, **hp), dict(x=rng.standard_normal(xs).astype(dtype), **hp))
            for xs, hp in GEOMETRIES]


def _window_bad(make):
    """Bad hyper-parameters shared by im2col and col2im (``make(**hp)`` -> args)."""
    return [
        BadCase("kernel too big", make(kernel_size=6), ValueError, "kernel_size"),
        BadCase("dilated kernel too big", make(kernel_size=3, dilation=3), ValueError, "kernel_size"),
        BadCase("kernel 0", make(kernel_size=0), ValueError, "kernel_size"),
        BadCase("stride 0", make(kernel_size=2, stride=0), ValueError, "stride"),
        BadCase("stride -1", make(kernel_size=2, stride=(1, -1)), ValueError, "stride"),
        BadCase("dilation 0", make(kernel_size=2, dilation=0), ValueError, "dilation"),
        BadCase("padding -1", make(kernel_size=2, padding=-1), ValueError, "padding"),
        BadCase("kernel triple", make(kernel_size=(2, 2, 2)), TypeError, "kernel_size"),
        BadCase("stride float", make(kernel_size=2, stride=1.5), TypeError, "stride"),
    ]


def _im2col_bad(rng):
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    return _window_bad(lambda **hp: dict(x=x, **hp)) + [
        BadCase("x 3-D", dict(x=x[0], kernel_size=2), ValueError, "x"),
        BadCase("x C=0", dict(x=x[:, :0], kernel_size=2), ValueError, "x"),
    ]


@defop(family="conv", differentiable=("x",), out_shape=_im2col_shape, flops=lambda a: 0,
       tol=EXACT, grad_tol=SUM_TOL, cases=_im2col_cases, bad_cases=_im2col_bad,
       torch=lambda torch, F, a: F.unfold(a["x"], a["kernel_size"], a["dilation"],
                                          a["padding"], a["stride"]))
def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Sliding windows of ``x`` (N, C, H, W) as columns (N, C*R*S, OH*OW), like ``F.unfold``.

    Row ``(c*R + r)*S + s`` holds kernel tap (r, s) of channel c; column
    ``oh*OW + ow`` is output position (oh, ow); padding is zeros. Note the
    parameter ORDER is conv2d's (kernel_size, stride, padding, dilation);
    ``torch.nn.functional.unfold`` takes (kernel_size, dilation, padding,
    stride). 4-D input only. Pure data movement: 0 flops (reported in GB/s).
    """
    x = nchw("x", x)
    hp = window_args(kernel_size, stride, padding, dilation)
    oh, ow = output_hw("kernel_size", x.shape[2:], **hp)
    r, s = hp["kernel_size"]
    ck.fits("x, kernel_size, stride, padding, dilation", (x.shape[0], x.shape[1] * r * s, oh * ow),
            x.itemsize, "the columns")
    return dict(x=x, **hp)


# -- col2im --------------------------------------------------------------------------

def _col2im_cases(rng, dtype):
    out = []
    for xs, hp in GEOMETRIES:
        cols = rng.standard_normal(_cols_shape(xs, **hp)).astype(dtype)
        out.append(Case(case_id(xs, **hp), dict(cols=cols, output_size=xs[2:], **hp)))
    return out


def _col2im_bad(rng):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    cols = f(2, 12, 16)   # C=3, 2x2 kernel, 5x5 output -> 4x4 windows

    def make(**hp):
        return dict(cols=cols, output_size=(5, 5), **hp)

    return _window_bad(make) + [
        BadCase("cols 2-D", dict(cols=cols[0], output_size=(5, 5), kernel_size=2), ValueError, "cols"),
        BadCase("rows not C*R*S", dict(cols=f(2, 13, 16), output_size=(5, 5), kernel_size=2),
                ValueError, "cols"),
        BadCase("L mismatch", dict(cols=f(2, 12, 15), output_size=(5, 5), kernel_size=2),
                ValueError, "cols"),
        BadCase("output_size 3", dict(cols=cols, output_size=(5, 5, 1), kernel_size=2),
                TypeError, "output_size"),
        BadCase("output_size 0", dict(cols=cols, output_size=0, kernel_size=2),
                ValueError, "output_size"),
    ]


def _col2im_shape(a):
    n, rows = a["cols"].shape[:2]
    r, s = a["kernel_size"]
    return (n, rows // (r * s)) + tuple(a["output_size"])


@defop(family="conv", differentiable=("cols",), out_shape=_col2im_shape,
       flops=lambda a: a["cols"].size, tol=SUM_TOL, grad_tol=EXACT, cases=_col2im_cases,
       bad_cases=_col2im_bad,
       torch=lambda torch, F, a: F.fold(a["cols"], a["output_size"], a["kernel_size"],
                                        a["dilation"], a["padding"], a["stride"]))
def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1):
    """Sum columns (N, C*R*S, L) back into an image (N, C, H, W), like ``F.fold``.

    The adjoint of :func:`im2col` with the same hyper-parameters: every
    column entry is added to the input position it was read from (overlapping
    windows sum; entries that fall in the padding are dropped).
    ``output_size`` is (H, W) (or an int), and L must equal OH*OW for it.
    Parameter order is conv2d's; ``F.fold`` takes (output_size, kernel_size,
    dilation, padding, stride). 3-D ``cols`` only (no unbatched 2-D).
    Flops: one add per column entry.
    """
    cols = ck.array("cols", cols, ndim=3, layout="(N, C*R*S, L)")
    output_size = ck.int_tuple("output_size", output_size, 2, min=1)
    hp = window_args(kernel_size, stride, padding, dilation)
    oh, ow = output_hw("kernel_size", output_size, **hp)
    r, s = hp["kernel_size"]
    if cols.shape[1] == 0 or cols.shape[1] % (r * s):
        raise ValueError(f"cols: expected dimension 1 to be C*R*S, a positive multiple of "
                         f"R*S = {r * s} for kernel_size {(r, s)}, got shape {tuple(cols.shape)}")
    ck.fits("cols, output_size", (cols.shape[0], cols.shape[1] // (r * s)) + output_size, cols.itemsize)
    if cols.shape[2] != oh * ow:
        raise ValueError(
            f"cols: expected dimension 2 to be L = {oh}*{ow} = {oh * ow} windows for output_size "
            f"{output_size} and these kernel_size/stride/padding/dilation, got shape {tuple(cols.shape)}"
        )
    return dict(cols=cols, output_size=output_size, **hp)


# -- conv2d --------------------------------------------------------------------------

def _conv_hw(a):
    r, s = a["weight"].shape[2:]
    return output_hw("weight", a["x"].shape[2:], (r, s), a["stride"], a["padding"], a["dilation"])


def _conv_shape(a):
    return (a["x"].shape[0], a["weight"].shape[0]) + _conv_hw(a)


def _conv_flops(a):
    n = a["x"].shape[0]
    k, cg, r, s = a["weight"].shape
    oh, ow = _conv_hw(a)
    return 2 * n * k * oh * ow * cg * r * s


def _conv_cases(rng, dtype):
    def c(xs, k, rs, bias=True, groups=1, **hp):
        x = rng.standard_normal(xs).astype(dtype)
        w = rng.standard_normal((k, xs[1] // groups) + rs).astype(dtype)
        b = rng.standard_normal(k).astype(dtype) if bias else None
        cid = case_id(xs, w=(k, xs[1] // groups) + rs, g=groups, **hp) + ("" if bias else "_nobias")
        return Case(cid, dict(x=x, weight=w, bias=b, groups=groups, **hp))

    return [
        c((2, 3, 7, 6), 4, (3, 3)),
        c((1, 2, 8, 7), 3, (3, 2), stride=(2, 1), padding=(1, 0)),        # non-square
        c((2, 3, 9, 9), 2, (3, 3), padding=2, dilation=2, bias=False),    # dilated
        c((1, 4, 5, 6), 6, (1, 1)),                                       # 1x1
        c((2, 4, 6, 5), 6, (3, 3), padding=1, groups=2),                  # grouped
        c((1, 3, 7, 7), 3, (3, 3), stride=2, padding=1, groups=3),        # depthwise
        c((1, 2, 6, 6), 4, (5, 3), stride=(1, 2), padding=(2, 1), groups=2, bias=False),
        c((3, 1, 4, 4), 1, (4, 4)),                                       # one window
        c((1, 8, 4, 4), 5, (3, 3), padding=1),                            # 72-term sums
        c((0, 3, 5, 5), 2, (3, 3)),                                       # empty batch
    ]


def _conv_bad(rng):
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    x, w, b = f(2, 4, 6, 6), f(3, 4, 3, 3), f(3)
    return [
        BadCase("x 2-D", dict(x=x[0, 0], weight=w), ValueError, "x"),
        BadCase("weight 3-D", dict(x=x, weight=w[0]), ValueError, "weight"),
        BadCase("weight channels", dict(x=x, weight=f(3, 3, 3, 3)), ValueError, "weight"),
        BadCase("weight channels grouped", dict(x=x, weight=f(4, 4, 3, 3), groups=2), ValueError, "weight"),
        BadCase("bias shape", dict(x=x, weight=w, bias=f(4)), ValueError, "bias"),
        BadCase("bias 2-D", dict(x=x, weight=w, bias=f(3, 1)), ValueError, "bias"),
        BadCase("kernel too big", dict(x=x, weight=f(3, 4, 7, 3)), ValueError, "weight"),
        BadCase("dilated kernel too big", dict(x=x, weight=w, dilation=3), ValueError, "weight"),
        BadCase("stride 0", dict(x=x, weight=w, stride=0), ValueError, "stride"),
        BadCase("dilation -1", dict(x=x, weight=w, dilation=(1, -1)), ValueError, "dilation"),
        BadCase("padding -1", dict(x=x, weight=w, padding=-1), ValueError, "padding"),
        BadCase("padding str", dict(x=x, weight=w, padding="full"), ValueError, "padding"),
        BadCase("padding same strided", dict(x=x, weight=w, stride=2, padding="same"), ValueError, "padding"),
        BadCase("groups 0", dict(x=x, weight=w, groups=0), ValueError, "groups"),
        BadCase("groups not dividing C", dict(x=x, weight=f(3, 1, 3, 3), groups=3), ValueError, "groups"),
        BadCase("groups not dividing K", dict(x=x, weight=f(3, 2, 3, 3), groups=2), ValueError, "groups"),
    ]


#: issue #4's benchmark shapes, a strided depthwise one, two on power-of-two planes (CIFAR's first
#: layer, a ResNet stage at 8x8) and ResNet's last stage (512 filters: 7x7, and the stride-2 layer
#: into it): id -> (N, C, H, W, K, R, stride, padding, groups)
BENCH_SHAPES = {
    "lenet_c1": (64, 1, 28, 28, 6, 5, 1, 0, 1),
    "lenet_c2": (64, 6, 14, 14, 16, 5, 1, 0, 1),
    "resnet_3x3_c64": (32, 64, 56, 56, 64, 3, 1, 1, 1),
    "resnet_3x3_c128_s2": (32, 128, 28, 28, 128, 3, 2, 1, 1),
    "resnet_3x3_c256": (32, 256, 14, 14, 256, 3, 1, 1, 1),
    "resnet_1x1_c256_k64": (32, 256, 14, 14, 64, 1, 1, 0, 1),
    "alexnet_c1": (16, 3, 224, 224, 64, 11, 4, 2, 1),
    "depthwise_c128": (32, 128, 56, 56, 128, 3, 1, 1, 128),
    "depthwise_c128_s2": (32, 128, 56, 56, 128, 3, 2, 1, 128),   # MobileNet's downsampling layers
    "cifar_3x3_c3_k64": (64, 3, 32, 32, 64, 3, 1, 1, 1),
    "resnet_3x3_c256_8x8": (32, 256, 8, 8, 256, 3, 1, 1, 1),
    "resnet_3x3_c512_7x7": (32, 512, 7, 7, 512, 3, 1, 1, 1),
    "resnet_3x3_c256_k512_s2": (32, 256, 14, 14, 512, 3, 2, 1, 1),
}
#: the ones ``pydl bench --quick`` runs, at this batch
QUICK = {"lenet_c2": 8, "resnet_3x3_c64": 2, "resnet_1x1_c256_k64": 4, "depthwise_c128": 4}


def _conv_bench(rng, dtype):
    out = []
    for name, (n, c, h, w, k, r, st, p, g) in BENCH_SHAPES.items():
        for quick in (False, True) if name in QUICK else (False,):
            nb = QUICK[name] if quick else n
            x = rng.standard_normal((nb, c, h, w)).astype(dtype)
            wt = (rng.standard_normal((k, c // g, r, r)) / np.sqrt(c // g * r * r)).astype(dtype)
            b = rng.standard_normal(k).astype(dtype)
            out.append(Case(f"{name}_n{nb}", dict(x=x, weight=wt, bias=b, stride=st, padding=p, groups=g),
                            tags=("quick",) if quick else ()))
    return out


def _conv_tol_scale(a):
    """Longest accumulation over 64: C/groups*R*S terms per output, K/groups*R*S per
    input gradient, N*OH*OW per weight and bias gradient (100K for the depthwise bench)."""
    n, k, oh, ow = _conv_shape(a)
    kk, cg, r, s = a["weight"].shape
    return max(cg * r * s, kk // a["groups"] * r * s, n * oh * ow) / 64


@defop(family="conv", differentiable=("x", "weight", "bias"), out_shape=_conv_shape,
       flops=_conv_flops, tol=TOL, cases=_conv_cases, bad_cases=_conv_bad, bench=_conv_bench,
       tol_scale=_conv_tol_scale,
       torch=lambda torch, F, a: F.conv2d(a["x"], a["weight"], a["bias"], a["stride"],
                                          a["padding"], a["dilation"], a["groups"]))
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, like ``F.conv2d``: x (N, C, H, W), weight (K, C/groups, R, S),
    bias (K,) or None -> (N, K, OH, OW).

    Input channels split into ``groups`` contiguous groups, each convolved
    with its K/groups filters (groups == C == K is depthwise). Zero padding:
    an int, a pair, or torch's strings "valid" and "same" (stride 1; an even
    dilated kernel gets its extra padding on the right, as in torch). An
    unbatched x (C, H, W) gives (K, OH, OW). Flops: 2*N*K*OH*OW*(C/groups)*R*S.
    """
    x, unbatched = ck.batch_dim("x", x, 4, NCHW)
    if 0 in x.shape[1:]:
        # torch returns an empty (N, 0, OH, OW) for C = 0, whatever K and the bias: pydl refuses
        raise ValueError(f"x: expected C, H, W >= 1 in {NCHW}, got shape {tuple(x.shape)}")
    weight = ck.array("weight", weight, ndim=4, layout="(K, C/groups, R, S)")
    bias = ck.optional_array("bias", bias, ndim=1, layout="(K,)")
    ck.same_dtype(x=x, weight=weight, bias=bias)
    groups = ck.integer("groups", groups, min=1, max=ck.HYPER_MAX)
    dilation = ck.int_tuple("dilation", dilation, 2, min=1)
    stride = ck.int_tuple("stride", stride, 2, min=1)
    extra = None
    if type(padding) is str:
        padding, extra = _string_padding(padding, stride, dilation, weight.shape[2:])
    hp = dict(stride=stride, padding=ck.int_tuple("padding", padding, 2, min=0), dilation=dilation)
    c = x.shape[1]
    k, cg, r, s = weight.shape
    if c % groups:
        raise ValueError(f"groups: expected a divisor of the input channels C = {c}, got {groups}")
    if k % groups:
        raise ValueError(f"groups: expected a divisor of the output channels K = {k} "
                         f"(weight's dimension 0), got {groups}")
    if 0 in weight.shape:
        raise ValueError(f"weight: expected every dimension >= 1 in (K, C/groups, R, S), "
                         f"got {tuple(weight.shape)}")
    if cg != c // groups:
        raise ValueError(f"weight: expected shape (K, C/groups, R, S) with C/groups = {c}/{groups} "
                         f"= {c // groups}, got {tuple(weight.shape)}")
    ck.shape("bias", bias, (k,), "(K, weight's dimension 0)")
    if extra:  # "same" with an even dilated kernel: torch pads the extra row/column on the right
        h, w = x.shape[2:]
        x = _array.module(x).pad(x, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
    ck.fits("x, weight, stride, padding, dilation",
            (x.shape[0], k) + output_hw("weight", x.shape[2:], (r, s), **hp), x.itemsize)
    a = dict(x=x, weight=weight, bias=bias, **hp, groups=groups)
    if not (unbatched or extra):
        return a
    a = ck.unbatched_views(a, 4) if unbatched else Viewed(a)
    if extra:
        squeeze = a.grads or (lambda res: res)
        a.grads = lambda res: squeeze((None if res[0] is None else res[0][:, :, :h, :w],) + tuple(res[1:]))
    return a


def _string_padding(padding, stride, dilation, rs):
    """torch's "valid" (no padding) and "same" (output size = input size, stride 1): the
    left padding, and what the right side needs on top (an even dilated kernel)."""
    if padding == "valid":
        return 0, None
    if padding != "same":
        raise ValueError(f"padding: expected an int, a pair of ints, 'same' or 'valid', got {padding!r}")
    if stride != (1, 1):
        raise ValueError(f"padding: 'same' needs stride 1 (as in torch), got stride {stride}")
    total = tuple(d * (k - 1) for d, k in zip(dilation, rs))
    left = tuple(t // 2 for t in total)
    extra = tuple(t - 2 * lo for t, lo in zip(total, left))
    return left, (extra if any(extra) else None)
