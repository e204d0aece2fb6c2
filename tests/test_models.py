"""The classic models of ``pydl.models``: each learns (its loss falls well below the
starting loss in a few seconds on small real or toy data), has the right shapes,
and moves to and from PyTorch.

Data: scikit-learn's 8x8 digits (upsampled to 16x16 for the convolutional nets),
a text embedded below, toy sequences, gymnasium's CartPole-v1. Every test runs
one thread: on a shared 2-core machine a 2-thread parallel region whose partner
has no core waits a scheduler slice at its barrier (see pydl/bench/runner.py).
"""
import numpy as np
import pytest

import pydl
from pydl import models, nn, optim
from pydl.nn import functional as F

TEXT = (
    "the quick brown fox jumps over the lazy dog. the dog sleeps in the sun and the fox runs "
    "into the woods. a small bird sings on the branch of an old tree while the wind moves the "
    "leaves. the fox comes back at night and looks at the moon; the dog wakes up and barks. "
)


@pytest.fixture(autouse=True)
def one_thread():
    before = pydl.get_num_threads()
    pydl.set_num_threads(1)
    pydl.manual_seed(0)
    yield
    pydl.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    """(images 8x8, images 16x16, labels) of 512 of scikit-learn's digits, in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.random.default_rng(0).permutation(len(d.target))[:512]
    x8 = (d.images[idx] / 16).astype(np.float32)[:, None]
    x16 = np.kron(x8, np.ones((1, 1, 2, 2), np.float32))
    return x8, x16, d.target[idx].astype(np.int64)


def _batches(n, size, steps, seed=1):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield rng.integers(0, n, size)


def _eval_loss(model, fn):
    model.eval()
    with pydl.no_grad():
        v = float(fn().item())
    model.train()
    return v


def _train(model, loss_fn, n, steps, lr, batch=64, opt=None):
    opt = opt or optim.Adam(model.parameters(), lr=lr)
    for b in _batches(n, batch, steps):
        opt.zero_grad()
        loss = loss_fn(b)
        loss.backward()
        opt.step()
    return model


# -- image classifiers ---------------------------------------------------------------------------

CLASSIFIERS = {  # name: (options keeping the test small, learning rate, steps)
    "mlp": ({}, 2e-3, 60),
    "lenet5": ({}, 3e-3, 60),
    "vgg": ({"widths": (8, 16), "hidden": 64}, 2e-3, 60),
    "alexnet": ({"widths": (16, 16, 16, 16, 16), "hidden": 128, "dropout": 0.0}, 2e-3, 80),
    "resnet": ({"widths": (8, 16), "blocks": (1, 1)}, 1e-2, 60),
    "inception": ({"width": 8}, 3e-3, 60),
}


def test_registry_lists_the_image_classifiers():
    assert set(CLASSIFIERS) <= set(models.names())
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        models.create("nope")


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier_learns_digits(name, digits):
    x8, x16, y = digits
    opts, lr, steps = CLASSIFIERS[name]
    x = x8 if name == "mlp" else x16
    model = models.create(name, x.shape[1:], 10, **opts)
    full = lambda: F.cross_entropy(model(pydl.Tensor(x)), y)  # noqa: E731
    before = _eval_loss(model, full)
    _train(model, lambda b: F.cross_entropy(model(pydl.Tensor(x[b])), y[b]), len(y), steps, lr)
    after = _eval_loss(model, full)
    assert before > 2.0 and after < 0.5 * before, (before, after)
    model.eval()
    with pydl.no_grad():
        acc = (model(pydl.Tensor(x)).numpy().argmax(1) == y).mean()
    assert acc > 0.6


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_classifier_shapes(name, in_shape):
    model = models.create(name, in_shape, 7)
    model.eval()
    with pydl.no_grad():
        out = model(pydl.randn(2, *in_shape))
    assert out.shape == (2, 7)
    assert np.isfinite(out.numpy()).all()


@pytest.mark.parametrize("name", ["lenet5", "vgg", "alexnet", "resnet", "inception"])
def test_classifier_rejects_a_too_small_image(name):
    with pytest.raises(ValueError, match="too small"):
        models.create(name, (1, 2, 2), 10)
