"""Networks that map a (B, 1, Z, Y, X) volume to (B, C, Z/s, Y/s, X/s) heatmap logits, one channel per class.

``heatmapnet``: a small residual encoder-decoder built from MONAI blocks whose decoder stops at the output
stride ``s`` (the heatmap is coarser than the input, which is where the CPU time goes). ``basicunet`` and
``segresnet`` are MONAI's own networks at full resolution (``s`` = 1). The config picks one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution, ResidualUnit, UpSample
from monai.networks.nets import BasicUNet, SegResNet
from torch import nn

from byu.model.config import ModelConfig

ACT = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})
PRIOR = 0.01  # initial heatmap probability: the head's bias starts at logit(PRIOR), as in focal-loss detectors


def _norm(kind: str, channels: int) -> tuple | str:
    if kind == "group":
        return ("group", {"num_groups": max(1, min(8, channels // 4))})
    return kind


class HeatmapNet(nn.Module):
    """Residual encoder-decoder whose heatmap comes out at ``output_stride``.

    Level ``i`` works at stride ``stem_stride * 2**i``. With ``stem_stride`` > 1 the stem is a patchify
    convolution (kernel = stride), so nothing runs at the input resolution; the encoder goes down by stride-2
    convolutions and residual units; the decoder goes up by transposed convolutions with additive skips and
    stops at the level of ``output_stride``; a 1x1 convolution gives one logit channel per class.
    """

    def __init__(self, *, in_channels: int = 1, out_channels: int = 1, channels: tuple[int, ...] = (16, 32, 48),
                 res_units: int | Sequence[int] = 1, stem_stride: int = 1, output_stride: int = 2,
                 norm: str = "batch") -> None:
        super().__init__()
        units = list(res_units) if isinstance(res_units, Sequence) else [int(res_units)] * len(channels)
        self.output_stride = output_stride
        self.out_level = int(math.log2(output_stride // stem_stride))
        c = list(channels)
        if stem_stride == 1:
            stem: list[nn.Module] = [Convolution(3, in_channels, c[0], kernel_size=3, act=ACT, norm=_norm(norm, c[0]))]
        else:  # patchify in 2x2x2 steps: 1 -> c0/2 channels at stride 2 (-> c0 at stride 4)
            steps = int(math.log2(stem_stride))
            widths = [in_channels] + [max(4, c[0] // 2 ** (steps - 1 - i)) for i in range(steps)]
            stem = [Convolution(3, widths[i], widths[i + 1], strides=2, kernel_size=2, padding=0, act=ACT,
                                norm=_norm(norm, widths[i + 1])) for i in range(steps)]
        if stem_stride > 1:  # level 0 is already coarse: it can afford residual units
            stem += [ResidualUnit(3, c[0], c[0], subunits=2, act=ACT, norm=_norm(norm, c[0]))
                     for _ in range(units[0])]
        self.stem = nn.Sequential(*stem)
        self.down = nn.ModuleList()
        for i in range(1, len(c)):
            layers: list[nn.Module] = [Convolution(3, c[i - 1], c[i], strides=2, kernel_size=3, act=ACT,
                                                   norm=_norm(norm, c[i]))]
            layers += [ResidualUnit(3, c[i], c[i], subunits=2, act=ACT, norm=_norm(norm, c[i]))
                       for _ in range(units[i])]
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        self.fuse = nn.ModuleList()
        for i in range(len(c) - 1, self.out_level, -1):
            self.up.append(UpSample(3, c[i], c[i - 1], scale_factor=2, mode="deconv"))
            self.fuse.append(Convolution(3, c[i - 1], c[i - 1], kernel_size=3, act=ACT, norm=_norm(norm, c[i - 1])))
        self.head = nn.Conv3d(c[self.out_level], out_channels, kernel_size=1)
        if self.head.bias is not None:
            nn.init.constant_(self.head.bias, math.log(PRIOR / (1 - PRIOR)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.stem(x)]
        for block in self.down:
            feats.append(block(feats[-1]))
        y = feats[-1]
        for k, (up, fuse) in enumerate(zip(self.up, self.fuse, strict=True)):
            level = len(feats) - 2 - k
            y = fuse(up(y) + feats[level])
        return self.head(y)


class _WithPrior(nn.Module):
    """Wrap a MONAI network so its output logits start near ``PRIOR`` like HeatmapNet's."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.bias = nn.Parameter(torch.tensor(math.log(PRIOR / (1 - PRIOR))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.bias


def build_network(config: ModelConfig) -> nn.Module:
    """The network a config describes (weights freshly initialised from torch's global RNG)."""
    n = len(config.classes)
    if config.arch == "heatmapnet":
        return HeatmapNet(out_channels=n, channels=config.channels, res_units=config.res_units,
                          stem_stride=config.stem_stride, output_stride=config.output_stride, norm=config.norm)
    if config.arch == "basicunet":
        return _WithPrior(BasicUNet(spatial_dims=3, in_channels=1, out_channels=n, features=config.features,
                                    act=ACT, norm=config.norm))
    return _WithPrior(SegResNet(spatial_dims=3, in_channels=1, out_channels=n, init_filters=config.init_filters,
                                norm=config.norm if config.norm != "group" else ("group", {"num_groups": 8})))


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
