"""A variational autoencoder on scikit-learn's 8x8 digits; prints the ELBO terms and decoded samples.

    python examples/train_vae.py --epochs 40
"""
import sys
import time

from _common import ascii_image, image_data, parser, setup

from pydl import models, optim


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], epochs=40, lr=3e-3)
    p.add_argument("--latent", type=int, default=8)
    args = p.parse_args(argv)
    rng = setup(args)
    xtr, _, xte, _ = image_data("digits", seed=args.seed)
    xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    model = models.VAE(64, 128, args.latent)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = rng.permutation(len(xtr))
        for i in range(0, len(order), 64):
            opt.zero_grad()
            loss, rec, kl = model.loss(xtr[order[i:i + 64]])
            loss.backward()
            opt.step()
        if epoch % 10 == 0 or epoch == args.epochs - 1:
            model.eval()
            test, trec, tkl = (v.item() for v in model.loss(xte))
            model.train()
            print(f"epoch {epoch + 1:3d}  test -ELBO {test:.2f} = reconstruction {trec:.2f} + KL {tkl:.2f}")
    print(f"{args.epochs} epochs in {time.perf_counter() - t0:.1f} s; three digits decoded from z ~ N(0, I):")
    samples = [ascii_image(s).splitlines() for s in model.sample(3)]
    for rows in zip(*samples):
        print("  " + "    ".join(rows))
    return float(test)


if __name__ == "__main__":
    main(sys.argv[1:])
