"""The benchmarks' smoke modes (seconds each)."""

from __future__ import annotations

import json

import pytest


def _benchmark(name):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_paper_table_smoke_writes_table_csv_and_plot_and_resumes(tmp_path):
    import pandas as pd

    bench, doc = _benchmark("paper_table"), tmp_path / "table.md"
    argv = ["--smoke", "--rows", "vae-1l,iwae-5-2l", "--out", str(tmp_path / "out"), "--doc",
            str(doc), "--no-progress"]
    assert bench.main(argv) == 0
    df = pd.read_csv(tmp_path / "out" / "paper_table.csv")
    assert df.row.tolist() == ["vae-1l", "iwae-5-2l"] and (df.epochs == 2).all()
    assert (df.test_nll > 0).all() and (df.test_points == 50).all()
    assert df.active_units.iloc[1].startswith("z1 ") and "z2 " in df.active_units.iloc[1]
    assert (tmp_path / "out" / "nll_vs_epoch.png").stat().st_size > 1000
    text = doc.read_text()
    assert "88.71 (Burda k=1)" in text and "| iwae-5-2l |" in text
    assert "](figures/table_nll_vs_epoch.png)" in text and "--smoke --rows" in text
    assert (tmp_path / "figures" / "table_nll_vs_epoch.png").stat().st_size > 1000
    stamp = (tmp_path / "out" / "vae-1l" / "checkpoint.pt").stat().st_mtime_ns
    cache = tmp_path / "out" / "vae-1l" / "paper_row.json"
    cached = json.loads(cache.read_text())
    assert cached["row"]["test_nll"] == pytest.approx(float(df.test_nll.iloc[0]))
    cached["row"]["test_nll"] = 12.5  # a cached row is read back, not recomputed
    cache.write_text(json.dumps(cached))
    assert bench.main(argv) == 0  # finished rows are not retrained
    assert (tmp_path / "out" / "vae-1l" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert pd.read_csv(tmp_path / "out" / "paper_table.csv").test_nll.iloc[0] == 12.5
    assert bench.main(argv + ["--seed", "1"]) == 0  # other settings: evaluated again
    assert bench.main(argv + ["--row-k", "iwae-5-2l=7", "--eval-only"]) == 0
    assert pd.read_csv(tmp_path / "out" / "paper_table.csv").k.tolist() == [20, 7]
    with pytest.raises(SystemExit, match="no .*dreg-5-1l.*checkpoint.pt to evaluate"):
        bench.main(argv[:2] + ["dreg-5-1l"] + argv[3:] + ["--eval-only"])
    assert pd.read_csv(tmp_path / "out" / "paper_table.csv").test_nll.iloc[0] != 12.5


def test_kingma_welling_smoke_writes_both_figures(tmp_path):
    import pandas as pd

    bench = _benchmark("kingma_welling")
    assert bench.main(["--smoke", "--latent-dims", "2", "--train-sizes", "100",
                       "--out", str(tmp_path)]) == 0
    fig2, fig3 = pd.read_csv(tmp_path / "figure2.csv"), pd.read_csv(tmp_path / "figure3.csv")
    assert set(fig2.method) == {"AEVB", "wake-sleep"} and len(fig2) == 4
    assert set(fig3.method) == {"AEVB", "wake-sleep", "MCEM"} and len(fig3) == 6
    assert fig3.test_log_px.notna().all() and fig2.test_elbo.notna().all()
    assert (fig3.points_seen == fig3.epoch * 100).all()
    for png in ("figure2.png", "figure3.png"):
        assert (tmp_path / png).stat().st_size > 1000
