"""The DARTS space (genotype notation, digit strings, filters, no enumeration) and its network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from archlore.tools.builders import BUILDERS, BuildError, DataShape, build_model, count_params, default_builder
from archlore.tools.darts import DARTS_OPS, DARTS_V2, DartsSpace, Genotype, input_pairs, parse_genotype
from archlore.tools.errors import SpaceError
from archlore.tools.spaces import SpaceFilter, get_space, sample_unseen
from archlore.tools.strategies import GuidedREA

torch.set_num_threads(1)

SPACE = DartsSpace()
# As printed in darts/cnn/genotypes.py (Liu et al. 2019), and as its search code prints genotypes
DARTS_V2_TEXT = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, 5], "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])"
)
PC_DARTS_TEXT = """genotypes.Genotype(
    normal=[('sep_conv_3x3', 1), ('skip_connect', 0), ('sep_conv_3x3', 0), ('dil_conv_3x3', 1),
            ('sep_conv_5x5', 0), ('sep_conv_3x3', 1), ('avg_pool_3x3', 0), ('dil_conv_3x3', 1)],
    normal_concat=range(2, 6),
    reduce=[('sep_conv_5x5', 1), ('max_pool_3x3', 0), ('sep_conv_5x5', 1), ('sep_conv_5x5', 2),
            ('sep_conv_3x3', 0), ('sep_conv_3x3', 3), ('sep_conv_3x3', 1), ('sep_conv_3x3', 2)],
    reduce_concat=range(2, 6))"""


def node_sets(g: Genotype) -> list[set]:
    """A genotype's nodes as sets of edges: the order within a node carries no meaning."""
    return [set(getattr(g, c)[2 * k : 2 * k + 2]) for c in ("normal", "reduce") for k in range(4)]


# -- the space ---------------------------------------------------------------------------------
def test_positions_are_categorical_with_at_most_ten_choices() -> None:
    assert len(SPACE.positions) == 24
    assert SPACE.radix[:12] == (1, 8, 8, 3, 8, 8, 6, 8, 8, 10, 8, 8) == SPACE.radix[12:]
    assert SPACE.size() == (1 * 3 * 6 * 10 * 8**8) ** 2
    assert [p.name for p in SPACE.positions[:3]] == ["normal.n2.inputs", "normal.n2.op_a", "normal.n2.op_b"]
    assert SPACE.positions[9].choices == tuple(f"{a}+{b}" for a, b in input_pairs(5))
    assert input_pairs(4) == ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
    assert get_space("darts").size() == SPACE.size() and default_builder(get_space("DARTS")) == "darts"


def test_darts_v2_parses_and_round_trips() -> None:
    g = parse_genotype(DARTS_V2_TEXT)
    assert g == DARTS_V2
    arch = SPACE.from_genotype(g)
    back = SPACE.to_genotype(arch)
    assert node_sets(back) == node_sets(DARTS_V2)
    assert parse_genotype(str(back)) == back
    assert SPACE.from_string(DARTS_V2_TEXT) == arch == SPACE.parse(DARTS_V2_TEXT)
    assert SPACE.describe(arch)["normal.n5.inputs"] == "0+2"
    assert SPACE.describe(arch)["normal.n5.op_b"] == "dil_conv_3x3"
    assert SPACE.from_digits(SPACE.to_digits(arch)) == arch


def test_published_forms_parse_range_concat_and_positional_fields() -> None:
    g = parse_genotype(PC_DARTS_TEXT)
    assert g.normal_concat == (2, 3, 4, 5) and g.reduce[5] == ("sep_conv_3x3", 3)
    assert SPACE.to_genotype(SPACE.from_genotype(g)).reduce[4:6] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 3))
    positional = f"Genotype({list(DARTS_V2.normal)}, [2, 3, 4, 5], {list(DARTS_V2.reduce)}, range(2, 6))"
    assert parse_genotype(positional) == DARTS_V2


def test_random_architectures_round_trip_through_every_form() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        arch = SPACE.sample(rng)
        text = SPACE.to_string(arch)
        assert text.startswith("Genotype(normal=[(")
        assert SPACE.from_string(text) == arch
        assert SPACE.to_genotype(arch) == parse_genotype(text)
        digits = SPACE.to_digits(arch)
        assert len(digits) == 24 and digits.isdigit()
        assert SPACE.parse(digits) == arch
        names = list(SPACE.describe(arch).values())
        assert SPACE.from_name_list(names) == arch
        # DARTS prints a node's edges in any order: swapping them is the same architecture
        g = SPACE.to_genotype(arch)
        swapped = [e for k in range(4) for e in reversed(g.normal[2 * k : 2 * k + 2])]
        assert SPACE.from_genotype(Genotype(swapped, g.normal_concat, g.reduce, g.reduce_concat)) == arch


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 0)"), "node 5 of the normal cell takes input 0 twice"),
        (DARTS_V2_TEXT.replace("('dil_conv_3x3', 2)", "('dil_conv_3x3', 5)"), "node 5 of the normal cell takes input 5"),
        (DARTS_V2_TEXT.replace("dil_conv_3x3", "conv_7x1_1x7"), "unknown op 'conv_7x1_1x7'"),
        (DARTS_V2_TEXT.replace("normal_concat=[2, 3, 4, 5]", "normal_concat=[3, 4, 6]"), "concatenates nodes"),
        (DARTS_V2_TEXT.replace("normal=[", "normal=[('sep_conv_3x3', 0), ", 1), "has 9 edges"),
        (DARTS_V2_TEXT.replace("normal=[", "normal=__import__('os').system('touch /tmp/x') or ["), "not a literal list"),
        (DARTS_V2_TEXT.replace("reduce_concat", "reduction_concat"), "unknown genotype field"),
        ("Genome(normal=[])", "is not a DARTS genotype"),
        ("Genotype(normal=[", "is not a DARTS genotype"),
        ("[" * 5000, "is not a DARTS genotype"),
    ],
)
def test_bad_genotypes_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SPACE.from_string(text)


def test_the_space_is_never_enumerated() -> None:
    with pytest.raises(SpaceError, match="cannot be enumerated"):
        SPACE.all_archs()
    rng = np.random.default_rng(1)
    arch = SPACE.sample(rng)
    assert len(SPACE.neighbours(arch)) == sum(n - 1 for n in SPACE.radix)
    assert SPACE.mutate(arch, rng) != arch
    seen = {SPACE.sample(rng) for _ in range(50)}
    assert sample_unseen(SPACE, rng, seen) not in seen
    assert SPACE.from_index(SPACE.index(arch)) == arch
    guided = GuidedREA(tuple(tuple(0.0 for _ in p.choices) for p in SPACE.positions))
    assert guided.propose(SPACE, [], SPACE.full_filter(), rng) is not None


def test_sampling_mutation_and_neighbours_stay_inside_an_op_filter() -> None:
    flt = SPACE.op_filter(["skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"])
    same = SpaceFilter.from_choices(SPACE, [
        p.choices if p.name.endswith("inputs") else [c for c in p.choices if c != "none" and "pool" not in c]
        for p in SPACE.positions
    ])
    assert flt == same and flt.size() == (180 * 5**8) ** 2
    rng = np.random.default_rng(2)
    for _ in range(200):
        arch = SPACE.sample(rng, flt)
        assert flt.contains(arch)
        ops = {op for cell in ("normal", "reduce") for op, _ in getattr(SPACE.to_genotype(arch), cell)}
        assert not ops & {"none", "max_pool_3x3", "avg_pool_3x3"}
        assert flt.contains(SPACE.mutate(arch, rng, flt))
    assert all(flt.contains(n) for n in SPACE.neighbours(arch, flt))
    pools_in_reduce = SPACE.op_filter(["max_pool_3x3", "avg_pool_3x3"], cells=["reduce"])
    assert {DARTS_OPS[c] for c in pools_in_reduce.allowed[13]} == {"max_pool_3x3", "avg_pool_3x3"}
    assert len(pools_in_reduce.allowed[1]) == 8  # the normal cell is untouched
    with pytest.raises(SpaceError, match="unknown op"):
        SPACE.op_filter(["conv_3x3"])


def test_a_filter_over_inputs_keeps_node_inputs() -> None:
    """Node 5 of the normal cell may only read intermediate nodes (never the cell's inputs)."""
    choices = [list(p.choices) for p in SPACE.positions]
    j = [p.name for p in SPACE.positions].index("normal.n5.inputs")
    choices[j] = ["2+3", "2+4", "3+4"]
    flt = SpaceFilter.from_choices(SPACE, choices)
    rng = np.random.default_rng(3)
    for _ in range(100):
        g = SPACE.to_genotype(SPACE.sample(rng, flt))
        assert {i for _, i in g.normal[6:8]} <= {2, 3, 4}


# -- the network -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [DataShape((3, 16, 16), 10), DataShape((1, 8, 8), 4), DataShape((3, 9, 11), 3)])
def test_network_forward_backward_with_auxiliary_head_and_drop_path(shape: DataShape) -> None:
    arch = SPACE.describe(SPACE.from_genotype(DARTS_V2))
    model = build_model(BUILDERS["darts"], arch, shape, {"channels": 4, "layers": 5, "auxiliary": True}, candidate="v2")
    assert model.drop_path_prob == 0.0
    model.drop_path_prob = 0.2
    torch.manual_seed(0)
    x, y = torch.randn(3, *shape.input), torch.randint(0, shape.num_classes, (3,))
    model.train()
    logits, aux = model(x)
    assert logits.shape == aux.shape == (3, shape.num_classes)
    loss = nn.functional.cross_entropy(logits, y) + 0.4 * nn.functional.cross_entropy(aux, y)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (3, shape.num_classes)


def test_random_cells_build_including_none_everywhere() -> None:
    rng = np.random.default_rng(4)
    shape = DataShape((3, 8, 8), 5)
    archs = [SPACE.sample(rng) for _ in range(4)] + [(0,) * 24]
    for arch in archs:
        model = BUILDERS["darts"](SPACE.describe(arch), shape, channels=4, layers=3)
        model.train()
        out = model(torch.randn(2, *shape.input))
        assert isinstance(out, torch.Tensor) and out.shape == (2, 5)  # no auxiliary head: plain logits
        out.sum().backward()


def test_darts_v2_has_the_published_parameter_count() -> None:
    """DARTS's CIFAR-10 log reports 'param size = 3.349342MB' for DARTS_V2 (36 channels, 20
    cells; the auxiliary head excluded)."""
    arch = SPACE.describe(SPACE.from_genotype(DARTS_V2))
    model = BUILDERS["darts"](arch, DataShape((3, 32, 32), 10), auxiliary=True)
    main = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("auxiliary_head"))
    assert main == 3_349_342
    assert count_params(model) > main
    assert sum(m.reduction for m in model.cells) == 2 and model.cells[6].reduction and model.cells[13].reduction


def test_builder_names_a_wrong_architecture() -> None:
    arch = SPACE.describe(SPACE.from_genotype(DARTS_V2))
    del arch["reduce.n5.op_b"]
    with pytest.raises(BuildError, match="candidate c9 failed: ConfigError: .*lacks reduce.n5.op_b"):
        build_model(BUILDERS["darts"], arch, DataShape((3, 8, 8), 2), {"channels": 4, "layers": 3}, candidate="c9")
    with pytest.raises(BuildError, match="image inputs"):
        build_model(BUILDERS["darts"], SPACE.describe((0,) * 24), DataShape((8,), 2), candidate="c10")
