"""A GRU encoder-decoder with attention learns to reverse (or sort) sequences of digits.

    python examples/train_seq2seq.py --task reverse --steps 400
"""
import sys
import time

import numpy as np
from _common import parser, setup

from pydl import models, nn, optim
from pydl.nn import functional as F


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], steps=400, lr=5e-3)
    p.add_argument("--task", choices=("reverse", "sort"), default="reverse")
    p.add_argument("--length", type=int, default=8)
    args = p.parse_args(argv)
    rng = setup(args)
    V, L = 11, args.length  # id 0 starts the decoder; digits 0-9 are ids 1-10
    model = models.Seq2Seq(V, 32, 128)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for step in range(args.steps):
        src, tgt = models.toy_sequences(args.task, 64, L, V, rng)
        opt.zero_grad()
        logits = model(src, models.shifted(tgt, 0))
        loss = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}")
    src, tgt = models.toy_sequences(args.task, 500, L, V, np.random.default_rng(12345))
    pred, attn = model.greedy(src, L)
    seq_acc = (pred == tgt).all(1).mean()
    print(f"{args.steps} steps in {time.perf_counter() - t0:.1f} s; held-out: {(pred == tgt).mean():.1%} of tokens "
          f"and {seq_acc:.1%} of whole sequences right")
    digits = lambda a: " ".join(str(int(v) - 1) for v in a)  # noqa: E731
    print(f"  input  {digits(src[0])}\n  output {digits(pred[0])}")
    print("  attention of each output position (rows) over the input (columns):")
    for row in attn[0]:
        print("   " + " ".join(" .:-=+*#%@"[min(9, int(w * 10))] for w in row))
    return float(seq_acc)


if __name__ == "__main__":
    main(sys.argv[1:])
