"""A tiny GPT-style causal Transformer decoder on a short text, then a sample from it.

    python examples/train_gpt.py --steps 300
"""
import sys
import time

import numpy as np
from _common import TEXT, parser, setup

from pydl import models, optim


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], steps=300, lr=3e-3)
    p.add_argument("--width", type=int, default=64, help="d_model (default 64)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--context", type=int, default=48)
    args = p.parse_args(argv)
    rng = setup(args)
    vocab = models.CharVocab(TEXT)
    ids = vocab.encode(TEXT)
    T = args.context
    model = models.GPT(len(vocab), d_model=args.width, nhead=4, num_layers=args.layers, max_len=T)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for step in range(args.steps):
        start = rng.integers(0, len(ids) - T - 1, 32)
        x = np.stack([ids[s:s + T] for s in start])
        y = np.stack([ids[s + 1:s + T + 1] for s in start])
        opt.zero_grad()
        loss = model.loss(x, y)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  (uniform guess {np.log(len(vocab)):.3f})")
    print(f"{args.steps} steps in {time.perf_counter() - t0:.1f} s; a sample at temperature 0.5:")
    print("  the " + vocab.decode(model.generate(vocab.encode("the "), 160, 0.5, rng)))
    return float(loss.item())


if __name__ == "__main__":
    main(sys.argv[1:])
