"""A tiny GPT-style causal Transformer decoder on a short text, then a sample from it.

    python examples/train_gpt.py --steps 300
"""
import sys

from _common import TEXT, fit_text_lm, parser, setup

from pydl import models


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], steps=300, lr=3e-3)
    p.add_argument("--width", type=int, default=64, help="d_model (default 64)")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--context", type=int, default=48)
    args = p.parse_args(argv)
    rng = setup(args)
    vocab = models.CharVocab(TEXT)
    T = args.context
    model = models.GPT(len(vocab), d_model=args.width, nhead=4, num_layers=args.layers, max_len=T)
    return fit_text_lm(model, lambda m, x, y: m.loss(x, y), vocab, args.steps, args.lr, T, rng)


if __name__ == "__main__":
    main(sys.argv[1:])
