"""Plain configurable networks for user spaces: a CNN for images, an MLP for flat features.

A user space whose positions are the family's settings (a YAML with `depth: [2, 4, 6]`,
`activation: [relu, gelu]` ...) is trained with `cnn` or `mlp` without writing any code.

Understood position names (case-insensitive; the aliases in brackets mean the same):

==============  =========================================  ==================================
name            choices                                    meaning
==============  =========================================  ==================================
depth           whole numbers (cnn >= 1, mlp >= 0)         conv blocks / hidden layers
  [layers, num_layers, n_layers]
width           whole numbers >= 1                         channels / hidden units per layer
  [channels, hidden, units, hidden_size]
kernel          odd whole numbers, "3" or "3x3" (cnn only) conv kernel size
  [kernel_size]
activation      relu, gelu, silu (swish), tanh, elu,       nonlinearity after each layer
  [act]         leaky_relu, selu, mish, hardswish, sigmoid
dropout         numbers in [0, 1)                          dropout before the classifier
                                                           (mlp: after every hidden layer)
norm            batch (bn), none; mlp also layer (ln)      normalisation after each layer
  [normalization]
layer<i>_width, layer<i>_kernel, layer<i>_activation       the same for layer i only (1-based;
  (also layer<i>.width, layer<i>width)                     layers past `depth` are not built)
==============  =========================================  ==================================

A setting no position names takes the builder's option of the same name (e.g. width=64), else
the default shown in `cnn`/`mlp`; without a `depth` position or option, the depth is the highest
layer<i> a position names (3 for the cnn, 2 for the mlp when there is none). Any other position name is a ConfigError that
lists these names: the family never silently ignores a decision the search would make.

`cnn`: `depth` blocks of conv (padding "same") -> norm -> activation; a 2x2 max-pool after every
`pool_every` blocks while the feature map is at least 4 pixels on its short side; then global
average pool, dropout and a linear classifier. `mlp`: flatten, `depth` hidden layers of
linear -> norm -> activation -> dropout, then a linear classifier.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..builders import DataShape

SETTINGS = ("depth", "width", "kernel", "activation", "dropout", "norm")
PER_LAYER = ("width", "kernel", "activation")
ALIASES: dict[str, str] = {
    "depth": "depth", "layers": "depth", "num_layers": "depth", "n_layers": "depth",
    "width": "width", "channels": "width", "hidden": "width", "units": "width", "hidden_size": "width",
    "kernel": "kernel", "kernel_size": "kernel",
    "activation": "activation", "act": "activation",
    "dropout": "dropout",
    "norm": "norm", "normalization": "norm",
}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU, "tanh": nn.Tanh, "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU, "selu": nn.SELU, "mish": nn.Mish, "hardswish": nn.Hardswish,
    "sigmoid": nn.Sigmoid,
}
_LAYER = re.compile(r"^layer_?(\d+)[._]?([a-z_]+)$")

UNDERSTOOD = (
    "depth, width, kernel, activation, dropout, norm (aliases: "
    + ", ".join(f"{a}={c}" for a, c in ALIASES.items() if a != c)
    + "), and layer<i>_width, layer<i>_kernel, layer<i>_activation"
)


def _role(name: str) -> tuple[str, int | None] | None:
    """(setting, layer index or None) of a position name, or None when it is not understood."""
    key = name.strip().lower().replace("-", "_")
    if key in ALIASES:
        return ALIASES[key], None
    m = _LAYER.match(key)
    if m and ALIASES.get(m.group(2)) in PER_LAYER and int(m.group(1)) >= 1:
        return ALIASES[m.group(2)], int(m.group(1))
    return None


def looks_like_family(names: Iterable[str]) -> bool:
    """Whether every position name is one the family understands (and there is at least one)."""
    names = list(names)
    return bool(names) and all(_role(n) is not None for n in names)


def check_choices(positions: Mapping[str, Iterable[str]], kind: str) -> None:
    """Raise the ConfigError a candidate would meet, before any training: a position name the
    family does not understand, or a choice it cannot build (`swishy`, a kernel of 4 ...)."""
    neutral = {"depth": 1, "width": 1, "kernel": 1, "activation": "relu", "dropout": 0.0, "norm": "none"}
    for name, choices in positions.items():
        role = _role(name)
        for choice in choices:
            # a per-layer value is checked as the setting it overrides
            plan({name if role is None or role[1] is None else role[0]: choice}, kind, neutral)


def _whole(value: object, what: str, low: int) -> int:
    try:
        f = float(str(value).strip())
    except ValueError:
        raise ConfigError(f"{what} must be a whole number, got {value!r}") from None
    if f != int(f) or f < low:
        raise ConfigError(f"{what} must be a whole number >= {low}, got {value!r}")
    return int(f)


def _kernel(value: object, what: str) -> int:
    text = str(value).strip().lower()
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if m:
        if m.group(1) != m.group(2):
            raise ConfigError(f"{what} must be square (e.g. 3x3), got {value!r}")
        text = m.group(1)
    k = _whole(text, what, 1)
    if k % 2 == 0:
        raise ConfigError(f"{what} must be odd (1, 3, 5 ...), got {value!r}")
    return k


def _activation(value: object, what: str) -> str:
    name = str(value).strip().lower().replace("-", "_")
    if name not in ACTIVATIONS:
        raise ConfigError(f"{what} {value!r} is not known: use one of {', '.join(ACTIVATIONS)}")
    return name


@dataclass(frozen=True)
class Plan:
    """The resolved settings of one network: per layer width, kernel and activation."""

    widths: tuple[int, ...]
    kernels: tuple[int, ...]
    activations: tuple[str, ...]
    dropout: float
    norm: str


def plan(arch: Mapping[str, str], kind: str, defaults: Mapping[str, object]) -> Plan:
    """Resolve `arch` (position -> choice) over `defaults` into a `Plan` for `kind` (cnn or mlp)."""
    settings: dict[str, object] = dict(defaults)
    per_layer: dict[tuple[str, int], object] = {}
    unknown = []
    for name, value in arch.items():
        role = _role(name)
        if role is None:
            unknown.append(name)
        elif role[1] is None:
            settings[role[0]] = value
        else:
            per_layer[(role[0], role[1])] = value
    if unknown:
        raise ConfigError(
            f"the {kind} builder does not understand the position(s) {', '.join(map(repr, unknown))}: "
            f"it understands {UNDERSTOOD}; rename them or pass your own builder with --model package.module:function"
        )
    if kind == "mlp" and any(_role(n)[0] == "kernel" for n in arch):  # type: ignore[index]
        raise ConfigError("an mlp has no kernel: a 'kernel' position needs image inputs and the cnn builder")
    if settings["depth"] is None:
        settings["depth"] = max((i for _, i in per_layer), default=3 if kind == "cnn" else 2)
    depth = _whole(settings["depth"], "depth", 1 if kind == "cnn" else 0)
    dropout_text = str(settings["dropout"]).strip()
    try:
        dropout = float(dropout_text)
    except ValueError:
        raise ConfigError(f"dropout must be a number in [0, 1), got {settings['dropout']!r}") from None
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be a number in [0, 1), got {settings['dropout']!r}")
    norm = {"bn": "batch", "batchnorm": "batch", "ln": "layer", "layernorm": "layer"}.get(
        str(settings["norm"]).strip().lower(), str(settings["norm"]).strip().lower()
    )
    norms = ("batch", "none") if kind == "cnn" else ("batch", "layer", "none")
    if norm not in norms:
        raise ConfigError(f"norm {settings['norm']!r} is not known for the {kind}: use one of {', '.join(norms)}")
    widths, kernels, acts = [], [], []
    for i in range(1, depth + 1):
        widths.append(_whole(per_layer.get(("width", i), settings["width"]), f"layer {i}'s width", 1))
        kernels.append(_kernel(per_layer.get(("kernel", i), settings["kernel"]), f"layer {i}'s kernel"))
        acts.append(_activation(per_layer.get(("activation", i), settings["activation"]), f"layer {i}'s activation"))
    return Plan(tuple(widths), tuple(kernels), tuple(acts), dropout, norm)


class FamilyCNN(nn.Module):
    """Conv blocks with occasional max-pooling, global average pool, dropout, linear head."""

    def __init__(self, p: Plan, shape: DataShape, pool_every: int) -> None:
        super().__init__()
        c, side = shape.input[0], min(shape.input[1:])
        blocks: list[nn.Module] = []
        for i, (w, k, a) in enumerate(zip(p.widths, p.kernels, p.activations), start=1):
            blocks.append(nn.Conv2d(c, w, k, padding="same", bias=p.norm == "none"))
            if p.norm == "batch":
                blocks.append(nn.BatchNorm2d(w))
            blocks.append(ACTIVATIONS[a]())
            if i % pool_every == 0 and i < len(p.widths) and side >= 4:
                blocks.append(nn.MaxPool2d(2, ceil_mode=True))
                side = -(-side // 2)
            c = w
        self.features = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Sequential(nn.Dropout(p.dropout), nn.Linear(c, shape.num_classes))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x))


class FamilyMLP(nn.Module):
    """Flatten, hidden layers of linear -> norm -> activation -> dropout, linear head."""

    def __init__(self, p: Plan, shape: DataShape) -> None:
        super().__init__()
        d = 1
        for n in shape.input:
            d *= n
        layers: list[nn.Module] = [nn.Flatten()]
        for w, a in zip(p.widths, p.activations):
            layers.append(nn.Linear(d, w, bias=p.norm != "batch"))
            if p.norm == "batch":
                layers.append(nn.BatchNorm1d(w))
            elif p.norm == "layer":
                layers.append(nn.LayerNorm(w))
            layers.append(ACTIVATIONS[a]())
            if p.dropout:
                layers.append(nn.Dropout(p.dropout))
            d = w
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(d, shape.num_classes)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x))


def cnn(
    arch: Mapping[str, str],
    shape: DataShape,
    *,
    depth: int | None = None,
    width: int = 32,
    kernel: int = 3,
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str = "batch",
    pool_every: int = 1,
) -> FamilyCNN:
    """Builder: the plain CNN of `arch` for image inputs (C, H, W); see the module docstring."""
    if not shape.is_image:
        raise ConfigError(
            f"the cnn builder needs image inputs (C, H, W), got the per-sample shape {shape.input}: use --model mlp for flat features"
        )
    if isinstance(pool_every, bool) or not isinstance(pool_every, int) or pool_every < 1:
        raise ConfigError(f"cnn option pool_every must be a whole number >= 1, got {pool_every!r}")
    defaults = {"depth": depth, "width": width, "kernel": kernel, "activation": activation,
                "dropout": dropout, "norm": norm}
    return FamilyCNN(plan(arch, "cnn", defaults), shape, pool_every)


def mlp(
    arch: Mapping[str, str],
    shape: DataShape,
    *,
    depth: int | None = None,
    width: int = 128,
    activation: str = "relu",
    dropout: float = 0.0,
    norm: str = "none",
) -> FamilyMLP:
    """Builder: the MLP of `arch` on the flattened input (any shape); see the module docstring."""
    defaults = {"depth": depth, "width": width, "kernel": 1, "activation": activation,
                "dropout": dropout, "norm": norm}
    return FamilyMLP(plan(arch, "mlp", defaults), shape)
