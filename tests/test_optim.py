"""pydl.optim and pydl.nn.utils.clip_grad against torch.optim / torch.nn.utils, step by step.

Every run starts pydl and torch from the same parameters and feeds both the
same gradient each step: that of a fixed quadratic, 0.5 x'Ax + b'x per
parameter, computed in NumPy from pydl's current parameters. Parameters are
compared after every step (float64: rtol 1e-12), learning rates after every
scheduler step.
"""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from pydl import optim  # noqa: E402
from pydl.nn import Parameter  # noqa: E402
from pydl.nn.utils import clip_grad_norm_, clip_grad_value_  # noqa: E402
from pydl.optim import _fused, lr_scheduler  # noqa: E402

SHAPES = [(4, 3), (5,), (2, 3, 2)]
STEPS = 20
RTOL = {np.float64: 1e-12, np.float32: 2e-5}
ATOL = {np.float64: 1e-13, np.float32: 2e-6}


def _quadratic(seed=0):
    """Per parameter: (initial value, A (SPD), b) of the loss 0.5 x'Ax + b'x."""
    rng = np.random.default_rng(seed)
    out = []
    for shape in SHAPES:
        n = int(np.prod(shape))
        m = rng.standard_normal((n, n))
        out.append((rng.standard_normal(shape), m @ m.T / n + 0.5 * np.eye(n), rng.standard_normal(n)))
    return out


QUAD = _quadratic()


def _params(dtype=np.float64):
    """The same starting parameters for pydl and torch."""
    ours = [Parameter(x0.astype(dtype)) for x0, _, _ in QUAD]
    theirs = [torch.tensor(x0.astype(dtype), requires_grad=True) for x0, _, _ in QUAD]
    return ours, theirs


def _set_grads(ours, theirs, skip=()):
    """The quadratic's gradient at pydl's parameters, into both (theirs may be None;
    a None grad for indices in skip)."""
    for i, (p, (_, a, b)) in enumerate(zip(ours, QUAD)):
        g = None
        if i not in skip:
            g = (a @ p.data.reshape(-1).astype(np.float64) + b).reshape(p.shape).astype(p.data.dtype)
        p.grad = g
        if theirs is not None:
            theirs[i].grad = None if g is None else torch.from_numpy(g.copy())


def _assert_same(ours, theirs, dtype=np.float64, what=""):
    for i, (p, t) in enumerate(zip(ours, theirs)):
        assert p.data.dtype == dtype
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=RTOL[dtype], atol=ATOL[dtype],
                                   err_msg=f"{what} parameter {i}")


def _torch_opt(name, params, kw):
    kw = {k: v for k, v in kw.items() if k != "fused"}
    return getattr(torch.optim, name)(params, **kw)


# -- every optimizer and flag, step by step ------------------------------------------------

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.4)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.5, weight_decay=0.1)),
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.05, maximize=True)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, eps=1e-6)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.1, maximize=True)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.7)),
    ("Adadelta", dict(weight_decay=0.1, eps=1e-4)),
    ("Adadelta", dict(maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, alpha=0.9)),
    ("RMSprop", dict(lr=0.01, momentum=0.8)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, maximize=True, eps=1e-3)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, betas=(0.3, 0.8))),  # beta1 < 0.5: torch's other lerp form
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.05, maximize=True, eps=1e-3)),
    ("Adam", dict(lr=0.05, amsgrad=True, maximize=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.05, betas=(0.5, 0.9), maximize=True)),
]
HAS_FUSED = ("SGD", "Adam", "AdamW")


def _case_id(case):
    name, kw = case
    return name + "-" + ",".join(f"{k}={v}" for k, v in kw.items())


def _cases_with_paths():
    for name, kw in CASES:
        for fused in ((None, False) if name in HAS_FUSED else (None,)):
            tag = {None: "", False: "-reference"}[fused]
            yield pytest.param(name, dict(kw, fused=False) if fused is False else kw,
                               id=_case_id((name, kw)) + tag)


@pytest.mark.parametrize("name,kw", list(_cases_with_paths()))
def test_matches_torch_step_by_step(name, kw):
    ours, theirs = _params()
    opt, ref = getattr(optim, name)(ours, **kw), _torch_opt(name, theirs, kw)
    for step in range(STEPS):
        _set_grads(ours, theirs, skip={2} if step % 3 == 1 else ())  # a None grad skips the parameter
        opt.step()
        ref.step()
        _assert_same(ours, theirs, what=f"{name} step {step}")


F32_CASES = [("Adam", dict(lr=0.01, amsgrad=True)), ("AdamW", dict(lr=0.01)),
             ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True)), ("RMSprop", dict(lr=0.01, centered=True)),
             ("Adagrad", dict(lr=0.1)), ("Adadelta", dict(lr=1.0))]


@pytest.mark.parametrize("name,kw,fused", [(n, kw, f) for n, kw in F32_CASES
                                           for f in ((None, False) if n in HAS_FUSED else (None,))])
def test_float32_matches_torch(name, kw, fused):
    ours, theirs = _params(np.float32)
    opt = getattr(optim, name)(ours, **kw, **({} if fused is None else {"fused": fused}))
    ref = _torch_opt(name, theirs, kw)
    for step in range(STEPS):
        _set_grads(ours, theirs)
        opt.step()
        ref.step()
        _assert_same(ours, theirs, np.float32, what=f"{name} float32 step {step}")
    for p in ours:
        for k, v in opt.state[p].items():
            assert v.dtype == np.float32, k


def test_fused_kernel_used_only_where_it_applies(monkeypatch):
    calls = []
    real = _fused.adam
    monkeypatch.setattr(_fused, "adam", lambda *a: (calls.append(a[0].dtype), real(*a))[1])
    ours, theirs = _params()
    ours[0] = Parameter(np.asfortranarray(ours[0].data))  # not C-contiguous: the reference path
    opt, ref = optim.Adam(ours, lr=0.05), torch.optim.Adam(theirs, lr=0.05)
    for _ in range(3):
        _set_grads(ours, theirs)
        opt.step()
        ref.step()
    _assert_same(ours, theirs)
    assert calls == [np.float64] * 6
    calls.clear()
    opt = optim.Adam(ours, fused=False)
    _set_grads(ours, theirs)
    opt.step()
    assert calls == []


def test_param_groups_with_their_own_hyper_parameters():
    ours, theirs = _params()
    groups = lambda ps: [{"params": [ps[0]], "lr": 0.2, "betas": (0.8, 0.99)},  # noqa: E731
                         {"params": ps[1:], "weight_decay": 0.1}]
    opt, ref = optim.Adam(groups(ours), lr=0.01), torch.optim.Adam(groups(theirs), lr=0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.01]
    assert opt.param_groups[1]["betas"] == (0.9, 0.999)
    for _ in range(STEPS):
        _set_grads(ours, theirs)
        opt.step()
        ref.step()
        _assert_same(ours, theirs)


def test_add_param_group_and_named_params():
    ours, theirs = _params()
    opt, ref = optim.SGD(ours[:1], lr=0.1, momentum=0.9), torch.optim.SGD(theirs[:1], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": ours[1:], "lr": 0.02})
    ref.add_param_group({"params": theirs[1:], "lr": 0.02})
    assert opt.param_groups[1]["momentum"] == 0.9
    for _ in range(5):
        _set_grads(ours, theirs)
        opt.step()
        ref.step()
        _assert_same(ours, theirs)
    named = optim.Adam([("w", ours[0]), ("b", ours[1])])
    assert named.param_groups[0]["param_names"] == ["w", "b"]
    assert named.param_groups[0]["params"][0] is ours[0]


def test_step_returns_the_closure_loss():
    ours, _ = _params()
    opt = optim.SGD(ours, lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        _set_grads(ours, None)
        return 1.5

    assert opt.step(closure) == 1.5 and calls == [1]
    assert opt.step() is None


def test_zero_grad_both_modes():
    ours, theirs = _params()
    opt = optim.SGD(ours, lr=0.1)
    _set_grads(ours, theirs)
    grads = [p.grad for p in ours]
    opt.zero_grad(set_to_none=False)
    for p, g in zip(ours, grads):
        assert p.grad is g and not g.any()  # zeroed in place
    opt.zero_grad()
    assert all(p.grad is None for p in ours)
    before = [p.data.copy() for p in ours]
    opt.step()  # no grads: nothing moves, no state
    assert all(np.array_equal(b, p.data) for b, p in zip(before, ours))
    assert not any(opt.state.get(p) for p in ours)


# -- state_dict ---------------------------------------------------------------------------

SD_CASES = [("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)), ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
            ("Adadelta", dict(weight_decay=0.1)), ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
            ("Adam", dict(lr=0.05, amsgrad=True)), ("AdamW", dict(lr=0.05, weight_decay=0.1))]


def _train(opt, ours, theirs, steps):
    for _ in range(steps):
        _set_grads(ours, theirs)
        opt.step()


@pytest.mark.parametrize("name,kw", SD_CASES, ids=[c[0] for c in SD_CASES])
def test_state_dict_round_trip(name, kw):
    whole, _ = _params()
    _train(getattr(optim, name)(whole, **kw), whole, None, 10)

    first, _ = _params()
    opt = getattr(optim, name)(first, **kw)
    _train(opt, first, None, 5)
    sd = opt.state_dict()
    assert sorted(sd) == ["param_groups", "state"]
    assert sd["param_groups"][0]["params"] == [0, 1, 2] and sorted(sd["state"]) == [0, 1, 2]
    assert float(sd["state"][0].get("step", 5)) == 5
    at5 = [p.data.copy() for p in first]
    _train(opt, first, None, 1)  # the dict is a snapshot: later steps do not change it

    resumed = [Parameter(a) for a in at5]
    opt2 = getattr(optim, name)(resumed, **kw)
    opt2.load_state_dict(sd)
    _train(opt2, resumed, None, 5)
    for a, b in zip(whole, resumed):
        np.testing.assert_array_equal(a.data, b.data)
    for i, p in enumerate(resumed):  # loading copied the arrays
        assert all(v is not sd["state"][i][k] for k, v in opt2.state[p].items() if isinstance(v, np.ndarray))


def _to_torch(sd):
    return {"state": {k: {n: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v
                          for n, v in s.items()} for k, s in sd["state"].items()},
            "param_groups": sd["param_groups"]}


def _from_torch(sd):
    return {"state": {k: {n: v.numpy().copy() if torch.is_tensor(v) else v for n, v in s.items()}
                      for k, s in sd["state"].items()},
            "param_groups": sd["param_groups"]}


@pytest.mark.parametrize("name,kw", SD_CASES, ids=[c[0] for c in SD_CASES])
def test_state_dict_converts_to_and_from_torch(name, kw):
    # pydl -> torch: five steps here, five more in torch from pydl's state, against pydl's own ten
    ours, theirs = _params()
    opt = getattr(optim, name)(ours, **kw)
    _train(opt, ours, theirs, 5)
    sd = opt.state_dict()
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    ref = _torch_opt(name, tparams, kw)
    ref.load_state_dict(_to_torch(sd))
    for _ in range(5):
        _set_grads(ours, tparams)
        opt.step()
        ref.step()
        _assert_same(ours, tparams, what="pydl state loaded into torch")

    # torch -> pydl
    ours, theirs = _params()
    ref = _torch_opt(name, theirs, kw)
    for _ in range(5):
        _set_grads([Parameter(t.detach().numpy().copy()) for t in theirs], theirs)
        ref.step()
    tsd = ref.state_dict()
    mine = [Parameter(t.detach().numpy().copy()) for t in theirs]
    opt = getattr(optim, name)(mine, **kw)
    opt.load_state_dict(_from_torch(tsd))
    assert set(opt.state_dict()["state"][0]) == set(tsd["state"][0])
    direct = getattr(optim, name)([Parameter(p.data.copy()) for p in mine], **kw)
    direct.load_state_dict(tsd)  # CPU tensors are taken as they are (through np.asarray)
    for a, b in zip(direct.state_dict()["state"].values(), opt.state_dict()["state"].values()):
        assert all(np.array_equal(a[k], b[k]) and type(a[k]) is type(b[k]) for k in b)
    for _ in range(5):
        _set_grads(mine, theirs)
        opt.step()
        ref.step()
        _assert_same(mine, theirs, what="torch state loaded into pydl")


def test_load_state_dict_mismatch_errors():
    ours, _ = _params()
    opt = optim.Adam(ours)
    sd = optim.Adam([{"params": ours[:1]}, {"params": ours[1:]}]).state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        opt.load_state_dict(sd)
    sd = optim.Adam(ours[:2]).state_dict()
    with pytest.raises(ValueError, match="doesn't match the size"):
        opt.load_state_dict(sd)
    other = optim.Adam([Parameter(np.zeros(7)), *ours[1:]])
    _set_grads(ours, None)
    other.param_groups[0]["params"][0].grad = np.ones(7)
    other.step()
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict(other.state_dict())


# -- errors ------------------------------------------------------------------------------------

BAD_HYPER = [
    ("SGD", dict(lr=-1)), ("SGD", dict(momentum=-0.5)), ("SGD", dict(weight_decay=-1)),
    ("SGD", dict(nesterov=True)), ("SGD", dict(momentum=0.9, dampening=0.1, nesterov=True)),
    ("Adam", dict(lr=-1)), ("Adam", dict(eps=-1e-8)), ("Adam", dict(betas=(1.0, 0.9))),
    ("Adam", dict(betas=(0.9, -0.1))), ("Adam", dict(weight_decay=-0.1)), ("AdamW", dict(lr=-0.01)),
    ("Adagrad", dict(lr=-1)), ("Adagrad", dict(lr_decay=-1)), ("Adagrad", dict(weight_decay=-1)),
    ("Adagrad", dict(initial_accumulator_value=-1)), ("Adagrad", dict(eps=-1)),
    ("Adadelta", dict(lr=-1)), ("Adadelta", dict(rho=1.5)), ("Adadelta", dict(eps=-1)),
    ("Adadelta", dict(weight_decay=-1)),
    ("RMSprop", dict(lr=-1)), ("RMSprop", dict(eps=-1)), ("RMSprop", dict(momentum=-1)),
    ("RMSprop", dict(weight_decay=-1)), ("RMSprop", dict(alpha=-1)),
]


@pytest.mark.parametrize("name,kw", BAD_HYPER, ids=[_case_id(c) for c in BAD_HYPER])
def test_bad_hyper_parameters_raise_torchs_error(name, kw):
    ours, theirs = _params()
    with pytest.raises(ValueError) as expected:
        getattr(torch.optim, name)(theirs, **kw)
    with pytest.raises(ValueError) as got:
        getattr(optim, name)(ours, **kw)
    assert str(got.value) == str(expected.value)  # e.g. "Invalid learning rate: -1"


def test_bad_parameters_raise():
    ours, _ = _params()
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(ours[0], lr=0.1)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="can only optimize Tensors"):
        optim.SGD([np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD({ours[0]}, lr=0.1)
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([ours[0] * 2], lr=0.1)
    with pytest.raises(ValueError, match="duplicate"):
        optim.SGD([ours[0], ours[1], ours[0]], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": ours[:2]}, {"params": ours[1:]}], lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate: -2"):  # checked per group too
        optim.Adam([{"params": ours[:1]}, {"params": ours[1:], "lr": -2}])


# -- schedulers --------------------------------------------------------------------------------

def _sched_pair(opt_name, opt_kw, sched_name, sched_kw):
    ours, theirs = _params()
    groups = lambda ps: [{"params": ps[:1]}, {"params": ps[1:], "lr": opt_kw["lr"] / 2}]  # noqa: E731
    opt, ref = getattr(optim, opt_name)(groups(ours), **opt_kw), _torch_opt(opt_name, groups(theirs), opt_kw)
    sched = getattr(lr_scheduler, sched_name)(opt, **sched_kw)
    tsched = getattr(torch.optim.lr_scheduler, sched_name)(ref, **sched_kw)
    return ours, theirs, opt, ref, sched, tsched


def _assert_groups_equal(opt, ref):
    for g, t in zip(opt.param_groups, ref.param_groups):
        for k in ("lr", "initial_lr", "momentum", "betas", "max_lr", "min_lr", "max_momentum", "base_momentum"):
            if k in t:
                np.testing.assert_allclose(g[k], t[k], rtol=1e-13, atol=0, err_msg=k)


SCHEDULERS = [
    ("SGD", dict(lr=0.1, momentum=0.9), "StepLR", dict(step_size=3, gamma=0.5)),
    ("SGD", dict(lr=0.1), "MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3)),
    ("Adam", dict(lr=0.05), "ExponentialLR", dict(gamma=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9), "CosineAnnealingLR", dict(T_max=7)),  # 20 steps: up and down again
    ("Adam", dict(lr=0.05), "CosineAnnealingLR", dict(T_max=5, eta_min=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9), "OneCycleLR", dict(max_lr=0.5, total_steps=STEPS)),
    ("Adam", dict(lr=0.05), "OneCycleLR", dict(max_lr=[0.1, 0.05], epochs=4, steps_per_epoch=5,
                                                 anneal_strategy="linear", pct_start=0.25)),
    ("AdamW", dict(lr=0.05), "OneCycleLR", dict(max_lr=0.1, total_steps=STEPS, three_phase=True, div_factor=10.0,
                                                  final_div_factor=100.0, base_momentum=0.8, max_momentum=0.9)),
    ("RMSprop", dict(lr=0.01, momentum=0.5), "OneCycleLR", dict(max_lr=0.02, total_steps=STEPS + 5,
                                                                  cycle_momentum=False)),
]


@pytest.mark.parametrize("opt_name,opt_kw,sched_name,sched_kw", SCHEDULERS,
                         ids=[f"{s[2]}-{s[0]}-{i}" for i, s in enumerate(SCHEDULERS)])
def test_scheduler_matches_torch(opt_name, opt_kw, sched_name, sched_kw):
    ours, theirs, opt, ref, sched, tsched = _sched_pair(opt_name, opt_kw, sched_name, sched_kw)
    _assert_groups_equal(opt, ref)
    assert set(sched.state_dict()) == set(tsched.state_dict())  # same attribute names
    for step in range(STEPS):
        _set_grads(ours, theirs)
        opt.step()
        ref.step()
        sched.step()
        tsched.step()
        np.testing.assert_allclose(sched.get_last_lr(), tsched.get_last_lr(), rtol=1e-13, atol=0)
        _assert_groups_equal(opt, ref)
        _assert_same(ours, theirs, what=f"{sched_name} step {step}")
    assert sched.last_epoch == tsched.last_epoch == STEPS


def test_scheduler_state_dict_resumes():
    ours, _ = _params()
    opt = optim.SGD(ours, lr=0.1, momentum=0.9)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=0.001)
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    opt = optim.SGD(ours, lr=0.1, momentum=0.9)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=6, eta_min=0.001)
    for _ in range(4):
        opt.step()
        sched.step()
    osd, ssd = opt.state_dict(), sched.state_dict()
    opt2 = optim.SGD(ours, lr=0.1, momentum=0.9)
    sched2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=6, eta_min=0.001)
    opt2.load_state_dict(osd)
    sched2.load_state_dict(ssd)
    for _ in range(6):
        opt2.step()
        sched2.step()
    assert sched2.get_last_lr()[0] == lrs[-1]
    with pytest.raises(KeyError, match="initial_lr"):
        lr_scheduler.StepLR(optim.SGD(ours, lr=0.1), step_size=2, last_epoch=3)


def test_scheduler_stepped_before_optimizer_warns():
    ours, _ = _params()
    opt = optim.SGD(ours, lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=2)
    with pytest.warns(UserWarning, match="before `optimizer.step"):
        sched.step()
    opt = optim.SGD(ours, lr=0.1)
    sched = lr_scheduler.StepLR(opt, step_size=2)
    opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()


def test_one_cycle_errors():
    ours, _ = _params()
    with pytest.raises(ValueError, match="total_steps OR"):
        lr_scheduler.OneCycleLR(optim.SGD(ours, lr=0.1, momentum=0.9), max_lr=1.0)
    with pytest.raises(ValueError, match="momentum or beta1"):
        lr_scheduler.OneCycleLR(optim.Adagrad(ours), max_lr=1.0, total_steps=10)
    opt = optim.SGD(ours, lr=0.1, momentum=0.9)
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=3)
    for _ in range(3):
        opt.step()
        sched.step()
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        sched.step()


PLATEAU = [
    dict(),
    dict(mode="min", factor=0.5, patience=2, cooldown=1),
    dict(mode="max", factor=0.3, patience=1, threshold=0.1, threshold_mode="abs", min_lr=[0.01, 0.002]),
    dict(mode="min", factor=0.5, patience=0, threshold_mode="abs", threshold=0.05, min_lr=0.02, eps=1e-3),
]
METRICS = [1.0, 0.9, 0.95, 0.95, 0.96, 0.89, 0.89, 0.7, 0.71, 0.72, 0.73, 0.74, 0.5, 0.5, 0.5, 0.6, 0.2, 0.2,
           0.2, 0.2, 0.21, 0.22, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]


@pytest.mark.parametrize("kw", PLATEAU, ids=[f"plateau{i}" for i in range(len(PLATEAU))])
def test_reduce_lr_on_plateau_matches_torch(kw):
    ours, theirs, opt, ref, _, _ = _sched_pair("SGD", dict(lr=0.1), "StepLR", dict(step_size=1000))
    sched, tsched = lr_scheduler.ReduceLROnPlateau(opt, **kw), torch.optim.lr_scheduler.ReduceLROnPlateau(ref, **kw)
    assert set(sched.state_dict()) == set(tsched.state_dict())
    seen = set()
    for m in METRICS:
        metric = -m if kw.get("mode") == "max" else m
        sched.step(np.array(metric))  # a 0-d array, as a loss would be
        tsched.step(metric)
        assert sched.get_last_lr() == tsched.get_last_lr()
        assert (sched.num_bad_epochs, sched.cooldown_counter, sched.best) == \
            (tsched.num_bad_epochs, tsched.cooldown_counter, tsched.best)
        seen.add(tuple(sched.get_last_lr()))
    assert len(seen) > (2 if kw else 0)  # the sequence reduced the lr at least twice (patience 10: never)


def test_reduce_lr_on_plateau_errors():
    ours, _ = _params()
    opt = optim.SGD(ours, lr=0.1)
    with pytest.raises(ValueError, match="Factor should be < 1.0"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode avg is unknown"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="avg")
    with pytest.raises(ValueError, match="expected 1 min_lrs, got 2"):
        lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1, 0.2])


# -- gradient clipping -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(dtype, norm_type, max_norm):
    ours, theirs = _params(dtype)
    _set_grads(ours, theirs, skip={1})
    total = clip_grad_norm_(ours, max_norm, norm_type)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, np.ndarray) and total.shape == () and total.dtype == dtype
    rtol = 1e-13 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(float(total), ttotal.item(), rtol=rtol)
    for p, t in zip(ours, theirs):
        if t.grad is None:
            assert p.grad is None
        else:
            assert p.grad.dtype == dtype
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=rtol, atol=rtol * 1e-3)


def test_clip_grad_norm_edge_cases():
    p = Parameter(np.ones(3))
    assert float(clip_grad_norm_([p], 1.0)) == 0.0  # no grads
    p.grad = np.array([np.inf, 1.0, 0.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm_(p, 1.0, error_if_nonfinite=True)
    p.grad = np.array([3.0, 4.0, 0.0])
    assert float(clip_grad_norm_(p, 1.0)) == 5.0  # a single Tensor works too
    np.testing.assert_allclose(p.grad, [3 / (5 + 1e-6), 4 / (5 + 1e-6), 0], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_value_matches_torch(dtype):
    ours, theirs = _params(dtype)
    _set_grads(ours, theirs, skip={0})
    grads = [p.grad for p in ours]
    clip_grad_value_(ours, 0.7)
    torch.nn.utils.clip_grad_value_(theirs, 0.7)
    for p, t, g in zip(ours, theirs, grads):
        if t.grad is not None:
            assert p.grad is g  # in place
            np.testing.assert_array_equal(p.grad, t.grad.numpy())
