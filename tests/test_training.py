"""TrainingExecutor: real training by a recipe, faults recorded as failed candidates, the cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from archlore.tools.errors import ConfigError, SpaceError
from archlore.tools.evaluator import Evaluator
from archlore.tools.executors import Executor, Metrics
from archlore.tools.ledger import Ledger
from archlore.tools.recipe import load_recipe
from archlore.tools.spaces import NB201Space, Position, SearchSpace, TNB101Space
from archlore.tools.strategies import RandomSearch, run_search
from archlore.tools.train_cache import TrainCache
from archlore.tools.training import TrainingExecutor, augment_batch, lr_at

torch.set_num_threads(1)
NB201 = NB201Space()
# conv, skip and pool on a path from input to output; cheap enough for a quick run
CELL = NB201.from_string("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|")
TINY = load_recipe("proxy").with_(epochs=2, model={"channels": 4})
FAST = TINY.with_(epochs=5, lr=0.1, batch_size=8)


@pytest.fixture(scope="module")
def tiny() -> TrainingExecutor:
    return TrainingExecutor(NB201, "digits", recipe=TINY, seed=0, threads=1)


@pytest.fixture(scope="module")
def trained(tiny: TrainingExecutor) -> Metrics:
    return tiny.evaluate(CELL)


def test_is_an_executor(tiny: TrainingExecutor) -> None:
    ex: Executor = tiny
    assert ex.space is NB201 and ex.task == "digits" and tiny.builder_name == "nb201"
    assert tiny.options == {"channels": 4, "cells_per_stage": 1}
    rec = tiny.record()
    assert rec["recipe"]["hash"] == TINY.hash() and rec["data"]["fingerprint"] == tiny.data.fingerprint


def test_trains_above_chance(trained: Metrics) -> None:
    assert trained.ok and trained.fidelity == 2 and trained.reason == ""
    assert trained.valid > 50.0 and trained.test is not None and trained.test > 50.0  # chance is 10%
    assert trained.cost["params"] > 0 and trained.cost["flops"] > 0
    assert 0 < trained.cost["train_seconds"] <= trained.wall_time


def test_same_seed_same_metrics(trained: Metrics) -> None:
    state = torch.get_rng_state()
    again = TrainingExecutor(NB201, "digits", recipe=TINY, seed=0, threads=1).evaluate(CELL)
    assert (again.valid, again.test, again.cost["params"]) == (trained.valid, trained.test, trained.cost["params"])
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone


def test_epochs_are_the_fidelity(tiny: TrainingExecutor) -> None:
    one = tiny.evaluate(CELL, epochs=1)
    assert one.ok and one.fidelity == 1


def test_wrong_genotype_is_a_space_error(tiny: TrainingExecutor) -> None:
    with pytest.raises(SpaceError, match="has 5 choices but space 'nb201' has 6 positions"):
        tiny.evaluate((1, 2, 3, 4, 1))


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown data set 'mnist'"):
        TrainingExecutor(NB201, "mnist")
    with pytest.raises(ConfigError, match="unknown recipe"):
        TrainingExecutor(NB201, recipe="fast")
    with pytest.raises(ConfigError, match="concurrency must be at least 1"):
        TrainingExecutor(NB201, concurrency=0)
    other = SearchSpace("tiny", [Position("a", ("x", "y")), Position("b", ("x", "y"))])
    with pytest.raises(ConfigError, match="does not know how to build a network from space 'tiny'"):
        TrainingExecutor(other, "digits")


def test_transnas_micro_cells_train() -> None:
    tnb = TNB101Space()
    ex = TrainingExecutor(tnb, "digits", recipe=TINY.with_(epochs=1), threads=1)
    m = ex.evaluate(tnb.from_string("64-41414-3_13_221"))
    assert m.ok and m.fidelity == 1 and m.cost["params"] > 0


def test_concurrent_candidates_match_one_at_a_time(tiny: TrainingExecutor) -> None:
    archs = [CELL, NB201.from_string("|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|skip_connect~1|nor_conv_3x3~2|")]
    ex = TrainingExecutor(NB201, "digits", recipe=TINY.with_(epochs=1), seed=0, threads=1, concurrency=2)
    together = ex.evaluate_many(archs)
    alone = [ex.evaluate(a) for a in archs]
    assert [(m.valid, m.test) for m in together] == [(m.valid, m.test) for m in alone]
    # through the evaluator each result is recorded as it finishes (as_completed), every one once
    ev = Evaluator(ex, Ledger(None), "r", budget=2)
    evs = ev.evaluate_many(archs, epochs=1)
    assert [e.valid for e in evs] == [m.valid for m in alone] and len(ev.history) == 2 and ev.used == 2


# -- user builders, faults ---------------------------------------------------------------------
VEC = SearchSpace("vec", [Position("width", ("8", "16")), Position("mode", ("good", "broken", "nan", "oom"))])


def user_builder(arch, shape, *, hidden_scale: int = 1):
    if arch["mode"] == "broken":
        raise ValueError("this candidate cannot be built")
    w = int(arch["width"]) * hidden_scale
    net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape.input)), w), nn.ReLU(), nn.Linear(w, shape.num_classes))
    if arch["mode"] == "nan":
        net.append(_Scale(float("nan")))
    if arch["mode"] == "oom":
        net.append(_OutOfMemory())
    return net


class _Scale(nn.Module):
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.k


class _OutOfMemory(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


@pytest.fixture()
def vec_data(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 6)).astype(np.float32) + y[:, None] * 1.5  # separable
    np.savez(tmp_path / "vec.npz", x=x, y=y)
    return f"npz:{tmp_path / 'vec.npz'}"


def test_faults_are_failed_metrics_and_only_build_errors_are_cached(vec_data: str, tmp_path: Path) -> None:
    cache = TrainCache(tmp_path / "cache.db")
    ex = TrainingExecutor(VEC, vec_data, builder=user_builder, recipe=FAST, cache=cache, threads=1)
    good = ex.evaluate(VEC.from_names("16-good"))
    assert good.ok and good.valid > 60 and good.cost["params"] == 6 * 16 + 16 + 16 * 3 + 3
    broken = ex.evaluate(VEC.from_names("8-broken"))
    assert not broken.ok and np.isnan(broken.valid)
    assert "building candidate" in broken.reason and "this candidate cannot be built" in broken.reason
    nan = ex.evaluate(VEC.from_names("8-nan"))
    assert not nan.ok and nan.reason == "loss became NaN in epoch 1 of 5"
    oom = ex.evaluate(VEC.from_names("8-oom"))
    assert not oom.ok and oom.reason.startswith("out of memory (CUDA out of memory.")
    assert len(cache) == 2  # the good one and the build error; NaN and OOM may not repeat elsewhere
    again = TrainingExecutor(VEC, vec_data, builder=user_builder, recipe=FAST, cache=cache, threads=1)
    hit = again.evaluate(VEC.from_names("16-good"))
    assert (hit.valid, hit.test, hit.cost) == (good.valid, good.test, good.cost) and hit.wall_time < good.wall_time
    assert again.evaluate(VEC.from_names("8-broken")).reason == broken.reason
    other_seed = TrainingExecutor(VEC, vec_data, builder=user_builder, recipe=FAST, cache=cache, seed=5)
    assert other_seed.cache_key(VEC.from_names("16-good"), 5) != again.cache_key(VEC.from_names("16-good"), 5)


def test_a_failed_candidate_does_not_stop_a_run(vec_data: str) -> None:
    ex = TrainingExecutor(VEC, vec_data, builder=user_builder, recipe=TINY.with_(epochs=1), threads=1)
    ev = Evaluator(ex, Ledger(None), "run", budget=6)
    out = run_search(RandomSearch(), ev, None, 6, seed=0)
    assert out.stopped in ("done", "exhausted") and ev.used == 6 == len(ev.results())
    failed = ev.failed()
    assert failed and all(e.reason for e in failed)
    assert all(VEC.describe(VEC.from_string(e.arch))["mode"] != "good" for e in failed)
    assert len(ev.pairs()) == 6 - len(failed) and ev.best() is not None and ev.best().ok
    for e in failed:  # never evaluated again, and free when asked
        assert ev.evaluate(VEC.from_string(e.arch)) is e and ev.used == 6
    not_counted = Evaluator(ex, Ledger(None), "run", budget=3, count_failed=False)
    run_search(RandomSearch(), not_counted, None, 3, seed=0)
    assert not_counted.used == sum(1 for e in not_counted.results() if e.ok) <= 3


def test_auxiliary_logits_and_drop_path_follow_the_recipe(vec_data: str) -> None:
    seen: list[float] = []

    class WithAux(nn.Module):
        def __init__(self, shape) -> None:
            super().__init__()
            self.drop_path_prob = 0.0
            self.body = nn.Linear(shape.input[0], shape.num_classes)
            self.aux = nn.Linear(shape.input[0], shape.num_classes)

        def forward(self, x: torch.Tensor):
            seen.append(self.drop_path_prob)
            return (self.body(x), self.aux(x)) if self.training else self.body(x)

    recipe = TINY.with_(epochs=4, auxiliary_weight=0.4, drop_path=0.2, batch_size=64)
    ex = TrainingExecutor(VEC, vec_data, builder=lambda arch, shape: WithAux(shape), recipe=recipe, threads=1)
    m = ex.evaluate(VEC.from_names("8-good"))
    assert m.ok
    assert sorted(set(seen)) == pytest.approx([0.0, 0.05, 0.1, 0.15])


def test_user_space_with_the_family_builder(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for cls, level in (("dark", 40), ("light", 210)):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(15):
            arr = np.clip(rng.normal(level, 30, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "img" / cls / f"{i}.png")
    space = SearchSpace("fam", [Position("depth", ("1", "2")), Position("activation", ("relu", "gelu"))])
    ex = TrainingExecutor(space, f"folder:{tmp_path / 'img'}", recipe=TINY.with_(epochs=3, augment={"crop_padding": 1, "hflip": True}), threads=1)
    assert ex.builder_name == "cnn" and ex.options == {}  # the proxy's nb201 options do not apply to cnn
    m = ex.evaluate(space.from_names("2-gelu"))
    assert m.ok and m.valid > 50


# -- loop pieces -------------------------------------------------------------------------------
def test_augmentation_on_a_batch() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4) + 1
    gen = torch.Generator().manual_seed(0)
    crop = augment_batch(x, TINY.with_(augment={"crop_padding": 2}), gen)
    assert crop.shape == x.shape
    for i in range(2):  # every crop is a shifted window: its nonzero values form a block of the original
        vals = crop[i, 0][crop[i, 0] != 0]
        assert set(vals.tolist()) <= set(x[i, 0].flatten().tolist())
    flips = [augment_batch(x, TINY.with_(augment={"hflip": True}), gen) for _ in range(10)]
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flips) and any(torch.equal(f[0], x[0]) for f in flips)
    cut = augment_batch(x, TINY.with_(augment={"cutout": 2}), gen)
    assert all(int((cut[i] == 0).sum()) in (1, 2, 4) for i in range(2))


def test_learning_rate_schedule() -> None:
    r = TINY.with_(lr=0.1, warmup_epochs=1)
    assert lr_at(r, 0, 100, 10) == pytest.approx(0.01) and lr_at(r, 9, 100, 10) == pytest.approx(0.1)
    assert lr_at(r, 10, 100, 10) == pytest.approx(0.1) and lr_at(r, 99, 100, 10) < 0.001
    assert lr_at(r.with_(schedule="constant"), 80, 100, 10) == 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trains_on_cuda_with_bf16_and_channels_last() -> None:
    recipe = TINY.with_(epochs=2, precision="bf16", augment={"crop_padding": 1, "hflip": True, "cutout": 2})
    ex = TrainingExecutor(NB201, "digits", recipe=recipe, device="cuda", concurrency=2)
    ms = ex.evaluate_many([CELL, CELL])
    assert all(m.ok and m.valid > 30 for m in ms)
    x = ex._on_device(torch.device("cuda"))[0]
    assert x.is_cuda and x.is_contiguous(memory_format=torch.channels_last)


def test_every_recipe_knob_runs_on_cpu() -> None:
    recipe = TINY.with_(
        epochs=1, precision="bf16", optimizer="adamw", lr=0.01, warmup_epochs=0.5, label_smoothing=0.1, grad_clip=5.0,
        schedule="constant", augment={"crop_padding": 1, "hflip": True, "cutout": 2},
    )
    m = TrainingExecutor(NB201, "digits", recipe=recipe, threads=1).evaluate(CELL)
    assert m.ok and m.valid > 10  # bf16 autocast on the CPU, AdamW, warm-up, smoothing, clipping, augmentation


def test_train_keeps_the_network(tiny: TrainingExecutor) -> None:
    out = tiny.train(CELL, epochs=1, seed=3)
    assert out.metrics.ok and out.model is not None and not out.model.training
    with torch.inference_mode():
        assert out.model(tiny.data.x_test[:5]).shape == (5, 10)
