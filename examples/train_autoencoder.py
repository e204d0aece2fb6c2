"""An autoencoder (plain, denoising or sparse) on scikit-learn's 8x8 digits.

    python examples/train_autoencoder.py --kind denoising --epochs 30
"""
import sys
import time

from _common import ascii_image, image_data, parser, setup

import pydl
from pydl import models, optim
from pydl.nn import functional as F

KINDS = {"plain": models.Autoencoder, "denoising": models.DenoisingAutoencoder, "sparse": models.SparseAutoencoder}


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], epochs=30, lr=3e-3)
    p.add_argument("--kind", choices=sorted(KINDS), default="plain")
    args = p.parse_args(argv)
    rng = setup(args)
    xtr, _, xte, _ = image_data("digits", seed=args.seed)
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    model = KINDS[args.kind](64)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(xtr))
        for i in range(0, len(order), 64):
            opt.zero_grad()
            loss = model.loss(xtr[order[i:i + 64]])
            loss.backward()
            opt.step()
        if epoch % 10 == 0 or epoch == args.epochs - 1:
            model.eval()
            with pydl.no_grad():
                mse = F.mse_loss(model(xte), xte).item()
            model.train()
            print(f"epoch {epoch + 1:3d}  training loss {loss.item():.4f}  test reconstruction MSE {mse:.4f}")
    model.eval()
    with pydl.no_grad():
        rec = model(xte[:1]).numpy()
        codes = model.encode(xte).numpy()
    print(f"{args.epochs} epochs in {time.perf_counter() - t0:.1f} s; test MSE {mse:.4f} (predicting the mean image: "
          f"{((xte - xtr.mean(0)) ** 2).mean():.4f}); mean code activation {codes.mean():.3f}")
    print("a test digit and its reconstruction:")
    for a, b in zip(ascii_image(xte[0]).splitlines(), ascii_image(rec[0]).splitlines()):
        print(f"  {a}    {b}")
    return float(mse)


if __name__ == "__main__":
    main(sys.argv[1:])
