"""TrainingExecutor: the NB201 cell network in PyTorch, trained for real on scikit-learn digits."""

from __future__ import annotations

import pytest
import torch

from archlore.tools.errors import ArchloreError, ConfigError, SpaceError
from archlore.tools.executors import Executor, Metrics
from archlore.tools.spaces import NB201Space, Position, SearchSpace, TNB101Space
from archlore.tools.training import (
    DATASETS,
    Cell,
    CellNetwork,
    TrainingExecutor,
    count_flops,
    reaches_output,
)

NB201 = NB201Space()
# conv, skip and pool on a path from input to output; cheap enough for a quick run
CELL = NB201.from_string(
    "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|skip_connect~0|none~1|avg_pool_3x3~2|"
)
TINY = {"epochs": 2, "channels": 4, "threads": 1}


@pytest.fixture(scope="module")
def tiny() -> TrainingExecutor:
    return TrainingExecutor(NB201, "digits", seed=0, **TINY)


@pytest.fixture(scope="module")
def trained(tiny: TrainingExecutor) -> Metrics:
    return tiny.evaluate(CELL)


# -- the model ---------------------------------------------------------------------------------
def test_cell_keeps_shape_and_network_outputs_logits() -> None:
    ops = tuple(NB201.describe(CELL).values())
    x = torch.randn(5, 8, 8, 8)
    assert Cell(ops, 8)(x).shape == x.shape
    net = CellNetwork(ops, in_channels=1, num_classes=10, channels=8)
    assert net(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_all_none_cell_outputs_zeros() -> None:
    assert torch.count_nonzero(Cell(("none",) * 6, 4)(torch.randn(2, 4, 8, 8))) == 0


def test_reaches_output() -> None:
    assert not reaches_output(("none",) * 6)
    assert reaches_output(("none", "none", "none", "skip_connect", "none", "none"))  # 3<-0
    assert reaches_output(("nor_conv_3x3", "none", "none", "none", "avg_pool_3x3", "none"))  # 0->1->3
    assert not reaches_output(("none", "nor_conv_3x3", "none", "none", "skip_connect", "none"))  # 1 is dead
    assert not reaches_output(("skip_connect", "skip_connect", "skip_connect", "none", "none", "none"))


def test_flops_grow_with_convolutions() -> None:
    def flops(op: str) -> int:
        net = CellNetwork((op,) * 6, in_channels=1, num_classes=10, channels=8)
        return count_flops(net, torch.zeros(1, 1, 8, 8))

    assert flops("skip_connect") == flops("avg_pool_3x3") < flops("nor_conv_1x1") < flops("nor_conv_3x3")


# -- the executor ------------------------------------------------------------------------------
def test_is_an_executor(tiny: TrainingExecutor) -> None:
    ex: Executor = tiny
    assert ex.space is NB201 and ex.task == "digits"


def test_trains_above_chance(trained: Metrics) -> None:
    assert trained.valid > 50.0  # chance is 10%
    assert trained.test is not None and trained.test > 50.0
    assert trained.cost["params"] > 0 and trained.cost["flops"] > 0
    assert 0 < trained.cost["train_seconds"] <= trained.wall_time


def test_same_seed_same_metrics(tiny: TrainingExecutor, trained: Metrics) -> None:
    state = torch.get_rng_state()
    again = TrainingExecutor(NB201, "digits", seed=0, **TINY).evaluate(CELL)
    assert (again.valid, again.test) == (trained.valid, trained.test)
    assert again.cost["params"] == trained.cost["params"]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is left alone


def test_wrong_length_genotype_is_a_space_error(tiny: TrainingExecutor) -> None:
    with pytest.raises(SpaceError, match="has 5 choices but space 'nb201' has 6 positions"):
        tiny.evaluate((1, 2, 3, 4, 1))
    with pytest.raises(SpaceError, match="out of range"):
        tiny.evaluate((1, 2, 3, 4, 1, 5))


def test_unknown_task_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match="unknown training task 'mnist': use one of digits"):
        TrainingExecutor(NB201, "mnist")
    with pytest.raises(ConfigError, match="task 'cifar10' needs torchvision: .*training tasks: digits"):
        TrainingExecutor(NB201, "cifar10")
    assert issubclass(ConfigError, ArchloreError)
    assert set(DATASETS) >= {"digits"}


def test_transnas_micro_cells_build() -> None:
    tnb = TNB101Space()
    ex = TrainingExecutor(tnb, "digits", **TINY)
    arch = tnb.from_string("64-41414-3_13_221")
    net = ex.build(arch)
    assert net.ops == (
        "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1", "nor_conv_1x1", "skip_connect"
    )


def test_spaces_of_another_shape_are_refused() -> None:
    other = SearchSpace("tiny", [Position("a", ("x", "y")), Position("b", ("x", "y"))])
    with pytest.raises(ConfigError, match="not an NB201-shaped cell"):
        TrainingExecutor(other, "digits")


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        TrainingExecutor(NB201, epochs=0)
    with pytest.raises(ConfigError, match="lr must be positive"):
        TrainingExecutor(NB201, lr=0.0)
