"""The fit loop behind ``pydl train``: training, evaluation, checkpoints, curves,
cross-validation and hyper-parameter search.

- :func:`fit` trains a model for some epochs: a tqdm bar per epoch, the mean
  train/validation loss and accuracy per epoch, early stopping on the validation
  loss (``patience``), the best weights checkpointed (``best.safetensors``, a plain
  state_dict: ``pydl.load_into`` or torch's ``load_state_dict`` take it) and the
  whole training state after every epoch (``last.safetensors``: weights, optimizer
  state, epoch, history, generator state) so that ``resume=`` continues the run
  exactly as if it had not stopped; the curves as ``curves.csv`` and ``curves.png``.
- :func:`evaluate`: mean loss and accuracy of a model over a loader.
- :class:`Config` + :func:`run`: one training run from hyper-parameters and arrays;
  :func:`cross_validate` (stratified k folds) and :func:`search` (scikit-learn's
  ``ParameterGrid`` / ``ParameterSampler``) repeat it and report mean and spread.

Repeatability: ``seed`` reseeds pydl's generator (initialisation, dropout) and the
train loader's shuffle; with one backend and one thread count, the same seed gives
the same history and weights bit for bit.
"""
from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import math
import numbers
import os
import sys
import time
from collections import OrderedDict

import numpy as np

from . import autograd, nn, optim
from .autograd import Tensor
from .data import DataLoader, TensorDataset, stratified_kfold, stratified_split
from .registry import CPU_ORDER, use_backend
from .serialization import _atomic_write, load, load_metadata, save

__all__ = ["fit", "evaluate", "FitResult", "make_optimizer", "OPTIMIZERS", "SCHEDULES", "backend_order", "Config",
           "run", "cross_validate", "CVResult", "search", "SearchResult", "write_curves", "CURVE_COLUMNS",
           "TrainingDiverged"]

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = (None, "cosine")
CURVE_COLUMNS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds")
_CKPT_KEY = "pydl.train"  # the metadata entry of a resumable checkpoint
_CKPT_VERSION = 1


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite."""


# -- building blocks ------------------------------------------------------------------------


def make_optimizer(name: str, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.9):
    """An optimizer by name: ``sgd`` (with ``momentum``), ``adam``, ``adamw`` (decoupled
    decay) or ``rmsprop``; ``weight_decay`` is the optimizer's own (L2 for sgd, adam and
    rmsprop)."""
    name = str(name).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {', '.join(OPTIMIZERS)}, got {name!r}")
    for what, v in (("lr", lr), ("weight_decay", weight_decay), ("momentum", momentum)):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            raise ValueError(f"optimizer: {what} must be a finite number >= 0, got {v!r}")
    if lr <= 0:
        raise ValueError(f"optimizer: lr must be positive, got {lr!r}")
    params = list(params)
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return optim.RMSprop(params, lr=lr, weight_decay=weight_decay, momentum=0.0)


def backend_order(backend):
    """What ``fit(backend=...)`` runs under: None (automatic), an explicit order ("cpp,numpy")
    as given, "numpy" alone, or any other single backend first and then the automatic CPU
    order for the ops it lacks (the C++ backend has no cross-entropy kernel, for one)."""
    if backend is None:
        return None
    if not isinstance(backend, str) or not backend.strip():
        raise TypeError(f"backend must be a backend name or a comma-separated order, got {backend!r}")
    backend = backend.strip()
    if "," in backend or backend in ("numpy", "cuda") or ":" in backend:
        return backend
    if backend not in CPU_ORDER:
        raise ValueError(f"backend: unknown backend {backend!r}; expected one of {', '.join(CPU_ORDER)} "
                         f"or an order such as 'cpp,numpy'")
    return ",".join((backend,) + tuple(b for b in CPU_ORDER if b != backend))


@contextlib.contextmanager
def _settings(backend, threads):
    from . import get_num_threads, set_num_threads

    order = backend_order(backend)
    before = get_num_threads()
    if threads is not None:
        if not isinstance(threads, numbers.Integral) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        set_num_threads(int(threads))
    try:
        with use_backend(order):
            yield
    finally:
        if threads is not None:
            set_num_threads(before)


def _split_batch(batch):
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError("fit/evaluate: each batch must be a pair (inputs, targets); got "
                        f"{type(batch).__name__}")
    x, y = batch[0], batch[1]
    return (x if isinstance(x, Tensor) else Tensor(np.asarray(x))), (y if isinstance(y, Tensor)
                                                                       else Tensor(np.asarray(y)))


def _correct(logits: Tensor, y: Tensor) -> int:
    """How many rows of ``logits`` (N, C) have their largest value at the class ``y``."""
    if logits.ndim != 2 or y.ndim != 1:
        return 0
    return int((logits.data.argmax(axis=1) == y.data).sum())


def evaluate(model, loader, loss=None):
    """``(mean loss, accuracy)`` of ``model`` over ``loader``'s (inputs, class) batches, without
    gradients and in eval mode (the model's mode is restored after). ``loss`` defaults to
    cross-entropy; it must average over the batch."""
    loss = loss or nn.CrossEntropyLoss()
    was_training = model.training
    model.eval()
    total, correct, n = 0.0, 0, 0
    try:
        with autograd.no_grad():
            for batch in loader:
                x, y = _split_batch(batch)
                out = model(x)
                b = len(y)
                total += float(loss(out, y).item()) * b
                correct += _correct(out, y)
                n += b
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return total / n, correct / n


# -- curves ---------------------------------------------------------------------------------


def write_curves(history, directory, best_epoch=None, title: str = "") -> dict:
    """Write ``curves.csv`` (one row per epoch, :data:`CURVE_COLUMNS`) and ``curves.png``
    (loss and accuracy against epoch, train and validation, the best epoch marked) into
    ``directory`` atomically; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = {"csv": os.path.join(directory, "curves.csv"), "png": os.path.join(directory, "curves.png")}
    _write_csv(history, paths["csv"])
    _atomic_write(paths["png"], lambda f: _plot(f, history, best_epoch, title))
    return paths


def _plot(f, history, best_epoch, title):
    # the object API with the Agg canvas: no pyplot state, no display needed
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    epochs = [r["epoch"] for r in history]
    for ax, key, label in zip(fig.subplots(1, 2), ("loss", "acc"), ("loss", "accuracy")):
        for part, style in (("train", "-o"), ("val", "-s")):
            ys = [r.get(f"{part}_{key}") for r in history]
            if any(v is not None for v in ys):
                ax.plot(epochs, [np.nan if v is None else v for v in ys], style, ms=3,
                        label="validation" if part == "val" else part)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", ls=":", lw=1, label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(f, format="png", dpi=100)


# -- checkpoints ----------------------------------------------------------------------------


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"cannot store {type(v).__name__} in a checkpoint's metadata")


def _save_state(path, model, optimizer, epoch, history, best, generator_state, loader_seed):
    arrays = OrderedDict(("model." + k, v) for k, v in model.state_dict().items())
    if best["weights"] is not None:
        arrays.update(("best." + k, v) for k, v in best["weights"].items())
    sd = optimizer.state_dict()
    numbers_state = {}
    for idx, s in sd["state"].items():
        for name, v in s.items():
            if isinstance(v, np.ndarray) or hasattr(v, "shape"):
                arrays[f"optim.{idx}.{name}"] = v
            else:
                numbers_state.setdefault(str(idx), {})[name] = v
    meta = dict(version=_CKPT_VERSION, epoch=epoch, history=history,
                best={k: v for k, v in best.items() if k != "weights"},
                param_groups=sd["param_groups"], optim_numbers=numbers_state,
                optimizer=type(optimizer).__name__, generator=generator_state, loader_seed=loader_seed)
    save(arrays, path, metadata={_CKPT_KEY: json.dumps(meta, default=_json_default)})


def _load_state(path, model, optimizer):
    """Restore ``model`` and ``optimizer`` from a checkpoint written by :func:`fit`; returns its
    metadata and the best weights."""
    p = os.fspath(path)
    if not p.lower().endswith(".safetensors"):
        raise ValueError(f"resume: {p!r} is not a .safetensors checkpoint written by pydl.train.fit "
                         f"(its last.safetensors)")
    meta = load_metadata(p).get(_CKPT_KEY)
    if meta is None:
        raise ValueError(f"resume: {p!r} holds no training state (a model's weights only, such as "
                         f"best.safetensors?); resume from the run's last.safetensors")
    meta = json.loads(meta)
    if meta.get("version") != _CKPT_VERSION:
        raise ValueError(f"resume: {p!r} is a version {meta.get('version')} training checkpoint; this pydl "
                         f"reads version {_CKPT_VERSION}")
    if meta["optimizer"] != type(optimizer).__name__:
        raise ValueError(f"resume: {p!r} was trained with {meta['optimizer']}, this run uses "
                         f"{type(optimizer).__name__}")
    arrays = load(p)
    weights = OrderedDict((k[6:], v) for k, v in arrays.items() if k.startswith("model."))
    best = OrderedDict((k[5:], v) for k, v in arrays.items() if k.startswith("best."))
    try:
        model.load_state_dict(weights)
    except (KeyError, ValueError, TypeError) as e:
        raise type(e)(f"resume: {p!r} does not fit this model: {e.args[0] if e.args else e}") from e
    state: dict = {}
    for k, v in arrays.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    for idx, values in meta["optim_numbers"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = meta["param_groups"]
    for saved, live in zip(groups, optimizer.param_groups):
        for k, v in saved.items():  # JSON turned tuples (Adam's betas) into lists
            if isinstance(live.get(k), tuple) and isinstance(v, list):
                saved[k] = tuple(v)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return meta, (best or None)


# -- fit ------------------------------------------------------------------------------------


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` did: ``history`` (one dict per epoch, :data:`CURVE_COLUMNS`), the best
    epoch and its validation loss and accuracy (None without validation), whether early
    stopping ended the run, the seconds spent and the files written."""
    history: list
    best_epoch: int | None
    best_val_loss: float | None
    best_val_acc: float | None
    stopped_early: bool
    seconds: float
    files: dict

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def fit(model, train_loader, val_loader=None, optimizer="adam", loss=None, epochs: int = 10, *,
        lr: float = 1e-3, weight_decay: float = 0.0, momentum: float = 0.9, clip: float | None = None,
        patience: int | None = None, min_delta: float = 0.0, schedule: str | None = None,
        seed: int | None = None, backend=None, threads: int | None = None, out=None, resume=None,
        restore_best: bool = True, progress: bool = True, log=print) -> FitResult:
    """Train ``model`` for ``epochs`` epochs (numbered from 1) over ``train_loader``'s
    (inputs, class) batches.

    - ``optimizer``: an ``Optimizer`` over the model's parameters, or a name (``sgd``,
      ``adam``, ``adamw``, ``rmsprop``) built with ``lr``, ``weight_decay`` and
      ``momentum``; ``loss`` defaults to cross-entropy (averaged over the batch).
    - ``val_loader``: evaluated after every epoch; the lowest validation loss is the
      best epoch. ``patience``: stop after that many epochs without an improvement
      of more than ``min_delta``. ``restore_best``: end with the best epoch's weights.
    - ``clip``: clip the gradients' total 2-norm to this (``nn.utils.clip_grad_norm_``).
    - ``schedule``: None (constant learning rate) or ``"cosine"``: epoch ``e`` of ``E``
      runs at ``lr0 * (1 + cos(pi * (e - 1) / E)) / 2`` (a function of the epoch alone,
      so a resumed run follows the same schedule).
    - ``seed``: reseed pydl's generator and the train loader's shuffle (a repeatable run).
    - ``backend`` (see :func:`backend_order`) and ``threads``: for this run only.
    - ``out``: a directory for ``best.safetensors``, ``last.safetensors`` (resumable),
      ``curves.csv`` and ``curves.png``. ``resume``: a ``last.safetensors`` to continue
      from; ``epochs`` is the total, so the run continues at the epoch after it.
    - ``progress``: the tqdm bar (on stderr); ``log``: called with one line per epoch
      (None: quiet).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be a pydl.nn.Module, got {type(model).__name__}")
    if not isinstance(epochs, numbers.Integral) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"fit: epochs must be a positive int, got {epochs!r}")
    if patience is not None:
        if not isinstance(patience, numbers.Integral) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"fit: patience must be a positive int or None, got {patience!r}")
        if val_loader is None:
            raise ValueError("fit: early stopping (patience) needs a val_loader")
    if clip is not None and (not isinstance(clip, numbers.Real) or not clip > 0):
        raise ValueError(f"fit: clip must be a positive number or None, got {clip!r}")
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0):
        raise TypeError(f"fit: seed must be a non-negative int or None, got {seed!r}")
    params = list(model.parameters())
    if isinstance(optimizer, optim.Optimizer):
        if weight_decay:
            raise ValueError("fit: weight_decay is set on the optimizer you pass; give it there, not to fit")
    else:
        optimizer = make_optimizer(optimizer, params, lr, weight_decay, momentum)
    if schedule not in SCHEDULES:
        raise ValueError(f"fit: schedule must be one of {SCHEDULES}, got {schedule!r}")
    for g in optimizer.param_groups:
        g.setdefault("initial_lr", g["lr"])
    loss_fn = loss or nn.CrossEntropyLoss()
    log = log or (lambda line: None)
    files = {}
    if out is not None:
        out = os.fspath(out)
        os.makedirs(out, exist_ok=True)
        files = {"best": os.path.join(out, "best.safetensors"), "last": os.path.join(out, "last.safetensors")}

    history: list = []
    best = {"epoch": None, "val_loss": None, "val_acc": None, "bad_epochs": 0, "stopped": False, "weights": None}
    start = 0
    if seed is not None:
        autograd.manual_seed(int(seed))
        if isinstance(train_loader, DataLoader):
            train_loader.seed = int(seed)
    if resume is not None:
        meta, best_weights = _load_state(resume, model, optimizer)
        start, history = int(meta["epoch"]), meta["history"]
        best.update(meta["best"], weights=best_weights)
        autograd.manual_seed(0).bit_generator.state = meta["generator"]
        if isinstance(train_loader, DataLoader) and meta.get("loader_seed") is not None:
            train_loader.seed = int(meta["loader_seed"])
        if start >= epochs:
            log(f"resume: {os.fspath(resume)!r} already ran {start} of {epochs} epochs; nothing to do")

    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    with _settings(backend, threads):
        for epoch in range(start, epochs):
            if best["stopped"]:
                break
            t0 = time.perf_counter()
            model.train()
            if isinstance(train_loader, DataLoader):
                train_loader.set_epoch(epoch)
            if schedule == "cosine":
                for g in optimizer.param_groups:
                    g["lr"] = g["initial_lr"] * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
            total, correct, n = 0.0, 0, 0
            bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress,
                       file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
            for step, batch in enumerate(bar):
                x, y = _split_batch(batch)
                optimizer.zero_grad()
                logits = model(x)
                batch_loss = loss_fn(logits, y)
                value = float(batch_loss.item())
                if not math.isfinite(value):
                    raise TrainingDiverged(f"fit: the training loss is {value} at epoch {epoch + 1}, batch "
                                           f"{step + 1}; lower the learning rate or clip the gradients")
                batch_loss.backward()
                if clip is not None:
                    nn.utils.clip_grad_norm_(params, clip)
                optimizer.step()
                b = len(y)
                total += value * b
                correct += _correct(logits, y)
                n += b
                if progress and step % 10 == 0:
                    bar.set_postfix(loss=f"{total / n:.4f}", refresh=False)
            bar.close()
            if n == 0:
                raise ValueError("fit: the train loader yielded no batches")
            row = {"epoch": epoch + 1, "train_loss": total / n, "train_acc": correct / n, "val_loss": None,
                   "val_acc": None, "lr": float(optimizer.param_groups[0]["lr"])}
            if val_loader is not None:
                row["val_loss"], row["val_acc"] = evaluate(model, val_loader, loss_fn)
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            improved = _track_best(best, row, model, min_delta, patience, val_loader is not None)
            if out is not None:
                if improved:
                    save(model, files["best"], metadata={k: str(row[k]) for k in CURVE_COLUMNS})
                _save_state(files["last"], model, optimizer, epoch + 1, history, best,
                            autograd.default_generator().bit_generator.state,
                            train_loader.seed if isinstance(train_loader, DataLoader) else None)
                _write_csv(history, os.path.join(out, "curves.csv"))  # the PNG is drawn at the end
            log(_epoch_line(row, epochs, improved and val_loader is not None))
            if best["stopped"]:
                log(f"early stopping: no validation improvement in {patience} epochs; best epoch {best['epoch']}")
    if restore_best and best["weights"] is not None and val_loader is not None and history \
            and best["epoch"] != history[-1]["epoch"]:
        model.load_state_dict(best["weights"])
    if out is not None and history:
        files.update(write_curves(history, out, best["epoch"] if val_loader is not None else None,
                                  title=type(model).__name__))
    return FitResult(history=history, best_epoch=best["epoch"], best_val_loss=best["val_loss"],
                     best_val_acc=best["val_acc"], stopped_early=best["stopped"],
                     seconds=time.perf_counter() - t_start, files=files)


def _write_csv(history, path):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in CURVE_COLUMNS})
    _atomic_write(path, lambda f: f.write(buf.getvalue().encode()))


def _track_best(best, row, model, min_delta, patience, has_val) -> bool:
    """Update the best-epoch record with ``row``; True when this epoch is the new best."""
    if not has_val:  # without validation the latest epoch is the one kept
        best.update(epoch=row["epoch"], weights=None)
        return True
    if best["val_loss"] is None or row["val_loss"] < best["val_loss"] - min_delta:
        best.update(epoch=row["epoch"], val_loss=row["val_loss"], val_acc=row["val_acc"], bad_epochs=0,
                    weights=OrderedDict((k, v.copy()) for k, v in model.state_dict().items()))
        return True
    best["bad_epochs"] += 1
    if patience is not None and best["bad_epochs"] >= patience:
        best["stopped"] = True
    return False


def _epoch_line(row, epochs, improved):
    line = (f"epoch {row['epoch']:3d}/{epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}")
    if row["val_loss"] is not None:
        line += f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.4f}{' *' if improved else ''}"
    return line + f"  {row['seconds']:.1f} s"


# -- one run from hyper-parameters ----------------------------------------------------------


@dataclasses.dataclass
class Config:
    """The hyper-parameters of one training run (``pydl train``'s flags)."""
    model: str = "lenet5"
    model_options: dict = dataclasses.field(default_factory=dict)
    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 5
    weight_decay: float = 0.0
    momentum: float = 0.9
    clip: float | None = None
    patience: int | None = None
    schedule: str | None = None
    augment: bool = False
    seed: int = 0

    def with_params(self, params: dict) -> "Config":
        """A copy with ``params`` applied: Config fields by name, anything else a model option."""
        fields = {f.name for f in dataclasses.fields(self)} - {"model_options"}
        cfg = copy.deepcopy(self)
        for k, v in params.items():
            if k in fields:
                setattr(cfg, k, v)
            else:
                cfg.model_options[k] = v
        return cfg


def augmentation(shape):
    """``Config.augment``'s transform for images of ``shape`` (N, C, H, W): a random crop
    after padding by 1/14 of the side (2 pixels of 28), no flip (digits are not symmetric)."""
    from .data.transforms import RandomCrop

    h, w = shape[-2:]
    return RandomCrop((h, w), padding=max(1, min(h, w) // 14))


def _num_classes(y):
    return max(int(np.max(y)) + 1, 2)


def run(cfg: Config, x_train, y_train, x_val=None, y_val=None, *, num_classes=None, backend=None, threads=None,
        out=None, resume=None, progress=True, log=print, eval_batch_size: int = 500):
    """Build ``cfg.model`` (seeded with ``cfg.seed``) and :func:`fit` it on the arrays; returns
    ``(model, FitResult)``."""
    from . import models

    if len(x_train) != len(y_train) or (x_val is not None and len(x_val) != len(y_val)):
        raise ValueError("run: inputs and labels must have the same number of samples")
    autograd.manual_seed(int(cfg.seed))
    try:
        model = models.create(cfg.model, in_shape=x_train.shape[1:],
                              num_classes=num_classes or _num_classes(y_train), **cfg.model_options)
    except TypeError as e:
        raise ValueError(f"model {cfg.model!r} does not take the options {cfg.model_options}: {e}") from e
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=cfg.batch_size, shuffle=True,
                              seed=cfg.seed, transform=augmentation(x_train.shape) if cfg.augment else None)
    val_loader = None if x_val is None else DataLoader(TensorDataset(x_val, y_val), batch_size=eval_batch_size)
    result = fit(model, train_loader, val_loader, cfg.optimizer, epochs=cfg.epochs, lr=cfg.lr,
                 weight_decay=cfg.weight_decay, momentum=cfg.momentum, clip=cfg.clip, patience=cfg.patience,
                 schedule=cfg.schedule, seed=cfg.seed, backend=backend, threads=threads, out=out, resume=resume,
                 progress=progress, log=log)
    return model, result


# -- cross-validation and search ------------------------------------------------------------


@dataclasses.dataclass
class CVResult:
    """Validation accuracy per fold (the best epoch's), their mean and standard deviation."""
    scores: list
    mean: float
    std: float
    histories: list


def cross_validate(cfg: Config, x, y, k: int = 5, *, backend=None, threads=None, progress=False, log=None):
    """Stratified ``k``-fold cross-validation of ``cfg`` on ``(x, y)`` (folds drawn from
    ``cfg.seed``): each fold trains on the rest and scores its best epoch's validation
    accuracy. Returns a :class:`CVResult`."""
    x, y = np.asarray(x), np.asarray(y)
    folds = stratified_kfold(y, k, seed=int(cfg.seed))
    scores, histories = [], []
    for i, (tr, va) in enumerate(folds):
        _, res = run(cfg, x[tr], y[tr], x[va], y[va], num_classes=_num_classes(y), backend=backend,
                     threads=threads, progress=progress, log=None)
        scores.append(float(res.best_val_acc))
        histories.append(res.history)
        if log:
            log(f"fold {i + 1}/{k}: val acc {scores[-1]:.4f} (best epoch {res.best_epoch})")
    return CVResult(scores, float(np.mean(scores)), float(np.std(scores)), histories)


@dataclasses.dataclass
class SearchResult:
    """One row per trial (``params``, ``mean``, ``std``, ``scores``: validation accuracy), best first."""
    trials: list
    best_params: dict
    best_config: Config


def search(cfg: Config, x, y, space: dict, mode: str = "grid", trials: int | None = None, kfold: int | None = None,
           val_fraction: float = 0.1, *, backend=None, threads=None, progress=False, log=None) -> SearchResult:
    """Hyper-parameter search over ``space`` (name -> list of values; names are :class:`Config`
    fields or model options): every combination (``mode="grid"``, scikit-learn's
    ``ParameterGrid``) or ``trials`` random draws (``"random"``, ``ParameterSampler`` seeded
    with ``cfg.seed``). Each trial scores the validation accuracy of a stratified
    ``val_fraction`` hold-out, or the mean (and spread) over ``kfold`` folds."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if not isinstance(space, dict) or not space:
        raise ValueError("search: space must be a non-empty dict of name -> list of values")
    for name, values in space.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"search: {name!r} must map to a non-empty list of values, got {values!r}")
    if mode == "grid":
        candidates = list(ParameterGrid(space))
    elif mode == "random":
        if not isinstance(trials, numbers.Integral) or isinstance(trials, bool) or trials < 1:
            raise ValueError(f"search: random search needs trials, a positive int, got {trials!r}")
        size = int(np.prod([len(v) for v in space.values()]))
        candidates = list(ParameterSampler(space, n_iter=min(int(trials), size), random_state=int(cfg.seed)))
    else:
        raise ValueError(f"search: mode must be 'grid' or 'random', got {mode!r}")
    x, y = np.asarray(x), np.asarray(y)
    if kfold is None:
        tr, va = stratified_split(y, val_fraction, seed=int(cfg.seed))
    rows = []
    for i, params in enumerate(candidates):
        trial = cfg.with_params(params)
        if kfold is not None:
            cv = cross_validate(trial, x, y, kfold, backend=backend, threads=threads, progress=progress)
            row = dict(params=params, mean=cv.mean, std=cv.std, scores=cv.scores)
        else:
            _, res = run(trial, x[tr], y[tr], x[va], y[va], num_classes=_num_classes(y), backend=backend,
                         threads=threads, progress=progress, log=None)
            row = dict(params=params, mean=float(res.best_val_acc), std=0.0, scores=[float(res.best_val_acc)])
        rows.append(row)
        if log:
            spread = f" +- {row['std']:.4f} over {kfold} folds" if kfold else ""
            log(f"trial {i + 1}/{len(candidates)} {params}: val acc {row['mean']:.4f}{spread}")
    ranked = sorted(rows, key=lambda r: -r["mean"])
    return SearchResult(ranked, ranked[0]["params"], cfg.with_params(ranked[0]["params"]))
