"""A small AlexNet-style net (ReLU, local response norm, dropout) on scikit-learn's 8x8 digits, upsampled to 16x16.

    python examples/train_alexnet.py --epochs 6
    python examples/train_alexnet.py --data mnist5k --limit 2000 --epochs 2    # real 28x28 MNIST (slower)
"""
import sys

from _common import fit_classifier, image_data, parser, setup

from pydl import models


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], epochs=6, lr=2e-3)
    p.add_argument("--data", default="digits", help="digits (default, upsampled to 16x16), mnist5k or fashion-mnist")
    p.add_argument("--limit", type=int, help="use only this many training images")
    args = p.parse_args(argv)
    rng = setup(args)
    data = image_data(args.data, upsample=2 if args.data == "digits" else 1, limit=args.limit, seed=args.seed)
    model = models.create("alexnet", data[0].shape[1:], 10)
    return fit_classifier(model, data, args.epochs, args.lr, rng)


if __name__ == "__main__":
    main(sys.argv[1:])
