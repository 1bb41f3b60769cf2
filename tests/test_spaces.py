import csv
import json

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


# -- user space files: what a hand-written file gets wrong ------------------------------------
def _space_file(tmp_path, text, suffix=".yaml"):
    f = tmp_path / f"space{suffix}"
    f.write_text(text)
    return f


def test_yaml_duplicate_key_names_the_key_and_line(tmp_path):
    f = _space_file(tmp_path, "name: mini\npositions:\n  depth: [2, 4, 8]\n  act: [relu, gelu]\n  depth: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"repeats the key 'depth' at line 5 \(first at line 3\)"):
        load_space_file(f)
    f = _space_file(tmp_path, "name: a\nname: b\npositions: {x: [1, 2]}\n")
    with pytest.raises(ConfigError, match="'name' at line 2"):
        load_space_file(f)
    f = _space_file(tmp_path, "positions:\n  - {name: x, choices: [1, 2], name: y}\n")
    with pytest.raises(ConfigError, match="'name' at line 2"):
        load_space_file(f)
    # a merge key may be overridden on purpose: that is not a repeat
    f = _space_file(tmp_path, "base: &b {x: [1, 2]}\npositions:\n  <<: *b\n  x: [3, 4]\n")
    with pytest.raises(ConfigError, match="unknown key"):  # 'base' is not a space key, but no repeat error
        load_space_file(f)


def test_json_duplicate_key_names_the_key_and_line(tmp_path):
    f = _space_file(tmp_path, '{"name": "m",\n "positions": {\n  "depth": [2, 4],\n  "act": ["relu"],\n  "depth": [8]}}',
                    ".json")
    with pytest.raises(ConfigError, match=r"repeats the key 'depth' at line 5 \(first at line 3\)"):
        load_space_file(f)


@pytest.mark.parametrize("text, needle", [
    ("positions: {act: relu}\n", "must be a non-empty list"),
    ("positions: {act: []}\n", "must be a non-empty list"),
    ("positions: {act: [relu, relu]}\n", "repeats the choice"),
    ("positions: {act: [relu, [gelu]]}\n", "plain name"),
    ("positions: {act: [relu, ~]}\n", "plain name"),
    ("positions: {act: [yes, no]}\n", "quote it"),
    ("positions: {act: [relu, '']}\n", "empty"),
    ("positions: {act: [relu, " + "g" * 41 + "]}\n", "at most 40"),
    ("positions: {act: [" + ", ".join(f"c{i}" for i in range(37)) + "]}\n", "at most 36"),
    ("positions: []\n", "non-empty"),
    ("positions: 3\n", "non-empty list"),
    ("positions: [{name: a}]\n", "'name' and a list of 'choices'"),
    ("positions: {1: [a, b], '1': [c, d]}\n", "repeats the position name"),
    ("postions: {a: [1]}\n", "'positions'"),
    ("positions: {a: [1]}\nextra: 1\n", "unknown key"),
    ("positions: {a: [1, 2]\n", "not valid YAML"),
    ("- 1\n- 2\n", "'positions'"),
    ("", "'positions'"),
])
def test_bad_space_files_give_one_line_config_errors(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=needle) as info:
        load_space_file(_space_file(tmp_path, text))
    assert "\n" not in str(info.value)


def test_space_file_that_is_not_utf8_or_is_a_directory(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_bytes(b"positions: {a: [\xff\xfe]}\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_space_file(f)
    d = tmp_path / "d.yaml"
    d.mkdir()
    with pytest.raises(ConfigError, match="directory"):
        load_space_file(d)


def test_numeric_choice_names_are_names_not_ids(tmp_path):
    space = load_space_file(_space_file(tmp_path, "positions: {depth: [2, 4, 8], act: [relu, gelu]}\n"))
    depth = space.positions[0]
    assert depth.id_of("4") == 1 and depth.id_of("8") == 2 and depth.id_of(2) == 2  # an int stays an id
    with pytest.raises(SpaceError, match="unknown choice '1'"):
        depth.id_of("1")
    assert NB201Space().positions[0].id_of("3") == 3  # no numeric names: a digit string is an id
    flt = SpaceFilter.from_choices(space, [["4", "8"], ["gelu"]])
    assert flt.allowed == ((1, 2), (1,))


def test_parse_accepts_every_documented_form(tmp_path):
    space = load_space_file(_space_file(tmp_path, "positions: {depth: [2, 4, 8], act: [relu, gelu]}\n"))
    for text in ("21", " 21 ", "8-gelu", '["8", "gelu"]', "[8, \"gelu\"]"):
        assert space.parse(text) == (2, 1), text
    nb = NB201Space()
    arch = (3, 0, 1, 2, 4, 3)
    for text in (nb.to_string(arch), "301243", "-".join(nb.describe(arch).values()), json.dumps(list(nb.describe(arch).values()))):
        assert nb.parse(text) == arch, text
    tnb = TNB101Space()
    assert tnb.parse("64-41414-3_13_221") == tnb.parse("313221") == (3, 1, 3, 2, 2, 1)


def test_parse_names_with_dashes(tmp_path):
    space = load_space_file(_space_file(tmp_path, "positions: {op: [conv-3x3, conv, pool], act: [relu, leaky-relu]}\n"))
    assert space.parse("conv-3x3-leaky-relu") == (0, 1)
    assert space.parse("conv-relu") == (1, 0)
    amb = load_space_file(_space_file(tmp_path, "positions: {a: [x, x-y], b: [y-z, z]}\n"))
    with pytest.raises(SpaceError, match="more than one way"):
        amb.parse("x-y-z")


@pytest.mark.parametrize("text, needle", [
    ("312", "lost its leading zero"),
    ("312.0", "lost its leading zero"),
    ("3120000", "7 digits"),
    ("31!000", "invalid character"),
    ("31x000", "choice id 33 is out of range"),
    ("none-none-none-none-none-conv", "unknown choice 'conv'"),
    ('["none"]', "needs 6"),
    ("[1, 2", "not valid JSON"),
    ("", "empty"),
    ("|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op"),
])
def test_parse_errors_say_what_is_wrong(text, needle):
    with pytest.raises(SpaceError, match=needle):
        NB201Space().parse(text)


def test_single_position_digit_or_name_is_refused_when_ambiguous(tmp_path):
    space = load_space_file(_space_file(tmp_path, "positions: {depth: [2, 4, 8]}\n"))
    with pytest.raises(SpaceError, match="ambiguous"):
        space.parse("2")  # id 2 is '8', and there is a choice named '2'
    assert space.parse('["2"]') == (0,) and space.parse("4") == (1,) and space.parse("0") == (0,)
