"""``benchmarks/sbn_estimators.py --smoke``: the DisARM-protocol benchmark runs end to end and
writes only under ``--out``."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "sbn_estimators.py"
DATA = ROOT / ".." / "shared" / "data" / "binarized_mnist.npz"


@pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data/binarized_mnist.npz")
def test_sbn_estimators_smoke(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out),
                    "--estimators", "score-avg-2,score-loo-2,vimco-2,arm,disarm,gumbel-st-2"],
                   check=True, cwd=tmp_path, env=env, capture_output=True, timeout=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["curves.csv", "encoder_variance.png",
                                                     "summary.csv", "summary.md", "train_elbo.png"]
    with open(out / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["estimator"] for r in rows] == ["score-avg-2", "score-loo-2", "vimco-2", "arm",
                                              "disarm", "gumbel-st-2"]
    for r in rows:
        assert -400 < float(r["train_elbo"]) < 0 and -400 < float(r["test_L10"]) < 0
        assert float(r["encoder_variance"]) > 0
    with open(out / "curves.csv") as f:
        start = {r["estimator"]: float(r["encoder_variance"]) for r in csv.DictReader(f)
                 if r["step"] == "0"}
    # the same initial weights for every estimator: the antithetic pair and the leave-one-out
    # baseline have lower encoder-gradient variance than REINFORCE with a decaying average of
    # two particles (which starts at zero), and DisARM lower than ARM (Dong et al. 2020, Thm. 1)
    assert start["disarm"] < start["arm"] < start["score-avg-2"]
    assert start["score-loo-2"] < start["score-avg-2"]
