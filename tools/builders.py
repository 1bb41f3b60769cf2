"""The builder contract: how one architecture of a search space becomes a torch network.

A builder is a plain function `build(arch, shape, **options) -> nn.Module`:

- `arch` maps each position name of the space to the chosen choice name
  (`{"depth": "4", "activation": "gelu"}`; for nb201 `{"edge1<-0": "nor_conv_3x3", ...}`);
- `shape` is the data's `DataShape`: the per-sample input shape ((3, 32, 32) for images,
  (D,) for flat features) and the number of classes;
- `options` are the builder's keyword settings (channels, layers ...), the same for every
  candidate of a run.

Built in (`BUILDERS`): `nb201`, `darts`, `cnn`, `mlp`. A user's own builder is named
`package.module:function` (`--model` or the `model:` entry of a space YAML); `resolve_builder`
imports it and checks that it can take `(arch, shape, **options)`. `build_model` turns whatever
goes wrong while building one candidate into a `BuildError` naming it, so the run records that
candidate as failed and goes on.

Model-side training contract: in train mode a model may return `logits` or
`(logits, aux_logits)`; a model with drop path exposes a float attribute `drop_path_prob`
that the training loop sets each epoch. In eval mode a model returns `logits`.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .darts import DartsSpace
from .errors import BuildError, ConfigError
from .nets.darts import darts
from .nets.family import check_choices, cnn, looks_like_family, mlp
from .nets.nb201 import nb201
from .spaces import NB201_EDGES, NB201Space, SearchSpace, TNB101Space

__all__ = [
    "BUILDERS", "BuildError", "Builder", "DataShape", "build_model", "count_flops", "count_params",
    "default_builder", "preflight", "resolve_builder",
]


@dataclass(frozen=True)
class DataShape:
    """What a builder needs to know of the data: the per-sample input shape ((C, H, W) for
    images, (D,) for flat features) and the number of classes."""

    input: tuple[int, ...]
    num_classes: int

    def __post_init__(self) -> None:
        dims = tuple(self.input)
        if not dims or any(isinstance(d, bool) or int(d) != d or d < 1 for d in dims):
            raise ConfigError(f"a data shape needs positive whole dimensions, got {self.input!r}")
        if isinstance(self.num_classes, bool) or int(self.num_classes) < 2:
            raise ConfigError(f"a classification task needs at least 2 classes, got {self.num_classes!r}")
        object.__setattr__(self, "input", tuple(int(d) for d in dims))
        object.__setattr__(self, "num_classes", int(self.num_classes))

    @property
    def is_image(self) -> bool:
        return len(self.input) == 3

    @classmethod
    def of(cls, x: torch.Tensor, num_classes: int) -> DataShape:
        """The shape of a batch `x` (N, ...) of samples."""
        return cls(tuple(x.shape[1:]), num_classes)


#: build(arch: Mapping[str, str], shape: DataShape, **options) -> nn.Module
Builder = Callable[..., nn.Module]

#: The built-in builders by name.
BUILDERS: dict[str, Builder] = {"nb201": nb201, "darts": darts, "cnn": cnn, "mlp": mlp}


def _import_builder(spec: str) -> Builder:
    module_name, _, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not module_name or not attr:
        raise ConfigError(f"model {spec!r} is not 'package.module:function': name the module and the function")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # `archlore` runs as a console script, so the current directory is not on sys.path as it
        # is for `python -m`: a builder module next to the user's space file would not be found.
        top = module_name.split(".")[0]
        if exc.name != top or os.getcwd() in sys.path:
            raise ConfigError(f"model {spec!r}: cannot import module {module_name!r} ({exc}); check the name and that it is installed or in the current directory") from None
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc2:
            raise ConfigError(f"model {spec!r}: cannot import module {module_name!r} ({exc2}); check the name and that it is installed or in the current directory") from None
        except Exception as exc2:  # noqa: BLE001 - user code: any failure is a one-line error
            raise ConfigError(f"model {spec!r}: importing {module_name!r} failed: {type(exc2).__name__}: {exc2}") from None
    except Exception as exc:  # noqa: BLE001 - user code: any failure is a one-line error
        raise ConfigError(f"model {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    try:
        fn = getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"model {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return fn


def resolve_builder(spec: str | Builder, options: Mapping[str, Any] | None = None) -> Builder:
    """The builder named by `spec`: a name in `BUILDERS`, or `package.module:function`
    (imported; the current directory is searched too), or a callable (passed through).

    Raises ConfigError when the module or function is missing, is not callable, or cannot be
    called as `(arch, shape, **options)` with the given `options` (none when omitted).
    """
    if callable(spec):
        fn, name = spec, getattr(spec, "__qualname__", repr(spec))
    elif not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"model must be a builder name ({', '.join(BUILDERS)}) or 'package.module:function', got {spec!r}")
    elif spec.strip() in BUILDERS:
        fn, name = BUILDERS[spec.strip()], spec.strip()
    elif ":" in spec:
        fn, name = _import_builder(spec), spec.strip()
    else:
        raise ConfigError(
            f"unknown model {spec!r}: use one of {', '.join(BUILDERS)} or your own builder as 'package.module:function'"
        )
    if not callable(fn):
        raise ConfigError(f"model {name!r} is a {type(fn).__name__}, not a function: point it at build(arch, shape, **options)")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn  # a builtin or C callable without a signature: it will be tried per candidate
    opts = dict(options or {})
    try:
        sig.bind({}, None, **opts)
    except TypeError as exc:
        given = f" and the options {', '.join(opts)}" if opts else ""
        raise ConfigError(
            f"model {name!r} has the signature {name.rsplit(':', 1)[-1]}{sig}, which cannot take (arch, shape){given} "
            f"({exc}): a builder is build(arch, shape, **options) -> torch.nn.Module"
        ) from None
    return fn


def build_model(
    builder: Builder, arch: Mapping[str, str], shape: DataShape, options: Mapping[str, Any] | None = None, *, candidate: str,
) -> nn.Module:
    """Build the network of one candidate; any failure becomes a BuildError naming `candidate`."""
    try:
        model = builder(dict(arch), shape, **dict(options or {}))
    except Exception as exc:  # a builder may fail in any way; the run goes on
        raise BuildError(
            f"building candidate {candidate} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": "),
            candidate=candidate,
        ) from exc
    if not isinstance(model, nn.Module):
        raise BuildError(
            f"building candidate {candidate} returned a {type(model).__name__}, not a torch.nn.Module",
            candidate=candidate,
        )
    return model


def preflight(
    spec: str | Builder, space: SearchSpace, shape: DataShape, options: Mapping[str, Any] | None = None,
) -> Builder:
    """The builder for a run, checked before any training: resolved (`resolve_builder`), the
    family's position names and every choice checked (cnn, mlp), and one candidate of `space`
    built (its first choice at every position). Raises ConfigError naming the problem, so a
    builder that cannot work fails the run at its start instead of failing every candidate."""
    fn = resolve_builder(spec, options)
    if fn in (cnn, mlp):
        check_choices({p.name: p.choices for p in space.positions}, "cnn" if fn is cnn else "mlp")
    first = tuple(0 for _ in space.positions)
    try:
        build_model(fn, space.describe(first), shape, options, candidate=space.to_string(first))
    except BuildError as exc:
        name = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
        raise ConfigError(f"model {name!r} cannot build space {space.name!r}: {exc}") from exc
    return fn


def default_builder(space: SearchSpace, shape: DataShape | None = None) -> str:
    """The builder a space is trained with when the user names none.

    nb201/tnb101 (and a space whose positions are the NB201 edges) -> `nb201`; darts -> `darts`;
    a space file with a `model:` entry -> its builder; a space whose positions are all among
    the family's names (depth, width, kernel, activation ... see `nets.family`) -> `cnn`, or
    `mlp` when `shape` is flat (D,). Otherwise a ConfigError asking for --model.
    """
    if isinstance(space, (NB201Space, TNB101Space)):
        return "nb201"
    if isinstance(space, DartsSpace):
        return "darts"
    model = getattr(space, "model", None)
    if model:
        return str(model["builder"] if isinstance(model, Mapping) else model)
    names = [p.name for p in space.positions]
    if set(names) == {f"edge{e}" for e in NB201_EDGES} or set(names) == set(NB201_EDGES):
        return "nb201"
    if looks_like_family(names):
        return "mlp" if shape is not None and not shape.is_image else "cnn"
    raise ConfigError(
        f"archlore does not know how to build a network from space {space.name!r} (positions "
        f"{', '.join(names[:6])}{' ...' if len(names) > 6 else ''}): pass --model NAME "
        f"({', '.join(BUILDERS)}) or --model package.module:function, or add a 'model:' entry to the space file"
    )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, sample: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of one sample through convs and linears (the
    convention NB201's `flops` column follows); pooling, BN and additions are not counted.
    Run in eval mode, so an auxiliary head that only runs in training is not counted."""
    total = 0

    def hook(mod: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
            total += out[0].numel() * k
        elif isinstance(mod, nn.Linear):
            total += (out[0].numel() // mod.out_features) * mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total
