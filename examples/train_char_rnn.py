"""A character-level language model (RNN, LSTM or GRU) on a short text, then a sample from it.

    python examples/train_char_rnn.py --cell lstm --steps 300
"""
import sys

from _common import TEXT, fit_text_lm, parser, setup

from pydl import models


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], steps=300, lr=1e-2)
    p.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="lstm")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seq-len", type=int, default=48)
    args = p.parse_args(argv)
    rng = setup(args)
    vocab = models.CharVocab(TEXT)
    T = args.seq_len
    model = models.CharLM(len(vocab), 32, args.hidden, cell=args.cell)
    return fit_text_lm(model, lambda m, x, y: m.loss(x, y)[0], vocab, args.steps, args.lr, T, rng)


if __name__ == "__main__":
    main(sys.argv[1:])
