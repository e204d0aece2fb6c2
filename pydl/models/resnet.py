"""A small ResNet (He et al. 2016, the CIFAR variant): basic blocks, batch norm, skip connections.

Names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``), so the state_dict of the same architecture
written in PyTorch has the same keys. With ``blocks=(3, 3, 3)`` it is ResNet-20.
"""
from __future__ import annotations

from .. import nn
from ..nn import functional as F


def _conv3x3(c_in, c_out, stride=1):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; the shortcut is the identity,
    or a strided 1x1 convolution + BatchNorm (``downsample``) when the shape changes."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(channels))
        else:
            self.downsample = None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(out + skip)


class ResNet(nn.Module):
    """``conv1 3x3 -> bn1 -> relu -> layer1..layerK -> global average pool -> fc``.

    Stage ``i`` has ``blocks[i]`` basic blocks of ``widths[i]`` channels; every stage
    after the first halves the spatial size (stride 2 in its first block).
    Default: widths (16, 32, 64), blocks (2, 2, 2) (ResNet-14).
    """

    def __init__(self, in_shape=(3, 32, 32), num_classes: int = 10, widths=(16, 32, 64), blocks=(2, 2, 2)):
        super().__init__()
        c, h, w = (int(d) for d in in_shape)
        widths, blocks = [int(x) for x in widths], [int(x) for x in blocks]
        if not widths or len(widths) != len(blocks) or min(widths) < 1 or min(blocks) < 1:
            raise ValueError(f"ResNet: widths and blocks must be equally long sequences of positive ints, "
                             f"got widths={widths}, blocks={blocks}")
        if min(h, w) < 2 ** (len(widths) - 1):
            raise ValueError(f"ResNet: in_shape {(c, h, w)} is too small for {len(widths)} stages "
                             f"(needs H, W >= {2 ** (len(widths) - 1)})")
        self.conv1 = _conv3x3(c, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        prev = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            stage = []
            for j in range(n):
                stage.append(BasicBlock(prev, width, 2 if (i > 0 and j == 0) else 1))
                prev = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)
        for m in self.modules():  # torchvision's init: He-normal convolutions, unit BatchNorm
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.avgpool(x).flatten(1))
