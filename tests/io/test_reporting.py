"""The CSV rows commands append (no pandas on the way: ``ppl-vae evaluate`` starts faster)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ppl_vae.errors import ConfigError
from ppl_vae.io.reporting import append_csv, check_same_run


def test_append_csv_unites_columns_keeps_integers_and_old_cells(tmp_path):
    path = tmp_path / "rows.csv"
    append_csv(path, {"b": 1.5, "n": 10, "name": "a,b", "x": math.nan, "flag": True},
               columns=("n", "b"), integers=("n", "k"))
    append_csv(path, {"n": 20.0, "b": 0.1, "k": 3.0, "extra": None}, columns=("n", "b"),
               integers=("n", "k"))
    lines = path.read_text().splitlines()
    assert lines == ["n,b,name,x,flag,k,extra", '10,1.5,"a,b",,True,,', "20,0.1,,,,3,"]
    frame = pd.read_csv(path)
    assert frame["n"].tolist() == [10, 20] and frame["name"].tolist()[0] == "a,b"
    assert frame["b"].tolist() == [1.5, 0.1]  # repr: floats round-trip exactly


def test_check_same_run(tmp_path):
    path = tmp_path / "rows.csv"
    check_same_run(path, "r1")  # no file: nothing to check
    append_csv(path, {"run_id": "r1", "v": 1})
    check_same_run(path, "r1")
    check_same_run(path, None)
    with pytest.raises(ConfigError, match="another run"):
        check_same_run(path, "r2")
