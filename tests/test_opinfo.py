"""PyTorch's own OpInfo samples (``torch.testing._internal.common_methods_invocations.op_db``,
float32, CPU) for every op pydl has, on every CPU backend, forward and backward.

Each sample is called as a user of ``torch.nn.functional`` would call pydl: the same
positional and keyword arguments, tensors turned into NumPy arrays (``dtype=torch.float64``
into ``np.float64``). The result is one of

- accepted and agreeing with torch: the forward (values, shape, dtype; max_pool2d's indices
  exactly) and the gradient of every input torch differentiates, against torch autograd in
  float64 on the same float32 inputs;
- refused with a documented reason: a ``TypeError``/``ValueError`` whose message matches
  one of :data:`REFUSALS`, each of which the README's list of differences names.

Anything else (a crash, a disagreement, an undocumented refusal, a gradient torch has and
pydl lacks) fails. Random samples take pydl's explicit seed: ``dropout`` and SDPA's
``dropout_p`` get ``seed=``, and the check rebuilds torch's computation with pydl's mask.

``report()`` (or ``python dev/opinfo/report.py``) prints the per-op table.
"""
from __future__ import annotations

import collections
import functools
import pathlib
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest", reason="torch.testing._internal needs expecttest (the torch extra)")

import pydl  # noqa: E402
import pydl.testing  # noqa: E402
from pydl import backends, registry  # noqa: E402
from pydl.ops.elementwise import dropout_mask  # noqa: E402

#: torch's own warnings about the samples' arguments (kl_div's 'mean', conv2d's 'same' copy)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:torch")

backends.load()
torch.set_num_threads(1)  # tiny tensors: threads only add overhead
SPECS = registry.SPECS
README = pathlib.Path(__file__).resolve().parent.parent / "README.md"

#: OpInfo name -> pydl op. Not mapped: ``nn.functional.unfold`` (pydl's ``im2col`` has its own
#: argument order and column layout, see the README), ``linear_cross_entropy``, ``relu6``,
#: ``dropout2d``/``dropout3d``, ``embedding_bag``, ``masked.*`` and the private
#: ``_softmax_backward_data``/``_safe_softmax`` (no pydl op of that meaning).
OPS = {
    "nn.functional.relu": "relu",
    "nn.functional.leaky_relu": "leaky_relu",
    "nn.functional.elu": "elu",
    "nn.functional.prelu": "prelu",
    "nn.functional.gelu": "gelu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "softmax": "softmax",
    "softmax.with_dtype": "softmax",
    "log_softmax": "log_softmax",
    "log_softmax.with_dtype": "log_softmax",
    "nn.functional.dropout": "dropout",
    "matmul": "matmul",
    "nn.functional.linear": "linear",
    "nn.functional.conv2d": "conv2d",
    "nn.functional.max_pool2d": "max_pool2d",
    "nn.functional.avg_pool2d": "avg_pool2d",
    "nn.functional.adaptive_avg_pool2d": "adaptive_avg_pool2d",
    "nn.functional.scaled_dot_product_attention": "scaled_dot_product_attention",
    "nn.functional.multi_head_attention_forward": "multi_head_attention",
    "nn.functional.layer_norm": "layer_norm",
    "nn.functional.batch_norm": "batch_norm",
    "nn.functional.batch_norm.without_cudnn": "batch_norm",
    "nn.functional.group_norm": "group_norm",
    "nn.functional.instance_norm": "instance_norm",
    "nn.functional.local_response_norm": "local_response_norm",
    "nn.functional.mse_loss": "mse_loss",
    "nn.functional.l1_loss": "l1_loss",
    "nn.functional.cross_entropy": "cross_entropy",
    "nn.functional.nll_loss": "nll_loss",
    "nn.functional.binary_cross_entropy": "binary_cross_entropy",
    "nn.functional.binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
    "nn.functional.gaussian_nll_loss": "gaussian_nll_loss",
    "nn.functional.kl_div": "kl_div",
    "nn.functional.embedding": "embedding",
}

#: reason id -> a pattern of pydl's error message. Every id is named in the README's
#: "Differences from PyTorch" list (test_refusals_documented).
REFUSALS = {
    "mha-signature": r"multi_head_attention\(\) got an unexpected keyword argument",
    "batch-norm-1d": r"batch_norm: x: expected at least 2 dimensions",
    "random-needs-seed": r"seed: .*(dropout|seed=)",
    "inplace": r"inplace: pydl's ops return a new array",
    "conv-empty-channels": r"conv2d: x: expected C, H, W >= 1",
}

#: floors under each spec's float32 tolerance: torch's float64 result on float32 inputs is
#: the oracle, so the comparison carries the float32 rounding of pydl's own arithmetic
FWD_TOL = (2e-5, 2e-5)
GRAD_TOL = (1e-4, 5e-5)
SEED = 1234


@functools.lru_cache(maxsize=1)
def _op_db():
    from torch.testing._internal.common_methods_invocations import op_db

    return {o.name + ("." + o.variant_test_name if o.variant_test_name else ""): o for o in op_db}


def samples(name):
    """The float32 CPU OpInfo samples of ``name`` (requires_grad as torch's tests use them)."""
    torch.manual_seed(0)
    return list(_op_db()[name].sample_inputs("cpu", torch.float32, requires_grad=True))


# -- turning a sample into a pydl call -------------------------------------------------


class _Conv:
    """Tensors -> NumPy arrays (each once), remembering which array came from which tensor."""

    def __init__(self):
        self.tensor_of = {}

    def __call__(self, v):
        if isinstance(v, torch.Tensor):
            a = v.detach().numpy().copy()
            self.tensor_of[id(a)] = v
            return a
        if isinstance(v, torch.dtype):
            return torch.empty((), dtype=v).numpy().dtype
        if isinstance(v, (list, tuple)):
            return type(v)(self(e) for e in v)
        return v


def pydl_call(name, sample):
    """(pydl op, args, kwargs, converter) for one sample, as a user would write the call."""
    conv = _Conv()
    inp, args, kw = conv(sample.input), conv(tuple(sample.args)), {k: conv(v) for k, v in sample.kwargs.items()}
    op = OPS[name]
    if op == "embedding":  # OpInfo's op is lambda weight, idx: F.embedding(idx, weight)
        args = (args[0], inp) + args[1:]
    elif op == "multi_head_attention":
        args, kw = _mha_args(inp, args, kw)
    else:
        args = (inp,) + args
    if op == "dropout" and _random_dropout(kw.get("p", 0.5), kw.get("training", True)):
        kw["seed"] = SEED
    if op == "scaled_dot_product_attention" and kw.get("dropout_p", 0.0) > 0:
        kw["seed"] = SEED
    return op, args, kw, conv


def _random_dropout(p, training):
    return training and 0 < p < 1


def _mha_args(query, args, kw):
    """``F.multi_head_attention_forward``'s positional arguments (sequence-first) in pydl's
    keyword form; the torch-only ones are passed by name, for pydl to accept or refuse."""
    names = ("key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
             "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias")
    full = dict(zip(names, args), **kw)
    full["query"] = query
    return (), full


# -- torch's side ------------------------------------------------------------------------


def _to64(v, memo):
    if isinstance(v, torch.Tensor):
        if id(v) not in memo:
            t = v.detach()
            t = t.double() if t.is_floating_point() else t.clone()
            memo[id(v)] = t.requires_grad_(v.requires_grad)
        return memo[id(v)]
    if isinstance(v, (list, tuple)):
        return type(v)(_to64(e, memo) for e in v)
    return v


def torch_run(name, sample, pydl_kw):
    """torch's outputs (float64 on the float32 inputs) and a function giving the gradients
    of given tensors for upstream gradients; also the map original tensor -> float64 tensor."""
    memo = {}
    inp = _to64(sample.input, memo)
    args = _to64(tuple(sample.args), memo)
    kw = {k: _to64(v, memo) for k, v in sample.kwargs.items()}
    if "dtype" in kw:
        kw["dtype"] = torch.float64
    op = _op_db()[name]
    if OPS[name] == "scaled_dot_product_attention" and kw.get("dropout_p", 0.0) > 0:
        out = _sdpa_with_mask(inp, *args, seed=pydl_kw["seed"], **kw)
    elif OPS[name] == "dropout" and "seed" in pydl_kw:
        p = kw.get("p", 0.5)
        mask = torch.from_numpy(dropout_mask(pydl_kw["seed"], tuple(inp.shape), p))
        out = inp * mask / (1 - p)
    else:
        out = op(inp, *args, **kw)
    return out, memo


def _sdpa_with_mask(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                    enable_gqa=False, seed=None):
    """torch's SDPA math with pydl's dropout mask (dropout_mask(seed) over the weights)."""
    L, S, D = q.shape[-2], k.shape[-2], q.shape[-1]
    if enable_gqa or k.shape[-3:-2] != q.shape[-3:-2] and k.dim() == 4:
        rep = q.shape[-3] // k.shape[-3]
        k, v = k.repeat_interleave(rep, -3), v.repeat_interleave(rep, -3)
    s = q @ k.transpose(-1, -2) * (1 / D ** 0.5 if scale is None else scale)
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask
    w = torch.softmax(s, -1)
    keep = torch.from_numpy(dropout_mask(seed, tuple(w.shape), dropout_p))
    return (w * keep / (1 - dropout_p)) @ v


# -- one sample --------------------------------------------------------------------------


class Refused(Exception):
    pass


def _as_tuple(x):
    return x if isinstance(x, tuple) else (x,)


def _check_close(what, got, ref, tol):
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
    assert isinstance(got, np.ndarray), f"{what}: got {type(got).__name__}, not an array"
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, torch's {ref.shape}"
    if ref.dtype.kind in "iub":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    pydl.testing.assert_close(what, got, ref, *tol)


def _tol(spec, grad=False):
    rtol, atol = spec.tolerance("float32", grad=grad)
    floor = GRAD_TOL if grad else FWD_TOL
    return max(rtol, floor[0]), max(atol, floor[1])


def torch_expected(name, sample):
    """torch's outputs and the gradients of every input it differentiates, for the
    seeded upstream gradients; computed once per sample, shared by the backends."""
    op, args, kw, conv = pydl_call(name, sample)
    spec = SPECS[op]
    ref, memo = torch_run(name, sample, kw)
    ref_t = _as_tuple(ref)
    bound = spec.signature.bind(*args, **kw).arguments
    wanted = []  # (pydl name, float64 torch tensor)
    for pname, val in bound.items():
        t = conv.tensor_of.get(id(val))
        if t is not None and t.requires_grad and t.is_floating_point():
            wanted.append((pname, memo[id(t)]))
    float_outs = [(i, r) for i, r in enumerate(ref_t) if r.is_floating_point() and r.requires_grad]
    ups, tgrads = [], []
    if wanted and float_outs:
        rng = np.random.default_rng(7)
        ups = [rng.standard_normal(tuple(r.shape)) for _, r in float_outs]
        tgrads = torch.autograd.grad([r for _, r in float_outs], [t for _, t in wanted],
                                     [torch.from_numpy(u) for u in ups], allow_unused=True)
        tgrads = [torch.zeros_like(t) if g is None else g for (_, t), g in zip(wanted, tgrads)]
    return dict(outs=[r.detach() for r in ref_t], wanted=[p for p, _ in wanted],
                float_outs=[i for i, _ in float_outs], ups=ups, grads=tgrads)


def run_sample(name, sample, backend, expected):
    """Run one sample on one backend (``expected``: a one-element list holding torch's
    results, filled on first use); raises :class:`Refused` (with pydl's message) for a
    TypeError/ValueError/NotImplementedError from pydl, AssertionError for a disagreement."""
    op, args, kw, _ = pydl_call(name, sample)
    spec = SPECS[op]
    try:
        got = getattr(pydl.ops, op)(*args, backend=backend, **kw)
    except (TypeError, ValueError, NotImplementedError) as e:
        raise Refused(str(e)) from None
    if not expected:
        expected.append(torch_expected(name, sample))
    expected = expected[0]
    got_t, ref_t = _as_tuple(got), expected["outs"]
    assert len(got_t) == len(ref_t), f"{op}: {len(got_t)} outputs, torch {len(ref_t)}"
    want_dtype = np.float64 if isinstance(kw.get("dtype"), np.dtype) and kw["dtype"] == np.float64 else np.float32
    for i, (g, r) in enumerate(zip(got_t, ref_t)):
        if r.is_floating_point():
            assert g.dtype == want_dtype, f"{op} output {i}: dtype {g.dtype}, expected {np.dtype(want_dtype)}"
        _check_close(f"{op}[{backend}] output {i}", g, r, _tol(spec))
    if not expected["grads"]:
        return
    missing = [p for p in expected["wanted"] if p not in spec.differentiable]
    assert not missing, f"{op}: torch differentiates {missing}, pydl's backward does not"
    g = [u.astype(got_t[i].dtype) for i, u in zip(expected["float_outs"], expected["ups"])]
    pgrad = getattr(pydl.ops, op + "_backward")(g[0] if len(g) == 1 else tuple(g), *args,
                                                backend=backend, **kw)
    by_name = dict(zip(spec.differentiable, pgrad))
    for pname, tg in zip(expected["wanted"], expected["grads"]):
        mine = by_name[pname]
        assert mine is not None, f"{op}[{backend}]: no gradient for {pname}"
        _check_close(f"{op}[{backend}] d{pname}", mine, tg, _tol(spec, grad=True))


def cpu_backends(op):
    have = registry.IMPLS.get(op, {})
    avail = pydl.available()
    return [b for b in registry.CPU_ORDER if b in have and avail.get(b, {}).get("available")]


def classify(name, sample, backends_=None):
    """("ok", None) | ("refused", reason id) | ("fail", message) over the backends."""
    op = OPS[name]
    refused, expected = None, []
    for b in backends_ or cpu_backends(op):
        try:
            run_sample(name, sample, b, expected)
        except Refused as e:
            refused = str(e)
        except Exception as e:  # a crash or a disagreement: reported, never hidden
            return "fail", f"{b}: {type(e).__name__}: {str(e)[:400]}"
    if refused is None:
        return "ok", None
    for rid, pat in REFUSALS.items():
        if re.search(pat, refused):
            return "refused", rid
    return "fail", f"undocumented refusal: {refused[:400]}"


def report(names=None, out=print):
    """The per-op table: samples, accepted, refused (by reason), failed."""
    rows = collections.OrderedDict()
    fails = []
    for name in names or OPS:
        c = collections.Counter()
        for s in samples(name):
            status, why = classify(name, s)
            c[status] += 1
            if status == "refused":
                c["why:" + why] += 1
            elif status == "fail":
                fails.append((name, why))
        rows[name] = c
    total = collections.Counter()
    out(f"{'OpInfo sample set':50s} {'pydl op':30s} {'samples':>7s} {'accepted':>8s} {'refused':>7s} {'failed':>6s}  refusals")
    for name, c in rows.items():
        n = c["ok"] + c["refused"] + c["fail"]
        total.update(c)
        why = ", ".join(f"{k[4:]} x{v}" for k, v in c.items() if k.startswith("why:"))
        out(f"{name:50s} {OPS[name]:30s} {n:7d} {c['ok']:8d} {c['refused']:7d} {c['fail']:6d}  {why}")
    n = total["ok"] + total["refused"] + total["fail"]
    out(f"{'total':50s} {'':30s} {n:7d} {total['ok']:8d} {total['refused']:7d} {total['fail']:6d}"
        f"  accepted {100 * total['ok'] / max(n, 1):.1f}%")
    for name, why in fails:
        out(f"FAIL {name}: {why}")
    return rows, fails


# -- the tests -------------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The samples are tiny: a parallel launch on a busy 2-core machine costs more than
    the work (numba's pool waits ~30 ms for a core); threading is tested elsewhere."""
    before = pydl.get_num_threads()
    pydl.set_num_threads(1)
    yield
    pydl.set_num_threads(before)



@pytest.mark.parametrize("name", list(OPS))
def test_opinfo_samples(name):
    bad = collections.Counter()
    first = {}
    n = 0
    for s in samples(name):
        n += 1
        status, why = classify(name, s)
        if status == "fail":
            bad[why[:120]] += 1
            first.setdefault(why[:120], why)
    assert n > 0, f"torch has no OpInfo samples for {name}"
    assert not bad, f"{sum(bad.values())} of {n} samples fail:\n" + "\n".join(first[k] for k in bad)


def test_refusals_documented():
    text = README.read_text()
    start = text.index("### Where pydl deliberately differs from PyTorch")
    section = text[start:text.index("\n### ", start + 1)]
    for rid in REFUSALS:
        assert f"`{rid}`" in section, f"README's differences list does not name the refusal {rid}"
