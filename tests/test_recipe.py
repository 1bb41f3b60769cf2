"""Training recipes: presets, YAML files, hashing and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from archlore.tools.errors import ConfigError
from archlore.tools.recipe import PRESETS, Recipe, load_recipe


def test_presets_hold_the_published_settings() -> None:
    for name in ("nb201-200", "nb201-12"):
        r = load_recipe(name)
        assert (r.optimizer, r.nesterov, r.momentum, r.lr, r.schedule) == ("sgd", True, 0.9, 0.1, "cosine")
        assert (r.weight_decay, r.batch_size) == (5e-4, 256)
        assert (r.augment.crop_padding, r.augment.hflip) == (4, True)
        assert r.model == {"channels": 16, "cells_per_stage": 5}
    assert load_recipe("nb201-200").epochs == 200 and load_recipe("nb201-12").epochs == 12
    proxy = load_recipe("proxy")
    assert (proxy.epochs, proxy.lr, proxy.batch_size, proxy.weight_decay) == (3, 0.05, 64, 5e-4)
    assert proxy.model == {"channels": 8, "cells_per_stage": 1} and not proxy.augment.active
    darts = load_recipe("darts")
    assert (darts.epochs, darts.batch_size, darts.lr, darts.weight_decay, darts.nesterov) == (600, 96, 0.025, 3e-4, False)
    assert (darts.augment.cutout, darts.grad_clip, darts.auxiliary_weight, darts.drop_path) == (16, 5.0, 0.4, 0.2)
    assert darts.model == {"channels": 36, "layers": 20, "auxiliary": True}
    assert load_recipe("darts-proxy").model["layers"] == 8
    assert set(PRESETS) == {"nb201-200", "nb201-12", "proxy", "darts", "darts-proxy"}


def test_hash_is_stable_and_ignores_the_name() -> None:
    a, b = load_recipe("nb201-12"), load_recipe("nb201-12")
    assert a.hash() == b.hash() and len(a.hash()) == 16
    assert a.with_(name="other").hash() == a.hash()
    assert a.with_(epochs=13).hash() != a.hash()
    assert a.with_(model={"channels": 8}).model == {"channels": 8, "cells_per_stage": 5}
    assert a.to_record()["hash"] == a.hash()


def test_yaml_file_with_a_base(tmp_path: Path) -> None:
    f = tmp_path / "mine.yaml"
    f.write_text("base: nb201-12\nepochs: 2\nmodel: {channels: 4}\naugment: {cutout: 8}\n")
    r = load_recipe(f)
    assert (r.epochs, r.lr, r.model, r.augment.cutout, r.augment.crop_padding) == (2, 0.1, {"channels": 4, "cells_per_stage": 5}, 8, 4)
    plain = tmp_path / "plain.yml"
    plain.write_text("optimizer: adamw\nlr: 0.001\n")
    assert load_recipe(str(plain)).optimizer == "adamw"
    assert load_recipe(r) is r


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochs: 2\nepoch: 3\n", r"epoch: unknown field"),
        ("epochs: 0\n", r"epochs: Input should be greater than or equal to 1"),
        ("optimizer: adam\n", r"optimizer: Input should be 'sgd' or 'adamw'"),
        ("epochs: [1\n", r"not valid YAML \(line"),
        ("- 1\n", r"must be a mapping"),
        ("base: nope\n", r"unknown base 'nope'"),
        ("augment: {flip: true}\n", r"augment.flip: unknown field"),
    ],
)
def test_bad_files_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_recipe(f)
    assert "\n" not in str(info.value)


def test_unknown_names() -> None:
    with pytest.raises(ConfigError, match="unknown recipe 'nb201-1': use one of nb201-200, nb201-12, proxy"):
        load_recipe("nb201-1")
    with pytest.raises(ConfigError, match="recipe file .*missing.yaml not found"):
        load_recipe("missing.yaml")
    with pytest.raises(ConfigError):
        Recipe().with_(lr=-1)
