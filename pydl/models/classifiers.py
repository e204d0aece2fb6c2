"""Image classifiers: the MLP and LeNet-5 (more join them in this package)."""
from __future__ import annotations

from .. import nn


class MLP(nn.Module):
    """``Flatten -> Linear(in, hidden) -> ReLU -> Linear(hidden, classes)``: the 784-256-10 MLP.

    ``hidden`` may be an int or a sequence of widths (one ReLU layer each).
    """

    def __init__(self, in_features: int = 784, hidden=256, num_classes: int = 10):
        super().__init__()
        widths = [hidden] if isinstance(hidden, int) else list(hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for w in widths:
            layers += [nn.Linear(prev, w), nn.ReLU()]
            prev = w
        layers.append(nn.Linear(prev, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5 (ReLU and max pooling, as it is trained today).

    conv 6@5x5 (padding 2 on 28x28 inputs, as the classic 32x32 input had) ->
    pool 2 -> conv 16@5x5 -> pool 2 -> 120 -> 84 -> classes.
    """

    def __init__(self, in_shape=(1, 28, 28), num_classes: int = 10):
        super().__init__()
        c, h, w = in_shape
        pad = 2 if min(h, w) < 32 else 0
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        fh = ((h + 2 * pad - 4) // 2 - 4) // 2
        fw = ((w + 2 * pad - 4) // 2 - 4) // 2
        if fh < 1 or fw < 1:
            raise ValueError(f"LeNet5: in_shape {tuple(in_shape)} is too small (needs H, W >= 16)")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * fh * fw, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
