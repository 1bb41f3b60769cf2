import csv

import numpy as np
import pytest

from archlore.tools.errors import ConfigError, FilterError, SpaceError, SpaceExhausted
from archlore.tools.spaces import (
    NB201Space, SearchSpace, Position, SpaceFilter, TNB101Space, get_space, load_space_file, sample_unseen,
)

from .conftest import DATA, needs_data


def test_nb201_round_trip_all_cells():
    space = NB201Space()
    seen = set()
    for arch in space.all_archs():
        key = space.to_string(arch)
        assert space.from_string(key) == arch
        assert space.from_digits(space.to_digits(arch)) == arch
        assert space.from_index(space.index(arch)) == arch
        assert space.from_naslib(space.to_naslib(arch)) == arch
        seen.add(key)
    assert len(seen) == space.size() == 15625


@needs_data
def test_naslib_conversion_matches_published_index():
    space = NB201Space()
    with open(DATA / "nb201" / "nb201_arch_index.csv") as fh:
        for row in csv.DictReader(fh):
            arch = space.from_string(row["arch_str"])
            assert space.to_digits(arch) == row["op_code"]
            naslib = tuple(int(x) for x in row["naslib_tuple"].strip("()").split(","))
            assert space.from_naslib(naslib) == arch
            assert space.to_naslib(arch) == naslib


def test_tnb101_round_trip():
    space = TNB101Space()
    assert space.to_string((3, 1, 3, 2, 2, 1)) == "64-41414-3_13_221"
    for arch in space.all_archs():
        assert space.from_string(space.to_string(arch)) == arch
    assert space.size() == 4096


@pytest.mark.parametrize(
    "bad",
    [
        "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~0|+|none~0|none~1|+|none~0|none~1|",
        "|none~0|+|none~0|none~1|none~1|+|none~0|none~1|none~2|",
        "garbage",
    ],
)
def test_nb201_bad_strings_name_the_problem(bad):
    with pytest.raises(SpaceError):
        NB201Space().from_string(bad)


def test_unknown_op_message_lists_choices():
    with pytest.raises(SpaceError, match="nor_conv_3x3"):
        NB201Space().from_string("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|")


def test_filter_validation():
    space = NB201Space()
    with pytest.raises(FilterError, match="empty"):
        SpaceFilter(((0,), (), (1,), (1,), (1,), (1,))).check(space)
    with pytest.raises(FilterError, match="out of range"):
        SpaceFilter(((0, 7),) + ((1,),) * 5).check(space)
    with pytest.raises(FilterError, match="unknown choice"):
        SpaceFilter.from_choices(space, [["conv_5x5"]] + [["none"]] * 5)
    flt = SpaceFilter.from_choices(space, [["nor_conv_3x3", "skip_connect"]] * 6)
    assert flt.size() == 64


def test_filter_sampling_and_mutation_stay_inside():
    space = NB201Space()
    flt = SpaceFilter.from_choices(space, [["nor_conv_3x3", "skip_connect"], ["none"], [2, 3, 4], [0, 1], [3], [1, 4]])
    rng = np.random.default_rng(0)
    for _ in range(500):
        a = space.sample(rng, flt)
        assert flt.contains(a)
        m = space.mutate(a, rng, flt)
        assert flt.contains(m) and m != a
        assert all(flt.contains(n) for n in space.neighbours(a, flt))


def test_sampling_terminates_on_exhaustion():
    space = NB201Space()
    flt = SpaceFilter.from_choices(space, [[3, 1]] + [[3]] * 5)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(2):
        seen.add(sample_unseen(space, rng, seen, flt))
    assert seen == set(flt.members())
    with pytest.raises(SpaceExhausted):
        sample_unseen(space, rng, seen, flt)


def test_user_space_from_yaml(tmp_path):
    f = tmp_path / "space.yaml"
    f.write_text("name: mini\npositions:\n  depth: [2, 4, 8]\n  act: [relu, gelu]\n")
    space = load_space_file(f)
    assert space.size() == 6 and space.to_string((2, 1)) == "21"
    assert get_space(str(f)).positions == space.positions
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    with pytest.raises(ConfigError, match="positions"):
        load_space_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_space_file(tmp_path / "missing.yaml")


def test_space_rejects_empty_position():
    with pytest.raises(ConfigError):
        SearchSpace("x", [Position("a", ())])
