"""The DARTS evaluation network (Liu et al. 2019, `NetworkCIFAR`) and its builder.

A stem (3x3 conv to 3C channels, BN), `layers` cells (reduction cells at 1/3 and 2/3 of the
depth double the channels and halve the resolution), global average pool and a linear head.
Each cell preprocesses its two inputs (the previous two cells' outputs) to C channels, with a
FactorizedReduce for the older one when the previous cell was a reduction. Optional: the
auxiliary head after the cell at 2/3 depth (its logits come back as `(logits, aux)` in training
mode) and drop path on every non-identity edge, its probability in `model.drop_path_prob`
(the training loop sets it per epoch; DARTS ramps it linearly to 0.2).

Beyond DARTS's CIFAR code: odd feature-map sides are fine (FactorizedReduce pads), and the
auxiliary head works on maps smaller than 8x8 (so tiny inputs build too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..darts import DARTS_OPS, DartsSpace, Genotype
from ..errors import ConfigError, SpaceError

if TYPE_CHECKING:
    from ..builders import DataShape


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out),
        )


class DilConv(nn.Sequential):
    """ReLU, depthwise (dilated) conv, pointwise conv, BN."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )


class SepConv(nn.Sequential):
    """Two stacked separable convs (the first carries the stride), as DARTS defines sep_conv."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel, stride, padding, 1),
            DilConv(c_in, c_out, kernel, 1, padding, 1),
        )


class Zero(nn.Module):
    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride]).mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two 1x1 stride-2 convs, one shifted by a pixel, concatenated."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # DARTS shifts with x[:, :, 1:, 1:]; padding first gives the same result on even sides
        # and matching shapes on odd ones
        shifted = F.pad(x, (0, 1, 0, 1))[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_op(name: str, c: int, stride: int) -> nn.Module:
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c)
    if name == "sep_conv_3x3":
        return SepConv(c, c, 3, stride, 1)
    if name == "sep_conv_5x5":
        return SepConv(c, c, 5, stride, 2)
    if name == "dil_conv_3x3":
        return DilConv(c, c, 3, stride, 2, 2)
    if name == "dil_conv_5x5":
        return DilConv(c, c, 5, stride, 4, 2)
    raise SpaceError(f"unknown DARTS op {name!r}: use one of {', '.join(DARTS_OPS)}")


def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of an edge's output with probability `drop_prob` (rescaling the rest)."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.size(0), 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x.div(keep).mul(mask)


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, c_pp: int, c_p: int, c: int, *, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_pp, c) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = tuple(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.indices = tuple(i for _, i in edges)
        self.ops = nn.ModuleList(
            make_op(op, c, 2 if reduction and i < 2 else 1) for op, i in edges
        )
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(len(self.ops) // 2):
            total = None
            for e in (2 * k, 2 * k + 1):
                op = self.ops[e]
                h = op(states[self.indices[e]])
                if self.training and drop_prob > 0.0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)  # type: ignore[arg-type]
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary head; on maps under 5x5 it skips the 5x5 pooling (tiny inputs)."""

    def __init__(self, c: int, num_classes: int, side: int) -> None:
        super().__init__()
        pool: list[nn.Module] = [nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)] if side >= 5 else []
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # its input is the main path's state (DARTS's inplace=True changes it)
            *pool,
            nn.AdaptiveAvgPool2d(2),  # a no-op on the 8x8 CIFAR maps (pooled to 2x2 already)
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(nn.Module):
    """DARTS's CIFAR evaluation network for a genotype (stem multiplier 3)."""

    def __init__(
        self,
        genotype: Genotype,
        *,
        in_channels: int,
        num_classes: int,
        channels: int = 36,
        layers: int = 20,
        auxiliary: bool = False,
        input_side: int = 32,
    ) -> None:
        super().__init__()
        self.genotype = genotype
        self.drop_path_prob = 0.0
        self.layers = layers
        self.auxiliary_at = 2 * layers // 3
        c_curr = 3 * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        reduction_prev = False
        side, aux_c, aux_side = input_side, c_p, input_side
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
                side = -(-side // 2)
            cell = Cell(genotype, c_pp, c_p, c_curr, reduction=reduction, reduction_prev=reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.auxiliary_at:
                aux_c, aux_side = c_p, side
        self.auxiliary_head = AuxiliaryHead(aux_c, num_classes, aux_side) if auxiliary else None
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.auxiliary_at and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return (logits, aux) if aux is not None else logits


def genotype_of(arch: Mapping[str, str]) -> Genotype:
    """The genotype of `arch` (the darts space's positions -> choice names)."""
    space = DartsSpace()
    names = [p.name for p in space.positions]
    missing = [n for n in names if n not in arch]
    extra = sorted(set(arch) - set(names))
    if missing or extra:
        what = f"lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}" if missing else f"has unknown position(s) {', '.join(extra[:4])}"
        raise ConfigError(
            f"the darts builder needs the darts space's 24 positions (normal.n2.inputs ... reduce.n5.op_b); this architecture {what}"
        )
    return space.to_genotype(space.from_name_list([arch[n] for n in names]))


def darts(
    arch: Mapping[str, str],
    shape: DataShape,
    *,
    channels: int = 36,
    layers: int = 20,
    auxiliary: bool = False,
) -> DartsNetwork:
    """Builder: the DARTS evaluation network of `arch` for image inputs (C, H, W).

    Defaults are DARTS's CIFAR-10 evaluation (36 initial channels, 20 cells); a proxy uses e.g.
    channels=16, layers=8. With `auxiliary`, training-mode forward returns (logits, aux_logits)
    (DARTS weights the auxiliary loss by 0.4).
    """
    if len(shape.input) != 3:
        raise ConfigError(f"the darts builder needs image inputs (C, H, W), got the per-sample shape {shape.input}")
    for name, value in (("channels", channels), ("layers", layers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"darts option {name} must be a whole number >= 1, got {value!r}")
    return DartsNetwork(
        genotype_of(arch), in_channels=shape.input[0], num_classes=shape.num_classes,
        channels=channels, layers=layers, auxiliary=bool(auxiliary), input_side=min(shape.input[1:]),
    )
