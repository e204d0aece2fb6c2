"""pydl.nn.Module, the containers, Parameter and nn.init against torch 2.13's behaviour:
registration, iteration order, modes, state_dict keys and loading, repr, copying and
pickling, and every initialiser's distribution."""
import copy
import math
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import pydl
from pydl import nn
from pydl.nn import Module, ModuleDict, ModuleList, Parameter, Sequential, init

torch = pytest.importorskip("torch")
tnn = torch.nn

HAVE_LAYERS = all(hasattr(nn, n) for n in ("Linear", "ReLU", "Conv2d", "BatchNorm2d"))
needs_layers = pytest.mark.skipif(not HAVE_LAYERS, reason="pydl.nn layers not there yet")


# -- a tiny layer of our own, so the Module tests do not depend on pydl's layers --------------


class Affine(Module):
    """weight (out, inp), bias (out,), a persistent int buffer and a non-persistent one."""

    def __init__(self, inp=3, out=2):
        super().__init__()
        self.weight = Parameter(np.arange(out * inp, dtype=np.float32).reshape(out, inp))
        self.bias = Parameter(np.zeros(out, np.float32))
        self.register_buffer("steps", np.zeros((), np.int64))
        self.register_buffer("scratch", np.zeros(out, np.float32), persistent=False)

    def forward(self, x):
        return x @ self.weight.T + self.bias


class TorchAffine(tnn.Module):
    def __init__(self, inp=3, out=2):
        super().__init__()
        self.weight = tnn.Parameter(torch.arange(out * inp, dtype=torch.float32).reshape(out, inp))
        self.bias = tnn.Parameter(torch.zeros(out))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("scratch", torch.zeros(out), persistent=False)


def nested(lib, leaf):
    """The same nested model in pydl and torch: Sequential / ModuleList / ModuleDict inside a Module."""
    class Net(lib.Module):
        def __init__(self):
            super().__init__()
            self.stem = leaf(4, 3)
            self.blocks = lib.ModuleList([leaf(3, 3), lib.Sequential(leaf(3, 3), leaf(3, 3))])
            self.heads = lib.ModuleDict({"cls": leaf(3, 5), "box": lib.Sequential(OrderedDict(fc=leaf(3, 4)))})
            self.register_buffer("scale", np.ones(3) if lib is nn else torch.ones(3))
    return Net()


def test_named_parameters_order_and_names_match_torch():
    p, t = nested(nn, Affine), nested(tnn, TorchAffine)
    assert [n for n, _ in p.named_parameters()] == [n for n, _ in t.named_parameters()]
    assert [n for n, _ in p.named_buffers()] == [n for n, _ in t.named_buffers()]
    assert [n for n, _ in p.named_modules()] == [n for n, _ in t.named_modules()]
    assert [n for n, _ in p.named_children()] == [n for n, _ in t.named_children()]
    assert list(p.state_dict()) == list(t.state_dict())
    assert len(list(p.parameters())) == len(list(t.parameters())) == 12
    assert [n for n, _ in p.named_parameters(recurse=False)] == []
    assert [n for n, _ in p.stem.named_parameters(prefix="x")] == ["x.weight", "x.bias"]


def test_registration_order_is_assignment_order():
    class M(Module):
        def __init__(self):
            super().__init__()
            self.b = Parameter(np.ones(1, np.float32))
            self.a = Parameter(np.ones(2, np.float32))
            self.register_parameter("c", Parameter(np.ones(3, np.float32)))
    assert [n for n, _ in M().named_parameters()] == ["b", "a", "c"]


def test_shared_parameters_and_modules_listed_once_but_saved_under_every_path():
    p, t = Module(), tnn.Module()
    p.a = p.b = Affine()
    t.a = t.b = TorchAffine()
    p.c, t.c = Affine(), TorchAffine()
    p.c.weight = p.a.weight  # a tied weight
    t.c.weight = t.a.weight
    assert [n for n, _ in p.named_parameters()] == [n for n, _ in t.named_parameters()] == \
        ["a.weight", "a.bias", "c.bias"]
    assert [n for n, _ in p.named_modules()] == [n for n, _ in t.named_modules()] == ["", "a", "c"]
    assert [n for n, _ in p.named_modules(remove_duplicate=False)] == \
        [n for n, _ in t.named_modules(remove_duplicate=False)]
    assert [n for n, _ in p.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in t.named_parameters(remove_duplicate=False)]
    assert list(p.state_dict()) == list(t.state_dict())  # torch keys every path: a.*, b.*, c.*
    assert len(list(p.children())) == 2


def test_buffers_non_persistent_excluded_from_state_dict():
    m = Affine()
    assert [n for n, _ in m.named_buffers()] == ["steps", "scratch"]
    assert list(m.state_dict()) == ["weight", "bias", "steps"]
    assert isinstance(m.scratch, pydl.Tensor) and isinstance(m.steps, pydl.Tensor)
    m.register_buffer("scratch", m.scratch.data, persistent=True)  # re-registering flips it
    assert "scratch" in m.state_dict()
    m.register_buffer("gone", None)
    assert "gone" not in m.state_dict() and m.gone is None


def test_state_dict_returns_arrays_and_keep_vars_the_tensors():
    m = Affine()
    sd = m.state_dict()
    assert isinstance(sd, OrderedDict) and sd["weight"] is m.weight.data
    kv = m.state_dict(keep_vars=True)
    assert kv["weight"] is m.weight and kv["steps"] is m.steps
    assert list(m.state_dict(prefix="model.")) == ["model.weight", "model.bias", "model.steps"]


def test_train_eval_propagate_and_reach_overridden_train():
    calls = []

    class Frozen(Affine):
        def train(self, mode=True):
            calls.append(mode)
            return super().train(False)  # stays in eval mode, as a frozen BatchNorm does

    m = Sequential(Affine(), Sequential(Frozen(), Affine()))
    assert all(x.training for x in m.modules() if not isinstance(x, Frozen))
    assert m.eval() is m and not any(x.training for x in m.modules())
    m.train()
    assert calls == [False, True]
    assert m.training and m[1].training and m[1][1].training and not m[1][0].training
    with pytest.raises(TypeError):
        m.train("yes")


def test_zero_grad_set_to_none_both_ways():
    m = Affine()
    x = pydl.tensor(np.ones((4, 3), np.float32))
    m(x).sum().backward()
    assert m.weight.grad is not None
    g = m.weight.grad
    m.zero_grad(set_to_none=False)
    assert m.weight.grad is g and not g.any() and not m.bias.grad.any()
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None
    m.zero_grad()  # no gradients: nothing to do


def test_apply_visits_children_first_then_self():
    p, t = nested(nn, Affine), nested(tnn, TorchAffine)
    pn, tn = [], []
    assert p.apply(lambda m: pn.append(type(m).__name__)) is p
    t.apply(lambda m: tn.append(type(m).__name__.replace("Torch", "")))
    assert pn == tn

    def init_fn(m):
        if isinstance(m, Affine):
            init.constant_(m.weight, 0.5)
    p.apply(init_fn)
    assert all((m.weight.data == 0.5).all() for m in p.modules() if isinstance(m, Affine))


def test_register_errors():
    m = Affine()
    p = Parameter(np.ones(1, np.float32))
    for reg, ok in ((m.register_parameter, p), (m.register_buffer, np.ones(1)), (m.add_module, Affine())):
        with pytest.raises(TypeError):
            reg(1, ok)
        with pytest.raises(KeyError, match=r"\."):
            reg("a.b", ok)
        with pytest.raises(KeyError):
            reg("", ok)
        with pytest.raises(KeyError, match="already exists"):
            reg("forward", ok)  # a method, as torch's hasattr() rule
    m.plain = 3
    with pytest.raises(KeyError, match="already exists"):
        m.register_parameter("plain", p)
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("weight", np.ones(1))  # a parameter already
    with pytest.raises(KeyError, match="already exists"):
        m.add_module("steps", Affine())  # a buffer already
    with pytest.raises(KeyError, match="already exists"):
        m.register_parameter("steps", p)
    with pytest.raises(TypeError):
        m.register_parameter("w2", pydl.tensor(np.ones(1, np.float32)))  # a Tensor, not a Parameter
    with pytest.raises(TypeError):
        m.register_buffer("b2", [1, 2])
    with pytest.raises(TypeError):
        m.add_module("m2", "not a module")
    m.register_parameter("bias", None)  # re-registering one's own name is allowed
    assert m.bias is None and "bias" not in m.state_dict()


def test_registration_before_init():
    class Early(Module):
        def __init__(self):
            self.plain = 1  # allowed before __init__, as torch
            with pytest.raises(AttributeError):
                self.w = Parameter(np.ones(1, np.float32))
            with pytest.raises(AttributeError):
                self.sub = Module()
            with pytest.raises(AttributeError):
                self.register_buffer("b", np.ones(1))
            super().__init__()

    assert Early().plain == 1


def test_setattr_semantics():
    m = Affine()
    # a Parameter replaces a buffer of the same name (and its non-persistence)
    m.scratch = Parameter(np.ones(2, np.float32))
    assert "scratch" in dict(m.named_parameters()) and "scratch" not in dict(m.named_buffers())
    assert "scratch" in m.state_dict()
    # a Module replaces a parameter
    m.scratch = Affine()
    assert "scratch" in m._modules and "scratch" not in m._parameters
    # None keeps a registered name registered, and out of state_dict
    m.bias = None
    assert "bias" in m._parameters and m.bias is None and "bias" not in m.state_dict()
    with pytest.raises(TypeError, match="parameter 'weight'"):
        m.weight = pydl.tensor(np.ones((2, 3), np.float32))  # a plain Tensor to a parameter's name
    with pytest.raises(TypeError, match="child module 'scratch'"):
        m.scratch = 3
    m.scratch = None
    assert m.scratch is None and "scratch" in m._modules
    # a Tensor or an array to a buffer's name replaces the buffer
    m.steps = pydl.tensor(np.array(5))
    assert int(m.state_dict()["steps"]) == 5
    m.steps = np.array(7)
    assert isinstance(m.steps, pydl.Tensor) and int(m.state_dict()["steps"]) == 7
    with pytest.raises(TypeError, match="buffer 'steps'"):
        m.steps = "seven"
    # a Tensor to a new name is a plain attribute, neither parameter nor buffer
    m.cache = pydl.tensor(np.ones(3, np.float32))
    assert "cache" not in m.state_dict() and "cache" not in dict(m.named_buffers())
    assert isinstance(m.cache, pydl.Tensor)
    # and a Parameter moves a plain attribute into the parameters
    m.cache = Parameter(np.ones(3, np.float32))
    assert "cache" in dict(m.named_parameters()) and "cache" not in m.__dict__


def test_delattr():
    m = Affine()
    m.sub = Affine()
    m.x = 1
    for name in ("weight", "steps", "scratch", "sub", "x"):
        delattr(m, name)
        with pytest.raises(AttributeError):
            getattr(m, name)
    assert list(m.state_dict()) == ["bias"]
    m.register_buffer("scratch", np.ones(1))  # persistent now: the old flag went with the name
    assert "scratch" in m.state_dict()
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        m.nothing


def test_sequential_indexing_slicing_and_names():
    a, b, c = Affine(3, 3), Affine(3, 3), Affine(3, 3)
    s = Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and s[-3] is a and list(s) == [a, b, c]
    assert s[np.int64(1)] is b
    for bad in (3, -4):
        with pytest.raises(IndexError):
            s[bad]
    with pytest.raises(TypeError):
        s[1.0]
    tail = s[1:]
    assert isinstance(tail, Sequential) and list(tail) == [b, c] and list(tail._modules) == ["1", "2"]
    assert list(s[::-1]) == [c, b, a]
    named = Sequential(OrderedDict(first=a, second=b))
    assert list(named._modules) == ["first", "second"] and named.second is b
    assert list(named.state_dict())[:2] == ["first.weight", "first.bias"]
    d = Affine(3, 3)
    s.append(d)
    assert len(s) == 4 and s[3] is d and "3.weight" in s.state_dict()
    s[0] = Affine(3, 3)
    assert s[0] is not a
    x = pydl.tensor(np.ones((2, 3), np.float32))
    y = x
    for m in s:
        y = m(y)
    np.testing.assert_array_equal(s(x).data, y.data)


def test_sequential_and_modulelist_deletion_renumber_as_torch():
    for make, tmake in ((Sequential, tnn.Sequential), (lambda *m: ModuleList(m), lambda *m: tnn.ModuleList(m))):
        p = make(*(Affine() for _ in range(5)))
        t = tmake(*(TorchAffine() for _ in range(5)))
        del p[1]
        del t[1]
        del p[-1]
        del t[-1]
        assert list(p._modules) == list(t._modules) == ["0", "1", "2"]
        del p[0:2]
        del t[0:2]
        assert list(p.state_dict()) == list(t.state_dict())


def test_sequential_insert_extend_pop():
    a, b, c = Affine(), Affine(), Affine()
    s = Sequential(a)
    s.extend([b])
    s.insert(0, c)
    assert list(s) == [c, a, b] and list(s._modules) == ["0", "1", "2"]
    assert s.pop(1) is a and list(s) == [c, b]


def test_modulelist():
    a, b, c, d = (Affine() for _ in range(4))
    ml = ModuleList([a])
    ml.append(b)
    ml.extend([c])
    ml.insert(1, d)
    assert list(ml) == [a, d, b, c] and len(ml) == 4
    assert list(ml._modules) == ["0", "1", "2", "3"]
    assert ml[-1] is c and ml[1] is d
    assert isinstance(ml[1:3], ModuleList) and list(ml[1:3]) == [d, b]
    e = Affine()
    ml[2] = e
    assert ml[2] is e
    ml.insert(-1, b)  # list.insert semantics
    assert list(ml) == [a, d, e, b, c]
    with pytest.raises(IndexError):
        ml[5]
    with pytest.raises(TypeError):
        ml.append(3)
    with pytest.raises(TypeError):
        ml[0] = 3
    ml += [Affine()]
    assert len(ml) == 6 and ml.pop() is not None and len(ml) == 5
    assert list(ml.state_dict())[:2] == ["0.weight", "0.bias"]
    assert len(list(ml.parameters())) == 10
    with pytest.raises(NotImplementedError):
        ml(1)


def test_moduledict():
    a, b = Affine(), Affine()
    md = ModuleDict({"x": a})
    md["y"] = b
    md.update([("z", Affine())])
    assert list(md) == list(md.keys()) == ["x", "y", "z"] and "x" in md and md["y"] is b and len(md) == 3
    assert list(md.values())[0] is a and list(md.items())[1] == ("y", b)
    assert md.pop("z") is not None and len(md) == 2
    del md["x"]
    assert list(md) == ["y"]
    assert list(md.state_dict()) == ["y.weight", "y.bias", "y.steps"]
    with pytest.raises(KeyError):
        md["missing"]
    with pytest.raises(KeyError, match="already exists"):
        md["keys"] = Affine()  # torch refuses a name that is a method too
    md.clear()
    assert len(md) == 0


def _layer_net(lib, norm=True):
    class Net(lib.Module):
        def __init__(self):
            super().__init__()
            self.features = lib.Sequential(
                lib.Conv2d(3, 8, 3, padding=1), *([lib.BatchNorm2d(8)] if norm else []), lib.ReLU(), lib.MaxPool2d(2))
            self.blocks = lib.ModuleList([lib.Linear(8, 8) for _ in range(3)] + [lib.Linear(8, 4, bias=False)])
            self.heads = lib.ModuleDict({"cls": lib.Linear(4, 10), "aux": lib.Sequential()})
            self.named = lib.Sequential(OrderedDict(fc=lib.Linear(10, 2), act=lib.Tanh()))
            self.empty_list = lib.ModuleList()
    return Net()


@needs_layers
def test_repr_equals_torch():
    assert repr(_layer_net(nn)) == repr(_layer_net(tnn))


@needs_layers
def test_layer_state_dict_keys_and_shapes_equal_torch():
    p, t = _layer_net(nn), _layer_net(tnn)
    assert list(p.state_dict()) == list(t.state_dict())  # BatchNorm's running stats, num_batches_tracked
    assert [n for n, _ in p.named_buffers()] == [n for n, _ in t.named_buffers()]
    assert {k: tuple(v.shape) for k, v in p.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in t.state_dict().items()}
    p.load_state_dict(t.state_dict())
    for k, v in t.state_dict().items():
        np.testing.assert_array_equal(p.state_dict()[k], v.numpy(), err_msg=k)


def test_repr_structure_with_own_layers():
    class Leaf(Module):
        def extra_repr(self):
            return "k=1"

    class TLeaf(tnn.Module):
        def _get_name(self):
            return "Leaf"

        def extra_repr(self):
            return "k=1"

    def build(lib, leaf):
        return lib.Sequential(leaf(), lib.ModuleList([leaf(), leaf(), lib.Sequential(leaf())]),
                              lib.ModuleDict({"a": leaf()}))

    assert repr(build(nn, Leaf)) == repr(build(tnn, TLeaf))


def test_load_state_dict_strict_and_not():
    m = Affine()
    good = {k: np.full(v.shape, 2, v.dtype) for k, v in m.state_dict().items()}
    r = m.load_state_dict(good)
    assert r == ([], []) and r.missing_keys == [] and (m.weight.data == 2).all() and int(m.steps) == 2
    partial = {"weight": np.ones((2, 3), np.float32), "extra": np.ones(1)}
    with pytest.raises(KeyError, match="missing keys: bias, steps.*unexpected keys: extra"):
        m.load_state_dict(partial)
    assert (m.weight.data == 2).all()  # nothing written
    r = m.load_state_dict(partial, strict=False)
    assert r.missing_keys == ["bias", "steps"] and r.unexpected_keys == ["extra"]
    assert tuple(r) == (["bias", "steps"], ["extra"])
    assert (m.weight.data == 1).all() and (m.bias.data == 2).all()


@pytest.mark.parametrize("strict", [True, False])
def test_load_state_dict_bad_shape_or_dtype_writes_nothing(strict):
    m = Sequential(Affine(), Affine(2, 2))
    before = {k: v.copy() for k, v in m.state_dict().items()}
    new = {k: np.full(v.shape, 9, v.dtype) for k, v in m.state_dict().items()}
    bad_shape = dict(new, **{"1.weight": np.ones((3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"'1\.weight' has shape \(3, 3\)"):
        m.load_state_dict(bad_shape, strict=strict)
    bad_dtype = dict(new, **{"1.steps": np.ones((), np.float32)})
    with pytest.raises(TypeError, match=r"'1\.steps' has dtype float32"):
        m.load_state_dict(bad_dtype, strict=strict)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_load_state_dict_from_torch_tensors_casts_floats():
    m, t = Affine(), TorchAffine()
    with torch.no_grad():
        t.weight.normal_()
    m.load_state_dict(t.state_dict())
    np.testing.assert_array_equal(m.weight.data, t.weight.detach().numpy())
    m64 = Affine().double()
    m64.load_state_dict(t.state_dict())  # float32 into float64 parameters: cast
    assert m64.weight.dtype == np.float64
    np.testing.assert_array_equal(m64.weight.data, t.weight.detach().numpy().astype(np.float64))
    w = m.weight.data
    m.load_state_dict(t.state_dict(), assign=False)
    assert m.weight.data is w  # copied into the existing array


def test_to_dtype_and_double():
    m = Affine()
    w = m.weight
    m(pydl.tensor(np.ones((1, 3), np.float32))).sum().backward()
    assert m.double() is m
    assert m.weight is w and m.weight.dtype == np.float64 and m.bias.dtype == np.float64
    assert m.weight.grad.dtype == np.float64 and m.scratch.dtype == np.float64
    assert m.steps.dtype == np.int64  # integer buffers keep their dtype, as torch
    m.to(np.float32)
    assert m.weight.dtype == np.float32
    m.to(dtype=np.float64)
    assert m.weight.dtype == np.float64
    m.float()
    assert m.weight.dtype == np.float32
    m.to("cpu")
    assert m.weight.device == "cpu"
    with pytest.raises(ValueError):
        m.to("tpu")


def test_requires_grad_():
    m = Affine()
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    m.requires_grad_()
    assert all(p.requires_grad for p in m.parameters())


def test_deepcopy_gives_independent_arrays():
    m = Sequential(Affine(), Affine(2, 2))
    m[1].tied = m[0].bias  # a shared parameter stays shared inside the copy
    m.eval()
    c = copy.deepcopy(m)
    assert type(c) is Sequential and type(c[0]) is Affine and not c.training
    for (n, p), (_, q) in zip(m.named_parameters(), c.named_parameters()):
        assert type(q) is Parameter and q.requires_grad and q is not p
        assert not np.shares_memory(p.data, q.data), n
        np.testing.assert_array_equal(p.data, q.data)
    for (_, b), (_, d) in zip(m.named_buffers(), c.named_buffers()):
        assert type(d) is pydl.Tensor and not np.shares_memory(b.data, d.data)
    assert c[1].tied is c[0].bias
    assert "scratch" not in c[0].state_dict()  # non-persistence copied
    c[0].weight.data[...] = -1
    assert (m[0].weight.data != -1).all()
    layers = [copy.deepcopy(m[0]) for _ in range(3)]  # what TransformerEncoder does with its layer
    assert len({id(x.weight.data) for x in layers}) == 3
    assert list(ModuleList(layers).state_dict()) == [f"{i}.{k}" for i in range(3) for k in ("weight", "bias", "steps")]


def test_copy_is_shallow():
    m = Affine()
    c = copy.copy(m)
    assert c.weight is m.weight


def test_pickle_round_trip():
    m = Sequential(Affine(), ModuleDict({"h": Affine(2, 2)}))
    m[1]["h"].weight.requires_grad_(False)
    m.eval()
    r = pickle.loads(pickle.dumps(m))
    assert repr(r) == repr(m) and not r.training and type(r[0].weight) is Parameter
    assert list(r.state_dict()) == list(m.state_dict())
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(r.state_dict()[k], v)
        assert r.state_dict()[k].dtype == v.dtype
    assert not r[1]["h"].weight.requires_grad and r[0].weight.requires_grad
    assert "scratch" not in r[0].state_dict()


def test_get_submodule():
    m = nested(nn, Affine)
    assert m.get_submodule("blocks.1.0") is m.blocks[1][0]
    assert m.get_submodule("") is m
    with pytest.raises(AttributeError):
        m.get_submodule("blocks.7")


# -- nn.init -------------------------------------------------------------------------------------

N = 256  # 256 x 256 = 65536 draws: a mean's standard error is sigma / 256


def _pair(shape=(N, N)):
    pydl.manual_seed(0)
    torch.manual_seed(0)
    return pydl.Tensor(np.empty(shape, np.float32)), torch.empty(shape)


def _stats(a):
    a = np.asarray(a, np.float64).ravel()
    return a.mean(), a.std(), a.min(), a.max()


def _same_distribution(p, t, sigma, bounded=None):
    """Mean within 6 standard errors, std within 3%, each of the two arrays against the other
    and against ``sigma``; with ``bounded`` the support is (-bounded, bounded) and reached."""
    pm, ps, pmin, pmax = _stats(p.data)
    tm, ts, tmin, tmax = _stats(t.detach().numpy())
    se = sigma / math.sqrt(p.data.size)
    assert abs(pm - tm) < 8 * se and abs(pm) < 6 * se, (pm, tm)
    assert abs(ps / sigma - 1) < 0.03 and abs(ps / ts - 1) < 0.04, (ps, ts, sigma)
    if bounded is not None:
        assert -bounded <= pmin and pmax <= bounded * (1 + 1e-6)
        assert pmax > bounded * 0.999 and pmin < -bounded * 0.999  # the whole support is used
        assert tmax <= bounded * (1 + 1e-6)


def test_calculate_gain_equals_torch():
    names = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
             "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu"]
    for n in names:
        assert init.calculate_gain(n) == tnn.init.calculate_gain(n), n
    for slope in (0, 0.2, 1, 3.5):
        assert init.calculate_gain("leaky_relu", slope) == tnn.init.calculate_gain("leaky_relu", slope)
    with pytest.raises(ValueError):
        init.calculate_gain("gelu")
    for bad in (True, "0.2", [0.1]):
        with pytest.raises(ValueError):
            init.calculate_gain("leaky_relu", bad)


def test_uniform_normal_constant_against_torch():
    p, t = _pair()
    init.uniform_(p, -0.5, 1.5)
    tnn.init.uniform_(t, -0.5, 1.5)
    pm, ps, pmin, pmax = _stats(p.data)
    tm, ts, _, _ = _stats(t)
    sigma = 2 / math.sqrt(12)
    assert abs(pm - 0.5) < 6 * sigma / N and abs(tm - 0.5) < 6 * sigma / N
    assert abs(ps / sigma - 1) < 0.03 and abs(ts / sigma - 1) < 0.03
    assert -0.5 <= pmin < -0.499 and 1.499 < pmax <= 1.5
    p, t = _pair()
    init.normal_(p, 3.0, 0.5)
    tnn.init.normal_(t, 3.0, 0.5)
    assert abs(p.data.mean() - 3) < 6 * 0.5 / N and abs(p.data.mean() - t.mean().item()) < 8 * 0.5 / N
    assert abs(p.data.std() / 0.5 - 1) < 0.03
    for fn, args in ((init.constant_, (0.25,)), (init.zeros_, ()), (init.ones_, ())):
        p, t = _pair((5, 7))
        fn(p, *args)
        getattr(tnn.init, fn.__name__)(t, *args)
        np.testing.assert_array_equal(p.data, t.numpy())
    assert p.dtype == np.float32


@pytest.mark.parametrize("shape", [(5, 7), (7, 5), (4, 4)])
def test_eye_equals_torch(shape):
    p, t = _pair(shape)
    init.eye_(p)
    tnn.init.eye_(t)
    np.testing.assert_array_equal(p.data, t.numpy())


def test_eye_and_dirac_errors():
    with pytest.raises(ValueError):
        init.eye_(pydl.Tensor(np.empty((2, 2, 2), np.float32)))
    with pytest.raises(ValueError):
        init.dirac_(pydl.Tensor(np.empty((4, 4), np.float32)))
    with pytest.raises(ValueError):
        init.dirac_(pydl.Tensor(np.empty((6, 4, 3, 3), np.float32)), groups=4)
    with pytest.raises(TypeError):
        init.eye_(np.empty((2, 2), np.float32))  # a Tensor is expected


@pytest.mark.parametrize("shape,groups", [((4, 3, 5), 1), ((6, 4, 3, 3), 1), ((6, 2, 3, 3), 3),
                                          ((4, 4, 3, 3, 3), 2), ((2, 5, 4, 4), 1)])
def test_dirac_equals_torch(shape, groups):
    p, t = _pair(shape)
    init.dirac_(p, groups)
    tnn.init.dirac_(t, groups)
    np.testing.assert_array_equal(p.data, t.numpy())


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_xavier_against_torch(gain):
    shape = (64, 32, 3, 3)  # fan_in 288, fan_out 576
    fan_in, fan_out = 32 * 9, 64 * 9
    p, t = _pair(shape)
    init.xavier_uniform_(p, gain)
    tnn.init.xavier_uniform_(t, gain)
    bound = gain * math.sqrt(6 / (fan_in + fan_out))
    _same_distribution(p, t, bound / math.sqrt(3), bounded=bound)
    p, t = _pair(shape)
    init.xavier_normal_(p, gain)
    tnn.init.xavier_normal_(t, gain)
    _same_distribution(p, t, gain * math.sqrt(2 / (fan_in + fan_out)))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "FAN_OUT"])
@pytest.mark.parametrize("nonlinearity,a", [("leaky_relu", 0), ("leaky_relu", math.sqrt(5)), ("relu", 0),
                                            ("tanh", 0), ("linear", 0)])
def test_kaiming_against_torch(mode, nonlinearity, a):
    shape = (128, 16, 4, 8)  # fan_in 512, fan_out 4096
    fan = 16 * 32 if mode == "fan_in" else 128 * 32
    std = init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    p, t = _pair(shape)
    init.kaiming_uniform_(p, a, mode, nonlinearity)
    tnn.init.kaiming_uniform_(t, a, mode, nonlinearity)
    _same_distribution(p, t, std, bounded=math.sqrt(3) * std)
    p, t = _pair(shape)
    init.kaiming_normal_(p, a, mode, nonlinearity)
    tnn.init.kaiming_normal_(t, a, mode, nonlinearity)
    _same_distribution(p, t, std)


def test_fan_errors_for_1d_and_bad_mode():
    one_d = pydl.Tensor(np.empty(8, np.float32))
    for fn in (init.xavier_uniform_, init.xavier_normal_, init.kaiming_uniform_, init.kaiming_normal_,
               init.orthogonal_):
        with pytest.raises(ValueError, match="dimensions"):
            fn(one_d)
        with pytest.raises(ValueError):
            getattr(tnn.init, fn.__name__)(torch.empty(8))  # torch agrees
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(pydl.Tensor(np.empty((3, 3), np.float32)), mode="fan_avg")
    empty = pydl.Tensor(np.empty((0, 3), np.float32))
    assert init.kaiming_uniform_(empty) is empty  # a no-op, as torch (which warns)
    assert init.kaiming_normal_(pydl.Tensor(np.empty(0, np.float32))).shape == (0,)


@pytest.mark.parametrize("shape,gain", [((N, N), 1.0), ((64, 256), 2.0), ((256, 64), 0.5), ((32, 8, 3, 3), 1.5)])
def test_orthogonal(shape, gain):
    p, t = _pair(shape)
    init.orthogonal_(p, gain)
    tnn.init.orthogonal_(t, gain)
    q = p.data.reshape(shape[0], -1).astype(np.float64)
    rows, cols = q.shape
    gram = q @ q.T if rows < cols else q.T @ q  # the smaller Gram matrix is gain^2 I
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(min(rows, cols)), atol=2e-5 * gain ** 2)
    tq = t.numpy().reshape(shape[0], -1).astype(np.float64)
    tgram = tq @ tq.T if rows < cols else tq.T @ tq
    np.testing.assert_allclose(tgram, gram, atol=2e-5 * gain ** 2)  # torch's has the same property
    assert abs(p.data.std() - t.numpy().std()) < 0.02 * t.numpy().std()


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.0, 0.02, -2.0, 2.0), (1.0, 2.0, 0.0, 3.0),
                                          (0.0, 1.0, 2.0, 3.0), (0.0, 1.0, 5.0, 6.0)])
def test_trunc_normal_against_torch(mean, std, a, b):
    p, t = _pair()
    init.trunc_normal_(p, mean, std, a, b)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about a window far from the mean
        tnn.init.trunc_normal_(t, mean, std, a, b)
    pm, ps, pmin, pmax = _stats(p.data)
    tm, ts, tmin, tmax = _stats(t)
    assert a <= pmin and pmax <= b
    assert abs(pm - tm) < 8 * ts / N and abs(ps / ts - 1) < 0.04, ((pm, ps), (tm, ts))


def test_sparse_against_torch():
    p, t = _pair((100, 64))
    init.sparse_(p, 0.25, std=0.1)
    tnn.init.sparse_(t, 0.25, std=0.1)
    assert ((p.data == 0).sum(0) == 25).all() and ((t.numpy() == 0).sum(0) == 25).all()
    nz = p.data[p.data != 0]
    assert abs(nz.std() / 0.1 - 1) < 0.05 and abs(nz.mean()) < 6 * 0.1 / math.sqrt(nz.size)
    with pytest.raises(ValueError):
        init.sparse_(pydl.Tensor(np.empty((2, 2, 2), np.float32)), 0.1)


def test_init_is_seeded_and_in_place():
    w = pydl.Tensor(np.empty((8, 8), np.float32))
    arr = w.data
    pydl.manual_seed(3)
    init.kaiming_uniform_(w)
    first = w.data.copy()
    pydl.manual_seed(3)
    init.kaiming_uniform_(w)
    np.testing.assert_array_equal(first, w.data)
    assert w.data is arr and w.dtype == np.float32
    g = np.random.default_rng(5)
    init.normal_(w, generator=g)
    init.normal_(w2 := pydl.Tensor(np.empty((8, 8), np.float32)), generator=np.random.default_rng(5))
    np.testing.assert_array_equal(w.data, w2.data)


def test_parameter_basics():
    p = Parameter(np.ones(3, np.float32))
    assert p.requires_grad and p.is_leaf and isinstance(p, pydl.Tensor)
    assert repr(p).startswith("Parameter containing:\ntensor(")
    assert Parameter().shape == (0,)
    assert not Parameter(np.ones(2), requires_grad=False).requires_grad
    t = pydl.tensor(np.ones(2, np.float32))
    assert Parameter(t).data is t.data  # wraps, no copy
    with pytest.raises(TypeError):
        Parameter(np.ones(2, np.int64))  # only float tensors can require grad
    q = pickle.loads(pickle.dumps(p))
    assert type(q) is Parameter and q.requires_grad and (q.data == 1).all()


def test_sequential_fuses_linear_and_activation_with_torch_results():
    """Sequential runs Linear + ReLU/Tanh/Sigmoid/GELU as one fused linear op: values and
    gradients equal torch's unfused layers; a Linear subclass is never fused."""
    import numpy as np
    import torch

    import pydl
    from pydl import nn

    calls = []

    class MyLinear(nn.Linear):
        def forward(self, x):
            calls.append(1)
            return super().forward(x) * 2

    pydl.manual_seed(3)
    ours = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Sigmoid(),
                         nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 8), nn.GELU(approximate="tanh"),
                         MyLinear(8, 4), nn.ReLU()).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Tanh(),
                                 torch.nn.Linear(8, 8), torch.nn.Sigmoid(), torch.nn.Linear(8, 8), torch.nn.GELU(),
                                 torch.nn.Linear(8, 8), torch.nn.GELU(approximate="tanh"),
                                 torch.nn.Linear(8, 4), torch.nn.ReLU()).double()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 6))
    ran = {}
    specs = pydl.registry.SPECS
    originals = {k: specs[k].call for k in ("relu", "tanh", "sigmoid", "gelu", "linear")}
    try:
        for k, f in originals.items():
            specs[k].call = (lambda f, k: lambda a, b=None: (ran.__setitem__(k, ran.get(k, 0) + 1), f(a, b))[1])(f, k)
        y = ours(pydl.tensor(x))
    finally:
        for k, f in originals.items():
            specs[k].call = f
    assert calls == [1]
    # four Linear + activation pairs fused; the tanh-approximate GELU and the subclass are not
    assert ran == {"linear": 6, "gelu": 1, "relu": 1}, ran
    hook = theirs[10].forward
    theirs[10].forward = lambda t: hook(t) * 2
    yt = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(y.data, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(g)
    yt.backward(torch.from_numpy(g))
    for (k, p), q in zip(ours.named_parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)
