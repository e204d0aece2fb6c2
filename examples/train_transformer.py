"""A small Transformer encoder classifier: does id 1 occur more often than id 2 in a sequence?

    python examples/train_transformer.py --steps 200
"""
import sys
import time

import numpy as np
from _common import parser, setup

import pydl
from pydl import models, optim
from pydl.nn import functional as F


def batch(n, T, rng):
    x = rng.integers(1, 10, (n, T))
    return x, ((x == 1).sum(1) > (x == 2).sum(1)).astype(np.int64)


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], steps=200, lr=3e-3)
    p.add_argument("--length", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    args = p.parse_args(argv)
    rng = setup(args)
    model = models.TransformerClassifier(10, 2, d_model=args.width, nhead=4, num_layers=2, max_len=args.length)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for step in range(args.steps):
        x, y = batch(64, args.length, rng)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    x, y = batch(1000, args.length, np.random.default_rng(12345))
    model.eval()
    with pydl.no_grad():
        acc = (model(x).numpy().argmax(1) == y).mean()
    print(f"{args.steps} steps in {time.perf_counter() - t0:.1f} s; held-out accuracy {acc:.1%} "
          f"(always guessing the larger class: {max(y.mean(), 1 - y.mean()):.1%})")
    return float(acc)


if __name__ == "__main__":
    main(sys.argv[1:])
