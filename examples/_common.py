"""What the example scripts share: the argument parser, threads, the data, a plain
training loop for the image classifiers, and an ASCII view of small images."""
from __future__ import annotations

import argparse
import time

import numpy as np

import pydl
from pydl import optim
from pydl.nn import functional as F

#: a short text for the language models (written for these examples)
TEXT = (
    "the river runs past the old mill and under the stone bridge. in the morning the baker opens "
    "the door and the smell of bread fills the street. children run to the school by the river, "
    "and the miller waves from the mill. in the evening the lamps are lit on the bridge and the "
    "river carries the light away. the baker counts the loaves, the miller counts the sacks, and "
    "the children count the stars above the bridge until they fall asleep. "
)


def parser(description: str, epochs: int | None = None, steps: int | None = None, lr: float = 1e-3):
    p = argparse.ArgumentParser(description=description)
    if epochs is not None:
        p.add_argument("--epochs", type=int, default=epochs, help=f"passes over the training set (default {epochs})")
    if steps is not None:
        p.add_argument("--steps", type=int, default=steps, help=f"optimizer steps (default {steps})")
    p.add_argument("--lr", type=float, default=lr, help=f"Adam's learning rate (default {lr:g})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="kernel threads (default: pydl's)")
    return p


def setup(args) -> np.random.Generator:
    """Threads and seeds from the parsed arguments; the run's generator."""
    if args.threads:
        pydl.set_num_threads(args.threads)
    pydl.manual_seed(args.seed)
    return np.random.default_rng(args.seed)


def image_data(name: str, upsample: int = 1, limit: int | None = None, seed: int = 0):
    """(x_train, y_train, x_test, y_test) of ``pydl.data.load(name)``; 8x8 digits can be
    upsampled (each pixel repeated) for the convolutional nets; ``limit`` caps the train set."""
    from pydl import data

    s = data.load(name, seed=seed)
    xtr, ytr, xte, yte = s.x_train, s.y_train, s.x_test, s.y_test
    if upsample > 1:
        k = np.ones((1, 1, upsample, upsample), np.float32)
        xtr, xte = np.kron(xtr, k), np.kron(xte, k)
    if limit:
        xtr, ytr = xtr[:limit], ytr[:limit]
    return xtr.astype(np.float32), ytr, xte.astype(np.float32), yte


def accuracy(model, x, y, batch: int = 256) -> float:
    model.eval()
    hits = 0
    with pydl.no_grad():
        for i in range(0, len(x), batch):
            hits += int((model(pydl.Tensor(x[i:i + batch])).numpy().argmax(1) == y[i:i + batch]).sum())
    model.train()
    return hits / len(x)


def fit_classifier(model, data, epochs: int, lr: float, rng, batch: int = 64) -> float:
    """Adam on cross-entropy, one line per epoch; returns the final test accuracy."""
    xtr, ytr, xte, yte = data
    opt = optim.Adam(model.parameters(), lr=lr)
    n_params = sum(p.data.size for p in model.parameters())
    print(f"{type(model).__name__}: {n_params:,} parameters; {len(xtr)} training and {len(xte)} test images "
          f"{tuple(xtr.shape[1:])}")
    acc = 0.0
    for epoch in range(epochs):
        t0, total, n = time.perf_counter(), 0.0, 0
        order = rng.permutation(len(xtr))
        for i in range(0, len(order), batch):
            b = order[i:i + batch]
            opt.zero_grad()
            loss = F.cross_entropy(model(pydl.Tensor(xtr[b])), ytr[b])
            loss.backward()
            opt.step()
            total, n = total + loss.item() * len(b), n + len(b)
        acc = accuracy(model, xte, yte)
        print(f"epoch {epoch + 1}: train loss {total / n:.4f}  test accuracy {acc:.2%}  "
              f"({time.perf_counter() - t0:.1f} s)")
    return acc


def fit_text_lm(model, loss_fn, vocab, steps: int, lr: float, T: int, rng) -> float:
    """Adam on random windows of TEXT (``loss_fn(model, x, y)`` -> the loss Tensor), then a sample."""
    ids = vocab.encode(TEXT)
    opt = optim.Adam(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    for step in range(steps):
        start = rng.integers(0, len(ids) - T - 1, 32)
        x = np.stack([ids[s:s + T] for s in start])
        y = np.stack([ids[s + 1:s + T + 1] for s in start])
        opt.zero_grad()
        loss = loss_fn(model, x, y)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  (uniform guess {np.log(len(vocab)):.3f})")
    print(f"{steps} steps in {time.perf_counter() - t0:.1f} s; a sample at temperature 0.5:")
    print("  the " + vocab.decode(model.generate(vocab.encode("the "), 160, 0.5, rng)))
    return float(loss.item())


def ascii_image(img, width: int = 8) -> str:
    """A small grey image in [0, 1] as characters, darkest to brightest."""
    ramp = " .:-=+*#%@"
    img = np.clip(np.asarray(img, np.float64).reshape(-1, width), 0, 1)
    return "\n".join("".join(ramp[int(v * (len(ramp) - 1))] * 2 for v in row) for row in img)
