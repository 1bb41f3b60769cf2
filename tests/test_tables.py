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
    with pytest.raises(DataError, match="encoding column"):
        load_user_csv(bad, "nb201")
    bad.write_text("arch,acc\n|conv9~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n")
    with pytest.raises(DataError, match="line 2"):
        load_user_csv(bad, "nb201")
