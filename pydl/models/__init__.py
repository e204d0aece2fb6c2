"""The classic models, built from ``pydl.nn`` layers only.

Every model is a plain :class:`pydl.nn.Module` with PyTorch's parameter names,
so its ``state_dict`` loads into the same architecture written in PyTorch.

- image classifiers (``classifiers``, ``resnet``): :class:`MLP`, :class:`LeNet5`,
  :class:`VGG`, :class:`AlexNet`, :class:`InceptionNet`, :class:`ResNet`;
- sequences (``sequence``, ``transformer``): :class:`CharLM` (RNN, LSTM or GRU),
  :class:`Seq2Seq` (GRU encoder-decoder with attention), :class:`TransformerClassifier`,
  :class:`GPT`;
- generative (``generative``): :class:`Autoencoder`, :class:`DenoisingAutoencoder`,
  :class:`SparseAutoencoder`, :class:`VAE`, :class:`GAN`;
- reinforcement learning (``rl``): :class:`DQN` with :func:`train_dqn`.

The image classifiers are registered by name for ``pydl train --model NAME``::

    model = pydl.models.create("lenet5", in_shape=(1, 28, 28), num_classes=10)

``create(name, in_shape, num_classes, **options)`` builds a registered
classifier for inputs of ``in_shape`` (C, H, W); ``names()`` lists them.
"""
from __future__ import annotations

from typing import Callable

from .classifiers import MLP, VGG, AlexNet, InceptionBlock, InceptionNet, LeNet5
from .generative import GAN, VAE, Autoencoder, DenoisingAutoencoder, Discriminator, Generator, SparseAutoencoder
from .resnet import BasicBlock, ResNet
from .rl import DQN, QNetwork, ReplayBuffer, evaluate, train_dqn
from .sequence import CharLM, CharVocab, Seq2Seq, shifted, toy_sequences
from .transformer import GPT, TransformerClassifier

# name -> constructor(in_shape, num_classes, **options)
_CLASSIFIERS: dict[str, Callable] = {}


def register(name: str):
    """Register a classifier constructor ``f(in_shape, num_classes, **options)``."""
    def deco(f):
        if name in _CLASSIFIERS:
            raise ValueError(f"model {name!r} is already registered")
        _CLASSIFIERS[name] = f
        return f
    return deco


def names() -> list[str]:
    """The registered image classifiers, for ``pydl train --model``."""
    return sorted(_CLASSIFIERS)


def create(name: str, in_shape=(1, 28, 28), num_classes: int = 10, **options):
    """Build the registered classifier ``name`` for inputs of ``in_shape`` (C, H, W)."""
    if not isinstance(name, str) or name not in _CLASSIFIERS:
        raise ValueError(f"model: unknown name {name!r}; expected one of {names()}")
    in_shape = tuple(int(d) for d in in_shape)
    if len(in_shape) != 3 or min(in_shape) < 1:
        raise ValueError(f"model: in_shape must be (C, H, W) with positive sizes, got {in_shape}")
    if int(num_classes) < 2:
        raise ValueError(f"model: num_classes must be >= 2, got {num_classes}")
    return _CLASSIFIERS[name](in_shape, int(num_classes), **options)


register("mlp")(lambda in_shape, num_classes, hidden=256, **kw:
                MLP(in_shape[0] * in_shape[1] * in_shape[2], hidden, num_classes, **kw))
register("lenet5")(lambda in_shape, num_classes, **kw: LeNet5(in_shape, num_classes, **kw))
register("vgg")(lambda in_shape, num_classes, **kw: VGG(in_shape, num_classes, **kw))
register("alexnet")(lambda in_shape, num_classes, **kw: AlexNet(in_shape, num_classes, **kw))
register("resnet")(lambda in_shape, num_classes, **kw: ResNet(in_shape, num_classes, **kw))
register("inception")(lambda in_shape, num_classes, **kw: InceptionNet(in_shape, num_classes, **kw))

__all__ = ["MLP", "LeNet5", "VGG", "AlexNet", "InceptionBlock", "InceptionNet", "BasicBlock", "ResNet",
           "CharVocab", "CharLM", "Seq2Seq", "shifted", "toy_sequences", "TransformerClassifier", "GPT",
           "Autoencoder", "DenoisingAutoencoder", "SparseAutoencoder", "VAE", "Generator", "Discriminator", "GAN",
           "QNetwork", "ReplayBuffer", "DQN", "train_dqn", "evaluate",
           "create", "names", "register"]
