"""``ppl-vae grad-variance`` and ``ppl-vae compare-estimators`` end to end (tiny runs)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import ppl_vae
from ppl_vae.commands.cli import main

REQUIRED = ("total_variance", "snr_median", "seconds_per_gradient")
BIAS = ("bias_norm", "bias_z_max", "bias_z_threshold", "bias_detected")


def _train(tmp_path_factory, name, **config):
    from ppl_vae.io.data import Dataset, load_dataset

    digits = load_dataset("digits", likelihood="bernoulli")
    tiny = Dataset("digits", digits.train[:128], digits.valid[:32], digits.test[:32],
                   digits.image_shape)
    out = tmp_path_factory.mktemp(name)
    ppl_vae.train(dict(data="digits", latent_dims=(3,), hidden=(16,), epochs=1, batch_size=32,
                       **config), out=out, dataset=tiny, progress=False, reports=False)
    return out


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    return _train(tmp_path_factory, "vae_run")


@pytest.fixture(scope="module")
def sbn_run(tmp_path_factory):
    return _train(tmp_path_factory, "sbn_run", model="sbn", objective="score-nn")


def _json(capsys, argv):
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)  # exactly one JSON object: anything else on stdout fails here


def test_grad_variance_json(vae_run, capsys):
    names = ["trace", "meanfield", "score", "score-avg", "score-nn", "iwae-3", "rws-3",
             "stl", "dreg-3"]
    result = _json(capsys, ["grad-variance", "--run", str(vae_run), "--objectives",
                            ",".join(names), "--draws", "4", "--batch-size", "8",
                            "--warmup", "3", "--json"])
    assert list(result) == names
    for name in names:
        for key in REQUIRED:
            assert isinstance(result[name][key], float), (name, key)
        assert result[name]["total_variance"] >= 0
        assert result[name]["reference"] == "trace"
    assert result["trace"]["cosine_to_reference"] is None  # the reference itself
    assert all(result["trace"][k] is None for k in BIAS)
    # the L_K estimators estimate another objective's gradient: no verdict on their "bias"
    for name, target in (("iwae-3", "L_3"), ("dreg-3", "L_3"), ("rws-3", "L_3, wake-phi")):
        assert result[name]["target"] == target
        assert isinstance(result[name]["bias_z_max"], float)
        assert result[name]["bias_detected"] is None
    for name in ("meanfield", "score", "score-avg", "score-nn", "stl"):
        assert result[name]["target"] == "ELBO"
        assert isinstance(result[name]["bias_detected"], bool), name
        assert result[name]["bias_z_threshold"] > 0
    # meanfield estimates the same gradient as trace (analytic KL, less noise)
    assert result["meanfield"]["cosine_to_reference"] > 0.5
    assert result["score"]["total_variance"] > result["trace"]["total_variance"]


def test_grad_variance_on_a_discrete_model_marks_iwae_not_applicable(sbn_run, capsys):
    result = _json(capsys, ["grad-variance", "--run", str(sbn_run), "--objectives",
                            "iwae-3,score,score-avg,rws", "--draws", "3", "--batch-size", "8",
                            "--warmup", "3", "--json"])
    assert result["iwae-3"]["applicable"] is False
    assert all(result["iwae-3"][k] is None for k in REQUIRED + BIAS)
    for name in ("score", "score-avg", "rws"):
        assert result[name]["applicable"] is True
        assert result[name]["reference"] == "score-avg"
        assert isinstance(result[name]["total_variance"], float)


def test_grad_variance_table_and_errors(vae_run, capsys, tmp_path):
    csv = tmp_path / "stats.csv"
    assert main(["grad-variance", "--run", str(vae_run), "--objectives", "reparam,stl",
                 "--draws", "3", "--batch-size", "4", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "reparam" in out and "stl" in out
    assert "bias" in out and "trace's mean" in out  # against the reference, trace
    # ids are hex: "154048881106" or "12e3..." would read as numbers
    table = pd.read_csv(csv, dtype={"run_id": str, "checkpoint_id": str})
    assert list(table.objective) == ["reparam", "stl"]
    assert {"target", "reference", *BIAS} <= set(table.columns)
    assert set(table.target) == {"ELBO"} and table.bias_z_max.notna().all()
    from ppl_vae.training.runs import load_run

    run = load_run(vae_run)
    assert set(table.run_id) == {run.run_id} and set(table.checkpoint_id) == {run.checkpoint_id}
    assert main(["grad-variance", "--run", str(vae_run), "--objectives", "nope"]) == 2
    assert "unknown objective 'nope'" in capsys.readouterr().err
    assert main(["grad-variance", "--run", str(tmp_path / "missing"), "--draws", "3"]) == 2


def test_compare_estimators_writes_tidy_csv_and_plots(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare-estimators", "--data", "digits", "--objectives",
               "reparam,score-avg,dreg-3", "--steps", "6", "--eval-every", "3", "--out", str(out),
               "--latent-dim", "3", "--hidden", "16", "--batch-size", "16", "--limit", "40",
               "--samples", "5", "--draws", "3", "--warmup", "3", "--no-progress"])
    assert rc == 0
    tidy = pd.read_csv(out / "results.csv")
    assert list(tidy.columns) == ["objective", "step", "seconds", "metric", "value"]
    assert set(tidy.objective) == {"reparam", "score-avg", "dreg-3"}
    assert {"elbo", "is_log_likelihood", "total_variance", "snr_median"} <= set(tidy.metric)
    for name, group in tidy[tidy.metric == "elbo"].groupby("objective"):
        assert list(group.step) == [0, 3, 6], name
        assert group.seconds.is_monotonic_increasing
    for png in ("variance.png", "elbo_vs_steps.png", "elbo_vs_seconds.png"):
        assert (out / png).stat().st_size > 1000
    summary = pd.read_csv(out / "summary.csv")
    assert summary.is_log_likelihood.notna().all()
    assert {"target", "bias_z_max", "bias_detected"} <= set(summary.columns)
    assert summary.set_index("objective").loc["dreg-3", "target"] == "L_3"
    assert {"bias_norm", "bias_z_max"} <= set(tidy.metric)
    captured = capsys.readouterr()
    assert "| reparam |" in captured.out
    # 6 steps: the timings are marked as noise, on stderr and in summary.md
    assert "measure start-up and noise" in captured.err
    assert "measure start-up and noise" in (out / "summary.md").read_text()


def test_compare_estimators_skips_reparameterized_estimators_for_the_sbn(tmp_path):
    from ppl_vae.analysis.estimator_comparison import compare_estimators
    from ppl_vae.io.data import binary_splits

    train, evaluation, _ = binary_splits("digits", limit=30)
    result = compare_estimators(train[:200], evaluation, ["meanfield", "score-nn", "rws"],
                                model_family="sbn", latent_dim=8, hidden=(16,), steps=4,
                                batch_size=16, is_samples=5, draws=3, warmup=3)
    summary = result.summary.set_index("objective")
    assert not summary.loc["meanfield", "applicable"]
    assert set(result.tidy.objective) == {"score-nn", "rws"}
