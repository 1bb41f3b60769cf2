"""The training cache: keyed by everything that changes training, persistent, with a default path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from archlore.tools.errors import ArchloreError
from archlore.tools.executors import Metrics
from archlore.tools.recipe import load_recipe
from archlore.tools.spaces import NB201Space
from archlore.tools.train_cache import CacheKey, TrainCache
from archlore.tools.training import TrainingExecutor

torch.set_num_threads(1)
KEY = CacheKey("nb201", "|a|", '{"builder":"nb201"}', "r1", "d1", 0, 3)


def test_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    cache = TrainCache(path)
    assert cache.get(KEY) is None
    m = Metrics(91.5, 90.0, {"params": 10.0}, 1.5, "ok", "", 3)
    cache.put(KEY, m)
    failed = Metrics.failed("building candidate x failed: ValueError: no", fidelity=3)
    other = CacheKey(*[*KEY.__dict__.values()][:5], 1, 3)  # another seed
    cache.put(other, failed)
    cache.close()
    again = TrainCache(path)
    assert again.get(KEY) == m and len(again) == 2
    got = again.get(other)
    assert got is not None and not got.ok and math.isnan(got.valid) and got.reason == failed.reason
    for field, value in (("recipe", "r2"), ("data", "d2"), ("fidelity", 4), ("builder", "{}"), ("arch", "|b|")):
        assert again.get(CacheKey(**{**KEY.__dict__, field: value})) is None


def test_default_path_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARCHLORE_TRAIN_CACHE", raising=False)
    monkeypatch.setenv("ARCHLORE_CACHE", str(tmp_path / "root"))
    assert TrainCache.default_path() == tmp_path / "root" / "train-cache.db"
    monkeypatch.setenv("ARCHLORE_TRAIN_CACHE", str(tmp_path / "mine.db"))
    assert TrainCache.default_path() == tmp_path / "mine.db"
    monkeypatch.setenv("ARCHLORE_TRAIN_CACHE", "off")
    assert TrainCache.default() is None
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(ArchloreError, match="training cache .*dir.db is not usable"):
        TrainCache(tmp_path / "dir.db")


def test_nothing_is_trained_twice_across_executors(tmp_path: Path) -> None:
    nb = NB201Space()
    arch = nb.from_string("|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|skip_connect~1|nor_conv_3x3~2|")
    recipe = load_recipe("proxy").with_(epochs=1, model={"channels": 4})
    first = TrainingExecutor(nb, "digits", recipe=recipe, cache=tmp_path / "c.db", threads=1)
    m = first.evaluate(arch)
    second = TrainingExecutor(nb, "digits", recipe=recipe, cache=tmp_path / "c.db", threads=1)
    hit = second.evaluate(arch)
    assert (hit.valid, hit.test, hit.fidelity) == (m.valid, m.test, 1) and hit.cost["train_seconds"] == m.cost["train_seconds"]
    assert hit.wall_time < m.cost["train_seconds"]
    longer = second.evaluate(arch, epochs=2)  # another fidelity: trained
    assert longer.fidelity == 2 and len(second.cache) == 2
