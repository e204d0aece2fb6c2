"""Generative models on flat images (e.g. 8x8 or 28x28 digits scaled to [0, 1]):
autoencoders (plain, denoising, sparse), a VAE and a GAN.

Inputs are ``(N, D)`` float32 (a ``(N, C, H, W)`` batch is flattened). Each model
has ``loss(x)``, the objective its example and test minimise.
"""
from __future__ import annotations

import numpy as np

from .. import nn
from ..autograd import Tensor, no_grad, randn
from ..nn import functional as F

__all__ = ["Autoencoder", "DenoisingAutoencoder", "SparseAutoencoder", "VAE", "Generator", "Discriminator", "GAN"]


def _flat(name, x):
    if not isinstance(x, Tensor):
        a = np.asarray(x)
        if a.dtype.kind != "f":
            raise TypeError(f"{name}: expected float images, got dtype {a.dtype}")
        x = Tensor(a.astype(np.float32, copy=False))
    if x.ndim < 2:
        raise ValueError(f"{name}: expected a batch (N, D) or (N, C, H, W), got shape {x.shape}")
    return x if x.ndim == 2 else x.flatten(1)


def _mlp(sizes, last=None):
    """Linear layers of ``sizes`` with ReLU between them (and ``last`` after the last one)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    if last is not None:
        layers.append(last)
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """``encoder`` (D -> hidden -> code, ReLU between) and ``decoder`` (code -> hidden -> D,
    sigmoid output): reconstructs inputs in [0, 1]. ``loss(x)`` = mean squared error."""

    def __init__(self, in_features: int = 64, hidden: int = 128, code: int = 16, code_activation=None):
        super().__init__()
        self.in_features = int(in_features)
        self.encoder = _mlp([in_features, hidden, code], code_activation)
        self.decoder = _mlp([code, hidden, in_features], nn.Sigmoid())

    def encode(self, x):
        return self.encoder(_flat(type(self).__name__, x))

    def forward(self, x):
        return self.decoder(self.encode(x))

    def corrupt(self, x):
        """The input the encoder sees in training (plain autoencoder: x itself)."""
        return x

    def loss(self, x):
        x = _flat(type(self).__name__, x)
        return F.mse_loss(self(self.corrupt(x) if self.training else x), x)


class DenoisingAutoencoder(Autoencoder):
    """An autoencoder trained to reconstruct ``x`` from ``x + noise_std * N(0, 1)``
    (the noise in training mode only; drawn from pydl's generator)."""

    def __init__(self, in_features: int = 64, hidden: int = 128, code: int = 16, noise_std: float = 0.3):
        super().__init__(in_features, hidden, code)
        if not noise_std >= 0:
            raise ValueError(f"DenoisingAutoencoder: noise_std must be >= 0, got {noise_std}")
        self.noise_std = float(noise_std)

    def corrupt(self, x):
        return x + randn(*x.shape) * self.noise_std


class SparseAutoencoder(Autoencoder):
    """An autoencoder with sigmoid codes whose mean activation per unit is pulled towards
    ``rho`` by ``beta * sum_j KL(rho || mean_j)`` added to the reconstruction error."""

    def __init__(self, in_features: int = 64, hidden: int = 128, code: int = 32, rho: float = 0.05,
                 beta: float = 0.1):
        super().__init__(in_features, hidden, code, code_activation=nn.Sigmoid())
        if not 0 < rho < 1:
            raise ValueError(f"SparseAutoencoder: rho must lie in (0, 1), got {rho}")
        self.rho, self.beta = float(rho), float(beta)

    def sparsity(self, codes):
        """``sum_j KL(rho || mean activation of unit j)`` over the batch."""
        m = codes.mean(dim=0).clamp(1e-6, 1 - 1e-6)
        r = self.rho
        return (r * (r / m).log() + (1 - r) * ((1 - r) / (1 - m)).log()).sum()

    def loss(self, x):
        x = _flat("SparseAutoencoder", x)
        codes = self.encoder(x)
        return F.mse_loss(self.decoder(codes), x) + self.beta * self.sparsity(codes)


class VAE(nn.Module):
    """A variational autoencoder (Kingma & Welling) with a Gaussian latent and Bernoulli pixels.

    ``encoder`` -> ``mu``, ``logvar``; ``z = mu + exp(logvar / 2) * eps`` (the
    reparameterization: eps ~ N(0, 1) from pydl's generator, so the gradient flows
    through mu and logvar); ``decoder(z)`` -> pixel logits. ``loss(x)`` returns the
    negative ELBO per sample: binary cross-entropy (summed over pixels) + KL(q(z|x) || N(0, I)).
    """

    def __init__(self, in_features: int = 64, hidden: int = 128, latent: int = 8):
        super().__init__()
        self.latent = int(latent)
        self.encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU())
        self.mu = nn.Linear(hidden, latent)
        self.logvar = nn.Linear(hidden, latent)
        self.decoder = _mlp([latent, hidden, in_features])

    def forward(self, x):
        """(pixel logits, mu, logvar); z is sampled in training, z = mu in eval."""
        h = self.encoder(_flat("VAE", x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + (logvar * 0.5).exp() * randn(*mu.shape) if self.training else mu
        return self.decoder(z), mu, logvar

    def loss(self, x):
        """(negative ELBO, reconstruction term, KL term), each averaged over the batch."""
        x = _flat("VAE", x)
        logits, mu, logvar = self(x)
        n = x.shape[0]
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
        kl = (mu * mu + logvar.exp() - logvar - 1).sum() * (0.5 / n)
        return rec + kl, rec, kl

    def sample(self, n: int) -> np.ndarray:
        """``n`` images decoded from z ~ N(0, I), as probabilities (n, D)."""
        with no_grad():
            return F.sigmoid(self.decoder(randn(int(n), self.latent))).numpy()


class Generator(nn.Module):
    """``net``: z (N, latent) -> hidden -> hidden -> D images in [-1, 1] (LeakyReLU, tanh)."""

    def __init__(self, latent: int = 16, hidden: int = 128, out_features: int = 64):
        super().__init__()
        self.latent = int(latent)
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, out_features), nn.Tanh())

    def forward(self, z):
        return self.net(z)


class Discriminator(nn.Module):
    """``net``: D images -> hidden -> hidden -> one logit (real vs generated; LeakyReLU, dropout)."""

    def __init__(self, in_features: int = 64, hidden: int = 128, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, x):
        return self.net(_flat("Discriminator", x))


class GAN(nn.Module):
    """A generator and a discriminator trained against each other (the non-saturating loss).

    Real images are expected in [-1, 1]. ``d_loss(real)`` is the discriminator's binary
    cross-entropy on a real batch and as many generated (detached) images;
    ``g_loss(n)`` the generator's, asking the discriminator to call its images real.
    """

    def __init__(self, in_features: int = 64, latent: int = 16, hidden: int = 128):
        super().__init__()
        self.generator = Generator(latent, hidden, in_features)
        self.discriminator = Discriminator(in_features, hidden)

    def sample(self, n: int):
        return self.generator(randn(int(n), self.generator.latent))

    def d_loss(self, real):
        real = _flat("GAN", real)
        n = real.shape[0]
        with no_grad():
            fake = self.sample(n)
        ones = np.ones((n, 1), np.float32)
        zeros = np.zeros((n, 1), np.float32)
        return (F.binary_cross_entropy_with_logits(self.discriminator(real), ones)
                + F.binary_cross_entropy_with_logits(self.discriminator(fake), zeros))

    def g_loss(self, n: int):
        return F.binary_cross_entropy_with_logits(self.discriminator(self.sample(n)), np.ones((int(n), 1), np.float32))
