"""A GAN on scikit-learn's 8x8 digits; prints how close the generated images' statistics come to the real ones.

    python examples/train_gan.py --steps 1500
"""
import sys
import time

import numpy as np
from _common import ascii_image, image_data, parser, setup

import pydl
from pydl import models, optim


def main(argv=None) -> float:
    p = parser(__doc__.splitlines()[0], steps=1500, lr=1e-3)
    args = p.parse_args(argv)
    rng = setup(args)
    xtr, _, _, _ = image_data("digits", seed=args.seed)
    real = xtr.reshape(len(xtr), -1) * 2 - 1  # the generator's tanh range
    gan = models.GAN(64, latent=16, hidden=128)
    opt_d = optim.Adam(gan.discriminator.parameters(), args.lr, betas=(0.5, 0.999))
    opt_g = optim.Adam(gan.generator.parameters(), args.lr, betas=(0.5, 0.999))

    def gap():
        with pydl.no_grad():
            fake = gan.sample(1000).numpy()
        return np.abs(fake.mean(0) - real.mean(0)).mean(), np.abs(fake.std(0) - real.std(0)).mean()

    t0 = time.perf_counter()
    for step in range(args.steps):
        b = rng.integers(0, len(real), 64)
        opt_d.zero_grad()
        d_loss = gan.d_loss(real[b])
        d_loss.backward()
        opt_d.step()
        opt_g.zero_grad()
        g_loss = gan.g_loss(64)
        g_loss.backward()
        opt_g.step()
        if step % 250 == 0 or step == args.steps - 1:
            m, s = gap()
            print(f"step {step:5d}  D loss {d_loss.item():.3f}  G loss {g_loss.item():.3f}  "
                  f"|mean image gap| {m:.3f}  |std gap| {s:.3f}")
    print(f"{args.steps} steps in {time.perf_counter() - t0:.1f} s; four generated digits:")
    gan.eval()
    with pydl.no_grad():
        imgs = (gan.sample(4).numpy() + 1) / 2
    for rows in zip(*(ascii_image(i).splitlines() for i in imgs)):
        print("  " + "    ".join(rows))
    return float(m)


if __name__ == "__main__":
    main(sys.argv[1:])
