import numpy as np
import pytest

from archlore.tools.errors import DataError
from archlore.tools.tables import load_lapt_json, load_nb201, load_tnb101, load_user_csv

from .conftest import needs_data


@needs_data
def test_nb201_facts(data_dir):
    t = load_nb201(str(data_dir))
    best_test = {k: np.nanmax(v) for k, v in t.test.items()}
    best_valid = {k: np.nanmax(v) for k, v in t.valid.items()}
    assert best_test == pytest.approx({"cifar10": 94.3733, "cifar100": 73.5133, "imagenet16-120": 47.3111})
    assert best_valid == pytest.approx({"cifar10": 91.6067, "cifar100": 73.4933, "imagenet16-120": 46.7333})
    assert not np.isnan(t.valid["cifar10"]).any()
    # the cell chosen by best validation on ImageNet16-120 scores 46.20 test
    i = t.ranked("imagenet16-120")[0]
    assert t.test["imagenet16-120"][i] == pytest.approx(46.20, abs=0.01)


@needs_data
def test_lapt_json_agrees_with_csv(data_dir):
    a, b = load_nb201(str(data_dir)), load_lapt_json(str(data_dir))
    for task in a.tasks:
        assert np.nanmax(b.test[task]) == pytest.approx(np.nanmax(a.test[task]), abs=0.01)


@needs_data
def test_tnb101_loads_all_cells(data_dir):
    t = load_tnb101(str(data_dir))
    assert len(t.tasks) == 7
    assert all((~np.isnan(v)).sum() == 4096 for v in t.valid.values())


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="--data"):
        load_nb201(str(tmp_path / "nowhere"))


def test_user_csv(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("arch,acc,acc_test\n|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|,90,89\n310000,50,\n")
    t = load_user_csv(f, "nb201")
    assert t.tasks == ("acc",)
    assert np.nanmax(t.valid["acc"]) == 90 and (~np.isnan(t.valid["acc"])).sum() == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("name,acc\nx,1\n")
    with pytest.raises(DataError, match="no 'arch' column"):
        load_user_csv(bad, "nb201")
    bad.write_text("arch,acc\n|conv9~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n")
    with pytest.raises(DataError, match="line 2"):
        load_user_csv(bad, "nb201")


# -- user tables: what a hand-made CSV gets wrong ---------------------------------------------
SPACE_YAML = "positions: {depth: [2, 4, 8], act: [relu, gelu]}\n"


@pytest.fixture
def mini(tmp_path):
    from archlore.tools.spaces import load_space_file

    f = tmp_path / "mini.yaml"
    f.write_text(SPACE_YAML)
    return load_space_file(f)


def _csv(tmp_path, text, name="t.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


@pytest.mark.parametrize("text, needle", [
    ("", "is empty"),
    ("\n\n", "is empty"),
    ("arch,acc\n", "header but no rows"),
    ("arch,acc\n\n", "header but no rows"),
    ("name,acc\n21,1\n", "no 'arch' column"),
    ("arch\n21\n", "lacks metric column"),
    ("arch,acc,acc\n21,1,2\n", "repeats the column"),
    ("arch,acc\n21,1\n21,2\n", "line 3 repeats the architecture of line 2"),
    ("arch,acc\n21,1\n8-gelu,2\n", "line 3 repeats the architecture of line 2"),
    ("arch,acc\n21,fast\n", "line 2, column 'acc': 'fast' is not a number"),
    ("arch,acc\n21,inf\n", "not a finite number"),
    ("arch,acc\n21\n", "line 2 has 1 fields but the header has 2"),
    ("arch,acc\n21,1,5\n", "line 2 has 3 fields"),
    ("arch,acc\n21,\n", "hold no numbers"),
    ("arch,acc\n2,1\n", "lost its leading zero"),
    ("arch,acc\n9-gelu,1\n", "unknown choice '9' at position 'depth'"),
    ("arch,acc,\n21,1,x\n", "column 3 has values but no name"),
])
def test_bad_user_tables_fail_at_load_with_one_line(tmp_path, mini, text, needle):
    with pytest.raises(DataError, match=needle) as info:
        load_user_csv(_csv(tmp_path, text), mini)
    assert "\n" not in str(info.value)
    assert "--encoding-column" not in str(info.value)  # no such flag


def test_user_table_accepts_every_documented_arch_form(tmp_path, mini):
    f = _csv(tmp_path, 'arch,acc,acc_test\n00,1,1.5\n4-relu,2,\n"[""8"", ""relu""]",3,3.5\n01,NaN,\n,,\n')
    t = load_user_csv(f, mini)
    assert t.tasks == ("acc",)
    assert list(t.known("acc")) == [0, 2, 4] and t.n_known("acc") == 3
    assert t.valid["acc"][[0, 2, 4]].tolist() == [1, 2, 3]
    assert np.isnan(t.test["acc"][2]) and t.test["acc"][4] == 3.5
    assert t.is_known("acc", 0) and not t.is_known("acc", 1)


def test_user_table_bom_trailing_commas_and_spaces(tmp_path, mini):
    f = tmp_path / "t.csv"
    f.write_bytes("\ufeffarch , acc ,\r\n21,1,\r\n00,2,\r\n".encode())
    t = load_user_csv(f, mini)
    assert t.tasks == ("acc",) and t.n_known("acc") == 2


def test_user_table_not_utf8(tmp_path, mini):
    f = tmp_path / "t.csv"
    f.write_bytes(b"arch,acc\n21,\xff\n")
    with pytest.raises(DataError, match="UTF-8"):
        load_user_csv(f, mini)
    with pytest.raises(DataError, match="is a directory"):
        load_user_csv(tmp_path, mini)


def test_partial_table_executor_raises_unknown_cell(tmp_path, mini):
    from archlore.tools.errors import UnknownCell
    from archlore.tools.executors import TabularExecutor

    t = load_user_csv(_csv(tmp_path, "arch,acc\n21,0.9\n00,0.5\n"), mini)
    ex = TabularExecutor(t, "acc")
    assert ex.evaluate((2, 1)).valid == 0.9
    assert sorted(ex.known().tolist()) == [0, 5]
    with pytest.raises(UnknownCell, match="2 of 6 cells") as info:
        ex.evaluate((1, 1))
    assert isinstance(info.value, DataError) and info.value.arch == "11" and info.value.task == "acc"
    with pytest.raises(DataError, match="top 3"):
        t.threshold("acc", 3)


def _lapt_dir(tmp_path, entries_by_stem):
    import json

    d = tmp_path / "lapt"
    (d / "nb201" / "lapt_json").mkdir(parents=True)
    for stem in ("cifar10", "cifar100", "imagenet"):
        body = entries_by_stem.get(stem, '{"|none~0|+|none~0|none~1|+|none~0|none~1|none~2|": '
                                         '{"val_acc_200": 10.0, "test_acc_200": 11.0}}')
        (d / "nb201" / "lapt_json" / f"nasbench201_{stem}.json").write_text(
            body if isinstance(body, str) else json.dumps(body))
    load_lapt_json.cache_clear()
    return d


CELL = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


@pytest.mark.parametrize("body, needle", [
    ("[]", "must be a JSON object"),
    ("{}", "must be a JSON object"),
    ("{", "not valid JSON"),
    ({"garbage": {"val_acc_200": 1, "test_acc_200": 1}}, "entry 'garbage'"),
    ({CELL: {"val_acc_200": "x", "test_acc_200": 1}}, "val_acc_200: \"x\" is not a number"),
    ({CELL: {"val_acc_200": 1}}, "lacks val_acc_200/test_acc_200"),
    ({CELL: [1, 2]}, "lacks val_acc_200/test_acc_200"),
    ('{"%s": {"val_acc_200": 1, "test_acc_200": 2}, "%s": {"val_acc_200": 1, "test_acc_200": 2}}' % (CELL, CELL), "repeats the key"),
    ('{"%s": {"val_acc_200": NaN, "test_acc_200": 2}}' % CELL, "not a finite number"),
])
def test_bad_lapt_json_gives_one_line_data_error(tmp_path, body, needle):
    d = _lapt_dir(tmp_path, {"cifar100": body})
    with pytest.raises(DataError, match=needle) as info:
        load_lapt_json(str(d))
    assert "\n" not in str(info.value)


def test_lapt_json_partial_table_knows_its_cells(tmp_path):
    t = load_lapt_json(str(_lapt_dir(tmp_path, {})))
    assert t.n_known("cifar10") == 1 and list(t.known("cifar10")) == [0]


def test_lapt_json_huge_integer_is_not_a_finite_number(tmp_path):
    d = _lapt_dir(tmp_path, {"cifar100": '{"%s": {"val_acc_200": 1%s, "test_acc_200": 2}}' % (CELL, "0" * 400)})
    with pytest.raises(DataError, match="not a finite number"):
        load_lapt_json(str(d))
