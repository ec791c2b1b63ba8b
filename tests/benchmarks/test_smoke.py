"""The benchmarks' smoke modes (seconds each), the shared helpers and the hand-written references:
every run writes under its ``--out`` (a temporary folder) and leaves ``git status`` as it was."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from benchmark_modules import bench

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"



def _status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture
def unchanged_repo():
    """Asserts that the test leaves ``git status`` of the repository as it found it."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    before = _status()
    yield
    assert _status() == before, "a benchmark wrote into the repository"


def _tiny_run(out: Path, **config) -> Path:
    from ppl_vae import train

    train({"data": "digits", "latent_dims": (3,), "hidden": (16,), "batch_size": 50,
           "epochs": 1, **config}, out=out, progress=False)
    return out


# -- the shared helpers ------------------------------------------------------------------------
def test_common_parser_interleave_ratio_rows_and_markdown(tmp_path):
    common = bench("_common")
    args = common.parser("Title.\n\nMore.", out=common.default_out("x"), threads=True,
                         seed=True, smoke="quick").parse_args(["--quick"])
    assert args.smoke and args.seed == 0 and args.threads is None
    assert not args.out.resolve().is_relative_to(ROOT)
    with pytest.raises(SystemExit):
        common.parser("T.").parse_args([])  # --out is required by default
    calls = []
    times = common.interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              repeats=2)
    assert calls == ["a", "b"] * 3 and len(times["a"]) == 2
    row = common.ratio_row("t", {"a": [2.0, 4.0], "b": [1.0, 1.0]}, "a", "b", goal=3.5)
    assert row["ratio"] == 3.0 and (row["ratio_min"], row["ratio_max"]) == (2.0, 4.0)
    assert row["met"]
    frame = pd.DataFrame({"x": [1.0, float("nan")], "y": ["a", "b"]})
    assert common.markdown_table(frame) == "| x | y |\n|---|---|\n| 1.00 | a |\n|  | b |\n"
    assert common.markdown_table(frame, ["y"], ["Y"], lambda v, c: v * 2) == (
        "| Y |\n|---|\n| aa |\n| bb |\n")
    assert common.command_line("s", ["--a", "b c"]) == "python benchmarks/s.py --a 'b c'"


def test_references_agree_with_ppl_vae_and_train(tmp_path, capsys):
    references = bench("references")
    from ppl_vae.marginal import importance_sampling
    from ppl_vae.training.builders import build_model_and_guide
    from ppl_vae.training.config import TrainConfig

    model, guide = build_model_and_guide(TrainConfig(latent_dims=(3,), hidden=(8, 8)), 20)
    model.eval(), guide.eval()
    vae = references.TorchVAE(20, (8, 8), 3).load_pair(model, guide)
    x = torch.bernoulli(torch.full((10, 20), 0.3))
    ours = importance_sampling(model, guide, x, 2000, seed=0).log_likelihood
    torch.manual_seed(0)
    diff = references.log_px(vae, x, 2000).float() - ours.float()  # two IS estimates, K = 2000
    assert diff.abs().max() < 0.6 and diff.mean().abs() < 0.15, diff
    naive = references.log_px(vae, x, 2000, prior=True)
    ais = references.ais(vae, x, chains=4, steps=5, leapfrog=2)
    assert naive.shape == ais.shape == (10,) and torch.isfinite(naive).all()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    references.iwae_step(vae, opt, x, 5, 100)
    references.Reinforce().step(vae, opt, x, 100)
    data = tmp_path / "d.npz"
    np.savez(data, train=np.ones((30, 20), np.uint8), valid=np.zeros((10, 20), np.uint8))
    assert references.main(["--objective", "meanfield", "--data", str(data), "--epochs", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and all(r["valid_elbo"] < 0 for r in lines)


# -- the benchmarks' smoke modes ---------------------------------------------------------------
def test_paper_table_smoke_writes_table_csv_and_plot_and_resumes(tmp_path):
    bench_, doc = bench("paper_table"), tmp_path / "table.md"
    argv = ["--smoke", "--rows", "vae-1l,iwae-5-2l", "--out", str(tmp_path / "out"), "--doc",
            str(doc), "--no-progress"]
    assert bench_.main(argv) == 0
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
    assert bench_.main(argv) == 0  # finished rows are not retrained
    assert (tmp_path / "out" / "vae-1l" / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert pd.read_csv(tmp_path / "out" / "paper_table.csv").test_nll.iloc[0] == 12.5
    assert bench_.main(argv + ["--seed", "1"]) == 0  # other settings: evaluated again
    assert bench_.main(argv + ["--row-k", "iwae-5-2l=7", "--eval-only"]) == 0
    assert pd.read_csv(tmp_path / "out" / "paper_table.csv").k.tolist() == [20, 7]
    with pytest.raises(SystemExit, match="no .*dreg-5-1l.*checkpoint.pt to evaluate"):
        bench_.main(argv[:2] + ["dreg-5-1l"] + argv[3:] + ["--eval-only"])
    assert pd.read_csv(tmp_path / "out" / "paper_table.csv").test_nll.iloc[0] != 12.5


def test_paper_table_writes_its_doc_under_out_unless_asked(tmp_path, unchanged_repo):
    out = tmp_path / "out"
    assert bench("paper_table").main(["--smoke", "--rows", "vae-1l", "--out", str(out),
                                      "--no-progress"]) == 0
    assert "| vae-1l |" in (out / "paper_table.md").read_text()
    assert (out / "figures" / "paper_table_nll_vs_epoch.png").is_file()


def test_kingma_welling_smoke_writes_both_figures(tmp_path, unchanged_repo):
    assert bench("kingma_welling").main(["--smoke", "--latent-dims", "2", "--train-sizes", "100",
                                         "--out", str(tmp_path)]) == 0
    fig2, fig3 = pd.read_csv(tmp_path / "figure2.csv"), pd.read_csv(tmp_path / "figure3.csv")
    assert set(fig2.method) == {"AEVB", "wake-sleep"} and len(fig2) == 4
    assert set(fig3.method) == {"AEVB", "wake-sleep", "MCEM"} and len(fig3) == 6
    assert fig3.test_log_px.notna().all() and fig2.test_elbo.notna().all()
    assert (fig3.points_seen == fig3.epoch * 100).all()
    for png in ("figure2.png", "figure3.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_hierarchical_quick_check(tmp_path, unchanged_repo):
    assert bench("hierarchical").main(["--data", "digits", "--epochs", "1", "--k", "5",
                                       "--test-points", "20", "--au-samples", "5",
                                       "--configs", "1-layer,2-layer", "--no-progress",
                                       "--out", str(tmp_path)]) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert df.config.tolist() == ["1-layer", "2-layer"] and (df.test_points == 20).all()
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[2].startswith("| model | latent dims | guide |") and lines[3].startswith("|---|")
    assert lines[4].startswith("| 1-layer | 50 | bottom-up | 1 | 5 | 20 | -") and " ± " in lines[4]


def test_two_layer_collapse_quick_check(tmp_path, unchanged_repo):
    data = tmp_path / "binary.npz"  # the sweep reads binarized data (its test split as it is)
    gen = np.random.default_rng(0)
    np.savez(data, **{k: (gen.random((n, 64)) < 0.3).astype(np.uint8)
                      for k, n in (("train", 100), ("valid", 20), ("test", 20))})
    argv = ["--data", str(data), "--train-points", "100", "--eval-points", "20", "--epochs", "1",
            "--k", "5", "--configs", "1L,2L-bu", "--out", str(tmp_path)]
    assert bench("two_layer_collapse").main(argv) == 0
    traj = pd.read_csv(tmp_path / "trajectory.csv")
    assert traj.config.tolist() == ["1L", "2L-bu"] and traj.test_is.notna().all()
    assert "| 2L-bu |" in (tmp_path / "results.md").read_text()


def test_gradient_estimators_tiny_budget(tmp_path, unchanged_repo):
    argv = ["--datasets", "digits", "--models", "sbn", "--quick", "--steps", "4",
            "--pretrain-steps", "4", "--draws", "3", "--warmup", "2", "--is-samples", "4",
            "--eval-size", "30", "--no-progress", "--out", str(tmp_path)]
    assert bench("gradient_estimators").main(argv) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Command: `python benchmarks/gradient_estimators.py --datasets digits" in text
    assert "| objective | total_variance |" in text and "| score-nn |" in text
    assert (tmp_path / "digits-sbn" / "summary.csv").is_file()


def test_marginal_likelihood_dry_run_and_iaf_vs_diagonal(tmp_path, capsys, unchanged_repo):
    run = _tiny_run(tmp_path / "bottom-up")
    _tiny_run(tmp_path / "iaf", guide="iaf")
    assert bench("marginal_likelihood").main(["--run", str(run), "--ks", "1,5",
                                              "--dry-run"]) == 0
    assert capsys.readouterr().out.count("ppl-vae evaluate --run") == 6
    assert bench("iaf_vs_diagonal").main(["5", "10", str(tmp_path), "--out",
                                          str(tmp_path / "res")]) == 0
    res = json.loads((tmp_path / "res" / "iaf_vs_diagonal.json").read_text())
    assert res["K"] == 5 and set(res) >= {"bottom-up", "iaf", "iaf_minus_diag"}


@pytest.mark.slow
def test_marginal_likelihood_table(tmp_path, unchanged_repo):
    run = _tiny_run(tmp_path / "run")
    argv = ["--run", str(run), "--ks", "1,5", "--elbo-samples", "5", "--ais-samples", "2",
            "--ais-steps", "3", "--ais-leapfrog", "2", "--ais-limit", "5", "--limit", "20"]
    assert bench("marginal_likelihood").main(argv) == 0
    df = pd.read_csv(run / "marginal_likelihood_table.csv")
    assert df.estimator.tolist() == ["elbo", "is", "is", "naive", "naive", "ais"]
    text = (run / "marginal_likelihood_table.md").read_text()
    assert text.startswith("| estimator | K | n | log p(x) [nats] |") and "```" in text


@pytest.mark.slow
def test_speed_quick_objectives_and_marginal(tmp_path, bmnist_path, unchanged_repo):
    argv = ["--quick", "--only", "objectives,marginal", "--repeats", "1", "--out", str(tmp_path)]
    assert bench("speed").main(argv) == 0
    rows = json.loads((tmp_path / "speed.json").read_text())["rows"]
    assert len(rows) == 7 and all(r["ratio"] > 0 for r in rows)
    assert (tmp_path / "speed.csv").is_file()


def test_snr_vs_k_smoke(tmp_path, unchanged_repo, tiny_digits):
    import ppl_vae

    run = tmp_path / "run"
    ppl_vae.train(dict(data="digits", latent_dims=(2,), hidden=(16,), epochs=1, batch_size=64),
                  out=run, dataset=tiny_digits, progress=False, reports=False)
    out = tmp_path / "snr"
    assert bench("snr_vs_k").main(["--run", str(run), "--out", str(out), "--smoke"]) == 0
    frame = pd.read_csv(out / "snr_vs_k.csv")
    assert set(frame.objective) == {"iwae", "dreg", "rws", "vimco"} and set(frame.k) == {2, 4}
    assert (frame.snr_encoder > 0).all() and (out / "snr_vs_k.png").stat().st_size > 1000


def test_bdmc_study_smoke_tables_figure_doc_section_and_cache(tmp_path, capsys, unchanged_repo):
    study = bench("bdmc_study")
    out, doc = tmp_path / "out", tmp_path / "docs" / "marginal.md"
    doc.parent.mkdir()
    doc.write_text(f"# Title\n\nprose\n\n{study.BEGIN}\nstale table\n{study.END}\n\nafter\n")
    argv = ["--smoke", "--out", str(out), "--doc", str(doc), "--no-progress"]
    assert study.main(argv) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert summary.estimator.tolist() == (["elbo"] + ["is"] * 3 + ["naive"] * 2
                                          + ["ais-forward", "ais-reverse"] * 2)
    assert summary.what.str.contains("bound").sum() == 9  # every bound is called one
    bdmc = pd.read_csv(out / "bdmc.csv")
    assert bdmc["T"].tolist() == [3, 10]
    # every error is bracketed by the largest T's sandwich: its width is that mean gap
    width = summary.error_hi - summary.error_lo
    assert (width - bdmc.gap_mean.iloc[-1]).abs().max() < 1e-9
    points = pd.read_csv(out / "points.csv")
    assert len(points) == 8 and {"is-50-khat", "is-50-ess", "bdmc-10-upper"} <= set(points)
    assert pd.read_csv(out / "prediction.csv").K.tolist() == [1, 5, 50]
    result = json.loads((out / "bdmc_study.json").read_text())
    assert result["projection"]["wu"]["projected_seconds"] > 0 and result["train_seconds"] > 0
    text = doc.read_text()
    assert text.startswith("# Title\n\nprose") and text.endswith("after\n")
    assert "stale table" not in text and text.count(study.BEGIN) == 1
    assert "](figures/bdmc_study.png)" in text and "bdmc_study.py --smoke" in text
    assert "| forward AIS from the guide (stochastic lower bound) | T = 10 |" in text
    assert (doc.parent / "figures" / "bdmc_study.png").stat().st_size > 1000
    assert (out / "bdmc_study.png").stat().st_size > 1000
    capsys.readouterr()
    assert study.main(argv) == 0  # the run and every estimate are reused
    err = capsys.readouterr().err
    assert "reusing the run" in err and err.count(": cached (") == 3 + 2 + 2
    assert pd.read_csv(out / "summary.csv").equals(summary)


def test_peers_smoke_rows_agree_and_a_missing_venv_is_reported(tmp_path, bmnist_path,
                                                               unchanged_repo):
    spec = importlib.util.spec_from_file_location("bench_peers", BENCH / "peers" / "peers.py")
    peers = sys.modules["bench_peers"] = importlib.util.module_from_spec(spec)  # (dataclass)
    spec.loader.exec_module(peers)
    smoke = [r.key for r in peers.select(peers.all_rows(), None, smoke=True)]
    assert smoke == ["ppl_vae", "pyro-jit", "pyro", "torch"]  # no venv, no compiled row
    with pytest.raises(SystemExit, match="unknown rows"):
        peers.select(peers.all_rows(), "ppl_vae,nope", smoke=False)
    (tmp_path / "file").write_text("")  # a venv under a file cannot be made: no network needed
    out = tmp_path / "out"
    argv = ["--smoke", "--threads", "1", "--data", str(bmnist_path), "--out", str(out),
            "--venv", str(tmp_path / "file" / "venv"), "--only", ",".join(smoke + ["pythae"])]
    assert peers.main(argv) == 0
    rows = {r["row"]: r for r in json.loads((out / "peers.json").read_text())["rows"]}
    assert list(rows) == smoke + ["pythae"]
    assert rows["pythae"]["status"].startswith("python -m venv failed")
    assert rows["pythae"]["wall"] is None
    ok = [rows[k] for k in smoke]
    assert all(r["status"] == "ok" and r["wall"] > 0 and r["epoch"] > 0 for r in ok)
    assert rows["ppl_vae"]["wall_ratio"] == 1.0
    # the same model: after one epoch on 1000 points every ELBO is within a few nats of the
    # hand-written reference's
    assert all(abs(r["elbo"] - rows["torch"]["elbo"]) < 10 for r in ok), [r["elbo"] for r in ok]
    assert pd.read_csv(out / "peers.csv").row.tolist() == smoke + ["pythae"]
    assert "| ppl_vae" in (out / "peers.md").read_text()


def test_ais_speed_smoke(tmp_path, unchanged_repo):
    assert bench("ais_speed").main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "ais_speed.json").read_text())["rows"]
    assert [r["goal"] for r in rows] == [1.2, 1.0, 2.0] and all(r["ratio"] > 0 for r in rows)
    assert (tmp_path / "ais_speed.csv").is_file()


def test_compiled_speed_smoke(tmp_path, unchanged_repo):
    assert bench("compiled_speed").main(["--smoke", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "compiled_speed.json").read_text())["rows"]
    assert {r["objective"] for r in rows} == {"trace", "iwae-2"}
    assert all(r["ratio"] > 0 and r["compile_seconds"] > 0 for r in rows)


@pytest.mark.slow
def test_speed_fresh_times_evaluate_against_the_hand_written_evaluator(tmp_path, unchanged_repo):
    """``speed.py --only fresh`` on a run of the benchmarked architecture trained for one epoch
    on 500 points: one row per (estimator, measure), ratios positive, our peak RSS recorded."""
    import ppl_vae

    f = np.load(bench("speed").mnist_path())
    data = tmp_path / "small.npz"
    np.savez(data, train=f["train"][:500], valid=f["valid"][:200], test=f["test"][:200])
    run = tmp_path / "run"
    ppl_vae.train(dict(data=str(data), latent_dims=(50,), hidden=(500, 500), epochs=1,
                       batch_size=100), out=run, progress=False, reports=False)
    out = tmp_path / "speed"
    argv = ["--only", "fresh", "--run", str(run), "--grid", "20x50", "--repeats", "1",
            "--out", str(out)]
    assert bench("speed").main(argv) == 0
    rows = json.loads((out / "speed.json").read_text())["rows"]
    assert {(r["estimator"], r["measure"]) for r in rows} == {
        ("is", "wall"), ("is", "JSON seconds"), ("naive", "wall"), ("naive", "JSON seconds")}
    assert all(r["ratio"] > 0 and r["ours_peak_rss_mb"] > 0 for r in rows)


def test_mlp_step_times_the_bare_networks(capsys):
    spec = importlib.util.spec_from_file_location("bench_mlp_step", BENCH / "peers" / "mlp_step.py")
    mlp_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mlp_step)
    # forward + the two backward products of each layer, batch 100
    assert mlp_step.FLOPS == 6 * 100 * (784 * 500 + 2 * 500 * 500 + 500 * 100 + 50 * 500
                                        + 500 * 784)
    assert mlp_step.main(["--library", "torch-eager", "--steps", "2", "--rounds", "1"]) == 0
    assert capsys.readouterr().out.startswith("torch-eager: ")
