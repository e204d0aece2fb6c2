"""cpp adapters for the conv family: im2col, col2im, conv2d forward and backward.

Kernels (kernels/cpp/conv.cpp) take C-contiguous arrays of one dtype and write
into outputs allocated here: ``conv_im2col_<f32|f64>``, ``conv_col2im_*``,
``conv_conv2d_*`` and ``conv_conv2d_backward_*`` (the last two take a path
number and return the path they took). The default ``conv2d`` picks its path
by the measured heuristic of ``choose_path`` in conv.cpp (dev/conv/README.md);
the named variants force one: ``cpp:im2col``, ``cpp:implicit``, ``cpp:direct``,
``cpp:smallk`` (filters in the SIMD lanes, taps broadcast from the padded,
width-phase-split image, tiles of consecutive pixels of an output row; its backward
computes dW the same way and dx, at stride 1 with >= 16 channels per group, as a
transposed convolution through the same forward, else by the im2col/1x1 GEMM),
``cpp:winograd`` (Winograd F(2x2, 3x3): 3x3, stride 1, no dilation, one group; 16 GEMMs
per chunk of 2x2 output tiles, 2.25x fewer multiply-adds; dx the same way, dW too below
AVX-512 (by smallk at AVX-512); other geometries take the automatic path) and ``cpp:gemm1x1`` (im2col where the
convolution is not 1x1/stride 1/pad 0).
``implicit`` has no backward of its own and uses the im2col tiles. The backward takes
the registry's ``needs``: a gradient nobody wants (dx of a network's first layer) is not
computed (the kernel gets None for it) and comes back as None.
"""
from ... import _array, _cpp
from ...registry import register
from .._shared import SUFFIX, contiguous

PATHS = tuple(_cpp.CONV_PATHS)   # ("auto", "gemm1x1", "im2col", "implicit", "direct", "smallk", "winograd")
#: the path the last conv2d / conv2d_backward call took (for tests and the benchmark notes)
last_path = {"forward": None, "backward": None}


def _window(kernel_size, stride, padding, dilation):
    return (*kernel_size, *stride, *padding, *dilation)


@register("im2col", "cpp")
def im2col(x, kernel_size, stride, padding, dilation):
    from ...ops.conv import _im2col_shape
    x = contiguous(x)
    cols = _array.empty(_im2col_shape(dict(x=x, kernel_size=kernel_size, stride=stride, padding=padding,
                                           dilation=dilation)), x.dtype)
    getattr(_cpp, f"conv_im2col_{SUFFIX[x.dtype]}")(x, cols, *_window(kernel_size, stride, padding, dilation))
    return cols


@register("col2im", "cpp")
def col2im(cols, output_size, kernel_size, stride, padding, dilation):
    cols = contiguous(cols)
    n, c = cols.shape[0], cols.shape[1] // (kernel_size[0] * kernel_size[1])
    x = _array.empty((n, c) + tuple(output_size), cols.dtype)
    getattr(_cpp, f"conv_col2im_{SUFFIX[cols.dtype]}")(cols, x, *_window(kernel_size, stride, padding, dilation))
    return x


@register("im2col_backward", "cpp")
def im2col_backward(grad, x, kernel_size, stride, padding, dilation, saved=None):
    return (col2im(grad, x.shape[2:], kernel_size, stride, padding, dilation),)


@register("col2im_backward", "cpp")
def col2im_backward(grad, cols, output_size, kernel_size, stride, padding, dilation, saved=None):
    return (im2col(grad, kernel_size, stride, padding, dilation),)


def _conv(path, x, weight, bias, stride, padding, dilation, groups):
    from ...ops.conv import _conv_shape
    x, weight = contiguous(x), contiguous(weight)
    bias = None if bias is None else contiguous(bias)
    out = _array.empty(_conv_shape(dict(x=x, weight=weight, stride=stride, padding=padding,
                                        dilation=dilation)), x.dtype)
    took = getattr(_cpp, f"conv_conv2d_{SUFFIX[x.dtype]}")(
        x, weight, bias, out, *stride, *padding, *dilation, groups, PATHS.index(path))
    last_path["forward"] = PATHS[took]
    return out


def _conv_backward(path, grad, x, weight, bias, stride, padding, dilation, groups, needs=None):
    need_dx, need_dw, need_db = needs or (True, True, True)
    grad, x, weight = contiguous(grad), contiguous(x), contiguous(weight)
    dx = _array.empty(x.shape, x.dtype) if need_dx else None
    dw = _array.empty(weight.shape, weight.dtype) if need_dw else None
    db = None if bias is None or not need_db else _array.empty(bias.shape, bias.dtype)
    took = getattr(_cpp, f"conv_conv2d_backward_{SUFFIX[x.dtype]}")(
        grad, x, weight, dx, dw, db, *stride, *padding, *dilation, groups, PATHS.index(path))
    last_path["backward"] = PATHS[took]
    return dx, dw, db


def _register(path, variant=None):
    @register("conv2d", "cpp", variant=variant)
    def conv2d(x, weight, bias, stride, padding, dilation, groups):
        return _conv(path, x, weight, bias, stride, padding, dilation, groups)

    @register("conv2d_backward", "cpp", variant=variant)
    def conv2d_backward(grad, x, weight, bias, stride, padding, dilation, groups, saved=None, needs=None):
        return _conv_backward(path, grad, x, weight, bias, stride, padding, dilation, groups, needs)


_register("auto")
for _p in PATHS[1:]:
    _register(_p, variant=_p)
