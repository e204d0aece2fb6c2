"""Image classifiers: the MLP, LeNet-5, small VGG- and AlexNet-style nets and an Inception net.

Every classifier takes ``(N, C, H, W)`` float32 images and returns ``(N, classes)``
logits; the convolutional ones take ``in_shape`` (C, H, W) so the first fully
connected layer's width follows the image size (1x28x28 digits, 3x32x32 colour).
Parameter names are the attribute paths below, the same as the PyTorch module
written with the same attributes.
"""
from __future__ import annotations

from .. import nn
from ..autograd import cat


def _check_widths(name, widths, n=None):
    widths = [int(w) for w in ((widths,) if isinstance(widths, int) else widths)]
    if not widths or min(widths) < 1 or (n is not None and len(widths) != n):
        want = f"{n} positive ints" if n else "positive ints"
        raise ValueError(f"{name}: widths must be {want}, got {widths}")
    return widths


def _pooled(size: int, times: int, what: str, in_shape) -> int:
    """``size`` after ``times`` 2x2 max-poolings (floor), checked to stay >= 1."""
    for _ in range(times):
        size //= 2
    if size < 1:
        raise ValueError(f"{what}: in_shape {tuple(in_shape)} is too small for {times} 2x2 poolings "
                         f"(needs H, W >= {2 ** times})")
    return size


class MLP(nn.Module):
    """``Flatten -> Linear(in, hidden) -> ReLU -> Linear(hidden, classes)``: the 784-256-10 MLP.

    ``hidden`` may be an int or a sequence of widths (one ReLU layer each).
    """

    def __init__(self, in_features: int = 784, hidden=256, num_classes: int = 10):
        super().__init__()
        widths = _check_widths("MLP", hidden)
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


class VGG(nn.Module):
    """A small VGG: stages of two 3x3 convolutions (padding 1) + ReLU, each stage ending in
    a 2x2 max-pool, then ``Linear -> ReLU -> Dropout -> Linear``.

    ``widths`` are the stages' channel counts (default 32, 64: 28x28 -> 7x7 features);
    ``hidden`` the fully connected width; ``dropout`` its drop probability.
    """

    def __init__(self, in_shape=(1, 28, 28), num_classes: int = 10, widths=(32, 64), hidden: int = 256,
                 dropout: float = 0.5):
        super().__init__()
        c, h, w = in_shape
        widths = _check_widths("VGG", widths)
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(c, width, 3, padding=1), nn.ReLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            c = width
        self.features = nn.Sequential(*layers)
        fh = _pooled(h, len(widths), "VGG", in_shape)
        fw = _pooled(w, len(widths), "VGG", in_shape)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c * fh * fw, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class AlexNet(nn.Module):
    """A small AlexNet: conv 5x5 -> ReLU -> LocalResponseNorm -> pool, twice; three 3x3
    convolutions -> pool; then ``Dropout -> Linear -> ReLU -> Dropout -> Linear -> ReLU -> Linear``.

    ``widths`` = the five convolutions' channels (default 32, 64, 96, 96, 64), ``hidden``
    the two fully connected layers' width. LRN as the original: size 5, alpha 1e-4,
    beta 0.75, k 2.
    """

    def __init__(self, in_shape=(1, 28, 28), num_classes: int = 10, widths=(32, 64, 96, 96, 64),
                 hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        c, h, w = in_shape
        c1, c2, c3, c4, c5 = _check_widths("AlexNet", widths, 5)
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 5, padding=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5, padding=2), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c3, c4, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c4, c5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        fh = _pooled(h, 3, "AlexNet", in_shape)
        fw = _pooled(w, 3, "AlexNet", in_shape)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c5 * fh * fw, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _conv_bn_relu(c_in, c_out, k):
    """GoogLeNet's convolution unit as trained today: conv (no bias) -> BatchNorm2d -> ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class InceptionBlock(nn.Module):
    """GoogLeNet's block: four branches concatenated on the channels.

    ``branch1`` 1x1; ``branch2`` 1x1 reduction -> 3x3; ``branch3`` 1x1 reduction ->
    5x5; ``branch4`` 3x3 max-pool (stride 1) -> 1x1 projection. Every convolution is
    followed by BatchNorm and a ReLU; the spatial size is kept. Output channels
    ``c1 + c3 + c5 + pool_proj``.
    """

    def __init__(self, in_channels: int, c1: int, c3_reduce: int, c3: int, c5_reduce: int, c5: int,
                 pool_proj: int):
        super().__init__()
        self.branch1 = _conv_bn_relu(in_channels, c1, 1)
        self.branch2 = nn.Sequential(_conv_bn_relu(in_channels, c3_reduce, 1), _conv_bn_relu(c3_reduce, c3, 3))
        self.branch3 = nn.Sequential(_conv_bn_relu(in_channels, c5_reduce, 1), _conv_bn_relu(c5_reduce, c5, 5))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), _conv_bn_relu(in_channels, pool_proj, 1))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x):
        return cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionNet(nn.Module):
    """A small GoogLeNet: stem (3x3 conv -> BatchNorm -> ReLU -> 2x2 pool), two Inception blocks, a 2x2
    pool, a third block, global average pooling, dropout and a Linear classifier.

    ``width`` scales every block's channels (default 16: blocks of 64, 96 and 128 channels).
    """

    def __init__(self, in_shape=(1, 28, 28), num_classes: int = 10, width: int = 16, dropout: float = 0.2):
        super().__init__()
        c, h, w = in_shape
        (width,) = _check_widths("InceptionNet", width, 1)
        _pooled(min(h, w), 2, "InceptionNet", in_shape)
        s = width
        self.stem = nn.Sequential(_conv_bn_relu(c, 2 * s, 3), nn.MaxPool2d(2))
        self.inception1 = InceptionBlock(2 * s, s, s, 2 * s, s // 2 or 1, s // 2 or 1, s // 2 or 1)
        c1 = self.inception1.out_channels
        self.inception2 = InceptionBlock(c1, 2 * s, s, 2 * s, s // 2 or 1, s, s)
        c2 = self.inception2.out_channels
        self.pool = nn.MaxPool2d(2)
        self.inception3 = InceptionBlock(c2, 2 * s, 2 * s, 3 * s, s // 2 or 1, 2 * s, s)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.inception3.out_channels, num_classes)

    def forward(self, x):
        x = self.inception2(self.inception1(self.stem(x)))
        x = self.inception3(self.pool(x))
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))
