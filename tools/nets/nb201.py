"""The NAS-Bench-201 cell network and its builder (also used for TransNAS-Bench-101 micro cells).

NB201's ops, the cell (node j sums op_ij(node i) over i < j) and its macro network (stem, stages
of cells joined by residual reduction blocks, pooled linear head), built from a tuple of op names.
`nb201(arch, shape, ...)` maps a space's positions (`edge1<-0` ... `edge3<-2`) to those ops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import ConfigError, SpaceError
from ..spaces import NB201_EDGES, NB201_OPS

if TYPE_CHECKING:
    from ..builders import DataShape

#: NB201 edge order as (target node, source node); matches `NB201_EDGES` ("1<-0", "2<-0", ...).
EDGES: tuple[tuple[int, int], ...] = tuple(
    (int(t), int(s)) for t, s in (e.split("<-") for e in NB201_EDGES)
)
N_NODES = 4
#: The ops this module builds (NB201's five; TransNAS micro uses the first four).
OPS = NB201_OPS


class ReLUConvBN(nn.Sequential):
    """NB201's conv op: ReLU, then a bias-free conv, then batch norm."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    """The `none` op: the edge carries nothing (kept as x*0 so shapes and devices follow x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


def make_op(name: str, channels: int) -> nn.Module:
    """One NB201 op on `channels` channels at stride 1 (cell edges never change the shape)."""
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise SpaceError(f"unknown op {name!r}: use one of {', '.join(OPS)}")


class Cell(nn.Module):
    """A 4-node NB201 cell: node 0 is the input, node j = sum_{i<j} op_ij(node i), node 3 out."""

    def __init__(self, ops: Sequence[str], channels: int) -> None:
        super().__init__()
        if len(ops) != len(EDGES):
            raise SpaceError(f"a cell needs {len(EDGES)} ops (one per edge), got {len(ops)}")
        self.edges = nn.ModuleList(make_op(op, channels) for op in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for j in range(1, N_NODES):
            nodes.append(
                sum(op(nodes[i]) for op, (t, i) in zip(self.edges, EDGES) if t == j)  # type: ignore[misc]
            )
        return nodes[-1]


class ResidualReduction(nn.Module):
    """NB201's reduction block: two ReLU-Conv-BN 3x3 (the first at stride 2) plus a pooled
    1x1 shortcut; halves the resolution and changes the channel count."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3)
        # ceil_mode: an odd side (7x7) pools to the same size as the stride-2 conv (4x4)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class CellNetwork(nn.Module):
    """NB201's macro skeleton: stem conv+BN, `stages` stages of `cells_per_stage` cells at C, 2C,
    4C channels joined by residual reductions, then BN-ReLU, global average pool and a linear
    head. (NB201 itself uses C=16 and 5 cells per stage on 32x32 images.)"""

    def __init__(
        self,
        ops: Sequence[str],
        *,
        in_channels: int,
        num_classes: int,
        channels: int = 16,
        cells_per_stage: int = 1,
        stages: int = 3,
    ) -> None:
        super().__init__()
        self.ops = tuple(ops)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        ]
        c = channels
        for s in range(stages):
            if s > 0:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers.extend(Cell(self.ops, c) for _ in range(cells_per_stage))
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def reaches_output(ops: Sequence[str]) -> bool:
    """Whether some path of non-`none` edges joins the input (node 0) to the output (node 3).

    When none does, the cell outputs zeros whatever its input, and the network can only learn
    the class prior: it trains to chance accuracy, as such cells do in NB201's own tables."""
    reached = {0}
    for (t, s), op in sorted(zip(EDGES, ops)):
        if op != "none" and s in reached:
            reached.add(t)
    return N_NODES - 1 in reached


def edge_ops(arch: Mapping[str, str]) -> tuple[str, ...]:
    """The six op names of `arch` in NB201 edge order.

    Positions are named by their edge: `edge1<-0` ... `edge3<-2` (the nb201 and tnb101 spaces'
    names; a user space may also write `1<-0` ...). Raises ConfigError naming what is missing.
    """
    ops = []
    for edge in NB201_EDGES:
        for key in (f"edge{edge}", edge):
            if key in arch:
                ops.append(str(arch[key]))
                break
        else:
            raise ConfigError(
                f"the nb201 builder needs one position per cell edge named {', '.join('edge' + e for e in NB201_EDGES)}; "
                f"{'edge' + edge!r} is missing (got {', '.join(map(str, arch)) or 'none'})"
            )
    extra = sorted(set(arch) - {f"edge{e}" for e in NB201_EDGES} - set(NB201_EDGES))
    if extra:
        raise ConfigError(f"the nb201 builder does not understand the position(s) {', '.join(extra)}")
    for op in ops:
        if op not in OPS:
            raise ConfigError(f"unknown op {op!r} for the nb201 builder: use one of {', '.join(OPS)}")
    return tuple(ops)


def nb201(
    arch: Mapping[str, str],
    shape: DataShape,
    *,
    channels: int = 16,
    cells_per_stage: int = 5,
    stages: int = 3,
) -> CellNetwork:
    """Builder: the NB201 cell network of `arch` for image inputs (C, H, W).

    The defaults are NAS-Bench-201's (C=16, 5 cells per stage, 3 stages); a quick proxy on
    small data uses e.g. channels=8, cells_per_stage=1.
    """
    if len(shape.input) != 3:
        raise ConfigError(f"the nb201 builder needs image inputs (C, H, W), got the per-sample shape {shape.input}")
    for name, value in (("channels", channels), ("cells_per_stage", cells_per_stage), ("stages", stages)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"nb201 option {name} must be a whole number >= 1, got {value!r}")
    return CellNetwork(
        edge_ops(arch), in_channels=shape.input[0], num_classes=shape.num_classes,
        channels=channels, cells_per_stage=cells_per_stage, stages=stages,
    )
