"""Training recipes: how a candidate is trained, as data (a pydantic model with presets).

A recipe says everything the training loop needs except the architecture and the data: epochs,
batch size, optimizer, schedule, regularisation, augmentation, precision and the builder's model
options (channels, cells ...). `Recipe.hash()` is a stable digest of its canonical JSON (the name
is left out, so a YAML copy of a preset hashes like the preset); records and the training cache
carry it.

Presets (`PRESETS`, `load_recipe(name)`):

- `nb201-200`, `nb201-12`: NAS-Bench-201's two published settings (SGD with Nesterov momentum
  0.9, lr 0.1 cosine-annealed to 0, weight decay 5e-4, batch 256, random crop with 4 pixels of
  padding and horizontal flip; 16 channels, 5 cells per stage), for 200 and 12 epochs.
- `proxy`: the short default; on digits it is exactly what the executor did before recipes
  (3 epochs, 8 channels, 1 cell per stage, lr 0.05, batch 64, weight decay 5e-4, no augmentation).
- `darts`: the DARTS evaluation recipe (600 epochs, batch 96, SGD momentum 0.9, lr 0.025 cosine,
  weight decay 3e-4, crop + flip, cutout 16, gradient clipping 5, auxiliary weight 0.4, drop path
  0.2; 36 channels, 20 layers, auxiliary head).
- `darts-proxy`: a short DARTS proxy (10 epochs, 16 channels, 8 layers, no auxiliary head).

`load_recipe` also reads a YAML file of one's own (any subset of the fields; `base: PRESET`
starts from a preset).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError


class Augment(BaseModel):
    """Data augmentation, done on the training device in batches (image data only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_padding: int = Field(0, ge=0, description="random crop after zero padding by this many pixels (0: off)")
    hflip: bool = Field(False, description="random horizontal flip")
    cutout: int = Field(0, ge=0, description="cutout square side in pixels (0: off)")

    @property
    def active(self) -> bool:
        return bool(self.crop_padding or self.hflip or self.cutout)


class Recipe(BaseModel):
    """How a candidate is trained. Unknown fields are an error (a typo never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("custom", description="label only; not part of the hash")
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = Field(True, description="Nesterov momentum (sgd only)")
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warm-up from 0 over this many epochs")
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    augment: Augment = Field(default_factory=Augment)
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this (None: off)")
    auxiliary_weight: float = Field(0.0, ge=0, description="weight of an auxiliary head's loss")
    drop_path: float = Field(0.0, ge=0, lt=1, description="final drop-path probability (ramped up linearly)")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 autocast on CUDA, fp32 on CPU")
    compile: bool = Field(False, description="torch.compile the model (CUDA; worth it for long recipes)")
    model: dict[str, Any] = Field(default_factory=dict, description="builder options (channels, cells ...)")
    seed: int = Field(0, description="training seed when the executor is given none")

    def hash(self) -> str:
        """A stable 16-hex digest of everything that changes training (not the name)."""
        payload = self.model_dump(mode="json", exclude={"name"})
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_(self, **changes: Any) -> Recipe:
        """A validated copy with some fields changed (`model` entries are merged)."""
        data = self.model_dump()
        if "model" in changes:
            changes = {**changes, "model": {**data["model"], **(changes["model"] or {})}}
        return _validate({**data, **changes}, f"recipe {self.name!r}")

    def to_record(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json"), "hash": self.hash()}


_NB201 = dict(
    batch_size=256, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, schedule="cosine",
    weight_decay=5e-4, augment={"crop_padding": 4, "hflip": True},
    model={"channels": 16, "cells_per_stage": 5},
)

PRESETS: dict[str, dict[str, Any]] = {
    "nb201-200": dict(_NB201, epochs=200),
    "nb201-12": dict(_NB201, epochs=12),
    "proxy": dict(
        epochs=3, batch_size=64, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, schedule="cosine",
        weight_decay=5e-4, model={"channels": 8, "cells_per_stage": 1},
    ),
    "darts": dict(
        epochs=600, batch_size=96, optimizer="sgd", lr=0.025, momentum=0.9, nesterov=False, schedule="cosine",
        weight_decay=3e-4, augment={"crop_padding": 4, "hflip": True, "cutout": 16}, grad_clip=5.0,
        auxiliary_weight=0.4, drop_path=0.2, model={"channels": 36, "layers": 20, "auxiliary": True},
    ),
    "darts-proxy": dict(
        epochs=10, batch_size=96, optimizer="sgd", lr=0.025, momentum=0.9, nesterov=False, schedule="cosine",
        weight_decay=3e-4, augment={"crop_padding": 4, "hflip": True}, grad_clip=5.0,
        model={"channels": 16, "layers": 8, "auxiliary": False},
    ),
}


def _validate(data: dict[str, Any], what: str) -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "?"
        msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"{what}: {loc}: {msg} (fields: {', '.join(Recipe.model_fields)})") from None


def preset(name: str) -> Recipe:
    if name not in PRESETS:
        raise ConfigError(f"unknown recipe {name!r}: use one of {', '.join(PRESETS)} or a YAML file")
    return _validate({"name": name, **PRESETS[name]}, f"recipe {name!r}")


def load_recipe(spec: str | Path | Recipe) -> Recipe:
    """A preset by name, or a YAML file (`base: PRESET` plus fields to change); ConfigError otherwise."""
    if isinstance(spec, Recipe):
        return spec
    text = str(spec)
    if text in PRESETS:
        return preset(text)
    path = Path(text)
    if path.suffix.lower() not in (".yaml", ".yml", ".json") and not path.is_file():
        raise ConfigError(f"unknown recipe {text!r}: use one of {', '.join(PRESETS)} or a YAML file")
    if not path.is_file():
        raise ConfigError(f"recipe file {path} not found")
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"recipe file {path} is not valid YAML{line}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"recipe file {path} must be a mapping of fields, got {type(data).__name__}")
    base = data.pop("base", None)
    merged: dict[str, Any] = {"name": path.stem}
    if base is not None:
        if str(base) not in PRESETS:
            raise ConfigError(f"recipe file {path}: unknown base {base!r}: use one of {', '.join(PRESETS)}")
        merged.update(PRESETS[str(base)])
        merged["name"] = f"{base}+{path.stem}"
    for key, value in data.items():
        if key in ("model", "augment") and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return _validate(merged, f"recipe file {path}")
