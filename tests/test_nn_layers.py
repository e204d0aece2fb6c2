"""The non-recurrent layers and losses of ``pydl.nn`` against their torch twins.

One body for every layer: build the pydl layer and the torch layer with the same
constructor call, copy pydl's state_dict into torch, run forward and backward on
the same random inputs and upstream gradient, and compare the output, the input
gradients, every parameter gradient and every buffer afterwards (running
statistics), in float32 and float64, under every CPU backend preference order.
Then: state_dict keys/shapes/dtypes and the copy from torch, default
initialisation statistics, BatchNorm over several steps, Dropout, bad
arguments, reprs, and a small model end to end.
"""
import math
import warnings
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pydl  # noqa: E402
import pydl.nn as pnn  # noqa: E402
from pydl.registry import SPECS, OpSpec  # noqa: E402
import torch.nn as tnn  # noqa: E402
from twins import DTYPES, ORDERS, assert_close, torch_dtype  # noqa: E402
from twins import order as _order  # noqa: E402

# relative to each compared array's largest magnitude: float32 kernels sum a few
# hundred terms at most here (SIMD exp/erf a few ulp); float64 agrees to ~1e-14
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
TORCH_DTYPE = {d: torch_dtype(torch, d) for d in DTYPES}







# -- the twins ---------------------------------------------------------------------------------


@dataclass
class Framework:
    """What a constructor call needs from one side: its ``nn``, the dtype keyword,
    and tensors (loss weights) in the module's dtype."""
    nn: object
    dtype: type

    @property
    def is_torch(self):
        return self.nn is tnn

    @property
    def dt(self):
        return dict(dtype=TORCH_DTYPE[self.dtype] if self.is_torch else self.dtype)

    def t(self, a):
        a = np.asarray(a, self.dtype)
        return torch.from_numpy(a.copy()) if self.is_torch else pydl.tensor(a)


@dataclass
class Inp:
    """One forward argument: an array, and whether its gradient is compared."""
    make: Callable  # (rng, dtype) -> array
    grad: bool = True


@dataclass
class Twin:
    id: str
    make: Callable  # (Framework) -> module, the same call for torch.nn and pydl.nn
    inputs: list
    mode: str = "train"
    perturb: bool = True  # random parameters (and running stats) instead of the constant defaults
    tol_scale: float = 1.0
    marks: tuple = field(default_factory=tuple)


def randn(*shape, scale=1.0, shift=0.0):
    return Inp(lambda rng, dt: (rng.standard_normal(shape) * scale + shift).astype(dt))


def uniform(lo, hi, *shape, grad=True):
    return Inp(lambda rng, dt: rng.uniform(lo, hi, shape).astype(dt), grad)


def log_probs(*shape, dim=1, grad=True):
    def make(rng, dt):
        z = rng.standard_normal(shape) * 1.5
        return (z - np.log(np.exp(z).sum(axis=dim, keepdims=True))).astype(dt)
    return Inp(make, grad)


def probs(*shape, dim=1, grad=False):
    def make(rng, dt):
        e = np.exp(rng.standard_normal(shape))
        return (e / e.sum(axis=dim, keepdims=True)).astype(dt)
    return Inp(make, grad)


def labels(*shape, high, dtype=np.int64, ignore=None):
    def make(rng, dt):
        t = rng.integers(0, high, shape)
        if ignore is not None:
            t[rng.random(shape) < 0.3] = ignore
            t.flat[0] = ignore
        return t.astype(dtype)
    return Inp(make, grad=False)


def bits(*shape):
    return Inp(lambda rng, dt: (rng.random(shape) < 0.5).astype(dt), grad=False)


def W(*shape, lo=0.3, hi=2.0, seed=7):
    return np.random.default_rng(seed).uniform(lo, hi, shape)


TWINS = [
    # linear.py
    Twin("Identity", lambda f: f.nn.Identity(3, foo=1), [randn(3, 4)]),
    Twin("Linear", lambda f: f.nn.Linear(5, 3, **f.dt), [randn(4, 5)]),
    Twin("Linear_nobias_3d", lambda f: f.nn.Linear(5, 3, bias=False, **f.dt), [randn(2, 3, 5)]),
    Twin("Linear_1d", lambda f: f.nn.Linear(6, 2, True, None, **f.dt), [randn(6)]),
    Twin("Flatten", lambda f: f.nn.Flatten(), [randn(2, 3, 2, 2)]),
    Twin("Flatten_0_2", lambda f: f.nn.Flatten(0, 2), [randn(2, 3, 2, 2)]),
    Twin("Unflatten", lambda f: f.nn.Unflatten(1, (2, 3)), [randn(4, 6)]),
    Twin("Unflatten_neg", lambda f: f.nn.Unflatten(-1, [-1, 2]), [randn(2, 3, 6)]),
    # conv.py
    Twin("Conv2d", lambda f: f.nn.Conv2d(3, 4, 3, **f.dt), [randn(2, 3, 6, 7)]),
    Twin("Conv2d_groups", lambda f: f.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                                                groups=2, **f.dt), [randn(2, 4, 7, 8)]),
    Twin("Conv2d_depthwise", lambda f: f.nn.Conv2d(3, 6, 3, padding=1, groups=3, bias=False, **f.dt),
         [randn(2, 3, 5, 5)]),
    Twin("Conv2d_same_even", lambda f: f.nn.Conv2d(3, 4, 4, padding="same", **f.dt), [randn(2, 3, 6, 5)]),
    Twin("Conv2d_same_dilated", lambda f: f.nn.Conv2d(2, 3, (3, 4), padding="same", dilation=(2, 1), **f.dt),
         [randn(1, 2, 7, 6)]),
    Twin("Conv2d_same_odd", lambda f: f.nn.Conv2d(2, 3, 3, padding="same", **f.dt), [randn(2, 2, 5, 4)]),
    Twin("Conv2d_valid_unbatched", lambda f: f.nn.Conv2d(3, 2, 2, 1, "valid", **f.dt), [randn(3, 5, 6)]),
    # pooling.py
    Twin("MaxPool2d", lambda f: f.nn.MaxPool2d(2), [randn(2, 3, 6, 7)]),
    Twin("MaxPool2d_ceil", lambda f: f.nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), [randn(2, 2, 7, 8)]),
    Twin("MaxPool2d_dilated", lambda f: f.nn.MaxPool2d((3, 2), (2, 1), (1, 0), (1, 2)), [randn(1, 2, 8, 9)]),
    Twin("MaxPool2d_unbatched", lambda f: f.nn.MaxPool2d(2, 1), [randn(2, 5, 5)]),
    Twin("AvgPool2d", lambda f: f.nn.AvgPool2d(3, stride=2, padding=1), [randn(2, 3, 7, 6)]),
    Twin("AvgPool2d_nopad_ceil", lambda f: f.nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
         [randn(2, 2, 8, 7)]),
    Twin("AvgPool2d_divisor", lambda f: f.nn.AvgPool2d((3, 2), (1, 2), (1, 1), divisor_override=5),
         [randn(1, 2, 6, 5)]),
    Twin("AvgPool2d_unbatched", lambda f: f.nn.AvgPool2d(2), [randn(3, 4, 6)]),
    Twin("AdaptiveAvgPool2d", lambda f: f.nn.AdaptiveAvgPool2d((3, 4)), [randn(2, 3, 7, 6)]),
    Twin("AdaptiveAvgPool2d_global", lambda f: f.nn.AdaptiveAvgPool2d(1), [randn(2, 4, 5, 5)]),
    Twin("AdaptiveAvgPool2d_none", lambda f: f.nn.AdaptiveAvgPool2d((None, 2)), [randn(3, 6, 5)]),
    # activation.py
    Twin("ReLU", lambda f: f.nn.ReLU(), [randn(3, 7)]),
    Twin("ReLU_inplace", lambda f: f.nn.ReLU(inplace=True), [randn(2, 3, 4)]),
    Twin("LeakyReLU", lambda f: f.nn.LeakyReLU(0.2), [randn(3, 7)]),
    Twin("PReLU", lambda f: f.nn.PReLU(**f.dt), [randn(2, 3, 4)]),
    Twin("PReLU_channels", lambda f: f.nn.PReLU(3, init=0.1, **f.dt), [randn(2, 3, 4, 2)]),
    Twin("ELU", lambda f: f.nn.ELU(0.7), [randn(3, 7)]),
    Twin("GELU", lambda f: f.nn.GELU(), [randn(3, 7, scale=2)]),
    Twin("GELU_tanh", lambda f: f.nn.GELU("tanh"), [randn(3, 7, scale=2)]),
    Twin("Sigmoid", lambda f: f.nn.Sigmoid(), [randn(3, 7, scale=3)]),
    Twin("Tanh", lambda f: f.nn.Tanh(), [randn(3, 7, scale=2)]),
    Twin("Softmax", lambda f: f.nn.Softmax(1), [randn(4, 6, scale=2)]),
    Twin("Softmax_last", lambda f: f.nn.Softmax(dim=-1), [randn(2, 3, 5, scale=2)]),
    Twin("LogSoftmax", lambda f: f.nn.LogSoftmax(0), [randn(4, 6, scale=2)]),
    # normalization.py
    Twin("BatchNorm1d", lambda f: f.nn.BatchNorm1d(3, **f.dt), [randn(5, 3, scale=2, shift=0.5)]),
    Twin("BatchNorm1d_3d", lambda f: f.nn.BatchNorm1d(3, momentum=0.3, **f.dt), [randn(4, 3, 6, shift=-1)]),
    Twin("BatchNorm1d_eval", lambda f: f.nn.BatchNorm1d(3, **f.dt), [randn(4, 3, 5)], mode="eval"),
    Twin("BatchNorm1d_cma", lambda f: f.nn.BatchNorm1d(4, momentum=None, affine=False, **f.dt), [randn(6, 4)]),
    Twin("BatchNorm2d", lambda f: f.nn.BatchNorm2d(3, eps=1e-3, **f.dt), [randn(2, 3, 4, 5, shift=1)]),
    Twin("BatchNorm2d_eval", lambda f: f.nn.BatchNorm2d(3, **f.dt), [randn(2, 3, 4, 5)], mode="eval"),
    Twin("BatchNorm2d_nobias", lambda f: f.nn.BatchNorm2d(3, bias=False, **f.dt), [randn(2, 3, 2, 3)]),
    Twin("BatchNorm2d_nostats", lambda f: f.nn.BatchNorm2d(3, track_running_stats=False, **f.dt),
         [randn(2, 3, 3, 3)]),
    Twin("BatchNorm2d_nostats_eval", lambda f: f.nn.BatchNorm2d(3, track_running_stats=False, **f.dt),
         [randn(2, 3, 3, 3)], mode="eval"),
    Twin("LayerNorm", lambda f: f.nn.LayerNorm(5, **f.dt), [randn(4, 5, shift=0.3)]),
    Twin("LayerNorm_2d_noaffine", lambda f: f.nn.LayerNorm([3, 4], elementwise_affine=False, **f.dt),
         [randn(2, 3, 4)]),
    Twin("LayerNorm_nobias", lambda f: f.nn.LayerNorm((4,), eps=1e-3, bias=False, **f.dt), [randn(2, 3, 4)]),
    Twin("GroupNorm", lambda f: f.nn.GroupNorm(2, 6, **f.dt), [randn(2, 6, 3, 3)]),
    Twin("GroupNorm_nobias", lambda f: f.nn.GroupNorm(3, 6, bias=False, **f.dt), [randn(2, 6, 4)]),
    Twin("GroupNorm_noaffine", lambda f: f.nn.GroupNorm(3, 3, affine=False, **f.dt), [randn(2, 3, 5)]),
    Twin("InstanceNorm2d", lambda f: f.nn.InstanceNorm2d(3, **f.dt), [randn(2, 3, 4, 5)]),
    Twin("InstanceNorm2d_stats", lambda f: f.nn.InstanceNorm2d(3, momentum=0.2, affine=True,
                                                               track_running_stats=True, **f.dt),
         [randn(2, 3, 4, 5, shift=0.5)]),
    Twin("InstanceNorm2d_stats_eval", lambda f: f.nn.InstanceNorm2d(3, affine=True, track_running_stats=True,
                                                                    **f.dt), [randn(2, 3, 4, 5)], mode="eval"),
    Twin("InstanceNorm2d_unbatched", lambda f: f.nn.InstanceNorm2d(3, affine=True, **f.dt), [randn(3, 4, 4)]),
    Twin("InstanceNorm2d_nobias", lambda f: f.nn.InstanceNorm2d(2, affine=True, bias=False, **f.dt),
         [randn(2, 2, 3, 3)]),
    Twin("LocalResponseNorm", lambda f: f.nn.LocalResponseNorm(3, alpha=0.5, k=2.0), [randn(2, 5, 4, 3)]),
    Twin("LocalResponseNorm_3d", lambda f: f.nn.LocalResponseNorm(2, 0.8, 0.6), [randn(2, 4, 5)]),
    # dropout.py (eval: the identity; training is tested below)
    Twin("Dropout_eval", lambda f: f.nn.Dropout(0.3), [randn(3, 4)], mode="eval"),
    Twin("Dropout_p0", lambda f: f.nn.Dropout(0.0), [randn(3, 4)]),
    # sparse.py
    Twin("Embedding", lambda f: f.nn.Embedding(10, 4, **f.dt), [labels(3, 5, high=10)]),
    Twin("Embedding_padding", lambda f: f.nn.Embedding(7, 3, padding_idx=-2, **f.dt),
         [labels(4, 6, high=7, dtype=np.int32)]),
    # loss.py
    Twin("MSELoss", lambda f: f.nn.MSELoss(), [randn(4, 5), randn(4, 5)]),
    Twin("MSELoss_sum", lambda f: f.nn.MSELoss(reduction="sum"), [randn(3, 2, 2), randn(3, 2, 2)]),
    Twin("MSELoss_none", lambda f: f.nn.MSELoss(reduction="none"), [randn(6), randn(6)]),
    Twin("L1Loss", lambda f: f.nn.L1Loss(), [randn(4, 5), randn(4, 5)]),
    Twin("L1Loss_none", lambda f: f.nn.L1Loss(reduction="none"), [randn(2, 3, 2), randn(2, 3, 2)]),
    Twin("CrossEntropyLoss", lambda f: f.nn.CrossEntropyLoss(), [randn(5, 4, scale=2), labels(5, high=4)]),
    Twin("CrossEntropyLoss_weighted", lambda f: f.nn.CrossEntropyLoss(
        f.t(W(5)), ignore_index=1, reduction="sum", label_smoothing=0.1),
        [randn(3, 5, 2, 3, scale=2), labels(3, 2, 3, high=5, dtype=np.int32, ignore=1)]),
    Twin("CrossEntropyLoss_uint8", lambda f: f.nn.CrossEntropyLoss(weight=f.t(W(4)), ignore_index=255),
         [randn(6, 4, 3), labels(6, 3, high=4, dtype=np.uint8, ignore=255)]),
    Twin("CrossEntropyLoss_probs", lambda f: f.nn.CrossEntropyLoss(weight=f.t(W(5)), label_smoothing=0.2),
         [randn(4, 5, scale=2), probs(4, 5)]),
    Twin("CrossEntropyLoss_probs_none", lambda f: f.nn.CrossEntropyLoss(reduction="none"),
         [randn(3, 4, 2), probs(3, 4, 2)]),
    Twin("NLLLoss", lambda f: f.nn.NLLLoss(), [log_probs(5, 4), labels(5, high=4)]),
    Twin("NLLLoss_weighted", lambda f: f.nn.NLLLoss(f.t(W(3)), ignore_index=-100),
         [log_probs(6, 3), labels(6, high=3, ignore=-100)]),
    Twin("NLLLoss_none", lambda f: f.nn.NLLLoss(reduction="none"), [log_probs(2, 3, 4), labels(2, 4, high=3)]),
    Twin("BCELoss", lambda f: f.nn.BCELoss(), [uniform(0.05, 0.95, 4, 5), uniform(0, 1, 4, 5, grad=False)]),
    Twin("BCELoss_weighted", lambda f: f.nn.BCELoss(f.t(W(5)), reduction="sum"),
         [uniform(0.05, 0.95, 4, 5), bits(4, 5)]),
    Twin("BCEWithLogitsLoss", lambda f: f.nn.BCEWithLogitsLoss(), [randn(4, 5, scale=3), bits(4, 5)]),
    Twin("BCEWithLogitsLoss_weights", lambda f: f.nn.BCEWithLogitsLoss(
        f.t(W(3, 1)), reduction="none", pos_weight=f.t(W(5, seed=3))),
        [randn(3, 5, scale=3), uniform(0, 1, 3, 5, grad=False)]),
    Twin("GaussianNLLLoss", lambda f: f.nn.GaussianNLLLoss(), [randn(5, 3), randn(5, 3), uniform(0.5, 1.5, 5, 3)]),
    Twin("GaussianNLLLoss_full", lambda f: f.nn.GaussianNLLLoss(full=True, eps=1e-3, reduction="sum"),
         [randn(5, 3), randn(5, 3), uniform(0.5, 1.5, 5, 1)]),
    Twin("GaussianNLLLoss_lastdim", lambda f: f.nn.GaussianNLLLoss(reduction="none"),
         [randn(4, 2), randn(4, 2), uniform(0.5, 1.5, 4)]),
    Twin("KLDivLoss", lambda f: f.nn.KLDivLoss(reduction="batchmean"), [log_probs(4, 5), probs(4, 5, grad=True)]),
    Twin("KLDivLoss_log_target", lambda f: f.nn.KLDivLoss(reduction="sum", log_target=True),
         [log_probs(3, 4, 2), log_probs(3, 4, 2)]),
    Twin("KLDivLoss_mean", lambda f: f.nn.KLDivLoss(), [log_probs(3, 6), probs(3, 6, grad=True)]),
]


def _to_torch(a, requires_grad):
    t = torch.from_numpy(np.array(a, copy=True))
    if t.dtype in (torch.int32, torch.int16, torch.uint8, torch.int8):
        t = t.long()  # torch's class indices are int64; pydl gets the original dtype
    return t.requires_grad_(requires_grad)


def _perturb(pm, rng):
    """Random parameters and running statistics (the defaults are often ones and zeros)."""
    with pydl.no_grad():
        for _, p in pm.named_parameters():
            p.data += (0.3 * rng.standard_normal(p.shape)).astype(p.dtype)
        for name, b in pm.named_buffers():
            if name.endswith("running_mean"):
                b.data[...] = rng.standard_normal(b.shape)
            elif name.endswith("running_var"):
                b.data[...] = rng.uniform(0.5, 2.0, b.shape)


def load_into_torch(tm, pm):
    """pydl's state_dict (arrays) into the torch twin."""
    tm.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in pm.state_dict().items()})


def build(twin, dtype, seed=0):
    pydl.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pm = twin.make(Framework(pnn, dtype))
        tm = twin.make(Framework(tnn, dtype))
    return pm, tm


def _ops_used(twin):
    """The registry ops a twin's forward calls (a spy on OpSpec.call during one numpy run)."""
    used, call = set(), OpSpec.call

    def spy(self, a, backend=None):
        used.add(self.name)
        return call(self, a, backend)

    OpSpec.call = spy
    try:
        rng = np.random.default_rng(0)
        pm, _ = build(twin, np.float64)
        if twin.mode == "eval":
            pm.eval()
        with warnings.catch_warnings(), pydl.use_backend("numpy"):
            warnings.simplefilter("ignore")
            pm(*[pydl.Tensor(i.make(rng, np.float64)) for i in twin.inputs])
    finally:
        OpSpec.call = call
    return used


def _distinct_orders(twin):
    """The backend orders that run the twin's ops (forward and backward) on different
    backends: an order that resolves every op as a later one does is the same run."""
    ops = sorted(_ops_used(twin))
    seen, keep = set(), []
    for order in reversed(ORDERS):
        names = order.split(",")
        key = tuple(next((b for b in names if b in SPECS[op].implementations(bw)), None)
                    for op in ops for bw in (False, True))
        if key not in seen:
            seen.add(key)
            keep.append(order)
    return [o for o in ORDERS if o in keep]


TWIN_RUNS = [pytest.param(t, d, o, id=f"{t.id}-{np.dtype(d).name}-{o}")
             for t in TWINS for o in _distinct_orders(t) for d in DTYPES]


@pytest.mark.parametrize("twin,dtype,order", TWIN_RUNS)
def test_twin(twin, dtype, order):
    """Forward, input and parameter gradients, and buffers after the step, as torch's.

    Every backend order that resolves the layer's ops differently runs it (a layer
    on ops only the reference has runs once, under "numpy")."""
    _order(order)
    rng = np.random.default_rng(zlib.crc32(twin.id.encode()))
    pm, tm = build(twin, dtype)
    if twin.perturb:
        _perturb(pm, rng)
    load_into_torch(tm, pm)
    if twin.mode == "eval":
        pm.eval()
        tm.eval()
    arrays = [i.make(rng, dtype) for i in twin.inputs]
    px = [pydl.Tensor(a.copy(), requires_grad=i.grad) for a, i in zip(arrays, twin.inputs)]
    tx = [_to_torch(a, i.grad) for a, i in zip(arrays, twin.inputs)]
    rtol = RTOL[dtype] * twin.tol_scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KLDivLoss "mean": torch's advice to use "batchmean"
        ty = tm(*[t.clone() if t.requires_grad else t for t in tx])  # clone: torch's inplace=True
        with pydl.use_backend(order):
            py = pm(*px)
            assert py.dtype == dtype, f"output dtype {py.dtype}, expected {np.dtype(dtype)}"
            g = rng.standard_normal(py.shape).astype(dtype)
            py.backward(g)
    ty.backward(torch.from_numpy(g.copy()))
    assert_close("output", py.data, ty, rtol)
    for k, (p, t, i) in enumerate(zip(px, tx, twin.inputs)):
        if i.grad:
            assert p.grad is not None, f"input {k}: no gradient"
            assert_close(f"input {k} grad", p.grad, t.grad, rtol)
    tparams = dict(tm.named_parameters())
    assert [n for n, _ in pm.named_parameters()] == list(tparams)
    for name, p in pm.named_parameters():
        assert p.grad is not None, f"parameter {name}: no gradient"
        assert_close(f"{name}.grad", p.grad, tparams[name].grad, rtol)
    tstate = tm.state_dict()
    for name, v in pm.state_dict().items():  # running statistics after the step
        assert_close(f"state {name}", v, tstate[name], rtol)


# -- state_dict and default initialisation ------------------------------------------------------

STATEFUL = [t for t in TWINS if list(build(t, np.float32)[1].state_dict())]


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("twin", STATEFUL, ids=[t.id for t in STATEFUL])
def test_state_dict_matches_torch(twin, dtype):
    """Keys (in order), shapes and dtypes as torch's; torch's state_dict loads into pydl."""
    pm, tm = build(twin, dtype, seed=1)
    ps, ts = pm.state_dict(), tm.state_dict()
    assert list(ps) == list(ts)
    for k in ts:
        assert tuple(ps[k].shape) == tuple(ts[k].shape), k
        assert np.dtype(ps[k].dtype) == ts[k].numpy().dtype, k
        assert isinstance(ps[k], np.ndarray), k
    with torch.no_grad():  # torch -> pydl: torch tensors straight into load_state_dict
        for p in tm.parameters():
            p.uniform_(-1, 1)
    res = pm.load_state_dict(tm.state_dict())
    assert not res.missing_keys and not res.unexpected_keys
    for k, v in pm.state_dict().items():
        np.testing.assert_array_equal(v, ts[k].numpy(), err_msg=k)


def _uniform_bound(t):
    return 1 / math.sqrt(t.shape[1] * int(np.prod(t.shape[2:])))


INIT = [  # (make, {key: expected bound of a uniform init, or "normal"})
    (lambda nn: nn.Linear(200, 300), {"weight": 1 / math.sqrt(200), "bias": 1 / math.sqrt(200)}),
    (lambda nn: nn.Conv2d(8, 64, 3), {"weight": 1 / math.sqrt(72), "bias": 1 / math.sqrt(72)}),
    (lambda nn: nn.Conv2d(16, 32, (3, 2), groups=4), {"weight": 1 / math.sqrt(24), "bias": 1 / math.sqrt(24)}),
    (lambda nn: nn.Embedding(300, 64, padding_idx=5), {"weight": "normal"}),
    (lambda nn: nn.PReLU(8, init=0.3), {}),
    (lambda nn: nn.BatchNorm2d(8), {}),
    (lambda nn: nn.LayerNorm((3, 4)), {}),
    (lambda nn: nn.GroupNorm(2, 8), {}),
    (lambda nn: nn.InstanceNorm2d(4, affine=True, track_running_stats=True), {}),
]


@pytest.mark.parametrize("make,expect", INIT, ids=[f"init{i}" for i in range(len(INIT))])
def test_default_init(make, expect):
    """Constant inits equal torch's exactly; random ones have torch's distribution
    (uniform in +-1/sqrt(fan_in), or N(0, 1)) and repeat under pydl.manual_seed."""
    pydl.manual_seed(3)
    pm = make(pnn)
    tm = make(tnn)
    ps, ts = pm.state_dict(), tm.state_dict()
    for k, tv in ts.items():
        pv, tv = np.asarray(ps[k], np.float64), tv.numpy().astype(np.float64)
        kind = expect.get(k)
        if kind is None:
            np.testing.assert_array_equal(pv, tv, err_msg=k)
        elif kind == "normal":
            rows = np.ones(pv.shape[0], bool)
            rows[5] = False  # the padding row: zero in both
            assert not pv[5].any() and not tv[5].any()
            assert abs(pv[rows].mean()) < 0.02 and abs(pv[rows].std() - 1) < 0.02
        else:
            b = kind
            assert np.abs(pv).max() <= b and np.abs(tv).max() <= b, k
            if pv.size >= 256:  # enough draws for the statistics to be tight
                assert np.abs(pv).max() > 0.95 * b, k
                assert abs(pv.std() - b / math.sqrt(3)) < 0.1 * b / math.sqrt(3), k
                assert abs(pv.std() - tv.std()) < 0.15 * tv.std(), k
    pydl.manual_seed(3)
    again = make(pnn).state_dict()
    for k, v in ps.items():
        np.testing.assert_array_equal(v, again[k], err_msg=f"{k} after the same manual_seed")


def test_dtype_and_device_arguments():
    assert pnn.Linear(2, 3, dtype=torch.float64).weight.dtype == np.float64
    assert pnn.Conv2d(1, 2, 3, dtype="float64").bias.dtype == np.float64
    assert pnn.BatchNorm1d(3, dtype=np.float64).running_var.dtype == np.float64
    assert pnn.BatchNorm1d(3, dtype=np.float64).num_batches_tracked.dtype == np.int64
    assert pnn.Embedding(4, 2, device="cpu").weight.dtype == np.float32
    with pytest.raises(TypeError, match="dtype"):
        pnn.Linear(2, 3, dtype=np.int64)


# -- BatchNorm over several steps, train and eval ------------------------------------------------


@pytest.mark.parametrize("momentum", [0.1, None, 0.5])
@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (6, 3)), ("BatchNorm1d", (4, 3, 5)),
                                       ("BatchNorm2d", (3, 3, 4, 2))])
def test_batchnorm_steps(cls, shape, momentum):
    """Running statistics and num_batches_tracked follow torch's over 3 training steps
    (momentum None: the cumulative average); eval then normalizes with them."""
    rng = np.random.default_rng(5)
    pm, tm = getattr(pnn, cls)(3, momentum=momentum), getattr(tnn, cls)(3, momentum=momentum)
    load_into_torch(tm, pm)
    for step in range(3):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(np.float32)
        assert_close(f"step {step} output", pm(pydl.tensor(x)).data, tm(torch.from_numpy(x)), 2e-5)
        ts = tm.state_dict()
        for k, v in pm.state_dict().items():
            assert_close(f"step {step} {k}", v, ts[k], 2e-6)
        assert int(pm.num_batches_tracked.item()) == step + 1
    pm.eval()
    tm.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    assert_close("eval output", pm(pydl.tensor(x)).data, tm(torch.from_numpy(x)), 2e-5)
    assert int(pm.num_batches_tracked.item()) == 3  # eval counts nothing
    pm.reset_running_stats()
    assert int(pm.num_batches_tracked.item()) == 0 and not pm.running_mean.data.any()


def test_batchnorm_rejected_input_counts_nothing():
    bn = pnn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(pydl.randn(1, 3))
    assert int(bn.num_batches_tracked.item()) == 0


# -- Dropout ----------------------------------------------------------------------------------


def test_dropout_eval_is_identity():
    d = pnn.Dropout(0.4).eval()
    x = pydl.randn(5, 6, requires_grad=True)
    y = d(x)
    np.testing.assert_array_equal(y.data, x.data)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropout_train(p, order):
    """About a fraction p zeroed, the rest scaled by 1/(1-p), the gradient through the same mask;
    the same pydl.manual_seed gives the same mask on every backend."""
    _order(order)
    x = pydl.Tensor(np.random.default_rng(0).uniform(0.5, 1.5, (200, 500)).astype(np.float32), requires_grad=True)
    d = pnn.Dropout(p)
    pydl.manual_seed(11)
    with pydl.use_backend(order):
        y = d(x)
        y.backward(np.ones(x.shape, np.float32))
    zero = y.data == 0
    n = zero.size
    assert abs(zero.mean() - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3
    np.testing.assert_allclose(y.data[~zero], x.data[~zero] / (1 - p), rtol=1e-6)
    np.testing.assert_allclose(x.grad, np.where(zero, 0, 1 / (1 - p)).astype(np.float32), rtol=1e-6)
    pydl.manual_seed(11)
    again = d(x)  # automatic backend, same seed: same mask
    np.testing.assert_array_equal(again.data, y.data)
    assert (d(x).data != y.data).any()  # the generator moved on: a new mask


def test_dropout_generator_keyword():
    x = pydl.ones(64, 64)
    a = pnn.Dropout(0.5, generator=np.random.default_rng(1))
    b = pnn.Dropout(0.5, generator=np.random.default_rng(1))
    c = pnn.Dropout(0.5, generator=np.random.default_rng(2))
    ya, yb, yc = a(x), b(x), c(x)
    np.testing.assert_array_equal(ya.data, yb.data)
    assert (ya.data != yc.data).any()
    pydl.manual_seed(0)
    first = pnn.Dropout(0.5)(x)
    pydl.manual_seed(0)  # the layer's own generator does not touch pydl's
    pnn.Dropout(0.5, generator=np.random.default_rng(1))(x)
    np.testing.assert_array_equal(pnn.Dropout(0.5)(x).data, first.data)


def test_dropout_p1_and_p0():
    x = pydl.randn(3, 4, requires_grad=True)
    assert not pnn.Dropout(1.0)(x).data.any()
    np.testing.assert_array_equal(pnn.Dropout(0.0)(x).data, x.data)


# -- bad arguments --------------------------------------------------------------------------------

BOTH_RAISE = [  # the same call fails in torch and pydl, with the same exception class
    ("Conv2d in%groups", lambda nn: nn.Conv2d(4, 6, 3, groups=3), ValueError,
     "in_channels must be divisible by groups"),
    ("Conv2d out%groups", lambda nn: nn.Conv2d(3, 4, 3, groups=3), ValueError,
     "out_channels must be divisible by groups"),
    ("Conv2d groups=0", lambda nn: nn.Conv2d(3, 3, 3, groups=0), ValueError, "groups must be a positive integer"),
    ("Conv2d padding str", lambda nn: nn.Conv2d(3, 3, 3, padding="full"), ValueError, "Invalid padding string"),
    ("Conv2d same strided", lambda nn: nn.Conv2d(3, 3, 3, stride=2, padding="same"), ValueError,
     "not supported for strided"),
    ("Conv2d padding_mode", lambda nn: nn.Conv2d(3, 3, 3, padding_mode="mirror"), ValueError,
     "padding_mode must be one of"),
    ("Conv2d kernel float", lambda nn: nn.Conv2d(3, 3, 2.5), TypeError, "kernel_size"),
    ("Linear float", lambda nn: nn.Linear(3.5, 2), TypeError, "in_features"),
    ("GroupNorm", lambda nn: nn.GroupNorm(4, 6), ValueError,
     r"num_channels \(6\) must be divisible by num_groups \(4\)"),
    ("Dropout p>1", lambda nn: nn.Dropout(1.5), ValueError, "dropout probability has to be between 0 and 1"),
    ("Dropout p<0", lambda nn: nn.Dropout(-0.1), ValueError, "dropout probability has to be between 0 and 1"),
    ("Unflatten int", lambda nn: nn.Unflatten(1, 6), TypeError, "unflattened_size must be a tuple of ints"),
    ("Unflatten float", lambda nn: nn.Unflatten(1, (2, 3.0)), TypeError, "unflattened_size must be tuple of ints"),
]


@pytest.mark.parametrize("make,exc,match", [c[1:] for c in BOTH_RAISE], ids=[c[0] for c in BOTH_RAISE])
def test_bad_arguments_like_torch(make, exc, match):
    with pytest.raises(exc):
        make(tnn)
    with pytest.raises(exc, match=match):
        make(pnn)


PYDL_RAISES = [  # where pydl refuses what torch offers, or refuses at construction what torch refuses later
    ("Conv2d reflect", lambda: pnn.Conv2d(3, 3, 3, padding_mode="reflect"), ValueError, "only 'zeros'"),
    ("MaxPool2d indices", lambda: pnn.MaxPool2d(2, return_indices=True), NotImplementedError, "return_indices"),
    ("Embedding max_norm", lambda: pnn.Embedding(5, 2, max_norm=1.0), NotImplementedError, "max_norm"),
    ("Embedding sparse", lambda: pnn.Embedding(5, 2, sparse=True), NotImplementedError, "sparse"),
    ("Embedding padding_idx", lambda: pnn.Embedding(5, 2, padding_idx=5), ValueError, "Padding_idx"),
    ("Embedding _weight", lambda: pnn.Embedding(5, 2, _weight=np.zeros((5, 3), np.float32)), ValueError, "Shape"),
    ("GELU approximate", lambda: pnn.GELU("erf"), ValueError, "approximate"),
    ("AvgPool2d divisor 0", lambda: pnn.AvgPool2d(2, divisor_override=0), ValueError, "divisor"),
    ("MSELoss reduction", lambda: pnn.MSELoss(reduction="avg"), ValueError, "reduction"),
    ("KLDivLoss reduction", lambda: pnn.KLDivLoss(reduction="batch"), ValueError, "reduction"),
    ("CE label_smoothing", lambda: pnn.CrossEntropyLoss(label_smoothing=1.5), ValueError, "label_smoothing"),
    ("CE ignore_index", lambda: pnn.CrossEntropyLoss(ignore_index=1.0), TypeError, "ignore_index"),
    ("CE weight list", lambda: pnn.CrossEntropyLoss(weight=[1.0, 2.0]), TypeError, "weight"),
    ("Dropout generator", lambda: pnn.Dropout(0.5, generator=3), TypeError, "generator"),
    ("MaxPool2d kernel 0", lambda: pnn.MaxPool2d(0), ValueError, "kernel_size"),
    ("AdaptiveAvgPool2d triple", lambda: pnn.AdaptiveAvgPool2d((1, 2, 3)), ValueError, "output_size"),
    ("LayerNorm shape", lambda: pnn.LayerNorm("4"), TypeError, "normalized_shape"),
]


@pytest.mark.parametrize("make,exc,match", [c[1:] for c in PYDL_RAISES], ids=[c[0] for c in PYDL_RAISES])
def test_bad_arguments_pydl(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


FORWARD_RAISE = [  # bad inputs at forward: torch's ValueError and message
    ("BatchNorm1d 4D", lambda nn: nn.BatchNorm1d(3), (2, 3, 4, 4), "expected 2D or 3D input"),
    ("BatchNorm2d 3D", lambda nn: nn.BatchNorm2d(3), (2, 3, 4), "expected 4D input"),
    ("InstanceNorm2d 2D", lambda nn: nn.InstanceNorm2d(3), (2, 3), "expected 3D or 4D input"),
    ("InstanceNorm2d channels", lambda nn: nn.InstanceNorm2d(3, affine=True), (2, 4, 3, 3),
     "to match num_features"),
]


@pytest.mark.parametrize("make,shape,match", [c[1:] for c in FORWARD_RAISE], ids=[c[0] for c in FORWARD_RAISE])
def test_bad_inputs_like_torch(make, shape, match):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        make(tnn)(torch.from_numpy(x))
    with pytest.raises(ValueError, match=match):
        make(pnn)(pydl.tensor(x))


@pytest.mark.parametrize("make,shape", [(lambda nn: nn.Flatten(), (5,)), (lambda nn: nn.Flatten(0, 4), (2, 3)),
                                        (lambda nn: nn.Unflatten(2, (2, 3)), (2, 6))])
def test_flatten_dim_out_of_range(make, shape):
    x = np.ones(shape, np.float32)
    with pytest.raises(IndexError, match="Dimension out of range"):
        make(tnn)(torch.from_numpy(x))
    with pytest.raises(IndexError, match="Dimension out of range"):
        make(pnn)(pydl.tensor(x))


def test_dtype_mismatch_raises():
    with pytest.raises(TypeError, match="dtype"):
        pnn.Linear(3, 2)(pydl.randn(2, 3, dtype=np.float64))


def test_embedding_from_pretrained():
    """The table used as given (no init, the padding row kept), frozen by default, as torch."""
    w = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    idx = np.array([[1, 5], [0, 1]])
    e = pnn.Embedding.from_pretrained(pydl.tensor(w), padding_idx=1)
    te = tnn.Embedding.from_pretrained(torch.from_numpy(w), padding_idx=1)
    assert not e.weight.requires_grad and repr(e) == repr(te)
    np.testing.assert_array_equal(e(pydl.tensor(idx)).data, te(torch.from_numpy(idx)).detach().numpy())
    e = pnn.Embedding.from_pretrained(w, freeze=False, padding_idx=1)
    te = tnn.Embedding.from_pretrained(torch.from_numpy(w), freeze=False, padding_idx=1)
    e(idx).sum().backward()
    te(torch.from_numpy(idx)).sum().backward()
    np.testing.assert_array_equal(e.weight.grad, te.weight.grad.numpy())
    with pytest.raises(ValueError, match="2-dimensional"):
        pnn.Embedding.from_pretrained(w[0])


def test_reduction_legacy_arguments():
    with pytest.warns(UserWarning, match="reduction='sum'"):
        assert pnn.MSELoss(size_average=False).reduction == "sum"
    with pytest.warns(UserWarning, match="reduction='none'"):
        assert pnn.NLLLoss(reduce=False).reduction == "none"


# -- softmax's implicit dim, reprs, a small model -------------------------------------------------


@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 4), (2, 3, 2, 2)])
@pytest.mark.parametrize("cls", ["Softmax", "LogSoftmax"])
def test_softmax_implicit_dim(cls, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        y = getattr(pnn, cls)()(pydl.tensor(x))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(tnn, cls)()(torch.from_numpy(x))
    assert_close("output", y.data, ref, 2e-6)


@pytest.mark.parametrize("twin", TWINS, ids=[t.id for t in TWINS])
def test_repr_matches_torch(twin):
    pm, tm = build(twin, np.float32)
    assert repr(pm) == repr(tm)


def _lenet(nn):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding="same", bias=False), nn.GroupNorm(2, 6), nn.GELU(), nn.AvgPool2d(2),
        nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(), nn.Linear(24, 16), nn.LayerNorm(16), nn.PReLU(),
        nn.Dropout(0.3), nn.Linear(16, 5), nn.LogSoftmax(dim=1))


@pytest.mark.parametrize("order", ORDERS)
def test_small_model_end_to_end(order):
    """A LeNet-like stack and NLLLoss: the loss, every parameter gradient and the
    running statistics after two steps (train) and the eval output, as torch's."""
    _order(order)
    pydl.manual_seed(4)
    pm, tm = _lenet(pnn).double(), _lenet(tnn).double()
    load_into_torch(tm, pm)
    pm[13].eval()  # the Dropout: the rest trains
    tm[13].eval()
    rng = np.random.default_rng(2)
    ploss, tloss = pnn.NLLLoss(), tnn.NLLLoss()
    for step in range(2):
        x = rng.standard_normal((4, 1, 8, 8))
        t = rng.integers(0, 5, 4)
        pm.zero_grad()
        tm.zero_grad()
        with pydl.use_backend(order):
            lp = ploss(pm(pydl.tensor(x)), t)
            lp.backward()
        lt = tloss(tm(torch.from_numpy(x)), torch.from_numpy(t))
        lt.backward()
        assert_close(f"step {step} loss", lp.data, lt, 1e-12)
        tparams = dict(tm.named_parameters())
        for name, p in pm.named_parameters():
            assert_close(f"step {step} {name}.grad", p.grad, tparams[name].grad, 1e-10)
    ts = tm.state_dict()
    for k, v in pm.state_dict().items():
        assert_close(k, v, ts[k], 1e-12)
    pm.eval()
    tm.eval()
    x = rng.standard_normal((2, 1, 8, 8))
    with pydl.use_backend(order):
        assert_close("eval output", pm(pydl.tensor(x)).data, tm(torch.from_numpy(x)), 1e-12)
