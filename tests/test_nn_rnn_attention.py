"""The recurrent, attention and transformer layers of ``pydl.nn`` against their torch twins.

One body for every layer (:func:`twin`): copy the pydl layer's state_dict into
the torch layer, run both forwards on the same inputs under a backend
preference order, backward one random upstream gradient per output, and
compare every output, every input gradient (states included) and every
parameter gradient, in float32 and float64. Then: state_dict keys and shapes,
the copy from torch, default initialisation, reprs, unbatched inputs,
dropout in training and eval, deep copies, and bad arguments.
"""
import copy
import math
import warnings
import zlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pydl  # noqa: E402
import pydl.nn as pnn  # noqa: E402
import torch.nn as tnn  # noqa: E402
from twins import DTYPES, ORDERS, assert_close, torch_dtype  # noqa: E402
from twins import order as _order  # noqa: E402

# relative to each compared array's largest magnitude: a few GEMMs of length <= 16 and
# a recurrence of 3 steps (torch itself differs from float64 by ~1e-7 in float32)
RTOL = {np.float32: 2e-5, np.float64: 1e-11}
TORCH_DTYPE = {d: torch_dtype(torch, d) for d in DTYPES}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny shapes on a shared machine: one thread each for torch and pydl."""
    before_t, before_p = torch.get_num_threads(), pydl.get_num_threads()
    torch.set_num_threads(1)
    pydl.set_num_threads(1)
    yield
    torch.set_num_threads(before_t)
    pydl.set_num_threads(before_p)




def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))




def _flat(out):
    """Outputs as a flat list (nested tuples flattened; None kept)."""
    if isinstance(out, (tuple, list)):
        return [o for x in out for o in _flat(x)]
    return [out]


def perturb(m, rng, scale=0.3):
    """Move every parameter off its default (zero biases, unit LayerNorm weights)."""
    for p in m.parameters():
        p.data[...] = p.data + (scale * rng.standard_normal(p.shape)).astype(p.dtype)


def twin(pm, tm, arrays, call, order, dtype, rng, mode="train", warn_ok=False):
    """Copy pm's weights into tm, run ``call(module, is_torch, *inputs)`` on both (pydl
    under ``order``), backward a random upstream gradient per output and compare
    outputs, input gradients and parameter gradients."""
    rtol = RTOL[dtype]
    if dtype == np.float64:
        pm.double()
        tm.double()
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in pm.state_dict().items()})
    pm.train(mode == "train")
    tm.train(mode == "train")
    px = [None if a is None else pydl.Tensor(a.astype(dtype), requires_grad=True) for a in arrays]
    tx = [None if a is None else torch.from_numpy(a.astype(dtype)).requires_grad_() for a in arrays]
    with warnings.catch_warnings():
        if warn_ok:
            warnings.simplefilter("ignore")
        with pydl.use_backend(order):
            pout = _flat(call(pm, False, *px))
            gs = [None if o is None else rng.standard_normal(o.shape).astype(dtype) for o in pout]
            total = None
            for o, g in zip(pout, gs):
                if o is not None:
                    s = (o * g).sum()
                    total = s if total is None else total + s
            total.backward()
        tout = _flat(call(tm, True, *tx))
    assert len(tout) == len(pout)
    total = None
    for i, (o, t, g) in enumerate(zip(pout, tout, gs)):
        assert (o is None) == (t is None), f"output {i}: pydl {o is None and 'None'}, torch {t is None and 'None'}"
        if o is None:
            continue
        assert o.dtype == dtype, f"output {i}: dtype {o.dtype}"
        assert_close(f"output {i}", o, t, rtol)
        s = (t * torch.from_numpy(g)).sum()
        total = s if total is None else total + s
    total.backward()
    for i, (p, t) in enumerate(zip(px, tx)):
        if p is not None:
            assert_close(f"grad of input {i}", p.grad, t.grad, rtol)
    tparams = dict(tm.named_parameters())
    pparams = dict(pm.named_parameters())
    assert list(pparams) == list(tparams)
    for name, p in pparams.items():
        t = tparams[name]
        if t.grad is None:
            assert p.grad is None or not np.any(p.grad), f"{name}: pydl has a gradient, torch none"
        else:
            assert p.grad is not None, f"{name}: no gradient"
            assert_close(f"grad of {name}", p.grad, t.grad, rtol)
    return pout, tout


def test_graph_with_a_shared_intermediate():
    """What every layer here relies on (a stacked RNN's first layer feeds both the second
    layer and h_n; a residual x + f(x)): a node's backward runs after all its consumers'."""
    a = pydl.Tensor(np.ones(3), requires_grad=True)
    y = a * 2
    (y + y * 3).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full(3, 8.0))


# -- RNN, LSTM, GRU -----------------------------------------------------------------------------

T, B, I, H = 3, 2, 3, 4


def _seq(kind, num_layers, bidirectional, batch_first, with_states, bias, nonlinearity="tanh", unbatched=False):
    """(pydl module, torch module, arrays, call) for one sequence configuration."""
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    if kind == "RNN":
        kw["nonlinearity"] = nonlinearity
    pm, tm = getattr(pnn, kind)(I, H, **kw), getattr(tnn, kind)(I, H, **kw)
    rng = _rng(kind, num_layers, bidirectional, batch_first, with_states, bias, nonlinearity, unbatched)
    shape = (T, I) if unbatched else ((B, T, I) if batch_first else (T, B, I))
    x = rng.standard_normal(shape)
    D = 2 if bidirectional else 1
    sshape = (num_layers * D, H) if unbatched else (num_layers * D, B, H)
    states = [rng.standard_normal(sshape) if with_states else None for _ in range(2 if kind == "LSTM" else 1)]

    def call(m, is_torch, x, *states):
        if states[0] is None:
            return m(x)
        return m(x, tuple(states) if kind == "LSTM" else states[0])

    return pm, tm, [x] + states, call


SEQ_CASES = [(kind, L, bi, bf, st, bias) for kind in ("RNN", "LSTM", "GRU") for L in (1, 2) for bi in (False, True)
             for bf in (False, True) for st in (False, True) for bias in (True, False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind,num_layers,bidirectional,batch_first,with_states,bias", SEQ_CASES,
                         ids=lambda v: str(v) if not isinstance(v, bool) else ("T" if v else "F"))
def test_sequence_matches_torch(kind, num_layers, bidirectional, batch_first, with_states, bias, order, dtype):
    pm, tm, arrays, call = _seq(kind, num_layers, bidirectional, batch_first, with_states, bias)
    perturb(pm, _rng("p", kind), 0.1)
    pout, _ = twin(pm, tm, arrays, call, _order(order), dtype, _rng(kind, order, dtype))
    D = 2 if bidirectional else 1
    assert pout[0].shape == ((B, T, D * H) if batch_first else (T, B, D * H))
    assert all(s.shape == (num_layers * D, B, H) for s in pout[1:])


# (kind, num_layers, bidirectional, batch_first, with_states, bias, nonlinearity); LSTM and GRU unbatched
EXTRA_SEQ = {"rnn_relu_2_bi": ("RNN", 2, True, False, True, True, "relu"),
             "rnn_relu_1": ("RNN", 1, False, True, False, False, "relu"),
             "lstm_unbatched": ("LSTM", 2, True, True, True, True, "tanh"),
             "gru_unbatched": ("GRU", 2, True, False, True, False, "tanh"),
             "lstm_unbatched_nostate": ("LSTM", 1, False, False, False, True, "tanh")}


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("case", list(EXTRA_SEQ.values()), ids=list(EXTRA_SEQ))
def test_sequence_relu_and_unbatched(case, order):
    kind, L, bi, bf, st, bias, nl = case
    unbatched = kind != "RNN"
    pm, tm, arrays, call = _seq(kind, L, bi, bf, st, bias, nl, unbatched=unbatched)
    for dtype in DTYPES:
        pm2, tm2 = copy.deepcopy(pm), copy.deepcopy(tm)
        pout, tout = twin(pm2, tm2, arrays, call, _order(order), dtype, _rng(case, order, dtype))
        assert [o.shape for o in pout] == [tuple(t.shape) for t in tout]


# -- cells ----------------------------------------------------------------------------------------

CELL_CASES = [(kind, bias, st, batched) for kind in ("RNNCell", "LSTMCell", "GRUCell") for bias in (True, False)
              for st in (False, True) for batched in (True, False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("kind,bias,with_states,batched", CELL_CASES,
                         ids=lambda v: str(v) if not isinstance(v, bool) else ("T" if v else "F"))
def test_cell_matches_torch(kind, bias, with_states, batched, order, dtype):
    kw = dict(nonlinearity="relu") if kind == "RNNCell" and bias else {}
    pm, tm = getattr(pnn, kind)(I, H, bias, **kw), getattr(tnn, kind)(I, H, bias, **kw)
    rng = _rng(kind, bias, with_states, batched)
    x = rng.standard_normal((B, I) if batched else (I,))
    states = [rng.standard_normal((B, H) if batched else (H,)) if with_states else None
              for _ in range(2 if kind == "LSTMCell" else 1)]

    def call(m, is_torch, x, *states):
        if states[0] is None:
            return m(x)
        return m(x, tuple(states) if kind == "LSTMCell" else states[0])

    pout, _ = twin(pm, tm, [x] + states, call, _order(order), dtype, _rng(kind, order, dtype))
    assert all(o.shape == ((B, H) if batched else (H,)) for o in pout)


# -- MultiheadAttention ----------------------------------------------------------------------------

E, NH, L_, S_ = 8, 2, 4, 5


def _bool_mask(rng, *shape):
    """Torch MHA's meaning (True = masked); key 0 always visible, so no row is fully masked."""
    m = rng.random(shape) < 0.4
    m[..., 0] = False
    return m


def _float_mask(rng, *shape):
    m = rng.standard_normal(shape)
    m[rng.random(shape) < 0.2] = -np.inf
    m[..., 0] = 0.3
    return m


def _kpm(rng, S, float_=False):
    """Padding at the end of the second sequence (B = 2)."""
    m = np.zeros((2, S), bool)
    m[1, 3:] = True
    if float_:
        return np.where(m, -np.inf, rng.standard_normal(m.shape))
    return m


# (id, kwargs for the constructor, self-attention, forward options; masks as
#  (name, maker) and the torch call's differences)
MHA_CASES = [
    ("self_weights", {}, True, dict(need_weights=True)),
    ("cross_weights_per_head_boolmask", {}, False, dict(need_weights=True, average_attn_weights=False,
                                                         attn_mask="bool2")),
    ("cross_fused_floatmask", {}, False, dict(need_weights=False, attn_mask="float2")),
    ("cross_fused_boolmask3d", {}, False, dict(need_weights=False, attn_mask="bool3")),
    ("cross_fused_floatmask3d", {}, False, dict(need_weights=False, attn_mask="float3")),
    ("kpm_sdpa", {}, False, dict(need_weights=False, key_padding_mask="bool")),
    ("kpm_boolmask_weights", {}, False, dict(need_weights=True, key_padding_mask="bool", attn_mask="bool2")),
    ("kpm_float_floatmask_sdpa", {}, False, dict(need_weights=False, key_padding_mask="float", attn_mask="float3")),
    ("kpm_bool_floatmask_sdpa", {}, False, dict(need_weights=False, key_padding_mask="bool", attn_mask="float2")),
    ("kpm_bool_boolmask3d_sdpa", {}, False, dict(need_weights=False, key_padding_mask="bool", attn_mask="bool3")),
    ("causal_hint_fused", {}, True, dict(need_weights=False, attn_mask="causal", is_causal=True)),
    ("causal_only_fused", {}, True, dict(need_weights=False, is_causal=True)),
    ("causal_only_weights", {}, True, dict(need_weights=True, is_causal=True)),
    ("causal_kpm_sdpa", {}, True, dict(need_weights=False, is_causal=True, key_padding_mask="bool")),
    ("nobias_weights", dict(bias=False), False, dict(need_weights=True, attn_mask="float2")),
    ("nobias_fused", dict(bias=False), True, dict(need_weights=False)),
    ("kvdim_sdpa", dict(kdim=3, vdim=6), False, dict(need_weights=False, key_padding_mask="bool")),
    ("kvdim_weights", dict(kdim=3, vdim=6), False, dict(need_weights=True, attn_mask="bool2")),
    ("kvdim_nomask", dict(kdim=5, vdim=3), False, dict(need_weights=False)),
]


def _mha_masks(opts, rng, L, S):
    am = opts.get("attn_mask")
    masks = {}
    if am == "bool2":
        masks["attn_mask"] = _bool_mask(rng, L, S)
    elif am == "bool3":
        masks["attn_mask"] = _bool_mask(rng, 2 * NH, L, S)
    elif am == "float2":
        masks["attn_mask"] = _float_mask(rng, L, S)
    elif am == "float3":
        masks["attn_mask"] = _float_mask(rng, 2 * NH, L, S)
    elif am == "causal":
        masks["attn_mask"] = np.triu(np.ones((L, S), bool), 1)
    kp = opts.get("key_padding_mask")
    if kp is not None:
        masks["key_padding_mask"] = _kpm(rng, S, kp == "float")
    return masks


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("cid,ctor,self_attn,opts", MHA_CASES, ids=[c[0] for c in MHA_CASES])
def test_mha_matches_torch(cid, ctor, self_attn, opts, batch_first, order, dtype):
    rng = _rng(cid, batch_first)
    pm = pnn.MultiheadAttention(E, NH, batch_first=batch_first, **ctor)
    tm = tnn.MultiheadAttention(E, NH, batch_first=batch_first, **ctor)
    perturb(pm, rng)
    L = L_
    S = L if self_attn else S_
    kdim, vdim = ctor.get("kdim", E), ctor.get("vdim", E)

    def seq(n, d):
        return rng.standard_normal((2, n, d) if batch_first else (n, 2, d))

    arrays = [seq(L, E)] if self_attn else [seq(L, E), seq(S, kdim), seq(S, vdim)]
    masks = _mha_masks(opts, rng, L, S)
    fwd = {k: v for k, v in opts.items() if k not in ("attn_mask", "key_padding_mask")}
    if opts.get("is_causal") and "attn_mask" not in masks:
        causal = np.triu(np.ones((L, S), bool), 1)  # torch wants the mask with its is_causal hint
    else:
        causal = None

    def call(m, is_torch, q, k=None, v=None):
        if k is None:
            k = v = q
        ms = {n: (torch.from_numpy(a.astype(dtype) if a.dtype != bool else a) if is_torch else a)
              for n, a in masks.items()}
        if is_torch and causal is not None:
            ms["attn_mask"] = torch.from_numpy(causal)
        return m(q, k, v, **ms, **fwd)

    pout, tout = twin(pm, tm, arrays, call, _order(order), dtype, _rng(cid, order, dtype), warn_ok=True)
    if opts.get("need_weights"):
        w = pout[1]
        per_head = opts.get("average_attn_weights") is False
        assert w.shape == ((2, NH, L, S) if per_head else (2, L, S))
        np.testing.assert_allclose(w.numpy().sum(-1), 1, rtol=1e-5)
    else:
        assert pout[1] is None


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_unbatched(need_weights, order):
    rng = _rng("mha_unbatched", need_weights)
    pm, tm = pnn.MultiheadAttention(E, NH, batch_first=True), tnn.MultiheadAttention(E, NH, batch_first=True)
    perturb(pm, rng)
    q, k = rng.standard_normal((L_, E)), rng.standard_normal((S_, E))
    kpm = np.zeros(S_, bool)
    kpm[-2:] = True

    def call(m, is_torch, q, k, v):
        return m(q, k, v, key_padding_mask=torch.from_numpy(kpm) if is_torch else kpm, need_weights=need_weights,
                 average_attn_weights=False)

    for dtype in DTYPES:
        pm2, tm2 = copy.deepcopy(pm), copy.deepcopy(tm)
        pout, _ = twin(pm2, tm2, [q, k, k.copy()], call, _order(order), dtype, _rng("mha_u", order, dtype))
        assert pout[0].shape == (L_, E)
        if need_weights:
            assert pout[1].shape == (NH, L_, S_)


def test_mha_state_dict_init_and_repr():
    pydl.manual_seed(1)
    m = pnn.MultiheadAttention(16, 4)
    t = tnn.MultiheadAttention(16, 4)
    assert [(k, tuple(v.shape)) for k, v in m.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in t.state_dict().items()]
    bound = math.sqrt(6 / (16 + 48))
    w = m.in_proj_weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert not m.in_proj_bias.numpy().any() and not m.out_proj.bias.numpy().any()
    ow = m.out_proj.weight.numpy()
    assert np.abs(ow).max() <= 1 / math.sqrt(16) and ow.std() > 0.3 / math.sqrt(16)
    assert isinstance(m.out_proj, pnn.Linear)
    assert repr(m) == repr(t)
    # separate projections when kdim / vdim differ
    m2, t2 = pnn.MultiheadAttention(8, 2, kdim=3, vdim=5, bias=False), tnn.MultiheadAttention(8, 2, kdim=3, vdim=5,
                                                                                               bias=False)
    assert [(k, tuple(v.shape)) for k, v in m2.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in t2.state_dict().items()]
    assert m2.in_proj_weight is None and m2.out_proj.bias is None
    assert np.abs(m2.k_proj_weight.numpy()).max() <= math.sqrt(6 / (3 + 8))
    # the copy from torch
    m.load_state_dict(t.state_dict())
    np.testing.assert_array_equal(m.in_proj_weight.numpy(), t.in_proj_weight.detach().numpy())


def test_mha_dropout_train_and_eval():
    rng = _rng("mha_dropout")
    pm = pnn.MultiheadAttention(E, NH, dropout=0.5, batch_first=True)
    tm = tnn.MultiheadAttention(E, NH, dropout=0.5, batch_first=True)
    perturb(pm, rng)
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in pm.state_dict().items()})
    x = pydl.Tensor(rng.standard_normal((2, L_, E)).astype(np.float32))
    pm.eval()
    ref, _ = pm(x, x, x, need_weights=False)
    tm.eval()
    with torch.no_grad():
        tref, _ = tm(torch.from_numpy(x.numpy()), torch.from_numpy(x.numpy()), torch.from_numpy(x.numpy()),
                     need_weights=False)
    assert_close("eval output", ref, tref, RTOL[np.float32])
    again, _ = pm(x, x, x)  # the explicit path (need_weights) agrees
    assert_close("eval weights path", again, tref, RTOL[np.float32])
    pm.train()
    pydl.manual_seed(3)
    out1, w1 = pm(x, x, x, average_attn_weights=False)
    out2, _ = pm(x, x, x, need_weights=False)
    assert not np.allclose(out1.numpy(), ref.numpy()) and not np.allclose(out2.numpy(), out1.numpy())
    w = w1.numpy()
    assert (w == 0).any() and (w > 0).any()  # dropped weights, the rest scaled by 2
    pydl.manual_seed(3)
    out3, _ = pm(x, x, x, average_attn_weights=False)
    np.testing.assert_array_equal(out3.numpy(), out1.numpy())  # pydl.manual_seed repeats the masks
    # is_causal alone is the causal mask on the dropout path too: the first query sees only key 0
    later = pydl.Tensor(np.concatenate([x.numpy()[:, :1], 5 + x.numpy()[:, 1:]], axis=1))
    for need_weights in (False, True):
        pydl.manual_seed(4)
        a, _ = pm(x, x, x, need_weights=need_weights, is_causal=True)
        pydl.manual_seed(4)
        b, _ = pm(x, later, later, need_weights=need_weights, is_causal=True)
        np.testing.assert_array_equal(a.numpy()[:, 0], b.numpy()[:, 0])
        assert not np.allclose(a.numpy()[:, 1:], b.numpy()[:, 1:])


# -- TransformerEncoderLayer and TransformerEncoder -------------------------------------------------

D_MODEL, FF, SEQ = 8, 16, 5


def _src_masks(kind, rng, float_=False):
    masks = {}
    if "kpm" in kind:
        masks["src_key_padding_mask"] = _kpm(rng, SEQ)
    if "causal" in kind:
        m = np.triu(np.ones((SEQ, SEQ), bool), 1)
        masks["src_mask"] = np.where(m, -np.inf, 0.0) if float_ else m
    if "bool" in kind:
        masks["src_mask"] = _bool_mask(rng, SEQ, SEQ)
    return masks


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("masks", ["none", "kpm", "kpm_bool", "causal"])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
def test_encoder_layer_matches_torch(norm_first, activation, masks, batch_first, order, dtype):
    rng = _rng("enc_layer", norm_first, activation, masks, batch_first)
    kw = dict(dim_feedforward=FF, dropout=0.1, activation=activation, batch_first=batch_first, norm_first=norm_first)
    pm, tm = pnn.TransformerEncoderLayer(D_MODEL, 2, **kw), tnn.TransformerEncoderLayer(D_MODEL, 2, **kw)
    perturb(pm, rng)
    x = rng.standard_normal((2, SEQ, D_MODEL) if batch_first else (SEQ, 2, D_MODEL))
    ms = _src_masks(masks, rng)

    def call(m, is_torch, src):
        kw = {k: torch.from_numpy(v) if is_torch else v for k, v in ms.items()}
        return m(src, **kw, is_causal=masks == "causal")

    # eval: the dropout layers are the identity (grad is on, so torch takes no fast path)
    twin(pm, tm, [x], call, _order(order), dtype, _rng("enc", order, dtype), mode="eval", warn_ok=True)


@pytest.mark.parametrize("order", ORDERS)
def test_encoder_layer_callable_activation_no_bias_unbatched(order):
    rng = _rng("enc_callable")
    pm = pnn.TransformerEncoderLayer(D_MODEL, 4, FF, 0.0, lambda t: pnn.functional.tanh(t), bias=False)
    tm = tnn.TransformerEncoderLayer(D_MODEL, 4, FF, 0.0, torch.tanh, bias=False)
    perturb(pm, rng)
    x = rng.standard_normal((SEQ, D_MODEL))
    for dtype in DTYPES:
        pm2, tm2 = copy.deepcopy(pm), copy.deepcopy(tm)
        pout, _ = twin(pm2, tm2, [x], lambda m, is_torch, src: m(src), _order(order), dtype, _rng("encc", dtype))
        assert pout[0].shape == (SEQ, D_MODEL)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["seq_first", "batch_first"])
@pytest.mark.parametrize("masks", ["none", "kpm", "causal_float", "causal_kpm"])
def test_encoder_matches_torch(masks, batch_first, order, dtype):
    rng = _rng("encoder", masks, batch_first)
    kw = dict(dim_feedforward=FF, dropout=0.0, batch_first=batch_first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: enable_nested_tensor is True, but ...
        pm = pnn.TransformerEncoder(pnn.TransformerEncoderLayer(D_MODEL, 2, **kw), 2, norm=pnn.LayerNorm(D_MODEL))
        tm = tnn.TransformerEncoder(tnn.TransformerEncoderLayer(D_MODEL, 2, **kw), 2, norm=tnn.LayerNorm(D_MODEL))
    perturb(pm, rng)
    x = rng.standard_normal((2, SEQ, D_MODEL) if batch_first else (SEQ, 2, D_MODEL))
    ms = _src_masks(masks, rng, float_=True)
    ms = {("mask" if k == "src_mask" else k): v for k, v in ms.items()}

    def call(m, is_torch, src):
        kw = {k: torch.from_numpy(v.astype(dtype) if v.dtype != bool else v) if is_torch else v for k, v in ms.items()}
        return m(src, **kw)

    twin(pm, tm, [x], call, _order(order), dtype, _rng("encoder", order, dtype), warn_ok=True)


def test_encoder_clones_and_state_dict():
    layer = pnn.TransformerEncoderLayer(D_MODEL, 2, FF)
    enc = pnn.TransformerEncoder(layer, 3, norm=pnn.LayerNorm(D_MODEL))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tenc = tnn.TransformerEncoder(tnn.TransformerEncoderLayer(D_MODEL, 2, FF), 3, norm=tnn.LayerNorm(D_MODEL))
    assert [(k, tuple(v.shape)) for k, v in enc.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in tenc.state_dict().items()]
    assert repr(enc) == repr(tenc)
    p0, p1 = enc.layers[0].linear1.weight, enc.layers[1].linear1.weight
    assert p0 is not p1 and not np.shares_memory(p0.data, p1.data)
    assert not np.shares_memory(p0.data, layer.linear1.weight.data)
    np.testing.assert_array_equal(p0.numpy(), layer.linear1.weight.numpy())  # copies start equal, as torch's
    p0.data[...] = 0
    assert p1.numpy().any() and layer.linear1.weight.numpy().any()
    assert isinstance(enc.layers, pnn.ModuleList) and len(list(enc.parameters())) == 3 * 12 + 2
    enc.load_state_dict(tenc.state_dict())  # torch tensors into pydl
    np.testing.assert_array_equal(enc.layers[2].norm2.bias.numpy(), tenc.layers[2].norm2.bias.detach().numpy())


def test_encoder_layer_dropout_train_and_eval():
    rng = _rng("enc_dropout")
    m = pnn.TransformerEncoderLayer(D_MODEL, 2, FF, batch_first=True)  # dropout 0.1 by default
    x = pydl.Tensor(rng.standard_normal((2, SEQ, D_MODEL)).astype(np.float32))
    m.eval()
    a, b = m(x).numpy(), m(x).numpy()
    np.testing.assert_array_equal(a, b)
    m.train()
    c = m(x).numpy()
    assert not np.allclose(a, c, atol=1e-6)


# -- RNN-family odds and ends ------------------------------------------------------------------------


def test_rnn_state_dict_init_repr_and_copy_from_torch():
    pydl.manual_seed(2)
    for kind, kw in [("RNN", dict(num_layers=2, nonlinearity="relu", bidirectional=True)),
                     ("LSTM", dict(num_layers=2, bias=False, batch_first=True, dropout=0.5, bidirectional=True)),
                     ("GRU", dict(num_layers=3))]:
        p, t = getattr(pnn, kind)(5, 64, **kw), getattr(tnn, kind)(5, 64, **kw)
        assert [(k, tuple(v.shape), v.dtype) for k, v in p.state_dict().items()] == \
            [(k, tuple(v.shape), np.float32) for k, v in t.state_dict().items()]
        assert repr(p) == repr(t)
        every = np.concatenate([q.numpy().ravel() for q in p.parameters()])
        assert np.abs(every).max() <= 1 / 8 and abs(every.std() - 1 / 8 / math.sqrt(3)) < 0.005
        assert len(p.all_weights) == len(t.all_weights)
        p.load_state_dict(t.state_dict())
        for name, q in p.named_parameters():
            np.testing.assert_array_equal(q.numpy(), getattr(t, name).detach().numpy())
    for kind, kw in [("RNNCell", dict(nonlinearity="relu")), ("LSTMCell", dict(bias=False)), ("GRUCell", {})]:
        p, t = getattr(pnn, kind)(5, 7, **kw), getattr(tnn, kind)(5, 7, **kw)
        assert [(k, tuple(v.shape)) for k, v in p.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in t.state_dict().items()]
        assert repr(p) == repr(t)
        assert np.abs(np.concatenate([q.numpy().ravel() for q in p.parameters()])).max() <= 1 / math.sqrt(7)


def test_rnn_dropout_between_layers():
    rng = _rng("rnn_dropout")
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        pnn.GRU(3, 4, dropout=0.5)
    p, t = pnn.LSTM(3, 4, num_layers=3, dropout=0.5), tnn.LSTM(3, 4, num_layers=3, dropout=0.5)
    t.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in p.state_dict().items()})
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    p.eval()
    t.eval()
    ref, (h, c) = p(pydl.Tensor(x))
    tref, (th, tc) = t(torch.from_numpy(x))
    for name, a, b in (("out", ref, tref), ("h_n", h, th), ("c_n", c, tc)):
        assert_close(name, a, b, RTOL[np.float32])
    p.train()
    pydl.manual_seed(5)
    out1, (h1, _) = p(pydl.Tensor(x))
    out2, _ = p(pydl.Tensor(x))
    assert not np.allclose(out1.numpy(), ref.numpy()) and not np.allclose(out1.numpy(), out2.numpy())
    np.testing.assert_array_equal(h1.numpy()[0], h.numpy()[0])  # no dropout before the first layer's states
    pydl.manual_seed(5)
    np.testing.assert_array_equal(p(pydl.Tensor(x))[0].numpy(), out1.numpy())


def test_bad_arguments():
    with pytest.raises(NotImplementedError, match="proj_size"):
        pnn.LSTM(3, 4, proj_size=2)
    with pytest.raises(NotImplementedError, match="add_bias_kv"):
        pnn.MultiheadAttention(4, 2, add_bias_kv=True)
    with pytest.raises(NotImplementedError, match="add_zero_attn"):
        pnn.MultiheadAttention(4, 2, add_zero_attn=True)
    with pytest.raises(ValueError, match="divisible"):
        pnn.MultiheadAttention(5, 2)
    with pytest.raises(ValueError, match="nonlinearity"):
        pnn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="dropout"):
        pnn.LSTM(3, 4, dropout=1.5)
    with pytest.raises(ValueError, match="activation"):
        pnn.TransformerEncoderLayer(4, 2, activation="swish")
    m = pnn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match="input_size"):
        m(pydl.randn(5, 2, 4))
    with pytest.raises(ValueError, match="hidden size"):
        m(pydl.randn(5, 2, 3), (pydl.randn(1, 2, 4), pydl.randn(1, 2, 4)))
    with pytest.raises(ValueError, match="3-D"):
        m(pydl.randn(5, 2, 3), (pydl.randn(2, 4), pydl.randn(2, 4)))
    with pytest.raises(TypeError, match="dtype"):
        m(pydl.randn(5, 2, 3, dtype=np.float64))
    with pytest.raises(ValueError, match="2D or 3D"):
        pnn.GRU(3, 4)(pydl.randn(3))
    mha = pnn.MultiheadAttention(4, 2)
    x = pydl.randn(3, 2, 4)
    with pytest.raises(ValueError, match="attn_mask"):
        mha(x, x, x, attn_mask=np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="key_padding_mask"):
        mha(x, x, x, key_padding_mask=np.zeros((3, 2), bool))
    with pytest.raises(TypeError, match="attn_mask"):
        mha(x, x, x, attn_mask=np.zeros((3, 3), np.int64))
