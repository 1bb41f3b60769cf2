"""The builder contract and the built-in model families (nb201, cnn, mlp; darts in test_darts)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from archlore.tools.builders import (
    BUILDERS,
    BuildError,
    DataShape,
    build_model,
    count_flops,
    count_params,
    default_builder,
    preflight,
    resolve_builder,
)
from archlore.tools.darts import DartsSpace
from archlore.tools.errors import ArchloreError, ConfigError
from archlore.tools.nets.family import UNDERSTOOD, looks_like_family
from archlore.tools.nets.nb201 import reaches_output
from archlore.tools.spaces import NB201Space, Position, SearchSpace, TNB101Space, load_space_file

torch.set_num_threads(1)

NB201 = NB201Space()
CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
MIXED = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
DIGITS = DataShape((1, 8, 8), 10)


def forward_backward(model: nn.Module, shape: DataShape, n: int = 4) -> torch.Tensor:
    """One training step's forward and backward on random data; returns the logits."""
    torch.manual_seed(0)
    x = torch.randn(n, *shape.input)
    y = torch.randint(0, shape.num_classes, (n,))
    model.train()
    out = model(x)
    logits = out[0] if isinstance(out, tuple) else out
    assert logits.shape == (n, shape.num_classes)
    nn.functional.cross_entropy(logits, y).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    return logits


# -- DataShape ---------------------------------------------------------------------------------
def test_data_shape_validates_and_reads_a_batch() -> None:
    assert DataShape.of(torch.zeros(5, 3, 32, 32), 10) == DataShape((3, 32, 32), 10)
    assert DataShape((20,), 3).is_image is False
    with pytest.raises(ConfigError, match="positive whole"):
        DataShape((3, 0, 32), 10)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        DataShape((3, 8, 8), 1)


# -- nb201 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [DIGITS, DataShape((3, 32, 32), 10), DataShape((3, 7, 7), 5)])
def test_nb201_builds_and_trains_on_small_images(shape: DataShape) -> None:
    arch = NB201.describe(NB201.from_string(CONV3))
    model = build_model(BUILDERS["nb201"], arch, shape, {"channels": 4, "cells_per_stage": 1}, candidate=CONV3)
    forward_backward(model, shape)


def test_nb201_matches_the_published_params_and_flops() -> None:
    """NAS-Bench-201's own cost columns (cifar10: params_mb, flops_m) for two cells, at its
    defaults (C=16, 5 cells per stage, 32x32 inputs, 10 classes)."""
    published = {CONV3: (1.531546, 220.11969), MIXED: (0.129306, 15.64737)}
    for key, (params_mb, flops_m) in published.items():
        model = BUILDERS["nb201"](NB201.describe(NB201.from_string(key)), DataShape((3, 32, 32), 10))
        assert count_params(model) / 1e6 == pytest.approx(params_mb, abs=1e-6)
        assert count_flops(model, torch.zeros(1, 3, 32, 32)) / 1e6 == pytest.approx(flops_m, abs=1e-4)


def test_nb201_serves_tnb101_cells_and_names_missing_edges() -> None:
    tnb = TNB101Space()
    arch = tnb.describe(tnb.from_string("64-41414-3_13_221"))
    forward_backward(BUILDERS["nb201"](arch, DIGITS, channels=4, cells_per_stage=1), DIGITS)
    broken = dict(arch)
    del broken["edge3<-2"]
    with pytest.raises(BuildError, match=r"candidate c7 failed: ConfigError: .*'edge3<-2' is missing"):
        build_model(BUILDERS["nb201"], broken, DIGITS, candidate="c7")
    with pytest.raises(BuildError, match="image inputs"):
        build_model(BUILDERS["nb201"], arch, DataShape((64,), 10), candidate="c8")


def test_reaches_output() -> None:
    assert reaches_output(tuple(NB201.describe(NB201.from_string(CONV3)).values()))
    assert not reaches_output(("nor_conv_3x3", "none", "nor_conv_3x3", "none", "none", "none"))


# -- cnn / mlp family --------------------------------------------------------------------------
def test_cnn_reads_global_and_per_layer_positions() -> None:
    arch = {"depth": "3", "width": "8", "kernel": "3", "activation": "gelu", "layer2_kernel": "5x5", "layer2_width": "6"}
    model = build_model(BUILDERS["cnn"], arch, DataShape((3, 7, 7), 4), candidate="a")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 6, 8]
    assert [c.kernel_size for c in convs] == [(3, 3), (5, 5), (3, 3)]
    assert sum(isinstance(m, nn.GELU) for m in model.modules()) == 3
    forward_backward(model, DataShape((3, 7, 7), 4))


def test_family_defaults_come_from_options_and_aliases_are_read() -> None:
    model = BUILDERS["cnn"]({"layers": "2", "act": "silu"}, DIGITS, width=5)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [5, 5]
    assert sum(isinstance(m, nn.SiLU) for m in model.modules()) == 2
    forward_backward(model, DIGITS)


def test_mlp_on_flat_inputs() -> None:
    shape = DataShape((20,), 3)
    model = build_model(BUILDERS["mlp"], {"depth": "2", "hidden": "16", "norm": "ln", "dropout": "0.1",
                                          "activation": "tanh"}, shape, candidate="m")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(20, 16), (16, 16), (16, 3)]
    forward_backward(model, shape)
    assert count_flops(model, torch.zeros(1, 20)) == 20 * 16 + 16 * 16 + 16 * 3


def test_family_errors_are_clear() -> None:
    with pytest.raises(BuildError, match=r"candidate c1 failed: .*does not understand the position\(s\) 'blocks'.*depth, width, kernel"):
        build_model(BUILDERS["cnn"], {"depth": "2", "blocks": "3"}, DIGITS, candidate="c1")
    with pytest.raises(ConfigError, match="swishy.*use one of relu"):
        BUILDERS["cnn"]({"activation": "swishy"}, DIGITS)
    with pytest.raises(ConfigError, match="odd"):
        BUILDERS["cnn"]({"kernel": "4"}, DIGITS)
    with pytest.raises(ConfigError, match="mlp has no kernel"):
        BUILDERS["mlp"]({"kernel": "3"}, DataShape((10,), 2))
    with pytest.raises(ConfigError, match="use --model mlp"):
        BUILDERS["cnn"]({"depth": "2"}, DataShape((10,), 2))
    assert "layer<i>_width" in UNDERSTOOD
    assert looks_like_family(["depth", "Width", "layer3_activation"]) and not looks_like_family(["edge1<-0"])


# -- resolving builders: registry names and the user's own -------------------------------------
@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of user builders, good and broken, importable as `userbuilders`."""
    (tmp_path / "userbuilders.py").write_text(textwrap.dedent("""
        from torch import nn

        def good(arch, shape, hidden=8):
            width = int(arch.get("width", hidden))
            return nn.Sequential(nn.Flatten(), nn.Linear(shape.input[0] * shape.input[1] * shape.input[2], width),
                                 nn.ReLU(), nn.Linear(width, shape.num_classes))

        def no_shape(arch):
            return nn.Linear(2, 2)

        def raises(arch, shape, **options):
            raise RuntimeError("CUDA out of memory while building\\nsecond line")

        def not_a_module(arch, shape, **options):
            return "a string"

        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "userbuilders"
    sys.modules.pop("userbuilders", None)


def test_a_user_builder_is_imported_and_used(user_module: str) -> None:
    fn = resolve_builder(f"{user_module}:good", {"hidden": 4})
    model = build_model(fn, {"width": "6"}, DIGITS, {"hidden": 4}, candidate="u1")
    forward_backward(model, DIGITS)
    assert count_params(model) == 64 * 6 + 6 + 6 * 10 + 10


def test_broken_user_builders_get_clear_errors(user_module: str) -> None:
    with pytest.raises(ConfigError, match=r"no_shape.*cannot take \(arch, shape\)"):
        resolve_builder(f"{user_module}:no_shape")
    with pytest.raises(ConfigError, match=r"cannot take \(arch, shape\) and the options depth"):
        resolve_builder(f"{user_module}:good", {"depth": 3})
    with pytest.raises(ConfigError, match="has no attribute 'missing'"):
        resolve_builder(f"{user_module}:missing")
    with pytest.raises(ConfigError, match="not a function"):
        resolve_builder(f"{user_module}:NOT_CALLABLE")
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        resolve_builder("no_such_module_xyz:build")
    with pytest.raises(ConfigError, match="unknown model 'resnet'.*nb201, darts, cnn, mlp"):
        resolve_builder("resnet")
    raising = resolve_builder(f"{user_module}:raises")
    with pytest.raises(BuildError, match=r"^building candidate 0123 failed: RuntimeError: CUDA out of memory while building$") as info:
        build_model(raising, {}, DIGITS, candidate="0123")
    assert info.value.candidate == "0123" and isinstance(info.value, ArchloreError)
    with pytest.raises(BuildError, match="candidate 0124 returned a str, not a torch.nn.Module"):
        build_model(resolve_builder(f"{user_module}:not_a_module"), {}, DIGITS, candidate="0124")


def test_a_builder_module_in_the_current_directory_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "cwdbuilder.py").write_text("from torch import nn\ndef build(arch, shape):\n    return nn.Identity()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert isinstance(build_model(resolve_builder("cwdbuilder:build"), {}, DIGITS, candidate="x"), nn.Identity)
    finally:
        sys.modules.pop("cwdbuilder", None)


# -- default builder per space, and the space file's model: entry -------------------------------
def test_default_builder(tmp_path: Path) -> None:
    assert default_builder(NB201) == "nb201" and default_builder(TNB101Space()) == "nb201"
    assert default_builder(DartsSpace()) == "darts"
    family = SearchSpace("fam", [Position("depth", ("2", "4")), Position("activation", ("relu", "gelu"))])
    assert default_builder(family) == "cnn" == default_builder(family, DIGITS)
    assert default_builder(family, DataShape((30,), 2)) == "mlp"
    other = SearchSpace("other", [Position("optimizer", ("sgd", "adam"))])
    with pytest.raises(ConfigError, match="pass --model"):
        default_builder(other)
    f = tmp_path / "s.yaml"
    f.write_text("positions: {optimizer: [sgd, adam]}\nmodel: {builder: 'mypkg.nets:build', options: {width: 64}}\n")
    space = load_space_file(f)
    assert space.model == {"builder": "mypkg.nets:build", "options": {"width": 64}}
    assert default_builder(space) == "mypkg.nets:build"
    f.write_text("positions: {depth: ['1', '2']}\nmodel: mlp\n")
    assert load_space_file(f).model == {"builder": "mlp", "options": {}}
    f.write_text("positions: {depth: ['1', '2']}\nmodel: {builder: mlp, width: 3}\n")
    with pytest.raises(ConfigError, match="'model' must be"):
        load_space_file(f)
    f.write_text("positions: {depth: ['1', '2']}\n")
    assert load_space_file(f).model is None


def test_count_flops_counts_convs_and_linears() -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    expected = 4 * 8 * 8 * (9 * 2) + 4 * 8 * 8 * (9 * 2) + 4 * 3
    model.train()
    assert count_flops(model, torch.zeros(5, 2, 8, 8)) == expected
    assert model.training  # restored
    assert count_params(model) == (2 * 4 * 9 + 4) + (2 * 4 * 9 + 4) + (4 * 3 + 3)


def test_preflight_catches_a_builder_that_cannot_serve_the_space(user_module: str) -> None:
    family = SearchSpace("fam", [Position("depth", ("1", "2")), Position("layer2_activation", ("relu", "swishy"))])
    with pytest.raises(ConfigError, match="swishy"):  # only some candidates would meet it
        preflight("cnn", family, DIGITS)
    renamed = SearchSpace("fam", [Position("blocks", ("1", "2"))])
    with pytest.raises(ConfigError, match="does not understand the position"):
        preflight("cnn", renamed, DIGITS)
    with pytest.raises(ConfigError, match=r"model 'userbuilders:raises' cannot build space 'fam': building candidate 0 failed"):
        preflight(f"{user_module}:raises", renamed, DIGITS)
    good = SearchSpace("fam", [Position("depth", ("1", "2")), Position("layer2_width", ("4", "8"))])
    assert preflight("cnn", good, DIGITS, {"width": 4}) is BUILDERS["cnn"]
    assert preflight("nb201", NB201, DIGITS, {"channels": 2, "cells_per_stage": 1}) is BUILDERS["nb201"]


def test_depth_follows_the_per_layer_positions_when_no_depth_is_given() -> None:
    model = BUILDERS["cnn"]({"layer1_width": "4", "layer4_width": "6"}, DIGITS, width=5)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 5, 5, 6]
    shallow = BUILDERS["cnn"]({"depth": "2", "layer4_width": "6"}, DIGITS, width=5)  # layer 4 is not built
    assert [c.out_channels for c in shallow.modules() if isinstance(c, nn.Conv2d)] == [5, 5]
    assert len([m for m in BUILDERS["mlp"]({}, DataShape((6,), 2)).modules() if isinstance(m, nn.Linear)]) == 3
