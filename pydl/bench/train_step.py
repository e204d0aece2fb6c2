"""The ``train`` benchmark family: one optimizer step of a real model, pydl against
PyTorch eager on the CPU, timed side by side in one process.

A step is what a training loop repeats: ``zero_grad``, forward, loss, ``backward()``,
``Adam.step()``. Each model is built in pydl (``pydl.models``) and in PyTorch with the
same attribute names; torch gets pydl's initial weights through ``load_state_dict``,
both cycle through the same few batches, use the same thread count, and the first step's loss and
every parameter's gradient are checked equal before anything is timed. Rounds alternate between the two libraries;
a round's time is the best of a few steps, and the ratio reported is the median of
the per-round ratios (robust to a noisy neighbour), as ``pydl overhead`` does.

Then one more pydl step runs *profiled*: every registry op call (forward through
``OpSpec.call``, backward through ``OpSpec.call_backward``) is timed on its own, and
the step's four phases (zero_grad, forward + loss, backward, optimizer) by the wall
clock, so the step splits into

- kernels: time inside the registry's ops, forward and backward, per op and backend
  (the backend column says which kernel ran: ``numpy`` is the reference);
- autograd + Python: the rest of forward and backward (layer code, argument
  checks, Tensor arithmetic in NumPy, the graph walk, gradient accumulation);
- optimizer: ``Adam.step()`` and ``zero_grad``.

The models (the sizes of issue 13): the 784-256-10 MLP and LeNet-5 on 1x28x28 at
batch 64; the small ResNet (ResNet-14: widths 16/32/64, two basic blocks a stage)
on 3x32x32 at batch 32; the LSTM character LM (vocabulary 96, embedding 64, hidden
256) on 32 sequences of 64 steps; the Transformer encoder classifier (width 256, 4
heads, feed-forward 1024, 2 layers, no dropout) on 32 sequences of 128 tokens.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

#: the models of the family, in report order
MODELS = ("mlp", "lenet5", "resnet", "lstm_lm", "transformer")

#: the issue's targets: torch ms / pydl ms at least this
TARGETS = {"mlp": 2.0, "lenet5": 1.5, "resnet": 1.0, "lstm_lm": 1.0, "transformer": 1.0}


@dataclass
class Case:
    """One model's step in both libraries."""

    name: str
    label: str
    pydl_step: object
    torch_step: object
    #: (pydl's first loss, torch's, pydl's largest relative gradient error against torch in float64)
    loss_check: tuple = ()
    profile: object = None


# -- the torch twins -----------------------------------------------------------------------------


def torch_modules(torch):
    """PyTorch modules with pydl.models' attribute names (so state_dicts move as they are);
    tests/test_models.py checks predictions in both directions with them."""
    T = torch.nn

    class MLP(T.Module):
        def __init__(self, d_in=784, hidden=256, classes=10):
            super().__init__()
            self.net = T.Sequential(T.Flatten(), T.Linear(d_in, hidden), T.ReLU(), T.Linear(hidden, classes))

        def forward(self, x):
            return self.net(x)

    class LeNet5(T.Module):
        def __init__(self, c=1, fh=5, classes=10):  # fh: the feature map's side after the second pool
            super().__init__()
            self.features = T.Sequential(T.Conv2d(c, 6, 5, padding=2), T.ReLU(), T.MaxPool2d(2),
                                         T.Conv2d(6, 16, 5), T.ReLU(), T.MaxPool2d(2))
            self.classifier = T.Sequential(T.Flatten(), T.Linear(16 * fh * fh, 120), T.ReLU(), T.Linear(120, 84),
                                           T.ReLU(), T.Linear(84, classes))

        def forward(self, x):
            return self.classifier(self.features(x))

    class BasicBlock(T.Module):
        def __init__(self, c_in, c, stride):
            super().__init__()
            self.conv1 = T.Conv2d(c_in, c, 3, stride, 1, bias=False)
            self.bn1 = T.BatchNorm2d(c)
            self.conv2 = T.Conv2d(c, c, 3, 1, 1, bias=False)
            self.bn2 = T.BatchNorm2d(c)
            self.downsample = (T.Sequential(T.Conv2d(c_in, c, 1, stride, bias=False), T.BatchNorm2d(c))
                               if stride != 1 or c_in != c else None)

        def forward(self, x):
            out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
            return torch.relu(out + (x if self.downsample is None else self.downsample(x)))

    class ResNet(T.Module):
        def __init__(self, c, classes, widths, blocks):
            super().__init__()
            self.conv1 = T.Conv2d(c, widths[0], 3, 1, 1, bias=False)
            self.bn1 = T.BatchNorm2d(widths[0])
            prev = widths[0]
            for i, (w, n) in enumerate(zip(widths, blocks)):
                stage = []
                for j in range(n):
                    stage.append(BasicBlock(prev, w, 2 if i > 0 and j == 0 else 1))
                    prev = w
                setattr(self, f"layer{i + 1}", T.Sequential(*stage))
            self.n = len(widths)
            self.avgpool = T.AdaptiveAvgPool2d(1)
            self.fc = T.Linear(prev, classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            for i in range(self.n):
                x = getattr(self, f"layer{i + 1}")(x)
            return self.fc(self.avgpool(x).flatten(1))

    class CharLM(T.Module):
        def __init__(self, vocab, embed, hidden):
            super().__init__()
            self.embed = T.Embedding(vocab, embed)
            self.rnn = T.LSTM(embed, hidden, batch_first=True)
            self.head = T.Linear(hidden, vocab)

        def forward(self, ids):
            return self.head(self.rnn(self.embed(ids))[0])

    class TransformerClassifier(T.Module):
        def __init__(self, vocab, classes, d, heads, layers, ff, max_len):
            super().__init__()
            self.tok_embed = T.Embedding(vocab, d)
            self.pos_embed = T.Embedding(max_len, d)
            layer = T.TransformerEncoderLayer(d, heads, ff, 0.0, batch_first=True)
            self.encoder = T.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.head = T.Linear(d, classes)

        def forward(self, ids):
            pos = torch.arange(ids.shape[1])
            return self.head(self.encoder(self.tok_embed(ids) + self.pos_embed(pos)).mean(dim=1))

    return dict(MLP=MLP, LeNet5=LeNet5, ResNet=ResNet, CharLM=CharLM, TransformerClassifier=TransformerClassifier)


# -- the cases -----------------------------------------------------------------------------------


#: batches a case cycles through: a step repeated on one batch drives its gradients towards
#: zero, and Adam's second moments into float32 denormals (100x slower arithmetic in torch)
K = 8


def _build(name: str, torch, rng):
    """(label, pydl model, torch model, K batches of inputs, K batches of targets)."""
    from pydl import models

    tm = torch_modules(torch)
    if name == "mlp":
        ours, theirs = models.MLP(784, 256, 10), tm["MLP"]()
        x, y = rng.standard_normal((K, 64, 1, 28, 28)), rng.integers(0, 10, (K, 64))
        label = "MLP 784-256-10, batch 64"
    elif name == "lenet5":
        ours, theirs = models.LeNet5((1, 28, 28), 10), tm["LeNet5"]()
        x, y = rng.standard_normal((K, 64, 1, 28, 28)), rng.integers(0, 10, (K, 64))
        label = "LeNet-5 1x28x28, batch 64"
    elif name == "resnet":
        ours, theirs = models.ResNet((3, 32, 32), 10), tm["ResNet"](3, 10, (16, 32, 64), (2, 2, 2))
        x, y = rng.standard_normal((K, 32, 3, 32, 32)), rng.integers(0, 10, (K, 32))
        label = "ResNet-14 3x32x32, batch 32"
    elif name == "lstm_lm":
        ours, theirs = models.CharLM(96, 64, 256, cell="lstm"), tm["CharLM"](96, 64, 256)
        x, y = rng.integers(0, 96, (K, 32, 64)), rng.integers(0, 96, (K, 32, 64))
        label = "LSTM LM hidden 256, 32 x 64 steps"
    elif name == "transformer":
        ours = models.TransformerClassifier(1000, 10, d_model=256, nhead=4, num_layers=2, dim_feedforward=1024,
                                            max_len=128)
        theirs = tm["TransformerClassifier"](1000, 10, 256, 4, 2, 1024, 128)
        x, y = rng.integers(0, 1000, (K, 32, 128)), rng.integers(0, 10, (K, 32))
        label = "Transformer d256 4 heads 2 layers, 32 x 128"
    else:
        raise ValueError(f"train benchmark: unknown model {name!r}; expected one of {', '.join(MODELS)}")
    sd = ours.state_dict()
    theirs.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v).copy()) for k, v in sd.items()})
    if x.dtype.kind == "f":
        x = x.astype(np.float32)
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    return label, ours, theirs, x, y.astype(np.int64)


def make_case(name: str, backend: str | None = None, seed: int = 0) -> Case:
    """Both steps of model ``name`` from the same weights over the same sequence of batches
    (``backend``: pydl's, or automatic)."""
    import torch

    import pydl
    from pydl import optim
    from pydl.nn import functional as F

    rng = np.random.default_rng(seed)
    pydl.manual_seed(seed)  # the initial weights too
    label, ours, theirs, x, y = _build(name, torch, rng)
    opt_p = optim.Adam(ours.parameters(), lr=1e-3)
    opt_t = torch.optim.Adam(theirs.parameters(), lr=1e-3, foreach=False)
    xs = [pydl.Tensor(b) if b.dtype.kind == "f" else b for b in x]
    ys = [b.reshape(-1) for b in y]
    xts, yts = [torch.from_numpy(b) for b in x], [torch.from_numpy(b.reshape(-1)) for b in y]
    ctx = (lambda: pydl.use_backend(backend)) if backend else contextlib.nullcontext
    turn = {"pydl": 0, "torch": 0}

    def logits_p(i):
        out = ours(xs[i])
        return out[0] if isinstance(out, tuple) else out

    def pydl_step(phases=None):
        i = turn["pydl"] = (turn["pydl"] + 1) % K
        with ctx():
            t0 = time.perf_counter()
            opt_p.zero_grad()
            t1 = time.perf_counter()
            out = logits_p(i)
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), ys[i])
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            opt_p.step()
            t4 = time.perf_counter()
        if phases is not None:
            phases.update(zero_grad=t1 - t0, forward=t2 - t1, backward=t3 - t2, optimizer=t4 - t3)
        return loss

    def torch_step():
        i = turn["torch"] = (turn["torch"] + 1) % K
        opt_t.zero_grad()
        out = theirs(xts[i])
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), yts[i])
        loss.backward()
        opt_t.step()
        return loss

    # the same loss and the same gradients before anything is timed: pydl's float32 against torch
    # in float64 (torch's own float32 is off by up to ~1e-3 of the largest element in the ResNet's
    # first layers, mkldnn convolution and batch norm, and more where a gradient cancels out)
    import copy

    ref = copy.deepcopy(theirs).double()
    x64 = xts[0].double() if xts[0].is_floating_point() else xts[0]
    lp = _loss_and_grads(ours, lambda: logits_p(0), F, ys[0], ctx)
    lt = _loss_and_grads(ref, lambda: ref(x64), torch.nn.functional, yts[0], contextlib.nullcontext)
    if not abs(lp - lt) <= 1e-3 * max(1.0, abs(lt)):
        raise AssertionError(f"train benchmark {name}: first-step loss {lp:.6g} in pydl, {lt:.6g} in torch (float64)")
    ref_p = dict(ref.named_parameters())
    worst = 0.0
    for k, prm in ours.named_parameters():
        gp, gt = prm.grad, ref_p[k].grad.numpy()
        err = float(np.abs(gp - gt).max() / (np.abs(gt).max() + 1e-30))
        worst = max(worst, err)
        if err > 1e-2:
            raise AssertionError(f"train benchmark {name}: gradient of {k} differs from torch's (float64) by "
                                 f"{err:.3g} (relative to its largest element)")
    del ref
    lp, lt = float(pydl_step().item()), float(torch_step().item())
    return Case(name, label, pydl_step, torch_step, (lp, lt, worst))


def _loss_and_grads(model, logits, F, targets, ctx) -> float:
    """Forward, loss and backward once (no update); the loss."""
    with ctx():
        model.zero_grad()
        out = logits()
        loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), targets)
        loss.backward()
    return float(loss.item())


# -- profiling the registry ops ------------------------------------------------------------------


@dataclass
class Profile:
    """Where one profiled pydl step spent its time (seconds)."""

    phases: dict = field(default_factory=dict)
    #: (op, "forward"/"backward", backend) -> [seconds, calls]
    ops: dict = field(default_factory=dict)

    def kernel_time(self, kind: str | None = None) -> float:
        return sum(v[0] for (op, k, b), v in self.ops.items() if kind in (None, k))

    def split(self) -> dict:
        """{kernels, autograd+python, optimizer, total} in seconds."""
        ph = self.phases
        total = sum(ph.values())
        k = self.kernel_time()
        opt = ph.get("optimizer", 0.0) + ph.get("zero_grad", 0.0)
        return {"kernels": k, "autograd+python": max(0.0, total - k - opt), "optimizer": opt, "total": total}

    def top(self, n: int = 6) -> list[tuple]:
        """The ``n`` costliest (op, kind, backend, seconds, calls), costliest first."""
        rows = [(op, kind, b, s, c) for (op, kind, b), (s, c) in self.ops.items()]
        return sorted(rows, key=lambda r: -r[3])[:n]


@contextlib.contextmanager
def _timed_ops(prof: Profile):
    """Time every ``OpSpec.call`` / ``call_backward`` into ``prof.ops`` (restored on exit)."""
    from pydl import registry

    OpSpec = registry.OpSpec
    call, call_backward = OpSpec.call, OpSpec.call_backward

    def backend_of(key, a, bk):
        try:
            return registry.select(key, a, bk)[0]
        except Exception:  # noqa: BLE001 - a label only
            return str(bk)

    def timed_call(self, a, bk=None, *args, **kw):
        t0 = time.perf_counter()
        try:
            return call(self, a, bk, *args, **kw)
        finally:
            dt = time.perf_counter() - t0
            _add(prof, (self.name, "forward", backend_of(self.name, a, bk)), dt)

    def timed_backward(self, g, a, saved, bk=None, *args, **kw):
        t0 = time.perf_counter()
        try:
            return call_backward(self, g, a, saved, bk, *args, **kw)
        finally:
            dt = time.perf_counter() - t0
            _add(prof, (self.name, "backward", backend_of(self.name + "_backward", a, bk)), dt)

    OpSpec.call, OpSpec.call_backward = timed_call, timed_backward
    try:
        yield prof
    finally:
        OpSpec.call, OpSpec.call_backward = call, call_backward


def _add(prof, key, dt):
    v = prof.ops.setdefault(key, [0.0, 0])
    v[0] += dt
    v[1] += 1


def profile_torch(case: Case, n: int = 8) -> list[dict]:
    """torch's costliest ops (self CPU time) in one profiled step: [{op, ms, calls}]."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        case.torch_step()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:n]
    return [dict(op=e.key, ms=e.self_cpu_time_total / 1e3, calls=e.count) for e in rows]


def profile_step(case: Case, repeats: int = 3) -> Profile:
    """The fastest of ``repeats`` profiled pydl steps (op timers add a little overhead)."""
    best = None
    for _ in range(repeats):
        prof = Profile()
        with _timed_ops(prof):
            case.pydl_step(prof.phases)
        if best is None or sum(prof.phases.values()) < sum(best.phases.values()):
            best = prof
    return best


# -- timing --------------------------------------------------------------------------------------


def _best(fn, n):
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_case(case: Case, rounds: int = 7, per_round: int = 3, warmup: int = 2) -> dict:
    """Alternating rounds; each round's time is the best of ``per_round`` steps."""
    for _ in range(warmup):
        case.pydl_step()
        case.torch_step()
    res = {"pydl": [], "torch": []}
    for r in range(rounds):
        order = (("pydl", case.pydl_step), ("torch", case.torch_step))
        for k, f in (order if r % 2 == 0 else order[::-1]):  # neither library always goes first
            res[k].append(_best(f, per_round))
    ratio = statistics.median(t / p for p, t in zip(res["pydl"], res["torch"]))
    return {"pydl_ms": statistics.median(res["pydl"]) * 1e3, "torch_ms": statistics.median(res["torch"]) * 1e3,
            "ratio": ratio, "pydl_rounds_ms": [v * 1e3 for v in res["pydl"]],
            "torch_rounds_ms": [v * 1e3 for v in res["torch"]]}


def run(models=MODELS, threads: int | None = None, backend: str | None = None, rounds: int = 7,
        per_round: int = 3, progress=None) -> dict:
    """The train family: {"threads", "backend", "torch", "rows": [one dict per model]}."""
    import torch

    import pydl

    if threads:
        pydl.set_num_threads(int(threads))
    threads = pydl.get_num_threads()
    torch.set_num_threads(threads)
    blas = _blas_limit(threads)
    rows = []
    try:
        for name in models:
            if progress:
                progress(name)
            row = {"model": name, "target": TARGETS.get(name)}
            try:
                case = make_case(name, backend)
                row["label"] = case.label
                row.update(time_case(case, rounds, per_round))
                prof = profile_step(case)
                row["split_ms"] = {k: v * 1e3 for k, v in prof.split().items()}
                row["phases_ms"] = {k: v * 1e3 for k, v in prof.phases.items()}
                row["ops"] = [dict(op=op, kind=kind, backend=b, ms=s * 1e3, calls=c)
                              for op, kind, b, s, c in prof.top(len(prof.ops))]
                row["loss_check"] = list(case.loss_check)
                row["torch_ops"] = profile_torch(case)
            except Exception as e:  # noqa: BLE001 - one model's failure is reported, the others still run
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
    finally:
        if blas is not None:
            blas.restore_original_limits()
    return {"threads": threads, "backend": backend or "auto", "torch": torch.__version__,
            "blas_threads": threads if blas is not None else None, "rows": rows}


def _blas_limit(threads):
    """OpenBLAS (behind the NumPy reference kernels) limited to pydl's thread count, when
    threadpoolctl is there; else None (OpenBLAS keeps one thread per core)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(threads, user_api="blas")


# -- printing and the report ---------------------------------------------------------------------


def largest(row: dict) -> str:
    """The largest single cost of a pydl step: an op's kernel, or autograd + Python, or Adam."""
    if "ops" not in row:
        return "-"
    cands = [(o["ms"], f"{o['op']} {o['kind']} ({o['backend']})") for o in row["ops"][:1]]
    s = row["split_ms"]
    cands += [(s["autograd+python"], "autograd + Python"), (s["optimizer"], "optimizer")]
    ms, what = max(cands)
    return f"{what} {ms:.3g} ms ({100 * ms / s['total']:.0f}%)"


def table(result: dict) -> tuple[list[str], list[list[str]]]:
    head = ["model", "pydl ms", "torch ms", "torch/pydl", "target", "kernels ms", "autograd+Python ms",
            "optimizer ms", "largest cost"]
    out = []
    for r in result["rows"]:
        if "error" in r:
            out.append([r["model"], "-", "-", "-", f">= {r['target']}x", "-", "-", "-", r["error"]])
            continue
        s = r["split_ms"]
        mark = "" if r["ratio"] >= r["target"] else " (missed)"
        out.append([r["label"], f"{r['pydl_ms']:.3g}", f"{r['torch_ms']:.3g}", f"{r['ratio']:.2f}x{mark}",
                    f">= {r['target']}x", f"{s['kernels']:.3g}", f"{s['autograd+python']:.3g}",
                    f"{s['optimizer']:.3g}", largest(r)])
    return head, out


def op_table(row: dict, n: int = 8) -> tuple[list[str], list[list[str]]]:
    head = ["op", "pass", "backend", "ms", "calls", "% of step"]
    total = row["split_ms"]["total"]
    return head, [[o["op"], o["kind"], o["backend"], f"{o['ms']:.3g}", str(o["calls"]),
                   f"{100 * o['ms'] / total:.0f}"] for o in row["ops"][:n]]


METHOD = (
    "One optimizer step (zero_grad, forward, cross-entropy, backward, Adam) of each model, pydl "
    "against PyTorch eager on the CPU: same initial weights (torch loads pydl's state_dict), the same 8 batches "
    "in turn, "
    "same thread count (OpenBLAS, behind pydl's NumPy reference kernels, limited to it too); the first "
    "step's loss and gradients are checked against torch's float64 ones. Rounds alternate between the two; each "
    "round's time is the best of a few steps; ms are medians, the ratio is the median of the per-round "
    "ratios (higher: pydl faster). The split comes from one more pydl step with every registry op timed: "
    "kernels = time inside the ops (forward and backward); autograd + Python = the rest of forward and "
    "backward (layers, argument checks, Tensor arithmetic, the graph walk); optimizer = Adam.step + zero_grad."
)


def markdown(result: dict) -> list[str]:
    md = ["### train: one training step against PyTorch\n",
          f"pydl backend {result['backend']}, {result['threads']} threads, torch {result['torch']}, OMP_WAIT_POLICY "
          f"{result.get('omp_wait_policy', 'inherit')}. {METHOD}\n"]
    head, rows = table(result)
    md.append("| " + " | ".join(head) + " |")
    md.append("|" + "|".join("---" if j in (0, len(head) - 1) else "---:" for j in range(len(head))) + "|")
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md.append("")
    for r in result["rows"]:
        if "ops" not in r:
            continue
        h, rs = op_table(r)
        md.append(f"Costliest ops of the pydl step, {r['label']} (profiled step {r['split_ms']['total']:.3g} ms):\n")
        md.append("| " + " | ".join(h) + " |")
        md.append("|---|---|---|---:|---:|---:|")
        md += ["| " + " | ".join(x) + " |" for x in rs]
        md.append("")
        if r.get("torch_ops"):
            md.append("torch's costliest ops in the same step (torch.profiler, self CPU ms): "
                      + ", ".join(f"`{o['op']}` {o['ms']:.3g} ({o['calls']})" for o in r["torch_ops"][:6]) + "\n")
    return md


def print_result(result: dict, stream=None) -> None:
    import sys

    stream = stream or sys.stdout
    head, rows = table(result)
    widths = [max(len(head[j]), *(len(r[j]) for r in rows)) for j in range(len(head))]
    print(f"\ntraining step, pydl ({result['backend']}) against torch {result['torch']} eager CPU, "
          f"{result['threads']} threads, rounds alternating", file=stream)
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)), file=stream)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=stream)
    for r in result["rows"]:
        if "ops" in r:
            top = ", ".join(f"{o['op']} {o['kind'][:3]} ({o['backend']}) {o['ms']:.2g}" for o in r["ops"][:4])
            print(f"  {r['model']}: pydl's costliest ops (ms): {top}", file=stream)
            top = ", ".join(f"{o['op']} {o['ms']:.2g}" for o in r.get("torch_ops", [])[:4])
            print(f"  {' ' * len(r['model'])}  torch's (self CPU ms): {top}", file=stream)


def html(result: dict) -> str:
    import html as _html

    from .report import _html_table

    head, rows = table(result)
    parts = [f"<h3>train: one training step against PyTorch</h3><p class='method'>pydl backend "
             f"{_html.escape(str(result['backend']))}, {result['threads']} threads, torch "
             f"{_html.escape(result['torch'])}. {_html.escape(METHOD)}</p>", _html_table(head, rows)]
    for r in result["rows"]:
        if "ops" in r:
            h, rs = op_table(r)
            parts.append(f"<p>Costliest ops of the pydl step, {_html.escape(r['label'])} "
                         f"(profiled step {r['split_ms']['total']:.3g} ms)</p>" + _html_table(h, rs))
    return "".join(parts)


def split_ops(ops, full: bool):
    """``pydl bench --ops``: (the op names and families for the runner, whether to run the train
    family). ``train`` runs when named in ``--ops``, or with ``--full`` and no ``--ops``; an
    ``--ops`` of ``train`` alone runs no op jobs ([])."""
    if ops is None:
        return None, bool(full)
    rest = [o for o in ops if o != "train"]
    return rest, len(rest) < len(ops)


def pydl_backend(backends) -> str | None:
    """The pydl backend (or order) the train family runs on: the first of ``--backends`` that is
    not a reference library, else None (automatic: the fastest backend that has each op)."""
    for b in backends or ():
        if b not in ("torch", "numpy") and not b.startswith("torch"):
            return b
    return None


def emit(res: dict, out: str | None, print_result) -> int:
    """A bench family's command line ends here: the result as JSON to ``out``, else its table."""
    import json

    if out:
        with open(out, "w") as f:
            json.dump(res, f)
    else:
        print_result(res)
    return 0


def run_module(module: str, args: list, env_extra: dict | None = None, what: str = "a benchmark") -> dict:
    """``python -m module --out FILE *args`` in a child process that imports this pydl, with
    ``env_extra`` added to the environment; returns the JSON it wrote (the bench families that
    must run in a clean process use it: train, neighbours)."""
    import json
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    env = dict(os.environ, **(env_extra or {}))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    with tempfile.TemporaryDirectory(prefix="pydl-bench-") as d:
        out = Path(d) / "result.json"
        p = subprocess.run([sys.executable, "-m", module, "--out", str(out)] + list(args), env=env)
        if p.returncode != 0 or not out.is_file():
            raise RuntimeError(f"{what}'s process failed (exit status {p.returncode})")
        return json.loads(out.read_text())


def run_isolated(models=MODELS, threads: int | None = None, backend: str | None = None,
                 wait_policy: str = "inherit", rounds: int = 7, per_round: int = 3) -> dict:
    """:func:`run` in a child process whose OpenMP threads wait as ``wait_policy`` says
    ("passive", "active" or "inherit"), as the op jobs of ``pydl bench`` do: libgomp reads
    OMP_WAIT_POLICY once, when it starts, so a process cannot change its own. On a machine
    whose load exceeds its cores, a spinning thread burns the time slice its partner needs
    at the barrier (see pydl/bench/runner.py); the child's stderr shows the progress."""
    args = ["--models", ",".join(models), "--rounds", str(rounds), "--per-round", str(per_round)]
    args += ["--threads", str(threads)] if threads else []
    args += ["--backend", backend] if backend else []
    env = {"OMP_WAIT_POLICY": wait_policy.upper()} if wait_policy in ("passive", "active") else {}
    res = run_module("pydl.bench.train_step", args, env, what="the train benchmark")
    res["omp_wait_policy"] = wait_policy
    return res


def _main(argv=None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m pydl.bench.train_step",
                                description="The train benchmark family in this process (pydl bench --ops train "
                                            "runs it in a child process)")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--threads", type=int)
    p.add_argument("--backend")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--per-round", type=int, default=3)
    p.add_argument("--out", help="write the result as JSON here (default: print the table only)")
    a = p.parse_args(argv)
    res = run([m for m in a.models.split(",") if m], a.threads, a.backend, a.rounds, a.per_round,
              progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    return emit(res, a.out, print_result)


if __name__ == "__main__":
    raise SystemExit(_main())
