"""A character-level language model (RNN, LSTM or GRU) on a short text, then a sample from it.

    python examples/train_char_rnn.py --cell lstm --steps 300
"""
import sys
import time

import numpy as np
from _common import TEXT, parser, setup

from pydl import models, optim


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], steps=300, lr=1e-2)
    p.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="lstm")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=48)
    args = p.parse_args(argv)
    rng = setup(args)
    vocab = models.CharVocab(TEXT)
    ids = vocab.encode(TEXT)
    model = models.CharLM(len(vocab), 32, args.hidden, cell=args.cell)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    T = args.seq_len
    t0 = time.perf_counter()
    for step in range(args.steps):
        start = rng.integers(0, len(ids) - T - 1, 32)
        x = np.stack([ids[s:s + T] for s in start])
        y = np.stack([ids[s + 1:s + T + 1] for s in start])
        opt.zero_grad()
        loss, _ = model.loss(x, y)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  (uniform guess {np.log(len(vocab)):.3f})")
    print(f"{args.steps} steps in {time.perf_counter() - t0:.1f} s; a sample at temperature 0.5:")
    print("  the " + vocab.decode(model.generate(vocab.encode("the "), 160, 0.5, rng)))
    return float(loss.item())


if __name__ == "__main__":
    main(sys.argv[1:])
